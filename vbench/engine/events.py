"""What training measured, and the writers that report it (detectron2's EventStorage + writers).

The loop and the hooks put values into one `EventStorage`; the writers read only from it, after a
step, after an epoch and at the end (hooks.WriterHook calls them):

    JsonStatsWriter     json_stats lines (SlowFast's format): train_iter, train_epoch, val_epoch
    ConsoleWriter       the epoch summary line
    TensorBoardWriter   TensorBoard scalars (train/*, epoch/*)
    ResultsJsonWriter   results.json (bench/results.py), and the closing summary
"""
import math

import torch

from vbench.bench.results import ResultsWriter
from vbench.engine.log import format_seconds, get_logger, log_json_stats


class EventStorage:
    """The run's measurements, shared by the loop, the hooks and the writers.

    - position, set by the loop: `epoch` (1-based, the epoch running), `max_epoch`, `iter` (steps
      done in the epoch), `iters_per_epoch`, `step` (steps done in the run);
    - scalars, put every LOG_PERIOD steps (`put_scalars`): `new_scalars()` returns them after the
      step that put them, and {} after any other step;
    - the epoch record (`put_epoch`): one row per epoch, filled by hooks, read after the epoch;
    - the bad videos the loaders reported during the epoch (`add_bad_videos`);
    - run facts (`put_run`): the dataset fingerprints, every bad training video so far, the page
      cache, the GPU telemetry, and `end_status` ("preempted") when a run stops without failing;
    - `failure`: the exception that ended training, or None.
    """

    def __init__(self):
        self.epoch = self.max_epoch = self.iter = self.iters_per_epoch = self.step = 0
        self._scalars, self._scalars_step = {}, None
        self.epoch_record = {}
        self.epoch_bad_videos = []
        self.run = {}
        self.failure = None

    def begin_epoch(self, epoch):
        self.epoch, self.iter = epoch, 0
        self.epoch_record = {"epoch": epoch}
        self.epoch_bad_videos = []

    def put_scalars(self, **values):
        self._scalars = dict(values)
        self._scalars_step = self.step

    def new_scalars(self):
        return dict(self._scalars) if self._scalars_step == self.step else {}

    def put_epoch(self, **fields):
        self.epoch_record.update(fields)

    def add_bad_videos(self, items):
        self.epoch_bad_videos.extend(items)

    def put_run(self, **facts):
        self.run.update(facts)


class EventWriter:
    """Reads the storage at four moments; override what you need."""

    def open(self, storage):
        """Before the first epoch: the run facts are in `storage.run`."""

    def write_step(self, storage):
        """After a step that put new scalars."""

    def write_epoch(self, storage):
        """After an epoch: `storage.epoch_record` is complete."""

    def close(self, storage):
        """After training, also a failed one (`storage.failure`)."""

    def state_dict(self):
        """What a checkpoint keeps of this writer ({key: plain value}), or {}."""
        return {}

    def load_state_dict(self, state):
        """Restore from a checkpoint dict (the whole dict: read your own keys)."""


class JsonStatsWriter(EventWriter):
    """`json_stats: {...}` lines on the console and in OUTPUT_DIR/json_stats.log."""

    def __init__(self, output_dir):
        self.output_dir = output_dir

    def write_step(self, storage):
        s = storage.new_scalars()
        line = {"_type": "train_iter", "epoch": f"{storage.epoch}/{storage.max_epoch}",
                "iter": f"{storage.iter}/{storage.iters_per_epoch}", "loss": s["loss"],
                "top1_err": 100.0 - s["top1"], "top5_err": 100.0 - s["top5"], "lr": s["lr"],
                "time_diff": s["time_diff"], "data_wait": s["data_wait"], "eta": format_seconds(s["eta_s"])}
        if s.get("gpu_mem_gib") is not None:
            line["gpu_mem"] = f"{s['gpu_mem_gib']:.2f}G"
        log_json_stats(line, self.output_dir)

    def write_epoch(self, storage):
        r = storage.epoch_record
        epoch = f"{storage.epoch}/{storage.max_epoch}"
        log_json_stats({"_type": "train_epoch", "epoch": epoch, "loss": r["loss"],
                        "top1_err": 100.0 - r["train_top1"], "top5_err": 100.0 - r["train_top5"],
                        "lr": r["lr"], "train_s": r["train_s"], "clips_per_s": r["clips_per_s"],
                        "data_wait": r["data_wait_fraction"], "data_wait_first10": r.get("data_wait_first10"),
                        "data_wait_rest": r.get("data_wait_rest"), "data_wait_by_rank": r["data_wait_by_rank"],
                        "loader_clips_per_s_by_rank": r["loader_clips_per_s_by_rank"],
                        "bad_videos": r["bad_videos"], "loader_restarts": r.get("loader_restarts", 0)},
                       self.output_dir)
        if r.get("clip_top1") is not None:
            log_json_stats({"_type": "val_epoch", "epoch": epoch, "clip_top1": r["clip_top1"],
                            "clip_top5": r["clip_top5"], "video_top1": r["video_top1"],
                            "video_top5": r["video_top5"], "eval_s": r["eval_s"],
                            "clock_s": r.get("clock_s")}, self.output_dir)


def loader_summary(waits, loader_rates, first=None, rest=None):
    """'data wait 12% (10-14% over 4 ranks; first 10 steps 40%, rest 5%), loader 240 clips/s'
    for the epoch summary line (`first`, `rest`: rank 0's shares, see EpochStatsHook)."""
    low, high = min(waits), max(waits)
    notes = [f"{100 * low:.0f}-{100 * high:.0f}% over {len(waits)} ranks"] if len(waits) > 1 else []
    if first is not None and rest is not None:
        notes.append(f"first 10 steps {100 * first:.0f}%, rest {100 * rest:.0f}%")
    spread = f" ({'; '.join(notes)})" if notes else ""
    text = f"data wait {100 * sum(waits) / len(waits):.0f}%{spread}"
    rates = [rate for rate in loader_rates if rate is not None]
    if rates:
        text += f", loader {sum(rates):.1f} clips/s while working"
    return text


class ConsoleWriter(EventWriter):
    """One summary line per epoch: training, data wait, evaluation and the clock."""

    def write_epoch(self, storage):
        r = storage.epoch_record
        loader = loader_summary(r["data_wait_by_rank"], r["loader_clips_per_s_by_rank"],
                                r.get("data_wait_first10"), r.get("data_wait_rest"))
        line = (f"epoch {storage.epoch}/{storage.max_epoch}: loss {r['loss']:.4f}, train top-1 "
                f"{r['train_top1']:.2f}, lr {r['lr']:.3g}, train {r['train_s']:.1f}s "
                f"({r['clips_per_s']:.1f} clips/s, {loader})")
        if r.get("clip_top1") is not None:
            line += (f"; val clip top-1 {r['clip_top1']:.2f}, video top-1 {r['video_top1']:.2f}, "
                     f"eval {r['eval_s']:.1f}s")
        if r.get("clock_s") is not None:
            line += f"; clock {format_seconds(r['clock_s'])}"
        if r.get("loader_restarts"):
            line += f"; {r['loader_restarts']} loader restart(s) after a worker died"
        get_logger().info(line)


class TensorBoardWriter(EventWriter):
    """TensorBoard scalars: train/* at every logged step, epoch/* after each epoch."""

    EPOCH_KEYS = ("loss", "train_top1", "clips_per_s", "data_wait_fraction", "data_wait_first10", "clip_top1",
                  "clip_top5", "video_top1", "video_top5")

    def __init__(self, summary_writer):
        self.writer = summary_writer  # torch.utils.tensorboard.SummaryWriter

    def write_step(self, storage):
        s = storage.new_scalars()
        self.writer.add_scalar("train/loss", s["loss"], storage.step)
        self.writer.add_scalar("train/top1", s["top1"], storage.step)
        self.writer.add_scalar("train/lr", s["lr"], storage.step)

    def write_epoch(self, storage):
        for key in self.EPOCH_KEYS:
            value = storage.epoch_record.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", value, storage.epoch)
        self.writer.flush()

    def close(self, storage):
        self.writer.close()


class ResultsJsonWriter(EventWriter):
    """results.json (rank 0): the epoch rows with the benchmark clock, the dataset and the bad
    videos; at the end the status and, for a finished run, the closing summary line."""

    ROW_KEYS = ("epoch", "clock_s", "train_s", "eval_s", "data_wait_fraction", "data_wait_first10",
                "data_wait_rest", "clips_per_s",
                "data_wait_by_rank", "loader_clips_per_s_by_rank",
                "loss", "lr", "clip_top1", "clip_top5", "video_top1", "video_top5", "bad_videos", "telemetry",
                "loader_restarts")
    OPTIONAL_ROW_KEYS = ("loader_restarts",)  # left out of a row when no hook put them

    def __init__(self, results: ResultsWriter, clock, device):
        self.results, self.clock, self.device = results, clock, device

    BLOCKS = ("data_cache", "telemetry")  # run facts written as results.json blocks of the same name

    def open(self, storage):
        self.write_blocks(storage)
        if "warmup_s" in storage.run:
            self.results.set_warmup(storage.run["warmup_s"])
        if "dataset" in storage.run:
            self.results.set_dataset(storage.run["dataset"])
        if "bad_videos" in storage.run:
            self.results.set_bad_videos(train=sorted(storage.run["bad_videos"].items()))
        if "loader_restarts" in storage.run:
            self.results.set_loader_restarts(storage.run["loader_restarts"])

    def write_blocks(self, storage):
        for name in self.BLOCKS:
            if name in storage.run:
                self.results.set_block(name, storage.run[name])

    def write_epoch(self, storage):
        record = storage.epoch_record
        self.write_blocks(storage)
        row = {key: record.get(key) for key in self.ROW_KEYS
               if key in record or key not in self.OPTIONAL_ROW_KEYS}
        if "loader_restarts" in storage.run:
            self.results.set_loader_restarts(storage.run["loader_restarts"], write=False)
        self.results.add_epoch(row, self.clock)
        excluded = record.get("eval_excluded")
        self.results.set_bad_videos(train=sorted(storage.run.get("bad_videos", {}).items()),
                                    eval_excluded=[(e["path"], e["reason"]) for e in excluded]
                                    if excluded is not None else None)

    def close(self, storage):
        self.open(storage)  # training may have failed before the writers opened
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        status = storage.run.get("end_status") or ("failed" if storage.failure is not None else None)
        self.results.finish(status, clock=self.clock, peak_gpu_memory_gib=peak)
        if storage.failure is None:
            get_logger().info("summary: " + "; ".join(summary_lines(self.results)))

    def state_dict(self):
        return {"results": self.results.state_dict()}

    def load_state_dict(self, state):
        if state.get("results") is not None:
            self.results.load_state_dict(state["results"])


def summary_lines(results):
    """The closing summary of a finished run, from its results.json data."""
    data = results.data
    bench = data["benchmark"]
    best = max((r["clip_top1"] for r in data["epochs"] if r["clip_top1"] is not None), default=float("nan"))
    lines = [f"{len(data['epochs'])} epoch(s), best clip top-1 {best:.2f}",
             f"set-up {bench['setup_s']:.1f} s (untimed), clock total {bench['total_time_s']:.1f} s"]
    if bench["target_top1"] > 0:
        goal = f"{bench['metric']} top-1 >= {bench['target_top1']:.2f}"
        lines.append(f"time to target ({goal}): {bench['time_to_target_s']:.1f} s at epoch "
                     f"{bench['epochs_to_target']}" if bench["reached"] else f"target ({goal}) NOT reached")
    lines.append(f"results in {results.path}")
    return lines
