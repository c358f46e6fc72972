"""`vbench score` and `vbench report`: the benchmark score of runs against a reference table, and
the Markdown + PNG report (the library: vbench/bench/score.py, report.py, reference.py)."""
import argparse
import json
import sys

import yaml

from vbench.bench.reference import TRACKS, load_reference, make_reference
from vbench.bench.report import write_report, write_run_report
from vbench.bench.results import load_results
from vbench.bench.score import __doc__ as SCORE_DOC
from vbench.bench.score import format_track, score_track, summary_dict
from vbench.bench.sysinfo import describe_hardware
from vbench.bench.world import describe_world
from vbench.errors import ResultsError, ScoreError


def _parser():
    parser = argparse.ArgumentParser(prog="vbench score", description=SCORE_DOC.split("\n")[0])
    parser.add_argument("--cnn", nargs="+", default=[], metavar="RUN", help="CNN-track runs")
    parser.add_argument("--transformer", nargs="+", default=[], metavar="RUN", help="Transformer-track runs")
    parser.add_argument("--reference", default=None, help="reference table (default: configs/benchmark/reference.yaml)")
    parser.add_argument("--report", default=None, metavar="DIR", help="also write a Markdown + PNG report here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--make-reference", action="store_true", help="write a reference table from the runs")
    parser.add_argument("--out", default=None, help="output file for --make-reference")
    parser.add_argument("--name", default="custom reference", help="name for --make-reference")
    return parser


def _make_reference_main(args):
    if not args.out:
        raise ScoreError("--make-reference needs --out FILE.")
    track_runs = {t: [load_results(p) for p in getattr(args, t)] for t in TRACKS if getattr(args, t)}
    if not track_runs:
        raise ScoreError("--make-reference needs --cnn and/or --transformer runs.")
    first = next(iter(track_runs.values()))[0]
    hardware = describe_world(first["world"]) if first["world"].get("ranks") else describe_hardware(
        first.get("hardware") or {})
    table = make_reference(track_runs, args.name, hardware)
    with open(args.out, "w") as f:
        yaml.safe_dump(table, f, sort_keys=False)
    print(f"wrote reference table '{args.out}' ({', '.join(track_runs)})")
    return 0


def score_main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.make_reference:
            return _make_reference_main(args)
        if not args.cnn and not args.transformer:
            raise ScoreError("give runs with --cnn RUN ... and/or --transformer RUN ...")
        reference = load_reference(args.reference)
        track_scores = {t: score_track(t, getattr(args, t), reference) for t in TRACKS if getattr(args, t)}
    except (ScoreError, ResultsError) as err:
        print(f"vbench score: error: {err}", file=sys.stderr)
        return 2
    summary = summary_dict(track_scores, reference)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"reference: {reference.name} ({reference.path})")
        for ts in track_scores.values():
            print("\n".join(format_track(ts)))
        if summary["benchmark_score"] is None:
            print(f"benchmark_score: not computed: missing track(s) {', '.join(summary['missing_tracks'])}")
        else:
            mark = "" if all(ts.compliant for ts in track_scores.values()) else " (NON-COMPLIANT)"
            mark += " (SUSPECT)" if any(ts.suspect for ts in track_scores.values()) else ""
            print(f"benchmark_score = {summary['benchmark_score']:.3f}{mark}")
    if args.report:
        path = write_report(args.report, track_scores, reference)
        print(f"report: {path}")
    return 0


def report_main(argv=None):
    parser = argparse.ArgumentParser(prog="vbench report", description="Markdown + PNG report of one run")
    parser.add_argument("run", help="run folder or its results.json")
    parser.add_argument("--out", default=None, help="report folder (default RUN/report)")
    args = parser.parse_args(argv)
    try:
        path = write_run_report(args.run, args.out)
    except (ScoreError, ResultsError) as err:
        print(f"vbench report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
