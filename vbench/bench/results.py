"""results.json: the record of one run (schema in docs/PROTOCOL.md), written atomically after every epoch.

Trainer side (rank 0 only; see also vbench/bench/clock.py):

    writer = ResultsWriter(os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE), cfg,
                           world=world_block(ranks, precision="bf16"),  # ranks: gathered by the engine
                           config_file=args.cfg_file, command=sys.argv,
                           resolved={"TRAIN.PRECISION": "bf16"})   # writes status "running"
    writer.load_state_dict(checkpoint["results"])        # when resuming (restores earlier epochs)
    ...  # after each evaluation:
    if target_reached(metrics, cfg): clock.stop()
    writer.add_epoch({"epoch": epoch + 1, "clock_s": clock.elapsed(), ...row keys...}, clock)
    checkpoint["results"] = writer.state_dict()
    ...
    writer.set_dataset({split: loader.fingerprint(), ...})   # before training
    writer.set_bad_videos(train=[(rel_path, reason), ...], eval_excluded=[...])
    writer.finish(clock=clock, peak_gpu_memory_gib=...)   # status "reached" or "finished"
    # on an exception: writer.finish("failed", clock=clock); raise

Readers: `load_results(run_folder_or_file)` (validated), `validate_results(dict)`.
The launcher, once every process of a failed run has ended: `mark_failed(path)` ("running" -> "failed").
"""
import copy
import datetime
import hashlib
import json
import math
import os
import subprocess

import vbench
from vbench.errors import DiskFullError
from vbench.files import atomic_write_bytes

from .results_schema import BLOCK_SPECS, ROW_SPEC, SCHEMA_VERSION, STATUSES, ResultsError, check_spec, validate_results
from .sysinfo import collect_sysinfo
from .world import resumed_world, world_block

__all__ = ["RESULTS_FILE", "ResultsError", "ResultsWriter", "SCHEMA_VERSION", "atomic_write_json",
           "config_hash", "load_results", "mark_failed", "target_reached", "validate_results",
           "world_block"]

RESULTS_FILE = "results.json"
METRIC_KEYS = {"clip": "clip_top1", "video": "video_top1"}


# ---------------------------------------------------------------------- helpers
def atomic_write_json(path, obj, indent=None, what_to_do=""):
    """Write `obj` as JSON to `path` so that readers see the old file or the new one, never half.

    Serialisation happens before the file is touched, so an unserialisable `obj` leaves `path` as it
    was; so does a full disk (DiskFullError naming the path, the free space and `what_to_do`).
    """
    text = json.dumps(obj, indent=indent, allow_nan=False)
    atomic_write_bytes(path, text.encode("utf-8"), what_to_do)


def resume_hint(output_dir):
    """What to do when a run file cannot be written for lack of space."""
    return (f"Free space there (or move the run folder to a larger disk and point OUTPUT_DIR at it), "
            f"then run the same command again: training resumes from the newest checkpoint in "
            f"OUTPUT_DIR ({os.path.abspath(output_dir)}).")


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def config_to_dict(cfg):
    """A CfgNode (or dict) as plain nested dicts and lists."""
    if isinstance(cfg, dict):
        return {str(key): config_to_dict(value) for key, value in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(value) for value in cfg]
    return cfg


def config_hash(cfg_dict):
    """sha256 hex of the canonical JSON (sorted keys, no spaces) of a config dict."""
    canonical = json.dumps(config_to_dict(cfg_dict), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _git(*args):
    source_root = os.path.dirname(os.path.dirname(os.path.abspath(vbench.__file__)))
    try:
        out = subprocess.run(["git", "-C", source_root, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, source_root
    return (out.stdout.strip() if out.returncode == 0 else None), source_root


def git_state():
    """(commit, dirty) of the git checkout vbench runs from, or (None, None) outside one."""
    top, source_root = _git("rev-parse", "--show-toplevel")
    if not top or os.path.realpath(top) != os.path.realpath(source_root):
        return None, None  # installed copy, or a checkout of some other project around it
    commit, _ = _git("rev-parse", "HEAD")
    status, _ = _git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def target_reached(metrics, cfg):
    """True when `metrics` (an epoch row or evaluator output, percent) reaches BENCHMARK.TARGET_TOP1."""
    target = cfg.BENCHMARK.TARGET_TOP1
    value = metrics.get(METRIC_KEYS[cfg.BENCHMARK.METRIC])
    return target > 0 and value is not None and value >= target


def _plain(value):
    """JSON-safe copy: tensors/NumPy scalars to Python numbers, tuples to lists, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _path_reasons(items):
    return [item if isinstance(item, dict) else {"path": str(item[0]), "reason": str(item[1])}
            for item in items]


# ---------------------------------------------------------------------- writer
class ResultsWriter:
    """Builds results.json for one run and rewrites it atomically at every change."""

    def __init__(self, path, cfg, *, world, config_file="", command=(), sysinfo=None, data_path=None,
                 resolved=None):
        self.path = path
        self._cfg = cfg
        if sysinfo is None:
            sysinfo = collect_sysinfo(data_path if data_path is not None else (cfg.DATA.PATH_TO_DATA_DIR or None))
        cfg_dict = config_to_dict(cfg)
        commit, dirty = git_state()
        self.data = {
            "schema_version": SCHEMA_VERSION, "vbench_version": vbench.__version__,
            "git_commit": commit, "git_dirty": dirty,
            "run": {"output_dir": os.path.abspath(cfg.OUTPUT_DIR), "config_file": config_file or "",
                    "command": [str(word) for word in command], "started_at": now_iso(),
                    "finished_at": None, "status": "running"},
            "config": cfg_dict, "config_hash": config_hash(cfg_dict),
            "benchmark": {"track": cfg.BENCHMARK.TRACK, "metric": cfg.BENCHMARK.METRIC,
                          "target_top1": float(cfg.BENCHMARK.TARGET_TOP1), "reached": False,
                          "time_to_target_s": None, "epochs_to_target": None, "setup_s": 0.0,
                          "stop_at_target": bool(cfg.BENCHMARK.STOP_AT_TARGET), "total_time_s": 0.0,
                          "resumes": 0, "resume_added_s": 0.0, "clock_warnings": []},
            "world": dict(world), "resolved": dict(resolved or {}),
            "hardware": sysinfo["hardware"], "software": sysinfo["software"],
            "epochs": [], "peak_gpu_memory_gib": None,
            "bad_videos": {"train": [], "eval_excluded": []},
        }
        self.write()

    def write(self):
        atomic_write_json(self.path, _plain(self.data), indent=1, what_to_do=resume_hint(self._cfg.OUTPUT_DIR))

    def _update_clock(self, clock):
        if clock is None:
            return
        summary = clock.summary()
        self.data["benchmark"].update(
            setup_s=summary["setup_s"], total_time_s=summary["total_s"], resumes=summary["resumes"],
            resume_added_s=summary["resume_added_s"], clock_warnings=summary["warnings"])

    def add_epoch(self, row, clock=None):
        """Record one epoch (1-based "epoch"; a re-run epoch after a resume replaces the old row)."""
        row = _plain(row)
        problems = []
        check_spec(row, ROW_SPEC, "epoch row", problems)
        if problems:
            raise ValueError("; ".join(problems))
        epochs = [r for r in self.data["epochs"] if r["epoch"] != row["epoch"]]
        self.data["epochs"] = sorted(epochs + [row], key=lambda r: r["epoch"])
        benchmark = self.data["benchmark"]
        if not benchmark["reached"] and target_reached(row, self._cfg):
            benchmark.update(reached=True, time_to_target_s=row["clock_s"], epochs_to_target=row["epoch"])
        self._update_clock(clock)
        self.write()

    def set_bad_videos(self, train=None, eval_excluded=None):
        """Unreadable videos as (rel_path, reason) pairs or {"path", "reason"} dicts."""
        if train is not None:
            self.data["bad_videos"]["train"] = _path_reasons(train)
        if eval_excluded is not None:
            self.data["bad_videos"]["eval_excluded"] = _path_reasons(eval_excluded)
        self.write()

    def set_loader_restarts(self, events, write=True):
        """The loader restarts of the run so far (vbench/engine/restarts.py), one dict each."""
        self.data["loader_restarts"] = copy.deepcopy(list(events))
        if write:
            self.write()

    def set_warmup(self, seconds):
        """Seconds of the untimed warm-up (part of the set-up) before the clock started."""
        self.data["benchmark"]["warmup_s"] = float(seconds)
        self.write()

    def set_block(self, name, block):
        """A run-level block that hooks measure before or during training: "data_cache" (the page
        cache when the clock started) or "telemetry" (GPU power, clocks, energy); checked
        against the schema."""
        if name not in BLOCK_SPECS:
            raise ValueError(f"unknown results.json block {name!r}; expected one of {sorted(BLOCK_SPECS)}.")
        block = _plain(block)
        problems = []
        check_spec(block, BLOCK_SPECS[name], name, problems)
        if problems:
            raise ValueError("; ".join(problems))
        self.data[name] = block
        self.write()

    def set_dataset(self, dataset):
        """{split: fingerprint} of the splits the run uses (`vbench.data.fingerprint`)."""
        self.data["dataset"] = copy.deepcopy(dataset)
        self.write()

    def finish(self, status=None, clock=None, peak_gpu_memory_gib=None):
        """Final write; `status` defaults to "reached" or "finished" from the epochs recorded."""
        status = status or ("reached" if self.data["benchmark"]["reached"] else "finished")
        if status not in STATUSES[1:]:
            raise ValueError(f"finish status must be one of {STATUSES[1:]}, got {status!r}.")
        self.data["run"].update(status=status, finished_at=now_iso())
        if peak_gpu_memory_gib is not None:
            self.data["peak_gpu_memory_gib"] = float(peak_gpu_memory_gib)
        self._update_clock(clock)
        try:
            self.write()
        except DiskFullError:
            if status != "failed":
                raise
            # the run is failing already and its own error says why: results.json keeps its last
            # complete state ("running"; the launcher marks it failed when it can)

    def state_dict(self):
        """What a checkpoint stores so a resumed run keeps the earlier epochs."""
        return copy.deepcopy({"started_at": self.data["run"]["started_at"], "epochs": self.data["epochs"],
                              "benchmark": self.data["benchmark"], "bad_videos": self.data["bad_videos"],
                              "world": self.data["world"]})

    def load_state_dict(self, state):
        state = copy.deepcopy(state)
        self.data["run"]["started_at"] = state["started_at"]
        self.data["epochs"] = state["epochs"]
        self.data["bad_videos"] = state["bad_videos"]
        for key in ("reached", "time_to_target_s", "epochs_to_target"):
            self.data["benchmark"][key] = state["benchmark"][key]
        if state.get("world"):  # checkpoints of an older vbench have none
            self.data["world"] = resumed_world(state["world"], self.data["world"])
        self.write()


def load_results(path):
    """Read and validate results.json from a run folder or a file path."""
    file = os.path.join(path, RESULTS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        where = f"run folder '{path}' has no {RESULTS_FILE}" if os.path.isdir(path) else f"'{file}' does not exist"
        raise ResultsError(f"cannot read results: {where}. Give a run folder (OUTPUT_DIR of `vbench train`) "
                           f"or the path of its {RESULTS_FILE}.")
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ResultsError(f"'{file}' is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                           f"the file is damaged or is not a vbench results file.") from None
    except UnicodeDecodeError as err:
        raise ResultsError(f"'{file}' is not UTF-8 text ({err.reason} at byte {err.start}); "
                           f"the file is damaged or is not a vbench results file.") from None
    return validate_results(data, source=file)


def mark_failed(path):
    """Status "failed" for the results.json at `path` (a file) when it still says "running".

    Only once every process of its run is gone (the launcher: a rank 0 killed outright cannot
    write its own "failed"). Rewritten atomically; a missing or unreadable file, or one a full disk
    does not let it rewrite, is left as it is. Returns the status the file holds now, or None.
    """
    try:
        data = load_results(path)
    except ResultsError:
        return None
    if data["run"]["status"] == "running":
        try:
            atomic_write_json(path, dict(data, run=dict(data["run"], status="failed", finished_at=now_iso())),
                              indent=1)
        except DiskFullError:
            return "running"
        return "failed"
    return data["run"]["status"]
