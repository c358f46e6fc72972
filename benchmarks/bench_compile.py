#!/usr/bin/env python3
"""First-step cost and steady step rate of MODEL.COMPILE's regional compilation against eager and
against torch.compile of the whole model, for the benchmark models, side by side in one process.

    python benchmarks/bench_compile.py --device cpu --batch 1 --frames 4 --crop 64
    python benchmarks/bench_compile.py --device cuda --batch 16 --precision bf16

For each model and mode (eager, regional, full) a fresh model takes --steps training steps after
its first; "first step" is the first step's wall and process-CPU seconds (compilation included,
cuDNN autotuning on in every mode), "steady" the median clips/s of the later steps. The compile
caches are cleared between modes (torch._dynamo.reset; inductor's on-disk cache stays, so run each
figure in a new process with its own TORCHINDUCTOR_CACHE_DIR for a cold start).
"""
import argparse
import statistics
import sys

import torch

from vbench.config import load_config
from vbench.models.compile import compile_blocks

from bench_model import CONFIGS, Runner, load_average, machine, random_batch, vbench_model

MODES = {"eager": None, "regional": compile_blocks, "full": torch.compile}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--models", default="x3d_m,mvit_b_16x4")
    parser.add_argument("--modes", default="eager,regional,full")
    return parser.parse_args(argv)


def measure(name, mode, args, batch):
    torch._dynamo.reset()
    model = vbench_model(name, args)[0]
    runner = Runner(model, args.device, *batch, precision=args.precision,
                    channels_last=args.channels_last, compile_model=MODES[mode])
    first_wall, first_cpu = runner.time_steps(1)
    rates = [args.batch / runner.time_steps(1)[0] for _ in range(args.steps)]
    return first_wall, first_cpu, statistics.median(rates)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    print(f"device {args.device} ({machine()}), batch {args.batch}, clip {args.frames} x {args.crop}^2, "
          f"{args.precision}, channels_last {args.channels_last}; {load_average()}")
    print("\n| model | mode | first step s (wall) | first step s (CPU) | steady clips/s | x eager |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        num_classes = load_config(str(CONFIGS[name])).MODEL.NUM_CLASSES
        torch.manual_seed(0)
        batch = random_batch(args, num_classes)
        eager_rate = None
        for mode in args.modes.split(","):
            wall, cpu, rate = measure(name, mode, args, batch)
            eager_rate = eager_rate or (rate if mode == "eager" else None)
            ratio = f"{rate / eager_rate:.2f}x" if eager_rate else "n/a"
            print(f"| {name} | {mode} | {wall:.1f} | {cpu:.1f} | {rate:.2f} | {ratio} |", flush=True)
    print(load_average())


if __name__ == "__main__":
    main()
