"""The standard trainer and its hooks, assembled from a config (detectron2's defaults.py).

`run_train` builds the trainer with `build_trainer` (model, loaders, the benchmark clock and
results.json on rank 0, the default hooks, resume) and trains; `run_test` runs the multi-view
test of a checkpoint. Every process of a run calls them (engine/launch.py).
"""
import os

import torch

from vbench.bench.clock import HEARTBEAT_FILE, BenchmarkClock
from vbench.bench.results import RESULTS_FILE, ResultsWriter, atomic_write_json, world_block
from vbench.data.layouts import write_class_names
from vbench.data.loader import build_loader
from vbench.engine import distributed as du
from vbench.engine.checkpoint import find_test_checkpoint, load_checkpoint_file, load_initial_weights, seed_everything
from vbench.engine.cold_data import ColdDataHook
from vbench.engine.evaluator import Evaluator
from vbench.engine.events import ConsoleWriter, JsonStatsWriter, ResultsJsonWriter, TensorBoardWriter
from vbench.engine.gpu_telemetry import TelemetryHook
from vbench.engine.hooks import (
    CheckpointHook,
    ClockHook,
    DataCheckHook,
    EpochStatsHook,
    EvalHook,
    LRScheduleHook,
    PreciseBNHook,
    ProgressHook,
    WriterHook,
)
from vbench.engine.log import get_logger, log_json_stats
from vbench.engine.precision import make_autocast, resolve_precision
from vbench.engine.preemption import PreemptionHook
from vbench.engine.resources import require_resolved
from vbench.engine.restarts import LoaderRestartHook
from vbench.engine.train_loop import Trainer
from vbench.engine.warmup import WarmupHook
from vbench.engine.watchdog import WatchdogHook
from vbench.errors import ConfigError
from vbench.models import build_model
from vbench.models.compile import compile_blocks


def prepare_model(model, cfg, ctx):
    """Move to the device; SyncBN, channels_last_3d, torch.compile and DDP as configured.

    Returns (train_model, eval_model, bare_model): train_model is DDP-wrapped when the world has
    more than one process; eval_model skips DDP (evaluation needs no gradient sync). MODEL.COMPILE
    compiles the model's repeated blocks in place (vbench/models/compile.py), so the evaluation
    model runs the same compiled blocks.
    """
    if cfg.BN.NORM_TYPE == "sync_batchnorm" and ctx.world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device)
    if cfg.MODEL.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last_3d)
    bare = model
    if cfg.MODEL.COMPILE:
        model = compile_blocks(model)
    eval_model = model
    if ctx.world_size > 1:
        model = du.wrap_ddp(model, ctx.device)  # gradients in DDP's buckets, zeroed in place
    return model, eval_model, bare


def tensorboard_writer(cfg):
    """A TensorBoardWriter, or None (with a warning) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
    except ImportError:
        get_logger().warning("TENSORBOARD.ENABLE is on but tensorboard is not installed "
                             "(pip install tensorboard); continuing without it.")
        return None
    return TensorBoardWriter(SummaryWriter(log_dir=cfg.TENSORBOARD.LOG_DIR
                                           or os.path.join(cfg.OUTPUT_DIR, "tensorboard")))


def default_writers(cfg, results, clock, device):
    """results.json, json_stats, the console summary and TensorBoard (rank 0 only)."""
    writers = [ResultsJsonWriter(results, clock, device), JsonStatsWriter(cfg.OUTPUT_DIR), ConsoleWriter()]
    if cfg.TENSORBOARD.ENABLE:
        writers.append(tensorboard_writer(cfg))
    return [writer for writer in writers if writer is not None]


def default_hooks(trainer, clock=None, results=None):
    """The standard hooks, in order: the stall watchdog first (it counts steps), then the LR and
    progress; before training the data check, then the untimed warm-up (after the check, so that
    bad data stops a run at once), then the page-cache eviction (after everything that reads data
    before the clock); after an epoch the statistics, the data check, precise BN and evaluation
    fill the epoch record, the loader restarts of the epoch (training and evaluation) are counted,
    the clock stamps it (having stopped at the target), the GPU telemetry adds its means (it starts
    sampling with the clock), the writers write it, and the checkpoint saves the state last. Last
    of all, the preemption hook: on a scheduler's signal it saves every hook's state at a step
    boundary and stops the run.
    `clock` and `results` are rank 0's benchmark clock and results.json writer (None elsewhere)."""
    cfg, ctx = trainer.cfg, trainer.ctx
    hooks = [WatchdogHook(cfg, ctx), LRScheduleHook(), ProgressHook(cfg.LOG_PERIOD), EpochStatsHook(),
             DataCheckHook(), WarmupHook(cfg.BENCHMARK.WARMUP_STEPS, cfg.BENCHMARK.WARMUP_MAX_S),
             ColdDataHook(cfg.DATA.DROP_CACHE)]
    if cfg.TRAIN.PRECISE_BN:
        hooks.append(PreciseBNHook(cfg.TRAIN.NUM_BATCHES_PRECISE))
    evaluator = Evaluator(trainer.val_loader, ctx.device, cfg.MODEL.NUM_CLASSES, trainer.autocast,
                          show_progress=ctx.is_main)
    hooks.append(EvalHook(evaluator, cfg, clock))
    hooks.append(LoaderRestartHook())
    if clock is not None:
        hooks.append(ClockHook(clock))
    hooks.append(TelemetryHook(cfg, clock))
    if results is not None:
        hooks.append(WriterHook(default_writers(cfg, results, clock, ctx.device)))
    hooks.append(CheckpointHook(cfg.TRAIN.CHECKPOINT_PERIOD))
    hooks.append(PreemptionHook())
    return hooks


def build_trainer(cfg, ctx, run_info=None, clock=None, model=None, train_loader=None, val_loader=None):
    """A trainer with the default hooks, resumed when a checkpoint exists.

    Rank 0 also gets the benchmark clock (with its heartbeat file) and the results.json writer.
    `clock`, `model`, `train_loader` and `val_loader` replace the built ones (tests).
    """
    require_resolved(cfg)
    run_info = run_info or {}
    seed_everything(cfg.RNG_SEED)  # identical initial weights on every process
    model = model if model is not None else build_model(cfg)
    models = prepare_model(model, cfg, ctx)
    seed_everything(cfg.RNG_SEED + ctx.rank)
    if train_loader is None:
        train_loader = build_loader(cfg, cfg.DATA.TRAIN_SPLIT, training=True, rank=ctx.rank,
                                    world_size=ctx.world_size)
    if val_loader is None:
        val_loader = build_loader(cfg, cfg.DATA.VAL_SPLIT, training=False, rank=ctx.rank,
                                  world_size=ctx.world_size)
    trainer = Trainer(cfg, ctx, models, train_loader, val_loader)
    ranks = du.gather_ranks(ctx, cfg.SHARD_ID)  # a collective: the world as it really runs
    results = None
    if ctx.is_main:
        clock = clock or BenchmarkClock(os.path.join(cfg.OUTPUT_DIR, HEARTBEAT_FILE),
                                        setup_started=run_info.get("setup_started"))
        results = ResultsWriter(
            os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE), cfg,
            world=world_block(ranks, trainer.precision, run_info.get("world_corrections")),
            config_file=run_info.get("config_file") or "", command=run_info.get("command", ()),
            resolved=run_info.get("resolved"))
        write_class_names(train_loader.class_names, cfg.OUTPUT_DIR)
    else:
        clock = None
    trainer.register_hooks(default_hooks(trainer, clock, results))
    resume_or_load(trainer)
    return trainer


def resume_or_load(trainer):
    """Auto-resume from the newest loadable checkpoint, else load TRAIN.CHECKPOINT_FILE_PATH.
    Returns the checkpoint resumed from, or None."""
    cfg, ctx = trainer.cfg, trainer.ctx
    if cfg.TRAIN.AUTO_RESUME:
        path = trainer.checkpointer.load_newest()[0] if ctx.is_main else None
        path = du.broadcast_object(path)
        if path:
            trainer.load_state_dict(load_checkpoint_file(path))
            steps = f" and {trainer.saved_progress['steps']} steps of the next" if trainer.saved_progress else ""
            get_logger().info(f"resumed from {path} (epoch {trainer.start_epoch} done{steps})")
            return path
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        load_initial_weights(trainer.bare_model, cfg.TRAIN.CHECKPOINT_FILE_PATH, cfg)
    return None


def run_train(cfg, ctx, run_info=None):
    """Train (resuming when possible) and return the trainer."""
    trainer = build_trainer(cfg, ctx, run_info)
    if trainer.finished:
        get_logger().info(
            f"OUTPUT_DIR '{cfg.OUTPUT_DIR}' holds a finished run (epoch {trainer.start_epoch} of "
            f"{trainer.max_epoch}); nothing to train. Use a new OUTPUT_DIR (or TRAIN.AUTO_RESUME "
            f"False) to train again.")
    try:
        trainer.train()
    finally:
        trainer.train_loader.close()
        trainer.val_loader.close()
    return trainer


def run_test(cfg, ctx):
    """Multi-view testing (`vbench test`, or TEST.ENABLE after training) of a checkpoint.

    TEST.SAMPLING "uniform" averages TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS views per
    video; "windows" averages every window. Writes OUTPUT_DIR/test_results.json on rank 0.
    """
    require_resolved(cfg)
    seed_everything(cfg.RNG_SEED)
    model = build_model(cfg)
    path = find_test_checkpoint(cfg)
    if path:
        load_initial_weights(model, path, cfg)
    elif not cfg.MODEL.WEIGHTS:
        raise ConfigError(
            f"nothing to test: no checkpoint in OUTPUT_DIR '{cfg.OUTPUT_DIR}', and neither "
            f"TEST.CHECKPOINT_FILE_PATH nor MODEL.WEIGHTS is set.")
    model = model.to(ctx.device)
    if cfg.MODEL.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last_3d)
    loader = build_loader(cfg, cfg.TEST.SPLIT, training=False, rank=ctx.rank, world_size=ctx.world_size)
    precision = resolve_precision(cfg.TRAIN.PRECISION, ctx.device)
    evaluator = Evaluator(loader, ctx.device, cfg.MODEL.NUM_CLASSES, make_autocast(precision, ctx.device),
                          show_progress=ctx.is_main)
    try:
        result = evaluator.run(model, desc="test")
    finally:
        loader.close()
    if ctx.is_main:
        write_test_results(cfg, result, path, loader.fingerprint())
    return result


def write_test_results(cfg, result, checkpoint, fingerprint):
    """The test's json_stats line, its summary, and OUTPUT_DIR/test_results.json."""
    summary = {k: v for k, v in result.items() if k != "excluded"}
    log_json_stats(dict(summary, _type="test", split=cfg.TEST.SPLIT, sampling=cfg.TEST.SAMPLING), cfg.OUTPUT_DIR)
    for item in result["excluded"]:
        get_logger().warning(f"excluded from testing (unreadable): {item['path']} ({item['reason']})")
    get_logger().info(
        f"test ({cfg.TEST.SPLIT}, {cfg.TEST.SAMPLING}) of {checkpoint or cfg.MODEL.WEIGHTS}: video "
        f"top-1 {result['video_top1']:.2f}, top-5 {result['video_top5']:.2f} over "
        f"{result['num_videos']} videos; clip top-1 {result['clip_top1']:.2f} over "
        f"{result['num_clips']} clips; {len(result['excluded'])} excluded")
    atomic_write_json(os.path.join(cfg.OUTPUT_DIR, "test_results.json"),
                      dict(result, checkpoint=checkpoint, split=cfg.TEST.SPLIT, sampling=cfg.TEST.SAMPLING,
                           dataset={cfg.TEST.SPLIT: fingerprint}), indent=1)
