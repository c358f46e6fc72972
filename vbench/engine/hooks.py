"""Hooks: each periodic concern of training in its own small class (detectron2 style).

A hook sees the trainer as `self.trainer` and may implement before_train, before_epoch,
before_step, after_step, after_epoch and after_train. `default_hooks` lists them in the order
that matters: evaluation decides the target (and stops the clock), results.json records the
epoch, and only then does the checkpoint save the clock and the results state.
"""
import math

import torch

from vbench.engine import distributed as du
from vbench.engine.log import format_seconds, get_logger, log_json_stats, progress_bar
from vbench.engine.meters import check_finite


class HookBase:
    trainer = None

    def before_train(self):
        pass

    def before_epoch(self):
        pass

    def before_step(self):
        pass

    def after_step(self):
        pass

    def after_epoch(self):
        pass

    def after_train(self):
        pass


class LRScheduleHook(HookBase):
    """Writes the schedule's rate into the optimizer: once per epoch or before every step."""

    def before_step(self):
        from vbench.engine.optimizer import set_lr

        t = self.trainer
        if t.schedule.step_unit == "iteration" or t.iter == 0:
            set_lr(t.optimizer, t.schedule.lr_at(t.epoch + t.iter / t.iters_per_epoch))


class ProgressLogger(HookBase):
    """tqdm bar on rank 0; every LOG_PERIOD iterations reads the meters (the only sync),
    stops on a NaN/inf loss, and prints a `train_iter` json_stats line."""

    def __init__(self, log_period):
        self.log_period = log_period
        self.bar = None
        self.window_stats = None  # the last read, for other hooks (TensorBoard)

    def before_epoch(self):
        t = self.trainer
        self.bar = progress_bar(t.iters_per_epoch, f"epoch {t.epoch + 1}/{t.max_epoch}",
                                enabled=t.ctx.is_main)

    def after_step(self):
        t = self.trainer
        self.bar.update(1)
        self.window_stats = None
        if (t.iter + 1) % self.log_period and t.iter + 1 != t.iters_per_epoch:
            return
        stats = t.meter.read_window()
        check_finite(stats["loss"], f"epoch {t.epoch + 1}, iteration {t.iter + 1}")
        if t.clock is not None:
            t.clock.beat()
        wait = t.wait_timer.wait_fraction
        self.window_stats = stats
        self.bar.set_postfix(loss=f"{stats['loss']:.3f}", data_wait=f"{100 * wait:.0f}%")
        if t.ctx.is_main:
            log_json_stats(self._iter_stats(stats, wait), t.output_dir)

    def _iter_stats(self, stats, wait):
        t = self.trainer
        done_iters = t.iter + 1
        per_iter = t.wait_timer.total_s / done_iters
        remaining = (t.max_epoch - t.epoch - 1) * t.iters_per_epoch + t.iters_per_epoch - done_iters
        line = {"_type": "train_iter", "epoch": f"{t.epoch + 1}/{t.max_epoch}",
                "iter": f"{done_iters}/{t.iters_per_epoch}", "loss": stats["loss"],
                "top1_err": 100.0 - stats["top1"], "top5_err": 100.0 - stats["top5"],
                "lr": t.current_lr(), "time_diff": per_iter, "data_wait": wait,
                "eta": format_seconds(per_iter * remaining)}
        if t.ctx.device.type == "cuda":
            line["gpu_mem"] = f"{torch.cuda.max_memory_allocated(t.ctx.device) / 2**30:.2f}G"
        return line

    def after_epoch(self):
        self.bar.close()

    def after_train(self):
        if self.bar is not None:
            self.bar.close()


class PreciseBNHook(HookBase):
    """Recomputes BN statistics on training batches before each evaluation (fvcore precise BN)."""

    def __init__(self, num_batches):
        self.num_batches = num_batches

    def after_epoch(self):
        from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

        t = self.trainer
        if not t.is_eval_epoch() or not get_bn_modules(t.bare_model):
            return
        loader = t.train_loader

        def clips():
            for batch in loader:
                yield loader.to_device(batch, t.ctx.device)[0]

        num = min(self.num_batches, len(loader))
        with t.autocast():
            update_bn_stats(t.bare_model, clips(), num_iters=num)
        du.average_buffers(t.bare_model, lambda name: "running_" in name)


class EvalHook(HookBase):
    """Evaluates every TRAIN.EVAL_PERIOD epochs (and after the last) and checks the target.

    The benchmark clock stops at the end of the first evaluation whose metric reaches
    BENCHMARK.TARGET_TOP1; with STOP_AT_TARGET the run ends there. An evaluation that left out more
    validation videos than DATA.MAX_VAL_EXCLUDED_FRACTION allows stops the run before it can count.
    """

    def __init__(self, evaluator, cfg):
        self.evaluator = evaluator
        self.cfg = cfg
        self.last_result = None

    def after_epoch(self):
        from vbench.bench.results import target_reached

        t = self.trainer
        record = t.record
        record.update(clip_top1=None, clip_top5=None, video_top1=None, video_top5=None, eval_s=None)
        self.last_result = None
        if not t.is_eval_epoch():
            return
        result = self.evaluator.run(t.eval_model, desc=f"eval {t.epoch + 1}/{t.max_epoch}")
        self.last_result = result
        for key in ("clip_top1", "clip_top5", "video_top1", "video_top5", "eval_s"):
            record[key] = result[key]
        record["eval_excluded"] = result["excluded"]
        t.check_left_out({item["path"]: item["reason"] for item in result["excluded"]}, validation=True)
        if not t.target_reached and target_reached(result, self.cfg):
            self._on_target(result)

    def _on_target(self, result):
        t, bench = self.trainer, self.cfg.BENCHMARK
        if t.clock is not None:
            t.clock.stop()
        t.target_reached = True
        value = result[f"{bench.METRIC}_top1"]
        elapsed = f"; time to target {format_seconds(t.clock.elapsed())}" if t.clock is not None else ""
        get_logger().info(f"target {bench.METRIC} top-1 >= {bench.TARGET_TOP1:.2f} reached at epoch "
                          f"{t.epoch + 1} ({value:.2f}){elapsed}")
        if bench.STOP_AT_TARGET:
            t.stop_requested = True


class ResultsHook(HookBase):
    """Closes the epoch's record with the benchmark clock and writes results.json (rank 0)."""

    ROW_KEYS = ("epoch", "clock_s", "train_s", "eval_s", "data_wait_fraction", "clips_per_s",
                "data_wait_by_rank", "loader_clips_per_s_by_rank",
                "loss", "lr", "clip_top1", "clip_top5", "video_top1", "video_top5", "bad_videos")

    def after_epoch(self):
        t = self.trainer
        if t.results is None:
            return
        # the running clock, not the frozen time to target, so rows after the target still plot in time
        t.record["clock_s"] = t.clock.total_s()
        t.results.add_epoch({key: t.record.get(key) for key in self.ROW_KEYS}, t.clock)
        excluded = t.record.get("eval_excluded")
        t.results.set_bad_videos(train=sorted(t.bad_videos.items()),
                                 eval_excluded=[(e["path"], e["reason"]) for e in excluded]
                                 if excluded is not None else None)

    def after_train(self):
        t = self.trainer
        if t.results is None:
            return
        peak = None
        if t.ctx.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(t.ctx.device) / 2**30
        t.results.finish("failed" if t.failure is not None else None, clock=t.clock,
                         peak_gpu_memory_gib=peak)


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


def loader_summary(waits, loader_rates):
    """'data wait 12% (10-14% over 4 ranks), loader 240 clips/s' for the epoch summary line."""
    low, high = min(waits), max(waits)
    spread = f" ({100 * low:.0f}-{100 * high:.0f}% over {len(waits)} ranks)" if len(waits) > 1 else ""
    text = f"data wait {100 * sum(waits) / len(waits):.0f}%{spread}"
    rates = [rate for rate in loader_rates if rate is not None]
    if rates:
        text += f", loader {sum(rates):.1f} clips/s while working"
    return text


class EpochSummaryHook(HookBase):
    """json_stats `train_epoch` / `val_epoch` lines, an epoch summary and the closing summary."""

    def after_epoch(self):
        t = self.trainer
        if not t.ctx.is_main:
            return
        r = t.record
        epoch = f"{t.epoch + 1}/{t.max_epoch}"
        log_json_stats({"_type": "train_epoch", "epoch": epoch, "loss": r["loss"],
                        "top1_err": 100.0 - r["train_top1"], "top5_err": 100.0 - r["train_top5"],
                        "lr": r["lr"], "train_s": r["train_s"], "clips_per_s": r["clips_per_s"],
                        "data_wait": r["data_wait_fraction"], "data_wait_by_rank": r["data_wait_by_rank"],
                        "loader_clips_per_s_by_rank": r["loader_clips_per_s_by_rank"],
                        "bad_videos": r["bad_videos"]}, t.output_dir)
        line = (f"epoch {epoch}: loss {r['loss']:.4f}, train top-1 {r['train_top1']:.2f}, "
                f"lr {r['lr']:.3g}, train {r['train_s']:.1f}s ({r['clips_per_s']:.1f} clips/s, "
                f"{loader_summary(r['data_wait_by_rank'], r['loader_clips_per_s_by_rank'])})")
        if r["clip_top1"] is not None:
            log_json_stats({"_type": "val_epoch", "epoch": epoch, "clip_top1": r["clip_top1"],
                            "clip_top5": r["clip_top5"], "video_top1": r["video_top1"],
                            "video_top5": r["video_top5"], "eval_s": r["eval_s"],
                            "clock_s": r.get("clock_s")}, t.output_dir)
            line += (f"; val clip top-1 {r['clip_top1']:.2f}, video top-1 {r['video_top1']:.2f}, "
                     f"eval {r['eval_s']:.1f}s")
        if r.get("clock_s") is not None:
            line += f"; clock {format_seconds(r['clock_s'])}"
        get_logger().info(line)

    def after_train(self):
        t = self.trainer
        if t.results is None or t.failure is not None:
            return
        data = t.results.data
        bench = data["benchmark"]
        best = max((r["clip_top1"] for r in data["epochs"] if r["clip_top1"] is not None),
                   default=float("nan"))
        lines = [f"{len(data['epochs'])} epoch(s), best clip top-1 {best:.2f}",
                 f"set-up {bench['setup_s']:.1f} s (untimed), clock total {bench['total_time_s']:.1f} s"]
        if bench["target_top1"] > 0:
            goal = f"{bench['metric']} top-1 >= {bench['target_top1']:.2f}"
            lines.append(f"time to target ({goal}): {bench['time_to_target_s']:.1f} s at epoch "
                         f"{bench['epochs_to_target']}" if bench["reached"] else f"target ({goal}) NOT reached")
        lines.append(f"results in {t.results.path}")
        get_logger().info("summary: " + "; ".join(lines))


class TensorBoardHook(HookBase):
    """TensorBoard scalars on rank 0; skipped with a warning when tensorboard is not installed."""

    def __init__(self, log_dir, progress_logger):
        self.log_dir = log_dir
        self.progress = progress_logger
        self.writer = None

    def before_train(self):
        if not self.trainer.ctx.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            get_logger().warning("TENSORBOARD.ENABLE is on but tensorboard is not installed "
                                 "(pip install tensorboard); continuing without it.")
            return
        self.writer = SummaryWriter(log_dir=self.log_dir)

    def after_step(self):
        stats = self.progress.window_stats
        if self.writer is None or stats is None:
            return
        t = self.trainer
        step = t.epoch * t.iters_per_epoch + t.iter + 1
        self.writer.add_scalar("train/loss", stats["loss"], step)
        self.writer.add_scalar("train/top1", stats["top1"], step)
        self.writer.add_scalar("train/lr", t.current_lr(), step)

    def after_epoch(self):
        if self.writer is None:
            return
        r, epoch = self.trainer.record, self.trainer.epoch + 1
        for key in ("loss", "train_top1", "clips_per_s", "data_wait_fraction", "clip_top1",
                    "clip_top5", "video_top1", "video_top5"):
            value = r.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.writer.flush()

    def after_train(self):
        if self.writer is not None:
            self.writer.close()


def default_hooks(trainer):
    """The standard hook list, in order (see the module docstring)."""
    import os

    from vbench.engine.evaluator import Evaluator

    cfg, ctx = trainer.cfg, trainer.ctx
    progress = ProgressLogger(cfg.LOG_PERIOD)
    hooks = [LRScheduleHook(), progress]
    if cfg.TRAIN.PRECISE_BN:
        hooks.append(PreciseBNHook(cfg.TRAIN.NUM_BATCHES_PRECISE))
    evaluator = Evaluator(trainer.val_loader, ctx.device, cfg.MODEL.NUM_CLASSES, trainer.autocast,
                          show_progress=ctx.is_main)
    hooks += [EvalHook(evaluator, cfg), ResultsHook(), EpochSummaryHook(),
              CheckpointHook(cfg.TRAIN.CHECKPOINT_PERIOD)]
    if cfg.TENSORBOARD.ENABLE:
        log_dir = cfg.TENSORBOARD.LOG_DIR or os.path.join(cfg.OUTPUT_DIR, "tensorboard")
        hooks.append(TensorBoardHook(log_dir, progress))
    return hooks
