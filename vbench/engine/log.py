"""Logging for the engine: one logger, tqdm-friendly console output, SlowFast-style json_stats lines.

Named `log` (not `logging`) so it never shadows the standard library module.
"""
import json
import logging
import math
import os
import sys

from tqdm import tqdm

from vbench.errors import DiskFullError
from vbench.files import append_line

LOGGER_NAME = "vbench"
JSON_STATS_FILE = "json_stats.log"


class _TqdmHandler(logging.StreamHandler):
    """Writes through tqdm so log lines do not tear an active progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)


def setup_logging(output_dir="", is_main=True):
    """Console logging on the main process (warnings only elsewhere) and OUTPUT_DIR/log.txt."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = _TqdmHandler(sys.stdout)
    console.setLevel(logging.INFO if is_main else logging.WARNING)
    console.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
    logger.addHandler(console)
    if is_main and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(output_dir, "log.txt"))
        file_handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s"))
        logger.addHandler(file_handler)
    return logger


def get_logger():
    return logging.getLogger(LOGGER_NAME)


def _rounded(value):
    if isinstance(value, float):
        return value if not math.isfinite(value) else round(value, 6)
    return value


_FULL_WARNED = set()  # json_stats files already warned about (one warning per file and process)
JSON_STATS_FULL_HINT = ("Its lines are missing until space is freed; the console and results.json still "
                        "hold every epoch. The run goes on, and stops with an error at its next "
                        "results.json or checkpoint write if the disk is still full.")


def log_json_stats(stats, output_dir=""):
    """Print `json_stats: {...}` and append the same line to OUTPUT_DIR/json_stats.log.

    A full disk does not stop the run here (a warning, once per file): json_stats.log is a copy of
    what the console and results.json show, and the run's next results.json or checkpoint write
    stops it with a DiskFullError if the disk is still full (docs/PROTOCOL.md, "A full disk").
    """
    line = "json_stats: " + json.dumps({k: _rounded(v) for k, v in stats.items()}, sort_keys=True)
    get_logger().info(line)
    if not output_dir:
        return
    path = os.path.join(output_dir, JSON_STATS_FILE)
    try:
        append_line(path, line, JSON_STATS_FULL_HINT)
    except DiskFullError as error:
        if path not in _FULL_WARNED:
            _FULL_WARNED.add(path)
            get_logger().warning(str(error))


def progress_bar(total, desc, enabled=True):
    """A tqdm bar (rate and ETA) on the main process; a silent stand-in elsewhere."""
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False,
                unit="it", file=sys.stdout)


def format_seconds(seconds):
    if seconds is None:
        return "n/a"
    minutes, secs = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:d}:{minutes:02d}:{secs:05.2f}" if hours else f"{minutes:d}:{secs:05.2f}"
