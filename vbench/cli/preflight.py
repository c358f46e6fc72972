"""`vbench preflight --cfg FILE [KEY VALUE ...]`: before a run, which side will limit it, the
expected clips/s and times, and what would help (vbench/engine/preflight.py)."""
import argparse
import json
import sys
from dataclasses import asdict

from vbench.bench.forecast import format_report
from vbench.config import load_config
from vbench.engine.preflight import environment_note, run_preflight
from vbench.errors import VbenchError


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="vbench preflight",
        description="Measure, in under two minutes, whether this machine's CPUs can feed its GPUs for "
                    "a config: the loader alone, the training step alone, both together, and the "
                    "expected clips/s, epoch time and time for the recipe's epochs.")
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="the run's config file")
    parser.add_argument("--budget", type=float, default=110.0, help="seconds for the measurements")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, as for vbench train")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.cfg_file, args.opts)
        measured, result, tips = run_preflight(cfg, args.budget, log=lambda line: print(line, file=sys.stderr))
    except (VbenchError, FileNotFoundError) as error:
        print(f"vbench preflight: error: {error}", file=sys.stderr)
        return 1
    measured.notes.append(environment_note())
    print(format_report(measured, result, tips))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"measured": asdict(measured), "forecast": result, "advice": tips}, f, indent=1)
    return 0
