#!/usr/bin/env python3
"""How well `vbench preflight` predicts a run: preflight on a config, then the real run of the same
config (`tools/run_net.py`, a few epochs, no early stop), side by side on the same machine.

    python benchmarks/bench_preflight.py --cfg configs/Synthetic/X3D_XS.yaml --epochs 3
    python benchmarks/bench_preflight.py --cfg configs/Kinetics/X3D_M.yaml --epochs 3 NUM_GPUS 1 \
        DATA.PATH_TO_DATA_DIR /tmp/suite_data DATA.LAYOUT folder DATA.CLIP_LIST ""

Prints the predicted and measured training clips/s (the run's median over the epochs after the
first), epoch seconds (training + evaluation) and their ratios; --json FILE writes them. KEY VALUE
overrides go to both.
"""
import argparse
import json
import os
import statistics
import sys
import time

from training_runs import ROOT, prepare_data, run_net


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", required=True, help="config file")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the real run (at least 2)")
    parser.add_argument("--budget", type=float, default=110.0, help="preflight's seconds")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_preflight"))
    parser.add_argument("--json", default="", help="write the comparison to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for both")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch starts the workers)")
    return args


def compare(cfg_file, epochs, opts, out, budget):
    """{predicted, measured, ratio, ...}: preflight, then the run, in this order."""
    from vbench.config import load_config
    from vbench.engine.preflight import run_preflight

    run_opts = [*opts, "SOLVER.MAX_EPOCH", str(epochs), "BENCHMARK.STOP_AT_TARGET", "False",
                "TRAIN.AUTO_RESUME", "False", "TRAIN.EVAL_PERIOD", "1"]
    prepare_data(cfg_file, run_opts)
    started = time.perf_counter()
    measured, result, _ = run_preflight(load_config(cfg_file, run_opts), budget, log=lambda line: None)
    preflight_s = time.perf_counter() - started
    _, results = run_net("run", cfg_file, out, run_opts)
    steady = results["epochs"][1:]
    rate = statistics.median(e["clips_per_s"] for e in steady)
    epoch_s = statistics.median(e["train_s"] + (e["eval_s"] or 0.0) for e in steady)
    predicted_epoch = result["train_s"] + result["eval_s"]
    return {"config": cfg_file, "opts": list(opts), "preflight_s": preflight_s,
            "predicted_clips_per_s": result["clips_per_s"], "measured_clips_per_s": rate,
            "clips_per_s_ratio": result["clips_per_s"] / rate, "predicted_epoch_s": predicted_epoch,
            "measured_epoch_s": epoch_s, "epoch_s_ratio": predicted_epoch / epoch_s,
            "side": result["side"], "loader": measured.loader, "step": measured.step,
            "together": measured.together, "load_average": os.getloadavg()[0]}


def main(argv=None):
    args = parse_args(argv)
    opts = [word for word in args.opts if word != "--opts"]
    row = compare(args.cfg, args.epochs, opts, args.out, args.budget)
    print(f"\npreflight ({row['preflight_s']:.0f} s): {row['predicted_clips_per_s']:.1f} clips/s, an epoch "
          f"{row['predicted_epoch_s']:.1f} s ({row['side']} limits; loader alone {row['loader']:.1f}, "
          f"step alone {row['step']:.1f}, together {row['together']:.1f} clips/s)")
    print(f"the run (median of epochs 2-{args.epochs}): {row['measured_clips_per_s']:.1f} clips/s, an epoch "
          f"{row['measured_epoch_s']:.1f} s")
    print(f"predicted / measured: clips/s {row['clips_per_s_ratio']:.2f}, epoch {row['epoch_s_ratio']:.2f}; "
          f"load average {row['load_average']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
