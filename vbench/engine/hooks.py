"""Hooks: each periodic concern of training in its own small class (detectron2 style).

A hook reads the trainer (`self.trainer`, see train_loop.HookBase) and puts what it measures into
`trainer.storage`; writers (events.py) report it. `defaults.default_hooks` gives the order that
matters: statistics and evaluation fill the epoch record, the clock stops at the target and
stamps the epoch, the writers write it, and only then does the checkpoint save the state.
"""
import math
import warnings

import torch

with warnings.catch_warnings():  # importing fvcore.nn scripts a function: deprecated in torch 2.10+
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

from vbench.bench.results import target_reached
from vbench.data.dataset import check_bad_fraction
from vbench.engine import distributed as du
from vbench.engine.log import format_seconds, get_logger, progress_bar
from vbench.engine.meters import check_finite
from vbench.engine.optimizer import set_lr
from vbench.engine.train_loop import HookBase


class LRScheduleHook(HookBase):
    """Writes the schedule's rate into the optimizer: once per epoch or before every step."""

    def before_step(self):
        t = self.trainer
        if t.schedule.step_unit == "iteration" or t.iter == 0:
            set_lr(t.optimizer, t.schedule.lr_at(t.epoch + t.iter / t.iters_per_epoch))


class ProgressHook(HookBase):
    """A tqdm bar on rank 0; every LOG_PERIOD steps reads the meters (the only sync of the step
    loop), stops on a NaN/inf loss and puts the step's scalars into the storage."""

    def __init__(self, log_period):
        self.log_period = log_period
        self.bar = None

    def before_epoch(self):
        t = self.trainer
        self.bar = progress_bar(t.iters_per_epoch, f"epoch {t.epoch + 1}/{t.max_epoch}",
                                enabled=t.ctx.is_main)

    def after_step(self):
        t = self.trainer
        self.bar.update(1)
        done = t.iter + 1
        if done % self.log_period and done != t.iters_per_epoch:
            return
        stats = t.meter.read_window()
        check_finite(stats["loss"], f"epoch {t.epoch + 1}, iteration {done}")
        wait = t.wait_timer.wait_fraction
        per_iter = t.wait_timer.total_s / done
        remaining = (t.max_epoch - t.epoch) * t.iters_per_epoch - done
        gpu_mem = (torch.cuda.max_memory_allocated(t.ctx.device) / 2**30
                   if t.ctx.device.type == "cuda" else None)
        t.storage.put_scalars(loss=stats["loss"], top1=stats["top1"], top5=stats["top5"],
                              lr=t.current_lr(), time_diff=per_iter, data_wait=wait,
                              eta_s=per_iter * remaining, gpu_mem_gib=gpu_mem)
        self.bar.set_postfix(loss=f"{stats['loss']:.3f}", data_wait=f"{100 * wait:.0f}%")

    def after_epoch(self):
        self.bar.close()

    def after_train(self):
        if self.bar is not None:
            self.bar.close()


class EpochStatsHook(HookBase):
    """The epoch's training statistics over every process (the epoch-end sync): loss, top-1/5,
    clips/s, the data-wait share and the loader's rate of each rank; rank 0's data-wait share of
    the epoch's first FIRST_STEPS steps and of the rest apart, so that a slow start shows."""

    FIRST_STEPS = 10

    def after_step(self):
        if self.trainer.iter + 1 == self.FIRST_STEPS:
            self.trainer.wait_timer.mark_first_steps()

    def after_epoch(self):
        t = self.trainer
        train_s = t.wait_timer.total_s
        stats = t.meter.read_epoch()
        check_finite(stats["loss"], f"epoch {t.epoch + 1}")
        wait = t.wait_timer.wait_fraction
        clips, waits, loader_rates = self.gather_counts(wait)
        t.storage.put_epoch(train_s=train_s, data_wait_fraction=wait,
                            clips_per_s=clips / train_s if train_s > 0 else 0.0,
                            data_wait_first10=t.wait_timer.first_steps_fraction,
                            data_wait_rest=t.wait_timer.rest_fraction,
                            data_wait_by_rank=waits, loader_clips_per_s_by_rank=loader_rates,
                            loss=stats["loss"], train_top1=stats["top1"], train_top5=stats["top5"],
                            lr=t.current_lr())

    def gather_counts(self, wait):
        """(clips over all ranks, data-wait share per rank, loader clips/s per rank) in one
        all-reduce: each rank writes its own slots of a zeroed vector."""
        t = self.trainer
        world, rank = t.ctx.world_size, t.ctx.rank
        rate = t.train_loader.loader_clips_per_s()
        counts = torch.zeros(1 + 2 * world, dtype=torch.float64, device=t.ctx.device)
        counts[0] = float(t.meter.epoch_samples)
        counts[1 + rank] = wait
        counts[1 + world + rank] = float("nan") if rate is None else rate
        values = du.all_reduce_sum(counts).tolist()
        rates = [value if math.isfinite(value) else None for value in values[1 + world:]]
        return values[0], values[1:1 + world], rates


def data_check_command(cfg):
    """The `vbench data check` command line for the run's data folder and clip list."""
    clip_list = f" --clip-list {cfg.DATA.CLIP_LIST}" if cfg.DATA.CLIP_LIST else ""
    return f"vbench data check {cfg.DATA.PATH_TO_DATA_DIR}{clip_list}"


def check_left_out(cfg, loader, left_out, validation=False):
    """Stop (TooManyBadVideos) when the videos left out ({path: reason}) of the training (or
    validation) split exceed DATA.MAX_BAD_FRACTION (or DATA.MAX_VAL_EXCLUDED_FRACTION)."""
    if validation:
        bound = (cfg.DATA.MAX_VAL_EXCLUDED_FRACTION, "DATA.MAX_VAL_EXCLUDED_FRACTION", "validation videos")
    else:
        bound = (cfg.DATA.MAX_BAD_FRACTION, "DATA.MAX_BAD_FRACTION", "training videos")
    check_bad_fraction(left_out, loader.num_videos, *bound, data_check_command(cfg))


class DataCheckHook(HookBase):
    """The data a run uses, checked before the clock starts and after every epoch.

    Before training: records the dataset fingerprints (rank 0) and stops when more videos are left
    out (missing from the clip list, unreadable when indexed) than DATA.MAX_BAD_FRACTION (training)
    or DATA.MAX_VAL_EXCLUDED_FRACTION (validation) allow. After each epoch: merges the training
    videos that failed to decode over the processes, warns once per video, counts them in the
    epoch record and applies the same limit to all the training videos left out so far.
    """

    def __init__(self):
        self.bad_videos = {}  # rel_path -> reason, over the whole run (saved in checkpoints)

    def before_train(self):
        t = self.trainer
        train, val, data = t.train_loader, t.val_loader, t.cfg.DATA
        self.bad_videos = {**dict(train.index_excluded), **self.bad_videos}
        if t.ctx.is_main:
            dataset = {data.TRAIN_SPLIT: train.fingerprint()}
            dataset.setdefault(data.VAL_SPLIT, val.fingerprint())  # one split for both: the training plan's
            t.storage.put_run(dataset=dataset)
        t.storage.put_run(bad_videos=dict(self.bad_videos))
        check_left_out(t.cfg, train, self.bad_videos)
        check_left_out(t.cfg, val, dict(val.index_excluded), validation=True)

    def after_epoch(self):
        t = self.trainer
        merged = {}
        for items in du.all_gather_objects(list(t.storage.epoch_bad_videos)):
            merged.update({path: reason for path, reason in items})
        for path, reason in sorted(merged.items()):
            if path not in self.bad_videos:
                get_logger().warning(f"unreadable training video skipped: {path} ({reason})")
        self.bad_videos.update(merged)
        t.storage.put_epoch(bad_videos=len(merged))
        t.storage.put_run(bad_videos=dict(self.bad_videos))
        check_left_out(t.cfg, t.train_loader, self.bad_videos)

    def state_dict(self):
        return {"bad_videos": dict(self.bad_videos)}

    def load_state_dict(self, state):
        self.bad_videos = dict(state["bad_videos"])


class PreciseBNHook(HookBase):
    """Recomputes BN statistics on training batches before each evaluation (fvcore precise BN)."""

    def __init__(self, num_batches):
        self.num_batches = num_batches

    def after_epoch(self):
        t = self.trainer
        if not t.is_eval_epoch() or not get_bn_modules(t.bare_model):
            return
        loader = t.train_loader

        def clips():
            for batch in loader:
                yield loader.to_device(batch, t.ctx.device)[0]

        with t.autocast():
            update_bn_stats(t.bare_model, clips(), num_iters=min(self.num_batches, len(loader)))
        du.average_buffers(t.bare_model, lambda name: "running_" in name)


class EvalHook(HookBase):
    """Evaluates every TRAIN.EVAL_PERIOD epochs (and after the last) and checks the target.

    The benchmark clock stops at the end of the first evaluation whose metric reaches
    BENCHMARK.TARGET_TOP1; with STOP_AT_TARGET the run ends there. An evaluation that left out more
    validation videos than DATA.MAX_VAL_EXCLUDED_FRACTION allows stops the run before it can count.
    """

    METRICS = ("clip_top1", "clip_top5", "video_top1", "video_top5", "eval_s")

    def __init__(self, evaluator, cfg, clock=None):
        self.evaluator, self.cfg, self.clock = evaluator, cfg, clock
        self.target_reached = False  # saved in checkpoints

    def after_epoch(self):
        t = self.trainer
        t.storage.put_epoch(**dict.fromkeys(self.METRICS))
        if not t.is_eval_epoch():
            return
        result = self.evaluator.run(t.eval_model, desc=f"eval {t.epoch + 1}/{t.max_epoch}")
        t.storage.put_epoch(**{key: result[key] for key in self.METRICS}, eval_excluded=result["excluded"])
        excluded = {item["path"]: item["reason"] for item in result["excluded"]}
        check_left_out(self.cfg, t.val_loader, excluded, validation=True)
        if not self.target_reached and target_reached(result, self.cfg):
            self.on_target(result)

    def on_target(self, result):
        t, bench = self.trainer, self.cfg.BENCHMARK
        if self.clock is not None:
            self.clock.stop()
        self.target_reached = True
        value = result[f"{bench.METRIC}_top1"]
        elapsed = f"; time to target {format_seconds(self.clock.elapsed())}" if self.clock is not None else ""
        get_logger().info(f"target {bench.METRIC} top-1 >= {bench.TARGET_TOP1:.2f} reached at epoch "
                          f"{t.epoch + 1} ({value:.2f}){elapsed}")
        if bench.STOP_AT_TARGET:
            t.stop_requested = True

    def state_dict(self):
        return {"target_reached": self.target_reached}

    def load_state_dict(self, state):
        self.target_reached = state["target_reached"]


class ClockHook(HookBase):
    """The benchmark clock (rank 0; bench/clock.py): started just before the first training batch
    is requested, a heartbeat at every logged step, and the clock value stamped on each epoch."""

    def __init__(self, clock):
        self.clock = clock
        self.started = False

    def before_epoch(self):
        if not self.started:
            self.clock.start()
            self.started = True

    def after_step(self):
        if self.trainer.storage.new_scalars():  # a logged step: the device has caught up
            self.clock.beat()

    def after_epoch(self):
        # the running clock, not the frozen time to target, so rows after the target still plot in time
        self.trainer.storage.put_epoch(clock_s=self.clock.total_s())

    def state_dict(self):
        return {"clock": self.clock.state_dict()}

    def load_state_dict(self, state):
        if state.get("clock") is not None:
            self.clock.load_state_dict(state["clock"])


class WriterHook(HookBase):
    """Calls the writers (events.py) when there is something new: scalars, an epoch, the end."""

    def __init__(self, writers):
        self.writers = list(writers)

    def before_train(self):
        for writer in self.writers:
            writer.open(self.trainer.storage)

    def after_step(self):
        storage = self.trainer.storage
        if storage.new_scalars():
            for writer in self.writers:
                writer.write_step(storage)

    def after_epoch(self):
        for writer in self.writers:
            writer.write_epoch(self.trainer.storage)

    def after_train(self):
        for writer in self.writers:
            writer.close(self.trainer.storage)

    def state_dict(self):
        state = {}
        for writer in self.writers:
            state.update(writer.state_dict())
        return state

    def load_state_dict(self, state):
        for writer in self.writers:
            writer.load_state_dict(state)


class CheckpointHook(HookBase):
    """Saves every TRAIN.CHECKPOINT_PERIOD epochs, after the last epoch and when stopping."""

    def __init__(self, period):
        self.period = period

    def after_epoch(self):
        t = self.trainer
        done = t.epoch + 1
        if done % self.period and done != t.max_epoch and not t.stop_requested:
            return
        state = t.state_dict()  # a collective: every process takes part
        path = t.checkpointer.save(state, done)
        du.barrier()
        if path:
            get_logger().info(f"saved checkpoint {path}")
