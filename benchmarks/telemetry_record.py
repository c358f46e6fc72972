#!/usr/bin/env python3
"""The GPU telemetry and page-cache record of training runs (benchmarks/gpu_suite.sh, step telemetry).

    python benchmarks/telemetry_record.py runs/bench_train/cnn --out /tmp/suite [--require]

For each run folder: results.json's `telemetry` and `data_cache` blocks and every epoch's telemetry
go to OUT/telemetry_<run>.json (the record to commit under benchmarks/results/), `vbench report`
writes OUT/report_<run>/ (with the power and SM-clock plot when there is telemetry), and a summary
is printed: energy, power, SM clock, temperature and throttling per GPU, the data's page-cache
state. It exits with 1 when no run could be read, and with --require when a run has no telemetry
(on a GPU machine: nvidia-ml-py missing?).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's vbench

from vbench.bench.report import write_run_report  # noqa: E402
from vbench.bench.results import atomic_write_json, load_results  # noqa: E402
from vbench.bench.telemetry import throttle_warnings  # noqa: E402
from vbench.errors import ResultsError  # noqa: E402


def record(results):
    """What the record keeps of one run."""
    return {"git_commit": results["git_commit"], "config_file": results["run"]["config_file"],
            "gpu": (results["hardware"].get("gpu") or {}).get("model"), "world": results["world"],
            "resolved": results.get("resolved"), "benchmark": results["benchmark"],
            "telemetry": results.get("telemetry"), "data_cache": results.get("data_cache"),
            "epochs": [{key: row.get(key) for key in ("epoch", "clock_s", "train_s", "clips_per_s", "telemetry")}
                       for row in results["epochs"]]}


def summary(name, results):
    """Console lines on one run's telemetry and page cache."""
    telemetry, cache = results.get("telemetry"), results.get("data_cache")
    lines = [f"{name}: {results['world']['device']} x {results['world']['num_devices']}, "
             f"clock {results['benchmark']['total_time_s']:.1f} s"]
    if cache:
        share = cache["resident_share"]
        lines.append(f"  page cache: dropped {cache['dropped']}, {cache['files']} files, "
                     f"{'n/a' if share is None else f'{100 * share:.1f}%'} resident when the clock started")
    if not telemetry or not telemetry["available"]:
        lines.append(f"  telemetry: none ({(telemetry or {}).get('reason', 'not recorded')})")
        return lines
    lines.append(f"  telemetry ({telemetry['scope']}, {telemetry['seconds']:.1f} s, driver {telemetry['driver']}): "
                 f"energy {telemetry['energy_kj']:.2f} kJ")
    for gpu in telemetry["gpus"]:
        lines.append(f"    {gpu['gpu']} {gpu['name']}: {gpu['energy_kj']:.2f} kJ ({gpu['energy_source']}), power "
                     f"{gpu['mean_power_w']:.0f} W mean / {gpu['max_power_w']:.0f} W max, SM clock "
                     f"{gpu['median_sm_clock_mhz']:.0f} MHz median, {gpu['max_temp_c']} C max, "
                     f"util {gpu['mean_util_pct']:.0f}%, throttled {gpu['throttled_s']}")
    lines += [f"  WARNING: {warning}" for warning in throttle_warnings(telemetry)]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (OUTPUT_DIR of a training run)")
    parser.add_argument("--out", required=True, help="folder for the records and reports")
    parser.add_argument("--require", action="store_true", help="exit 1 when a run has no GPU telemetry")
    args = parser.parse_args(argv)
    unreadable = absent = 0
    for run in args.runs:
        try:
            results = load_results(run)
        except ResultsError as error:
            print(f"telemetry_record: {error}", file=sys.stderr)
            unreadable += 1
            continue
        name = os.path.basename(os.path.normpath(run))
        atomic_write_json(os.path.join(args.out, f"telemetry_{name}.json"), record(results), indent=1)
        report = write_run_report(run, os.path.join(args.out, f"report_{name}"))
        print("\n".join(summary(name, results)) + f"\n  report: {report}")
        absent += not (results.get("telemetry") or {}).get("available")
    return 1 if unreadable == len(args.runs) or (args.require and absent) else 0


if __name__ == "__main__":
    sys.exit(main())
