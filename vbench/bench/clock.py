"""The benchmark clock: time to target accuracy, resumable, and never made shorter by a crash.

Rules (docs/PROTOCOL.md): set-up (imports, model build, dataset index, resume loading) is measured
as `setup_s` but untimed; the clock starts just before the first training batch is requested and
then counts everything (loading, training, evaluation, checkpoint writes) until `stop()` at the
end of the first evaluation that reaches the target.

Crash accounting: rank 0 keeps a small heartbeat file (JSON, written atomically at most every
`heartbeat_interval_s` by `beat()`, and always by `start()`, `stop()` and `state_dict()`). A
resumed run continues from the checkpoint's clock value PLUS the time the interrupted attempt
spent after that checkpoint (its last heartbeat minus the checkpoint's value). When the heartbeat
is missing, damaged, older than the checkpoint or from another run, that time cannot be proven:
the clock then charges the wall-clock time from the checkpoint to the resume (an upper bound: it
includes the downtime) and records a warning. Only the time between the last heartbeat and the
crash (under `heartbeat_interval_s` plus one log period) can go uncounted.

The trainer's calls, in order:

    clock = BenchmarkClock(os.path.join(cfg.OUTPUT_DIR, HEARTBEAT_FILE) if rank == 0 else None,
                           setup_started=t0)  # t0 = time.monotonic() taken first thing (optional)
    ...  # set-up: build the model, the loaders, the optimizer
    clock.resume_from(checkpoint["clock"])    # only when resuming, before start()
    clock.start()                             # just before the first `iter(train_loader)`
    clock.beat()                              # every LOG_PERIOD iterations (cheap; writes rarely)
    clock.stop()                              # at the end of the evaluation that reaches the target
    clock.elapsed()                           # benchmark seconds (frozen after stop) for epoch rows
    checkpoint["clock"] = clock.state_dict()  # in every checkpoint (also writes a heartbeat)
    clock.summary()                           # setup_s, total_s, resumes, resume_added_s, warnings

`total_s()` keeps running after `stop()` (the run's whole timed length); `elapsed()` does not.
"""
import datetime
import json
import logging
import os
import time
import uuid

from vbench.errors import DiskFullError

from .results import atomic_write_json

logger = logging.getLogger(__name__)
HEARTBEAT_FILE = "clock_heartbeat.json"
HEARTBEAT_FULL_HINT = ("The clock runs on (the heartbeat only accounts for the time lost if the run "
                       "crashes); the run stops at its next results.json or checkpoint write if the "
                       "disk is still full.")
STATE_VERSION = 1


def _iso(wall_seconds):
    return datetime.datetime.fromtimestamp(wall_seconds, datetime.timezone.utc).isoformat(timespec="seconds")


class BenchmarkClock:
    def __init__(self, heartbeat_path=None, time_fn=time.monotonic, wall_fn=time.time,
                 heartbeat_interval_s=10.0, setup_started=None):
        self.heartbeat_path = heartbeat_path
        self.heartbeat_interval_s = heartbeat_interval_s
        self._time = time_fn
        self._wall = wall_fn
        self._setup_started = time_fn() if setup_started is None else setup_started
        self.setup_s = None  # set by start()
        self.run_id = uuid.uuid4().hex  # replaced by the checkpoint's on resume
        self._offset_s = 0.0  # clock value carried over from earlier attempts, lost time included
        self._started_at = None
        self._stopped_s = None
        self._last_beat = None
        self.resumes = []  # one entry per resume: from_clock_s, added_s, heartbeat, at
        self.warnings = []

    # ------------------------------------------------------------------ reading
    @property
    def running(self):
        return self._started_at is not None and self._stopped_s is None

    @property
    def stopped(self):
        return self._stopped_s is not None

    def total_s(self, now=None):
        """Timed seconds of the run so far (keeps counting after stop())."""
        if self._started_at is None:
            return self._offset_s
        return self._offset_s + ((self._time() if now is None else now) - self._started_at)

    def elapsed(self):
        """Benchmark seconds: total_s() until stop(), the stop value afterwards."""
        return self._stopped_s if self._stopped_s is not None else self.total_s()

    # ------------------------------------------------------------------ control
    def start(self):
        if self._started_at is not None:
            raise RuntimeError("BenchmarkClock.start() called twice.")
        self._started_at = self._time()
        self.setup_s = self._started_at - self._setup_started
        self.beat(force=True)

    def stop(self):
        """Freeze the benchmark value (idempotent) and return it."""
        if self._started_at is None:
            raise RuntimeError("BenchmarkClock.stop() before start().")
        if self._stopped_s is None:
            self._stopped_s = self.total_s()
            self.beat(force=True)
        return self._stopped_s

    def beat(self, force=False):
        """Write the heartbeat if `heartbeat_interval_s` has passed since the last one (or `force`)."""
        if self.heartbeat_path is None or self._started_at is None:
            return
        now = self._time()
        if not force and self._last_beat is not None and now - self._last_beat < self.heartbeat_interval_s:
            return
        self._write_heartbeat(self._snapshot(now))

    def _snapshot(self, now):
        wall = self._wall()
        return {"run_id": self.run_id, "clock_s": self.total_s(now), "stopped_s": self._stopped_s,
                "wall_time": wall, "wall_time_iso": _iso(wall)}

    def _write_heartbeat(self, snapshot):
        self._last_beat = self._time()
        if self.heartbeat_path is None:
            return
        try:
            atomic_write_json(self.heartbeat_path, snapshot, what_to_do=HEARTBEAT_FULL_HINT)
        except (OSError, DiskFullError) as err:  # the clock runs on; only crash accounting needs the file
            prefix = f"heartbeat write to '{self.heartbeat_path}' failed"
            message = f"{prefix}: {err}"
            if not any(warning.startswith(prefix) for warning in self.warnings):  # once per run
                self.warnings.append(message)
                logger.warning(message)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """The clock for a checkpoint; the heartbeat is written with the same value."""
        snapshot = self._snapshot(self._time())
        if self._started_at is not None:
            self._write_heartbeat(snapshot)
        return dict(snapshot, version=STATE_VERSION, setup_s=self.setup_s,
                    resumes=[dict(r) for r in self.resumes], warnings=list(self.warnings))

    def load_state_dict(self, state):
        """Alias of `resume_from` (PyTorch naming)."""
        self.resume_from(state)

    def _read_heartbeat(self, run_id, checkpoint_clock_s):
        """(heartbeat clock value, "ok") or (None, why it cannot be used)."""
        if self.heartbeat_path is None or not os.path.exists(self.heartbeat_path):
            return None, "missing"
        try:
            with open(self.heartbeat_path) as f:
                beat = json.load(f)
            clock_s = float(beat["clock_s"])
            beat_run_id = beat["run_id"]
        except (OSError, ValueError, KeyError, TypeError):
            return None, "damaged"
        if beat_run_id != run_id:
            return None, "from another run"
        if clock_s < checkpoint_clock_s:
            return None, "older than the checkpoint"
        return clock_s, "ok"

    def resume_from(self, state):
        """Continue the clock of a checkpointed attempt, adding the time lost after that checkpoint."""
        if self._started_at is not None:
            raise RuntimeError("BenchmarkClock.resume_from() must come before start().")
        checkpoint_clock_s = float(state["clock_s"])
        beat_clock_s, heartbeat = self._read_heartbeat(state["run_id"], checkpoint_clock_s)
        self.warnings = list(state.get("warnings", ()))
        if beat_clock_s is not None:
            added_s = beat_clock_s - checkpoint_clock_s
        else:
            added_s = max(0.0, self._wall() - float(state["wall_time"]))
            self.warnings.append(
                f"resume {len(state['resumes']) + 1}: heartbeat {heartbeat}; the time lost after the "
                f"checkpoint at {checkpoint_clock_s:.1f} s cannot be proven, so the wall-clock time since "
                f"that checkpoint ({added_s:.1f} s, downtime included) was added")
        self.run_id = state["run_id"]
        self._offset_s = checkpoint_clock_s + added_s
        self._stopped_s = state["stopped_s"]
        self.resumes = [dict(r) for r in state["resumes"]] + [{
            "from_clock_s": checkpoint_clock_s, "added_s": added_s, "heartbeat": heartbeat,
            "at": _iso(self._wall())}]

    def summary(self):
        """The clock's part of results.json's "benchmark" block."""
        return {"setup_s": self.setup_s or 0.0, "total_s": self.total_s(), "elapsed_s": self.elapsed(),
                "stopped": self.stopped, "resumes": len(self.resumes),
                "resume_added_s": sum(r["added_s"] for r in self.resumes), "warnings": list(self.warnings)}
