"""A run as an MLPerf-format log (`vbench export --mllog RUN`, vbench/cli/export.py; the events:
`vbench.bench.mlperf_log`).

    vbench export --mllog RUN [--out FILE] [--org NAME] [--reference FILE]

RUN is a run folder or its results.json; json_stats.log beside it adds the training loss and
learning rate per log period. The log goes to RUN/mlperf_log.txt unless --out names a file
(`--out -`: standard output). Needs the mlperf-logging package: pip install 'vbench[mllog]'.
"""
import os
import sys

from vbench.config import REPO_ROOT
from vbench.errors import ExportError

from .mlperf_log import mllog_events, parse_json_stats, require_mllog, write_mllog
from .reference import load_reference
from .results import load_results

JSON_STATS_FILE = "json_stats.log"  # written by the trainer (engine/log.py) beside results.json
DEFAULT_OUT = "mlperf_log.txt"


def read_stats(run_dir):
    """(training steps per epoch (`parse_json_stats`), lines skipped, whether the file exists)."""
    path = os.path.join(run_dir, JSON_STATS_FILE)
    if not os.path.isfile(path):
        return {}, 0, False
    with open(path, encoding="utf-8", errors="replace") as f:
        steps, skipped = parse_json_stats(f)
    return steps, skipped, True


def export_mllog(run, out=None, org="unspecified", reference=None):
    """Write the MLPerf log of `run`; returns (output path or "-", number of events, notes)."""
    logger_class = require_mllog()
    results = load_results(run)
    run_dir = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
    steps, skipped, found = read_stats(run_dir)
    notes = [] if found else [f"no {JSON_STATS_FILE} in {run_dir}: no per-step training stats"]
    if skipped:
        notes.append(f"{skipped} unreadable line(s) of {JSON_STATS_FILE} skipped")
    events = mllog_events(results, steps, load_reference(reference), org)
    out = out or os.path.join(run_dir, DEFAULT_OUT)
    if out == "-":
        write_mllog(events, sys.stdout, logger_class, REPO_ROOT)
        return out, len(events), notes
    try:
        with open(out, "w", encoding="utf-8") as f:
            write_mllog(events, f, logger_class, REPO_ROOT)
    except OSError as error:
        raise ExportError(f"cannot write the MLPerf log '{out}': {error}") from None
    return out, len(events), notes
