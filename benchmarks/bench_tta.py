#!/usr/bin/env python3
"""Time to target: vbench as it runs by default vs vbench run the way the reference implementation ran.

    python benchmarks/bench_tta.py [--cfg configs/Synthetic/X3D_XS.yaml] [--out runs/bench_tta] [KEY VALUE ...]

Both runs train the same recipe from the same seed on the same data (generated first, outside both
timings). "vbench" is the config as given: early stop at the target, the clock started just before
the first batch (set-up untimed), decode-once loading, channels_last and the precision the config
asks for. "reference-style" is what the reference implementation did: fp32, no channels_last, one
process, every clip decoded separately with a seek (DATA.DECODE_PER_CLIP), every epoch run (no
early stop), and the whole command timed, set-up included; its time to target is its total wall
time, and it counts only if its final accuracy reaches the target.

KEY VALUE overrides go to both runs (e.g. NUM_GPUS 1 DATA_LOADER.NUM_WORKERS 8 on a GPU machine).
Prints one table and the ratio reference-style time / vbench time.
"""
import argparse
import math
import os
import shutil
import sys

from training_runs import ROOT, machine_line, prepare_data, run_net

REFERENCE_STYLE = ["TRAIN.PRECISION", "fp32", "MODEL.CHANNELS_LAST", "False", "MODEL.COMPILE", "False",
                   "BENCHMARK.STOP_AT_TARGET", "False", "NUM_CPU_PROCS", "1", "TRAIN.AUTO_RESUME", "False",
                   "DATA.DECODE_PER_CLIP", "True"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default=os.path.join(ROOT, "configs", "Synthetic", "X3D_XS.yaml"))
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_tta"),
                        help="folder for the two run folders (emptied first)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for both runs")
    return parser.parse_args(argv)


def final_top1(results):
    evaluated = [e for e in results["epochs"] if e["clip_top1"] is not None]
    metric = results["benchmark"]["metric"]
    return evaluated[-1][f"{metric}_top1"] if evaluated else float("nan")


def main(argv=None):
    args = parse_args(argv)
    opts = [word for word in args.opts if word != "--opts"]
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    prepare_data(args.cfg, opts)

    wall_v, res_v = run_net("vbench", args.cfg, os.path.join(args.out, "vbench"), opts)
    wall_r, res_r = run_net("reference-style", args.cfg, os.path.join(args.out, "reference_style"),
                        opts + REFERENCE_STYLE)
    bench_v, bench_r = res_v["benchmark"], res_r["benchmark"]
    target = bench_v["target_top1"]
    t_v = bench_v["time_to_target_s"] if bench_v["reached"] else float("inf")
    t_r = wall_r if final_top1(res_r) >= target else float("inf")

    print("\n| run | time to target (s) | epochs | final top-1 | set-up (s) | whole command (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| vbench | {t_v:.1f} | {bench_v['epochs_to_target']} | {final_top1(res_v):.2f} | "
          f"{bench_v['setup_s']:.1f} (untimed) | {wall_v:.1f} |")
    print(f"| reference-style | {t_r:.1f} | {len(res_r['epochs'])} | {final_top1(res_r):.2f} | "
          f"{bench_r['setup_s']:.1f} (timed) | {wall_r:.1f} |")
    speedup = f"{t_r / t_v:.2f}x" if math.isfinite(t_v) else "n/a (vbench did not reach the target)"
    print(f"\ntarget {bench_v['metric']} top-1 {target:.2f}; speed-up (reference-style / vbench) = {speedup}")
    print(f"{machine_line(res_v)}; load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
