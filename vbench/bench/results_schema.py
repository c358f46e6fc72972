"""The results.json schema (docs/PROTOCOL.md, "results.json"): key specs and their validation.

A spec is a type or tuple of types, a dict of sub-specs (a key ending in "?" is optional), or one
of the small classes below. `validate_results` lists every problem with its dotted key.
"""
from vbench.errors import ResultsError

SCHEMA_VERSION = 1
STATUSES = ("running", "reached", "finished", "failed", "preempted")


NUMBER = (int, float)
NULL = type(None)


class Nullable:
    def __init__(self, spec):
        self.spec = spec


class ListOf:
    def __init__(self, spec):
        self.spec = spec


class Choice:
    def __init__(self, *values):
        self.values = values


class MapOf:
    """An object whose keys are free (e.g. split names) and whose values all follow `spec`."""

    def __init__(self, spec):
        self.spec = spec


class Pair:
    """A list of exactly two items, following `first` and `second`."""

    def __init__(self, first, second):
        self.specs = (first, second)


ROW_SPEC = {
    "epoch": int, "clock_s": NUMBER, "train_s": NUMBER, "eval_s": (*NUMBER, NULL),
    "data_wait_fraction": (*NUMBER, NULL), "clips_per_s": (*NUMBER, NULL), "loss": (*NUMBER, NULL),
    "lr": NUMBER, "clip_top1": (*NUMBER, NULL), "clip_top5": (*NUMBER, NULL),
    "video_top1": (*NUMBER, NULL), "video_top5": (*NUMBER, NULL), "bad_videos": int,
    # per rank, in rank order: share of the epoch spent waiting for data; clips/s the rank's
    # loader workers produced while working (null: no loader figure)
    "data_wait_by_rank?": ListOf(NUMBER), "loader_clips_per_s_by_rank?": ListOf((*NUMBER, NULL)),
    # rank 0's data-wait share of the epoch's first 10 steps (all of them in a shorter epoch), and
    # of the steps after them (null: none)
    "data_wait_first10?": (*NUMBER, NULL), "data_wait_rest?": (*NUMBER, NULL),
    # the epoch's GPU telemetry over every GPU (vbench/bench/telemetry.py, epoch_fields); null without it
    "telemetry?": Nullable({"energy_kj": NUMBER, "power_w": (*NUMBER, NULL), "sm_clock_mhz": (*NUMBER, NULL),
                            "temp_c": (*NUMBER, NULL), "util_pct": (*NUMBER, NULL), "slowdown_s": NUMBER}),
    "loader_restarts?": int,  # loader restarts after a worker died, over every rank
}
LOADER_RESTART_SPEC = {  # vbench/data/restart.py
    "role": Choice("train", "eval"), "rank": int, "epoch": (int, NULL), "worker": int, "pid": int,
    "how": str, "at_batch": int, "resume_s?": NUMBER,
}
PATH_REASON = {"path": str, "reason": str}
RANK_SPEC = {  # vbench.engine.distributed.gather_ranks
    "rank": int, "node": int, "local_rank": int, "host": str, "device": Choice("cuda", "cpu"),
    "device_model": str, "memory_gib": (*NUMBER, NULL), "device_id": str,
}
SPREAD_SPEC = Nullable({"median": NUMBER, "min": NUMBER, "max": NUMBER})
ENCODING_SPEC = {  # vbench.data.encoding
    "videos": int, "codecs": MapOf(int), "pixel_formats": MapOf(int), "short_side": SPREAD_SPEC,
    "fps": SPREAD_SPEC, "bitrate_kbps": (*NUMBER, NULL), "keyframe_interval": (*NUMBER, NULL), "bytes": int,
}
FINGERPRINT_SPEC = {  # vbench.data.fingerprint
    "videos_listed": int, "videos_readable": int, "excluded": ListOf(Pair(str, str)), "clips_per_epoch": int,
    "bytes": int, "classes": int, "sha256": str, "listed_sha256": str, "encoding?": ENCODING_SPEC,
}
DATA_CACHE_SPEC = {  # vbench/engine/cold_data.py
    "dropped": bool, "nodes": int, "files": int, "bytes": int, "measured_bytes": int, "resident_bytes": int,
    "resident_share": (*NUMBER, NULL), "seconds": NUMBER, "problem_count": int, "problems": ListOf(str),
}
OPTIONAL_NUMBER = (*NUMBER, NULL)
TELEMETRY_GPU_SPEC = {  # vbench/bench/telemetry.py, gpu_result
    "gpu": str, "name": (str, NULL), "energy_kj": NUMBER, "energy_source": Choice("counter", "power integral"),
    "seconds": NUMBER, "mean_power_w": OPTIONAL_NUMBER, "max_power_w": OPTIONAL_NUMBER,
    "median_sm_clock_mhz": OPTIONAL_NUMBER, "max_temp_c": OPTIONAL_NUMBER, "mean_util_pct": OPTIONAL_NUMBER,
    "max_memory_used_gib": OPTIONAL_NUMBER, "throttled_s": MapOf(NUMBER), "slowdown_s": NUMBER, "samples": int,
}
TELEMETRY_SPEC = {  # present: the keys with "?" too; absent: available false and the reason
    "available": bool, "reason": (str, NULL), "source?": str, "driver?": (str, NULL), "interval_s?": NUMBER,
    "scope?": str, "seconds?": NUMBER, "energy_kj?": NUMBER, "throttled?": bool,
    "gpus?": ListOf(TELEMETRY_GPU_SPEC), "notes?": ListOf(str),
    "series?": MapOf({"clock_s": ListOf(OPTIONAL_NUMBER), "power_w": ListOf(OPTIONAL_NUMBER),
                      "sm_clock_mhz": ListOf(OPTIONAL_NUMBER)}),
}
BLOCK_SPECS = {"data_cache": DATA_CACHE_SPEC, "telemetry": TELEMETRY_SPEC}  # `ResultsWriter.set_block`
# Keys ending in "?" are optional (additions after the first published schema).
RESULTS_SPEC = {
    "schema_version": int, "vbench_version": str, "git_commit": (str, NULL), "git_dirty?": (bool, NULL),
    "run": {"output_dir": str, "config_file": (str, NULL), "command": ListOf(str), "started_at": str,
            "finished_at": (str, NULL), "status": Choice(*STATUSES)},
    "config": dict, "config_hash": str,
    "benchmark": {"track": Choice("", "cnn", "transformer"), "metric": Choice("clip", "video"),
                  "target_top1": NUMBER, "reached": bool, "time_to_target_s": (*NUMBER, NULL),
                  "epochs_to_target": (int, NULL), "setup_s": NUMBER, "warmup_s?": NUMBER,
                  "stop_at_target": bool,
                  "total_time_s": NUMBER, "resumes?": int, "resume_added_s?": NUMBER,
                  "clock_warnings?": ListOf(str)},
    "world": {"num_gpus": int, "num_devices": int, "world_size": int, "num_shards": int,
              "device": Choice("cuda", "cpu"), "precision": Choice("fp32", "fp16", "bf16"),
              # gathered from the process group (optional: results written before have none)
              "nodes?": int, "procs_per_node?": ListOf(int), "same_hardware?": bool,
              "ranks?": ListOf(RANK_SPEC), "config_corrected?": MapOf({"config": int, "launcher": int}),
              "earlier_attempts?": ListOf({"num_devices": int, "world_size": int, "nodes": int,
                                           "devices": str})},
    "resolved?": dict,
    "hardware": {
        "gpu": Nullable({"model": str, "count": int, "memory_gib": (*NUMBER, NULL), "driver": (str, NULL),
                         "cuda": (str, NULL), "cudnn": (str, NULL)}),
        "cpu": {"model": str, "physical_cores": (int, NULL), "logical_cores": int},
        "ram_gib": NUMBER,
        "storage": Nullable({"data_path": str, "filesystem": (str, NULL), "device": (str, NULL),
                             "rotational": (bool, NULL)})},
    "software": {"python": str, "torch": str, "torchvision": (str, NULL), "av": (str, NULL),
                 "torchcodec": (str, NULL), "numpy": (str, NULL), "platform": str},
    "epochs": ListOf(ROW_SPEC),
    "peak_gpu_memory_gib": (*NUMBER, NULL),
    "bad_videos": {"train": ListOf(PATH_REASON), "eval_excluded": ListOf(PATH_REASON)},
    "dataset?": MapOf(FINGERPRINT_SPEC),
    "data_cache?": DATA_CACHE_SPEC,
    "telemetry?": TELEMETRY_SPEC,
    "loader_restarts?": ListOf(LOADER_RESTART_SPEC),
}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false", NULL: "null",
               dict: "an object", list: "a list"}


def _type_ok(value, types):
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def check_spec(value, spec, key, problems):
    """Append to `problems` every way `value` (named `key`) does not follow `spec`."""
    if isinstance(spec, Nullable):
        if value is not None:
            check_spec(value, spec.spec, key, problems)
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            problems.append(f"'{key}' must be an object, got {type(value).__name__}")
            return
        for name, sub_spec in spec.items():
            optional = name.endswith("?")
            name = name.rstrip("?")
            if name in value:
                check_spec(value[name], sub_spec, f"{key}.{name}", problems)
            elif not optional:
                problems.append(f"'{key}.{name}' is missing")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            problems.append(f"'{key}' must be a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            check_spec(item, spec.spec, f"{key}[{i}]", problems)
    elif isinstance(spec, MapOf):
        if not isinstance(value, dict):
            problems.append(f"'{key}' must be an object, got {type(value).__name__}")
            return
        for name, item in value.items():
            check_spec(item, spec.spec, f"{key}.{name}", problems)
    elif isinstance(spec, Pair):
        if not isinstance(value, list) or len(value) != 2:
            problems.append(f"'{key}' must be a list of two items, got {value!r}")
            return
        for i, (item, sub_spec) in enumerate(zip(value, spec.specs)):
            check_spec(item, sub_spec, f"{key}[{i}]", problems)
    elif isinstance(spec, Choice):
        if value not in spec.values:
            problems.append(f"'{key}' is {value!r}; expected one of {list(spec.values)}")
    else:
        types = spec if isinstance(spec, tuple) else (spec,)
        if float in types and int not in types:
            types = types + (int,)
        if not _type_ok(value, types):
            expected = " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in types))
            problems.append(f"'{key}' must be {expected}, got {value!r}")


def validate_results(data, source="results.json"):
    """Check `data` against the schema; raises ResultsError listing every problem (key names are
    dotted paths under `source`, e.g. 'results.json.benchmark.target_top1'). Returns `data`."""
    problems = []
    check_spec(data, RESULTS_SPEC, source, problems)
    if not problems and data["schema_version"] > SCHEMA_VERSION:
        problems.append(f"'{source}.schema_version' is {data['schema_version']}; this vbench reads "
                        f"version {SCHEMA_VERSION}: update vbench")
    if problems:
        raise ResultsError(f"{source} does not follow the results schema:\n  " + "\n  ".join(problems))
    return data
