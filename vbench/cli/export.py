"""`vbench export --mllog RUN [--out FILE] [--org NAME] [--reference FILE]`: a run as an
MLPerf-format log (vbench/bench/export.py)."""
import argparse
import sys

from vbench.bench.export import DEFAULT_OUT, export_mllog
from vbench.errors import VbenchError


def _parser():
    parser = argparse.ArgumentParser(prog="vbench export", description="Write a run as an MLPerf-format log.")
    parser.add_argument("--mllog", required=True, metavar="RUN", help="run folder (or its results.json) to write")
    parser.add_argument("--out", default=None, help=f"output file (default RUN/{DEFAULT_OUT}; '-': standard output)")
    parser.add_argument("--org", default="unspecified", help="submission_org of the log")
    parser.add_argument("--reference", default=None,
                        help="reference table whose track configs decide submission_division "
                             "(default: the shipped one)")
    return parser


def export_main(argv=None):
    args = _parser().parse_args(argv)
    try:
        out, count, notes = export_mllog(args.mllog, args.out, args.org, args.reference)
    except VbenchError as error:
        print(f"vbench export: error: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"vbench export: note: {note}", file=sys.stderr)
    if out != "-":
        print(f"wrote {count} MLPerf log lines to {out}")
    return 0
