"""A run as an MLPerf-format log (`:::MLLOG {...}` lines, mlcommons/logging), so that tools made for
MLPerf Training logs (its reader, compliance checker, result summarizer) can read vbench runs.

`mllog_events(results, steps, reference)` turns a run's results.json and its json_stats.log
training lines (`parse_json_stats`) into events;
`write_mllog(events, stream)` writes them with the `mlperf-logging` package (`pip install
vbench[mllog]`). The events, in order:

    cache_clear                   results.json `cache.dropped` when recorded, else false (with
                                  metadata saying that the run recorded no page-cache eviction)
    init_start                    run.started_at
    submission_*, seed, hyperparameters, train_samples / eval_samples (clips of one epoch's plan of
                                  the training / validation split), precision and parallelism
    init_stop, run_start          started_at + benchmark.setup_s: the benchmark clock starts
    per epoch: epoch_start, tracked_stats (json_stats `train_iter` lines, placed evenly over the
                                  epoch's training), epoch_stop, tracked_stats (`train_epoch`),
                                  eval_start, eval_accuracy (the benchmark metric as a fraction),
                                  eval_stop
    run_stop                      status "success" at time_to_target_s when the target was
                                  reached (later epochs are not part of the benchmark and are not
                                  written), else "aborted" at total_time_s

Times are milliseconds since the epoch on the benchmark's timeline: run_start plus the clock of
results.json (`epochs[].clock_s`, which counts a resumed run's lost time, PROTOCOL.md section 2), so
run_stop - run_start is the time to target, as in MLPerf. epoch_stop is the end of the epoch's
evaluation minus `eval_s`. A resumed run's init lasts the set-up of its last attempt.
"""
import datetime
import json
import logging

from vbench.errors import ExportError

from .compliance import compare_with_recipe, recipe_config
from .reference import resolve_config_path
from .results import METRIC_KEYS
from .sysinfo import describe_hardware

PIP_LINE = "pip install 'vbench[mllog]'  (or: pip install mlperf-logging)"
PRECISION_NAMES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bfloat16"}
CACHE_FIELD = ("data_cache", "dropped")  # results.json key of the page-cache eviction (engine/cold_data.py)


def require_mllog():
    """mlperf-logging's MLLogger class, or ExportError naming the pip line."""
    try:
        from mlperf_logging.mllog.mllog import MLLogger  # optional package
    except ImportError as error:
        raise ExportError(f"writing an MLPerf log needs the mlperf-logging package ({error}); install it "
                          f"with: {PIP_LINE}") from None
    return MLLogger


def _fraction(text):
    """(numerator, denominator) of "3/20"; ValueError when it is not two positive integers."""
    numerator, denominator = (int(x) for x in str(text).split("/"))
    if numerator < 1 or denominator < 1:
        raise ValueError(text)
    return numerator, denominator


def _training_record(line):
    """The json_stats record of one line as (type, epoch, iteration, iterations, record), None for
    other records (test, val_epoch); ValueError for a line that cannot be read."""
    try:
        record = json.loads(line.split("json_stats:", 1)[1])
        if record.get("_type") not in ("train_iter", "train_epoch"):
            return None
        epoch = _fraction(record["epoch"])[0]
        done, total = _fraction(record["iter"]) if record["_type"] == "train_iter" else (0, 0)
    except (IndexError, KeyError, AttributeError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(str(error)) from None
    return record["_type"], epoch, done, total, record


def parse_json_stats(lines):
    """({epoch: {"iters": [(iteration, iterations, record)], "epoch": record}}, lines skipped) of
    json_stats.log lines: training records only, the last line of each step (epochs re-run after
    a resume count once); lines that cannot be read are skipped and counted."""
    by_epoch, skipped = {}, 0
    for line in lines:
        if not line.strip():
            continue
        try:
            parsed = _training_record(line)
        except ValueError:
            skipped += 1
            continue
        if parsed is None:
            continue
        kind, epoch, done, total, record = parsed
        entry = by_epoch.setdefault(epoch, {"iters": {}, "epoch": None})
        if kind == "train_iter":
            entry["iters"][done] = (done, total, record)
        else:
            entry["epoch"] = record
    steps = {e: {"iters": sorted(v["iters"].values(), key=lambda item: item[0]), "epoch": v["epoch"]}
             for e, v in by_epoch.items()}
    return steps, skipped


def _ms(seconds):
    return int(round(seconds * 1000))


def start_ms(results):
    """run.started_at (ISO 8601) in milliseconds since the epoch."""
    try:
        started = datetime.datetime.fromisoformat(results["run"]["started_at"])
    except ValueError:
        raise ExportError(f"results.json run.started_at {results['run']['started_at']!r} is not an ISO 8601 "
                          f"time; the file was edited or damaged.") from None
    if started.tzinfo is None:
        started = started.replace(tzinfo=datetime.timezone.utc)
    return _ms(started.timestamp())


def division(results, reference):
    """"closed" when the config is its track's benchmark config apart from resource keys (`vbench
    score` checks the data and the run set), else "open"."""
    track_ref = reference.tracks.get(results["benchmark"].get("track"))
    if track_ref is None:
        return "open"
    recipe = recipe_config(resolve_config_path(track_ref.config))
    return "open" if compare_with_recipe(results["config"], recipe) else "closed"


def cache_clear(results):
    """(value, metadata) of the cache_clear event."""
    value = results
    for key in CACHE_FIELD:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return value, {}
    return False, {"recorded": False, "reason": "results.json records no page-cache eviction"}


def _samples(results, split):
    fingerprint = (results.get("dataset") or {}).get(split)
    return fingerprint["clips_per_epoch"] if fingerprint else None


def setup_events(results, org, reference):
    """(key, value, metadata) of the point-in-time events between init_start and init_stop."""
    cfg, world = results["config"], results["world"]
    train, solver, data = cfg["TRAIN"], cfg["SOLVER"], cfg["DATA"]
    accum = int(train.get("ACCUM_STEPS", 1))
    base_lr = solver["BASE_LR"]
    if solver.get("LR_SCALING") == "linear":
        base_lr = base_lr * train["BATCH_SIZE"] / solver["REFERENCE_BATCH_SIZE"]
    precision = PRECISION_NAMES[world["precision"]]
    eval_samples = _samples(results, data["VAL_SPLIT"]) if data["VAL_SPLIT"] != data["TRAIN_SPLIT"] else None
    track = results["benchmark"].get("track")
    return [
        ("submission_benchmark", f"vbench_{track}" if track else "vbench", {}),
        ("submission_org", org, {}),
        ("submission_division", division(results, reference), {}),
        ("submission_platform", describe_hardware(results.get("hardware") or {}), {}),
        ("seed", cfg.get("RNG_SEED"), {}),
        ("global_batch_size", train["BATCH_SIZE"], {}),
        ("micro_batch_size", max(1, train["BATCH_SIZE"] // max(1, world["world_size"]) // accum), {}),
        ("gradient_accumulation_steps", accum, {}),
        ("opt_name", solver["OPTIMIZING_METHOD"], {}),
        ("opt_base_learning_rate", base_lr, {}),
        ("opt_end_learning_rate", solver.get("COSINE_END_LR"), {}),
        ("opt_learning_rate_warmup_epochs", solver.get("WARMUP_EPOCHS"), {}),
        ("opt_learning_rate_decay_schedule", solver.get("LR_POLICY"), {}),
        ("opt_weight_decay", solver.get("WEIGHT_DECAY"), {}),
        ("train_samples", _samples(results, data["TRAIN_SPLIT"]), {"unit": "clips per epoch"}),
        ("eval_samples", eval_samples, {"unit": "clips per evaluation"}),
        ("lowest_numerical_precision_in_linear", precision, {}),
        ("lowest_numerical_precision_in_attn", precision, {}),
        ("lowest_numerical_precision_in_comm", "fp32", {}),  # DDP all-reduces the fp32 gradients
        ("tensor_parallelism", 1, {}), ("pipeline_parallelism", 1, {}), ("context_parallelism", 1, {}),
        ("expert_parallelism", 1, {}),
        ("config_filename", results["run"].get("config_file") or "(none)", {}),
    ]


def _benchmark_rows(results):
    bench = results["benchmark"]
    rows = sorted(results["epochs"], key=lambda r: r["epoch"])
    if bench["reached"] and bench["epochs_to_target"] is not None:
        rows = [row for row in rows if row["epoch"] <= bench["epochs_to_target"]]
    return rows


def epoch_events(row, previous_clock_s, run_start, steps, metric_key):
    """(time_ms, kind, key, value, metadata) of one epoch; kind "start", "end" or "event"."""
    epoch = row["epoch"]
    begin = run_start + _ms(previous_clock_s)
    end_eval = run_start + _ms(row["clock_s"])
    end_train = max(begin, end_eval - _ms(row.get("eval_s") or 0.0))
    tag = {"epoch_num": epoch}
    events = [(begin, "start", "epoch_start", None, tag)]
    for done, total, record in steps.get("iters", []):
        at = begin + (end_train - begin) * done // max(1, total)
        events.append((at, "event", "tracked_stats", {"loss": record.get("loss"), "lr": record.get("lr")},
                       {**tag, "step_num": (epoch - 1) * total + done}))
    events.append((end_train, "end", "epoch_stop", None, tag))
    if steps.get("epoch"):
        record = steps["epoch"]
        events.append((end_train, "event", "tracked_stats",
                       {key: record.get(key) for key in ("loss", "lr", "clips_per_s", "data_wait")}, tag))
    if row.get(metric_key) is not None:
        events += [(end_train, "start", "eval_start", None, tag),
                   (end_eval, "event", "eval_accuracy", row[metric_key] / 100.0, tag),
                   (end_eval, "end", "eval_stop", None, tag)]
    return events


def mllog_events(results, steps, reference, org="unspecified"):
    """Every event of the log, in time order, as (time_ms, kind, key, value, metadata)."""
    bench = results["benchmark"]
    t0 = start_ms(results)
    run_start = t0 + _ms(bench["setup_s"])
    value, metadata = cache_clear(results)
    events = [(t0, "event", "cache_clear", value, metadata), (t0, "start", "init_start", None, {})]
    events += [(t0, "event", key, value, metadata) for key, value, metadata in setup_events(results, org, reference)]
    events += [(run_start, "end", "init_stop", None, {}), (run_start, "start", "run_start", None, {})]
    previous = 0.0
    for row in _benchmark_rows(results):
        events += epoch_events(row, previous, run_start, steps.get(row["epoch"], {}), METRIC_KEYS[bench["metric"]])
        previous = row["clock_s"]
    reached = bench["reached"] and bench["time_to_target_s"] is not None
    stop = bench["time_to_target_s"] if reached else max(bench["total_time_s"], previous)
    events.append((run_start + _ms(stop), "end", "run_stop", None,
                   {"status": "success" if reached else "aborted", "vbench_status": results["run"]["status"]}))
    return events


def write_mllog(events, stream, logger_class, root_dir=None):
    """Write `events` as :::MLLOG lines to a text `stream` with mlperf-logging's MLLogger
    (`logger_class`, from `require_mllog`)."""
    logger = logging.getLogger("vbench.mllog_export")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    try:
        writer = logger_class(logger=logger, root_dir=root_dir)
        methods = {"start": writer.start, "end": writer.end, "event": writer.event}
        for time_ms, kind, key, value, metadata in events:
            methods[kind](key=key, value=value, metadata=metadata or None, time_ms=time_ms)
    finally:
        logger.removeHandler(handler)
        handler.flush()
