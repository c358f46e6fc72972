#!/usr/bin/env python3
"""Per-step cost of the preemption check (vbench/engine/preemption.py) in a gloo world of processes
on this machine: the all-reduce of the stop flag started at one step boundary and read at the next
(what the trainer does), against a blocking all-reduce at every step and against no check.

    python benchmarks/bench_preemption.py [--procs 2] [--steps 500] [--work-ms 20] [--rounds 3]

Each process runs --steps steps of --work-ms milliseconds of sleep (a training step that does not
hold the CPU, as one waiting for the GPU) and checks after each; the step time over the run is
measured per mode, the modes interleaved over --rounds rounds, and the median overhead per step
against no check is printed for each mode.
"""
import argparse
import os
import statistics
import sys
import time

import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's vbench

from vbench.engine.distributed import free_local_address  # noqa: E402
from vbench.engine.preemption import PreemptionHook  # noqa: E402

MODES = ("none", "async (vbench)", "blocking")


def run_steps(hook, mode, steps, work_s):
    start = time.perf_counter()
    for _ in range(steps):
        time.sleep(work_s)
        if mode == "async (vbench)":
            hook.any_process_asked()
        elif mode == "blocking":
            hook.any_process_asked(wait=True)
    if hook.pending is not None:
        hook.pending.wait()
        hook.pending = None
    return (time.perf_counter() - start) / steps


def worker(rank, procs, address, args, queue):
    dist.init_process_group("gloo", init_method=address, world_size=procs, rank=rank)
    hook = PreemptionHook()
    hook.group = dist.new_group(backend="gloo")
    times = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            dist.barrier()
            times[mode].append(run_steps(hook, mode, args.steps, args.work_ms / 1000))
    if rank == 0:
        queue.put(times)
    dist.destroy_process_group()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--work-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    context = mp.get_context("spawn")
    queue = context.Queue()
    mp.start_processes(worker, args=(args.procs, free_local_address(), args, queue), nprocs=args.procs,
                       start_method="spawn")
    times = queue.get()
    base = statistics.median(times["none"])
    print(f"{args.procs} gloo processes, {args.steps} steps of {args.work_ms:g} ms, {args.rounds} rounds "
          f"(median step time; overhead against no check)")
    for mode in MODES:
        step = statistics.median(times[mode])
        print(f"  {mode:<15} {1e3 * step:8.3f} ms/step   overhead {1e6 * (step - base):8.1f} us/step "
              f"({100 * (step - base) / base:+.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
