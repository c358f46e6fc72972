"""`vbench sysinfo`: the hardware and software block of results.json (vbench/bench/sysinfo.py)."""
import argparse
import json

from vbench.bench.sysinfo import collect_sysinfo, format_sysinfo


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vbench sysinfo",
                                     description="Print the hardware and software block of results.json.")
    parser.add_argument("--data", default=None, help="dataset folder whose storage to describe")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    info = collect_sysinfo(args.data)
    print(json.dumps(info, indent=2) if args.json else format_sysinfo(info))
    return 0
