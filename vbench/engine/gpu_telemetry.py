"""The GPU telemetry hook: sampling on each node, per-epoch means and energy to target on rank 0
(docs/PROTOCOL.md, "Telemetry and energy"; the sampling and the arithmetic: bench/telemetry.py).

The first process of each node samples its node's GPUs once a second from the clock's start; after
each epoch (and inside every checkpoint, so that a resumed run keeps them) every node's samples of
the interval are reduced to per-GPU statistics and gathered to rank 0, which puts the epoch's means
into the epoch record and the run's totals (up to the evaluation that reached the target) into
results.json's `telemetry`. A CPU run, a machine without a driver or without nvidia-ml-py records
why the block is absent; nothing fails.
"""
import os
import socket

import torch

from vbench.bench.results import target_reached
from vbench.bench.telemetry import (
    TelemetrySampler,
    absent_block,
    epoch_fields,
    merge,
    open_reader,
    series_points,
    summarize,
    telemetry_block,
)
from vbench.engine import distributed as du
from vbench.engine.log import get_logger
from vbench.engine.train_loop import HookBase

INTERVAL_S = 1.0


def node_devices(cfg):
    """[(cuda index, NVML uuid or None)] of the GPUs this node's processes use (0 .. n-1)."""
    count = int(os.environ.get("LOCAL_WORLD_SIZE", cfg.NUM_GPUS))
    devices = []
    for index in range(count):
        uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
        devices.append((index, uuid if uuid.startswith("GPU-") or not uuid else f"GPU-{uuid}"))
    return devices


class TelemetryHook(HookBase):
    """Samples the GPUs (node leaders) and reports per epoch and to the target (rank 0).

    Register it after ClockHook (the sampler starts with the clock) and after EvalHook (an
    epoch whose evaluation reached the target closes the energy to target)."""

    def __init__(self, cfg, clock=None, interval_s=INTERVAL_S, reader=None):
        """`reader`: what to sample instead of NVML (an object like bench.telemetry.NvmlReader),
        on any device: tests on a machine without a GPU."""
        self.cfg, self.clock, self.interval_s = cfg, clock, interval_s
        self.active = False  # sampling: the collectives below take place
        self.reader, self.sampler = reader, None
        self.totals, self.partial, self.series = {}, {}, {}  # rank 0: {gpu: statistics}, {gpu: lists}
        self.names, self.notes, self.driver = {}, [], None
        self.reached, self.attempt, self.offset_s = False, 0, 0.0

    # ------------------------------------------------------------------ stages
    def before_train(self):
        t = self.trainer
        if t.finished:
            return
        if t.ctx.device.type != "cuda" and self.reader is None:
            if t.ctx.is_main:
                t.storage.put_run(telemetry=absent_block("no GPU: the run is on the CPU (NUM_GPUS 0)"))
            return
        self.active = True
        self.attempt += 1
        self.offset_s = du.broadcast_object(self.clock.total_s() if self.clock is not None else 0.0)
        statuses = [s for s in du.all_gather_objects(self.open_node() if t.ctx.local_rank == 0 else None) if s]
        for s in statuses:
            self.names.update(s.get("names", {}))
            self.driver = self.driver or s.get("driver")
        missing = [s["reason"] for s in statuses if s["reason"]]
        self.notes = [f"a node without telemetry: {reason}" for reason in missing]
        if t.ctx.is_main:
            if len(missing) == len(statuses):
                get_logger().info(f"GPU telemetry off: {missing[0]}")
                t.storage.put_run(telemetry=absent_block(missing[0]))
            else:
                t.storage.put_run(telemetry=self.block())

    def before_epoch(self):
        if self.sampler is not None and self.sampler.thread is None:
            self.sampler.start(self.offset_s, self.attempt)

    def after_epoch(self):
        if not self.active:
            return
        t = self.trainer
        per_gpu = merge(self.partial, self.gather_interval())
        self.partial = {}
        if t.ctx.is_main:
            t.storage.put_epoch(telemetry=epoch_fields(per_gpu))
        if not self.reached:
            self.totals = merge(self.totals, per_gpu)
            self.reached = target_reached(t.storage.epoch_record, self.cfg)  # the same on every rank
        if t.ctx.is_main and self.names:
            t.storage.put_run(telemetry=self.block())

    def after_train(self):
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    # ------------------------------------------------------------------ helpers
    def open_node(self):
        """This node's sampler over NVML (or the given reader); its status for rank 0."""
        reason = None
        if self.reader is None:
            self.reader, reason = open_reader(node_devices(self.cfg), socket.gethostname())
        if self.reader is None:
            return {"reason": reason}
        self.sampler = TelemetrySampler(self.reader, self.interval_s)
        return {"reason": None, "names": self.reader.names, "driver": self.reader.driver}

    def gather_interval(self):
        """Rank 0: {gpu: statistics} of every node's samples since the last cut (a collective);
        other ranks: {}. Their bucketed series go into `self.series`."""
        samples = self.sampler.cut() if self.sampler is not None else []
        local = (summarize(samples), series_points(samples)) if samples else None
        gathered = [part for part in du.all_gather_objects(local) if part is not None]
        if not self.trainer.ctx.is_main:
            return {}
        for _, series in gathered:
            for gpu, lists in series.items():
                into = self.series.setdefault(gpu, {key: [] for key in lists})
                for key, values in lists.items():
                    into[key].extend(values)
        return merge(*(stats for stats, _ in gathered))

    def block(self):
        return telemetry_block(self.totals, self.names, self.series, self.reached, self.driver,
                               self.interval_s, self.notes)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """A collective when sampling: the samples since the last epoch end go into the state."""
        if self.active:
            self.partial = merge(self.partial, self.gather_interval())
        return {"telemetry": {"totals": self.totals, "partial": self.partial, "series": self.series,
                              "names": self.names, "reached": self.reached, "attempt": self.attempt}}

    def load_state_dict(self, state):
        saved = state.get("telemetry")
        if saved is not None:
            self.totals, self.partial, self.series = saved["totals"], saved["partial"], saved["series"]
            self.names, self.reached, self.attempt = saved["names"], saved["reached"], saved["attempt"]
