"""`vbench preflight`: before a run, whether this machine's CPUs can feed its GPUs for the recipe,
measured in under two minutes (`run_preflight`).

With the run's config and resources ("auto" decided as a run decides it), in one process of the run
(one GPU with its share of the cores, or the CPU with the run's compute threads):

1. the training split's listing and a seeded sample of its videos, indexed (frame sizes, unreadable
   videos; the clips per epoch, estimated from the sample);
2. the training loader alone on the sample, with the run's workers: clips/s after the first batch,
   and the first batch's wait with fresh workers;
3. the real training step alone on random clips of the run's shape (after two untimed steps for
   autotuning);
4. the real training loop (`Trainer.run_epoch`) on the sample and the real evaluation (`Evaluator`)
   on a sample of the validation videos, one after the other, round after round as in the run: the
   loaders feeding the model (on a CPU they share the cores, and each loader's workers make their
   next first pieces while the other side runs, as in the run). The expected rates come from here.

`vbench.bench.forecast` turns the figures into the verdict, the expected epoch time and advice.
Each phase has a share of the time budget and stops early when it runs out.
"""
import math
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from vbench.bench.forecast import Measured, advice, forecast
from vbench.config import config_value, replace_values
from vbench.data.clip_list import index_files, restrict_to_clip_list
from vbench.data.loader import loader_from_index, modal_frame_size
from vbench.data.registry import get_dataset
from vbench.data.resources import cores_per_process, processes_per_node
from vbench.data.sampling import plan_from_cfg
from vbench.data.synthetic import ensure_synthetic
from vbench.engine.defaults import prepare_model
from vbench.engine.distributed import DistContext
from vbench.engine.evaluator import Evaluator
from vbench.engine.launch import check_data_dir, check_decoder, check_devices, configure_torch
from vbench.engine.precision import fastest_path
from vbench.engine.resources import model_family, resolve_resources
from vbench.engine.train_loop import Trainer
from vbench.engine.warmup import random_batch
from vbench.models import build_model

BUDGET_SHARES = {"loader": 0.2, "step": 0.2, "training": 0.5}  # the rest: probing


class Clock:
    """Seconds left of one phase's share of the budget."""

    def __init__(self, seconds):
        self.end = time.perf_counter() + seconds

    def left(self):
        return self.end - time.perf_counter()


def split_sample(cfg, split, training, count, seed):
    """(VideoInfos of a seeded sample of `count` videos of `split`, class names, videos listed)."""
    key = "TRAIN.DATASET" if training else "TEST.DATASET"
    entries, class_names = get_dataset(config_value(cfg, key), key)(cfg, split)
    files = restrict_to_clip_list(entries, class_names, cfg.DATA.PATH_TO_DATA_DIR, split, cfg.DATA.CLIP_LIST)
    listed = len(files.entries)
    order = np.random.default_rng(seed).permutation(listed)[:count]
    files.entries = [files.entries[i] for i in sorted(order)]
    infos = index_files(files, cache_dir=cfg.DATA.INDEX_CACHE_DIR,
                        num_workers=cfg.DATA_LOADER.INDEX_WORKERS, progress=False)
    return infos, files.class_names, listed


def sample_size(cfg, training, workers, batch):
    """Videos to sample: enough for 8 batches and 16 clips per worker, from a rough clips-per-video
    (windows plans: ~9 on 10 s videos), at least 8 and at most 512."""
    mode = cfg.TRAIN.SAMPLING if training else cfg.TEST.SAMPLING
    if mode == "windows":
        per_video = 9
    elif training:
        per_video = cfg.TRAIN.CLIPS_PER_VIDEO if mode == "random_clips" else 1
    else:
        per_video = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    clips = max(8 * batch, 16 * max(1, workers))
    return min(512, max(8, 2 * max(1, workers), math.ceil(clips / per_video)))


def drain(loader, ctx, clock, epoch):
    """One epoch of `loader`, each batch moved to the device: (clips after the first batch, seconds
    from then, seconds to the first batch). Stops early when `clock` runs out."""
    loader.set_epoch(epoch)
    start = time.perf_counter()
    first = clips = 0
    steady = start
    for index, batch in enumerate(loader):
        if ctx.device.type == "cuda":
            loader.to_device(batch, ctx.device)
        if index == 0:
            sync(ctx)
            steady = time.perf_counter()
            first = steady - start
        else:
            clips += int(batch["valid"].sum())
        if clock.left() <= 0 and index >= 2:
            break
    sync(ctx)
    return clips, time.perf_counter() - steady, first


def time_loader(loader, ctx, clock):
    """(clips/s after the first batch, the first batch's wait in the first epoch)."""
    clips, seconds, first = drain(loader, ctx, clock, epoch=0)
    epoch = 1
    while clock.left() > 0 and seconds < 3.0:  # a short sample: more epochs
        more, more_s, _ = drain(loader, ctx, clock, epoch=epoch)
        clips, seconds, epoch = clips + more, seconds + more_s, epoch + 1
    return (clips / seconds if seconds > 0 else 0.0), first


def train_step(trainer, ctx, clips, labels):
    """One optimizer step of the real trainer on this micro-batch, repeated TRAIN.ACCUM_STEPS times."""
    for index in range(trainer.accum_steps):
        trainer.forward_backward(clips, labels, sync=index == trainer.accum_steps - 1,
                                 scale=1.0 / trainer.accum_steps)
    trainer.optimizer_step()


def sync(ctx):
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


def time_step(trainer, cfg, ctx, clock):
    """Training clips/s of the step alone on random clips (two untimed steps first)."""
    generator = torch.Generator().manual_seed(0)
    clips, labels = random_batch(cfg, ctx, generator, training=True)
    clips, labels = clips.to(ctx.device), labels.to(ctx.device)
    for _ in range(2):
        train_step(trainer, ctx, clips, labels)
    sync(ctx)
    start, steps = time.perf_counter(), 0
    while steps < 3 or (clock.left() > 0 and time.perf_counter() - start < 5.0):
        train_step(trainer, ctx, clips, labels)
        sync(ctx)
        steps += 1
    return steps * len(labels) * trainer.accum_steps / (time.perf_counter() - start)


def time_training(trainer, evaluator, clock):
    """(training clips/s, data-wait share, evaluation clips/s) of the real training loop
    (`Trainer.run_epoch`, no hooks) and evaluation on the samples, one after the other as in the run
    (each side's workers make their next first pieces while the other runs): medians over the
    rounds after the first (whose start is cold), at least two rounds, more while `clock` lasts."""
    rates, waits, evaluations, epoch = [], [], [], 10  # epochs the training loader has not run yet
    while len(rates) < 2 or (clock.left() > 0 and len(rates) < 12):
        trainer.epoch = epoch
        trainer.run_epoch()
        sync(trainer.ctx)
        rates.append(trainer.meter.epoch_samples / trainer.wait_timer.total_s)
        waits.append(trainer.wait_timer.wait_fraction)
        result = evaluator.run(trainer.eval_model)
        evaluations.append(result["num_clips"] / result["eval_s"])
        epoch += 1
    return statistics.median(rates[1:]), statistics.median(waits[1:]), statistics.median(evaluations[1:])


def probe_config(cfg):
    """The config a run would use: checked, "auto" resolved, the synthetic data generated."""
    check_devices(cfg)
    check_decoder(cfg)
    check_data_dir(cfg)
    cfg, _ = resolve_resources(cfg)
    ensure_synthetic(cfg)
    return cfg


def run_preflight(cfg, budget_s=110.0, log=print):
    """Measure (see the module docstring); returns (Measured, forecast dict, advice list)."""
    started = time.perf_counter()
    cfg = probe_config(cfg)
    device = torch.device("cuda", 0) if cfg.NUM_GPUS > 0 else torch.device("cpu")
    ctx = DistContext(device=device)
    procs = processes_per_node(cfg) * cfg.NUM_SHARDS
    configure_torch(cfg, ctx, processes_per_node(cfg))
    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    batch = cfg.TRAIN.BATCH_SIZE // procs
    notes = []

    log("preflight: sampling the training videos ...")
    infos, classes, listed = split_sample(cfg, cfg.DATA.TRAIN_SPLIT, True, sample_size(cfg, True, workers, batch),
                                          cfg.RNG_SEED)
    readable = [i for i in infos if not getattr(i, "error", None)]
    if not readable:
        raise FileNotFoundError(f"none of the {len(infos)} sampled training videos of "
                                f"{cfg.DATA.PATH_TO_DATA_DIR} is readable; run `vbench data check`.")
    plan = plan_from_cfg(infos, cfg, training=True)
    size = modal_frame_size(readable)
    m = Measured(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 processes=procs, cores=cores_per_process(cfg), workers=workers, split_videos=listed,
                 sample_videos=len(infos), frame_size=size,
                 frame_size_share=sum((i.height, i.width) == size for i in readable) / len(readable),
                 unreadable=[(i.rel_path, i.error) for i in infos if getattr(i, "error", None)],
                 train_clips=round(len(plan.clips) / len(infos) * listed), notes=notes)
    budget = budget_s - (time.perf_counter() - started)

    log("preflight: sampling the validation videos ...")
    val_infos, val_classes, val_listed = split_sample(cfg, cfg.DATA.VAL_SPLIT, False,
                                                      sample_size(cfg, False, workers, batch), cfg.RNG_SEED)
    val_plan = plan_from_cfg(val_infos, cfg, training=False)
    m.eval_clips = round(len(val_plan.clips) / max(1, len(val_infos)) * val_listed)

    log(f"preflight: the training loader alone ({workers} workers, {len(infos)} videos) ...")
    loader = loader_from_index(cfg, infos, classes, training=True)
    val_loader = loader_from_index(cfg, val_infos, val_classes, training=False)
    try:
        m.loader, m.loader_first_batch_s = time_loader(loader, ctx, Clock(BUDGET_SHARES["loader"] * budget))
        with tempfile.TemporaryDirectory() as scratch:  # the Trainer's checkpoint folder, unused
            trainer = Trainer(replace_values(cfg, {"OUTPUT_DIR": scratch}), ctx,
                              prepare_model(build_model(cfg), cfg, ctx), loader, val_loader)
            log("preflight: the training step alone on random clips ...")
            m.step = time_step(trainer, cfg, ctx, Clock(BUDGET_SHARES["step"] * budget))
            log("preflight: the training loop and the evaluation on the samples ...")
            evaluator = Evaluator(val_loader, device, cfg.MODEL.NUM_CLASSES, trainer.autocast, show_progress=False)
            m.together, m.together_wait, m.eval = time_training(
                trainer, evaluator, Clock(BUDGET_SHARES["training"] * budget))
    finally:
        loader.close()
        val_loader.close()
    if cfg.NUM_GPUS > 1 or cfg.NUM_SHARDS > 1:
        notes.append(f"measured one process of {procs}; the forecast multiplies by {procs} "
                     f"(DDP's gradient exchange is not counted)")
    m.seconds = time.perf_counter() - started
    result = forecast(m, cfg.SOLVER.MAX_EPOCH, cfg.TRAIN.EVAL_PERIOD)
    path = fastest_path(model_family(cfg), device)
    tips = advice(m, cfg, result["side"], m.device, (path.precision, path.channels_last))
    return m, result, tips


def environment_note():
    """The machine's load, for the report: a loaded machine measures slower."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} logical CPUs"
