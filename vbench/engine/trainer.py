"""The training loop: a small `Trainer` that runs epochs and calls hooks (detectron2 style).

The trainer owns the model, optimizer, precision and the epoch loop; everything periodic
(LR updates, logging, precise BN, evaluation, the benchmark target, checkpoints, results.json,
TensorBoard) lives in a hook in `hooks.py`. One optimizer step ("iteration") is TRAIN.ACCUM_STEPS
micro-batches. Nothing in the loop reads a device value back to the host except the meters,
every LOG_PERIOD iterations and at the end of an epoch.
"""
import math
import os
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from vbench.config import ConfigError
from vbench.data.dataset import check_bad_fraction
from vbench.engine import distributed as du
from vbench.engine.checkpoint import (Checkpointer, capture_rng_state, model_state,
                                      restore_rng_state, seed_everything)
from vbench.engine.log import get_logger
from vbench.engine.meters import TrainMeter, WaitTimer, check_finite
from vbench.engine.precision import make_autocast, resolve_precision
from vbench.engine.resources import require_resolved
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


class Trainer:
    """Epoch loop with hooks. Build pieces may be injected (tests use tiny models and loaders)."""

    def __init__(self, cfg, ctx=None, model=None, train_loader=None, val_loader=None):
        from vbench.engine.lr_policy import LRSchedule
        from vbench.engine.optimizer import build_optimizer

        require_resolved(cfg)
        self.cfg = cfg
        self.ctx = ctx or du.DistContext()
        self.output_dir = cfg.OUTPUT_DIR
        self.logger = get_logger()
        if cfg.MODEL.LOSS_FUNC != "cross_entropy":
            raise ConfigError(f"MODEL.LOSS_FUNC '{cfg.MODEL.LOSS_FUNC}' is not supported; "
                              f"use cross_entropy (with SOLVER.LABEL_SMOOTHING if needed).")
        seed_everything(cfg.RNG_SEED)  # identical initial weights on every process
        if model is None:
            from vbench.models import build_model

            model = build_model(cfg)
        self.model, self.eval_model, self.bare_model = prepare_model(model, cfg, self.ctx)
        seed_everything(cfg.RNG_SEED + self.ctx.rank)
        if train_loader is None:
            train_loader = self._loader(cfg.DATA.TRAIN_SPLIT, training=True)
        if val_loader is None:
            val_loader = self._loader(cfg.DATA.VAL_SPLIT, training=False)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.accum_steps = cfg.TRAIN.ACCUM_STEPS
        self.iters_per_epoch = math.ceil(len(self.train_loader) / self.accum_steps)
        self.max_epoch = cfg.SOLVER.MAX_EPOCH
        self.optimizer = build_optimizer(self.bare_model, cfg)
        self.schedule = LRSchedule(cfg, self.iters_per_epoch)
        self.precision = resolve_precision(cfg.TRAIN.PRECISION, self.ctx.device)
        self.autocast = make_autocast(self.precision, self.ctx.device)
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.precision == "fp16")
        self.checkpointer = Checkpointer(self.output_dir, cfg.TRAIN.CHECKPOINT_KEEP, self.ctx.is_main)
        self.clock = None  # the benchmark clock, rank 0 only (set by build_trainer)
        self.results = None  # the results.json writer, rank 0 only (set by build_trainer)
        self.meter = TrainMeter(self.ctx.device)
        self.wait_timer = WaitTimer()
        self.hooks = []
        # run state; everything below is saved in checkpoints
        self.start_epoch = 0
        self.epoch = 0
        self.iter = 0
        self.bad_videos = {}  # rel_path -> reason: training videos left out (index) or failing to decode
        self.target_reached = False
        self.stop_requested = False
        self.failure = None
        self._clock_started = False
        self.record = {}

    def _loader(self, split, training):
        from vbench.data.loader import build_loader

        return build_loader(self.cfg, split, training=training, rank=self.ctx.rank,
                            world_size=self.ctx.world_size)

    # ------------------------------------------------------------------ hooks
    def register_hooks(self, hooks):
        for hook in hooks:
            hook.trainer = self
        self.hooks.extend(hooks)

    def _call_hooks(self, stage):
        for hook in self.hooks:
            getattr(hook, stage)()

    # ------------------------------------------------------------------ loop
    @property
    def finished(self):
        return self.stop_requested or self.start_epoch >= self.max_epoch

    def train(self):
        """Run the remaining epochs. after_train runs even when training fails."""
        try:
            self.check_data()
            self._call_hooks("before_train")
            for self.epoch in range(self.start_epoch, self.max_epoch):
                if self.stop_requested:
                    break
                self._call_hooks("before_epoch")
                self.run_epoch()
                self._call_hooks("after_epoch")
        except BaseException as err:
            self.failure = err
            raise
        finally:
            self._call_hooks("after_train")

    def check_data(self):
        """Before any training (the clock has not started): record the dataset fingerprints, and
        stop when more videos are left out (missing from the clip list, unreadable when indexed)
        than DATA.MAX_BAD_FRACTION (training) or DATA.MAX_VAL_EXCLUDED_FRACTION (validation) allow.
        Training videos left out count with later decode failures (`_account_bad_videos`)."""
        train, val, data = self.train_loader, self.val_loader, self.cfg.DATA
        self.bad_videos = {**dict(train.index_excluded), **self.bad_videos}
        if self.results is not None:
            dataset = {data.TRAIN_SPLIT: train.fingerprint()}
            dataset.setdefault(data.VAL_SPLIT, val.fingerprint())  # one split for both: the training plan's
            self.results.set_dataset(dataset)
            self.results.set_bad_videos(train=sorted(self.bad_videos.items()))
        self.check_left_out(self.bad_videos)
        self.check_left_out(dict(val.index_excluded), validation=True)

    def check_left_out(self, left_out, validation=False):
        """Stop (TooManyBadVideos) when the videos left out ({path: reason}) of the training (or
        validation) split exceed DATA.MAX_BAD_FRACTION (or DATA.MAX_VAL_EXCLUDED_FRACTION)."""
        if validation:
            bound = (self.val_loader.num_videos, self.cfg.DATA.MAX_VAL_EXCLUDED_FRACTION,
                     "DATA.MAX_VAL_EXCLUDED_FRACTION", "validation videos")
        else:
            bound = (self.train_loader.num_videos, self.cfg.DATA.MAX_BAD_FRACTION, "DATA.MAX_BAD_FRACTION",
                     "training videos")
        check_bad_fraction(left_out, *bound, data_check_command(self.cfg))

    def close_loaders(self):
        """Stop the loaders' worker processes (`ClipLoader.close`); loaders injected without one
        (tests) are left as they are."""
        for loader in (self.train_loader, self.val_loader):
            getattr(loader, "close", lambda: None)()

    def is_eval_epoch(self):
        done = self.epoch + 1
        return done % self.cfg.TRAIN.EVAL_PERIOD == 0 or done == self.max_epoch

    def run_epoch(self):
        self.record = {"epoch": self.epoch + 1}
        self.meter.reset_epoch()
        self.train_loader.set_epoch(self.epoch)
        if self.clock is not None and not self._clock_started:
            self.clock.start()  # just before the first training batch is requested
            self._clock_started = True
        self.wait_timer.reset()
        self.model.train()
        batches = iter(self.train_loader)
        epoch_bad = []
        remaining = len(self.train_loader)
        for self.iter in range(self.iters_per_epoch):
            self._call_hooks("before_step")
            micro = min(self.accum_steps, remaining)
            for index in range(micro):
                batch = self._next_batch(batches)
                epoch_bad.extend(batch.get("bad_videos", []))
                self.train_micro_batch(batch, sync=index == micro - 1, scale=1.0 / micro)
            remaining -= micro
            self.optimizer_step()
            self._call_hooks("after_step")
        self.finish_epoch_train(epoch_bad)

    def _next_batch(self, batches):
        self.wait_timer.begin_wait()
        batch = next(batches)
        self.wait_timer.end_wait()
        return batch

    def train_micro_batch(self, batch, sync, scale):
        clips, labels = self.train_loader.to_device(batch, self.ctx.device)
        if self.cfg.MODEL.CHANNELS_LAST:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        no_sync = getattr(self.model, "no_sync", None)
        with nullcontext() if sync or no_sync is None else no_sync():
            with self.autocast():
                logits = self.model(clips)
            loss = F.cross_entropy(logits.float(), labels,
                                   label_smoothing=self.cfg.SOLVER.LABEL_SMOOTHING)
            self.scaler.scale(loss * scale).backward()
        self.meter.update(loss, logits, labels)

    def optimizer_step(self):
        from vbench.engine.optimizer import clip_gradients

        self.scaler.unscale_(self.optimizer)
        clip_gradients(self.bare_model.parameters(), self.cfg)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=not du.zero_grad_in_place(self.model))

    def current_lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def finish_epoch_train(self, epoch_bad):
        """Read the epoch's training statistics (the epoch-end sync) and account bad videos."""
        train_s = self.wait_timer.total_s
        stats = self.meter.read_epoch()
        check_finite(stats["loss"], f"epoch {self.epoch + 1}")
        wait = self.wait_timer.wait_fraction
        clips, waits, loader_rates = self._gather_epoch_counts(wait)
        self.record.update(
            train_s=train_s, data_wait_fraction=wait,
            clips_per_s=clips / train_s if train_s > 0 else 0.0, data_wait_by_rank=waits,
            loader_clips_per_s_by_rank=loader_rates, loss=stats["loss"],
            train_top1=stats["top1"], train_top5=stats["top5"], lr=self.current_lr(),
            bad_videos=self._account_bad_videos(epoch_bad))

    def _gather_epoch_counts(self, wait):
        """(clips over all ranks, data-wait share per rank, loader clips/s per rank) in one
        all-reduce: each rank writes its own slots of a zeroed vector."""
        world, rank = self.ctx.world_size, self.ctx.rank
        rate = getattr(self.train_loader, "loader_clips_per_s", lambda: None)()
        counts = torch.zeros(1 + 2 * world, dtype=torch.float64, device=self.ctx.device)
        counts[0] = float(self.meter.epoch_samples)
        counts[1 + rank] = wait
        counts[1 + world + rank] = float("nan") if rate is None else rate
        values = du.all_reduce_sum(counts).tolist()
        rates = [value if math.isfinite(value) else None for value in values[1 + world:]]
        return values[0], values[1:1 + world], rates

    def _account_bad_videos(self, epoch_bad):
        """Merge this epoch's unreadable training videos over processes; warn once per video."""
        merged = {}
        for items in du.all_gather_objects(list(epoch_bad)):
            merged.update({path: reason for path, reason in items})
        for path, reason in sorted(merged.items()):
            if path not in self.bad_videos:
                self.logger.warning(f"unreadable training video skipped: {path} ({reason})")
        self.bad_videos.update(merged)
        self.check_left_out(self.bad_videos)
        return len(merged)

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """Everything a resumed run needs; RNG states of every process, indexed by rank.

        A collective: every process must call it (rank 0 writes the file).
        """
        schedule_state = self.schedule.state_dict() if hasattr(self.schedule, "state_dict") else {}
        return {
            "model": model_state(self.bare_model),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "lr_schedule": schedule_state,
            "rng_states": du.all_gather_objects(capture_rng_state(self.ctx.device)),
            "clock": self.clock.state_dict() if self.clock is not None else None,
            "results": self.results.state_dict() if self.results is not None else None,
            "bad_videos": dict(self.bad_videos),
            "target_reached": self.target_reached,
            "stopped": self.stop_requested,
            "world_size": self.ctx.world_size,
        }

    def load_state_dict(self, state):
        self.bare_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if state.get("lr_schedule") and hasattr(self.schedule, "load_state_dict"):
            self.schedule.load_state_dict(state["lr_schedule"])
        self.start_epoch = self.epoch = state["epoch"]
        self.bad_videos = dict(state["bad_videos"])
        self.target_reached = state["target_reached"]
        self.stop_requested = state["stopped"]
        if self.clock is not None and state.get("clock") is not None:
            self.clock.load_state_dict(state["clock"])
        if self.results is not None and state.get("results") is not None:
            self.results.load_state_dict(state["results"])
        rng_states = state["rng_states"]
        if len(rng_states) == self.ctx.world_size:
            restore_rng_state(rng_states[self.ctx.rank], self.ctx.device)
        else:
            self.logger.warning(
                f"checkpoint was written by {len(rng_states)} processes, this run has "
                f"{self.ctx.world_size}: random streams are reseeded, so the continuation will "
                f"not be bit-identical to an uninterrupted run.")
            seed_everything(self.cfg.RNG_SEED + 1000 * self.start_epoch + self.ctx.rank)

    def resume_or_load(self):
        """Auto-resume from the newest loadable checkpoint, else load TRAIN.CHECKPOINT_FILE_PATH."""
        from vbench.engine.checkpoint import load_checkpoint_file

        if self.cfg.TRAIN.AUTO_RESUME:
            path = self.checkpointer.load_newest()[0] if self.ctx.is_main else None
            path = du.broadcast_object(path)
            if path:
                self.load_state_dict(load_checkpoint_file(path))
                self.logger.info(f"resumed from {path} (epoch {self.start_epoch} done)")
                return path
        if self.cfg.TRAIN.CHECKPOINT_FILE_PATH:
            load_initial_weights(self.bare_model, self.cfg.TRAIN.CHECKPOINT_FILE_PATH, self.cfg)
        return None


def data_check_command(cfg):
    """The `vbench data check` command line for the run's data folder and clip list."""
    clip_list = f" --clip-list {cfg.DATA.CLIP_LIST}" if cfg.DATA.CLIP_LIST else ""
    return f"vbench data check {cfg.DATA.PATH_TO_DATA_DIR}{clip_list}"


def load_initial_weights(model, path, cfg):
    """Model weights only, from a vbench checkpoint or any format `load_weights` understands."""
    from vbench.engine.checkpoint import CheckpointError, load_checkpoint_file

    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint '{path}' (TRAIN.CHECKPOINT_FILE_PATH or "
                          f"TEST.CHECKPOINT_FILE_PATH) does not exist.")
    try:
        model.load_state_dict(load_checkpoint_file(path)["model"])
    except CheckpointError:
        from vbench.models.weights import load_weights

        load_weights(model, path, cfg.MODEL.WEIGHTS_FORMAT, cfg.MODEL.MODEL_NAME)
    get_logger().info(f"loaded weights from {path}")


def build_trainer(cfg, ctx, run_info=None, clock=None, **parts):
    """A trainer with the default hooks, resumed when a checkpoint exists.

    Rank 0 also gets the benchmark clock (with its heartbeat file) and the results.json writer.
    `clock` and `parts` (model, train_loader, val_loader) replace the built ones (tests).
    """
    from vbench.bench.clock import HEARTBEAT_FILE, BenchmarkClock
    from vbench.bench.results import RESULTS_FILE, ResultsWriter, world_block
    from vbench.data.layouts import write_class_names
    from vbench.engine.hooks import default_hooks

    run_info = run_info or {}
    trainer = Trainer(cfg, ctx, **parts)
    trainer.register_hooks(default_hooks(trainer))
    if ctx.is_main:
        trainer.clock = clock or BenchmarkClock(os.path.join(cfg.OUTPUT_DIR, HEARTBEAT_FILE),
                                                setup_started=run_info.get("setup_started"))
        trainer.results = ResultsWriter(
            os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE), cfg,
            world=world_block(cfg, ctx.device.type, trainer.precision),
            config_file=run_info.get("config_file") or "", command=run_info.get("command", ()),
            resolved=run_info.get("resolved"))
        write_class_names(trainer.train_loader.class_names, cfg.OUTPUT_DIR)
    trainer.resume_or_load()
    return trainer


def run_train(cfg, ctx, run_info=None):
    """Train (resuming when possible) and return the trainer."""
    trainer = build_trainer(cfg, ctx, run_info)
    if trainer.finished:
        trainer.logger.info(
            f"OUTPUT_DIR '{cfg.OUTPUT_DIR}' holds a finished run (epoch {trainer.start_epoch} of "
            f"{trainer.max_epoch}); nothing to train. Use a new OUTPUT_DIR (or TRAIN.AUTO_RESUME "
            f"False) to train again.")
    try:
        trainer.train()
    finally:
        trainer.close_loaders()
    return trainer
