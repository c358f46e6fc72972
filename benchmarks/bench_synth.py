"""Synthetic-data generation rate against the number of generator workers.

Generates the same `--videos` kinetics-like videos (340x256, 30 fps, 10 s, H.264) with each worker
count of `--workers` (into temporary folders, deleted after), interleaved over `--repeats`, and
prints videos/s, the speed-up over the first worker count, and the CPU seconds per video (user +
system of the worker processes: flat when the generator scales, whatever the machine's load).

    python benchmarks/bench_synth.py --workers 1,2 --videos 8 --repeats 2
"""
import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(videos, workers, preset):
    """(seconds, CPU seconds of the workers, minor page faults of the workers) for one generation."""
    from vbench.data.synthetic import generate_dataset
    with tempfile.TemporaryDirectory() as tmp:
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        if workers == 1:  # in-process: count this process instead of its children
            before = resource.getrusage(resource.RUSAGE_SELF)
        generate_dataset(os.path.join(tmp, "data"), preset=preset, num_classes=1,
                         train_per_class=videos - 1, val_per_class=1, seed=0, workers=workers,
                         progress=False)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF if workers == 1 else resource.RUSAGE_CHILDREN)
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, after.ru_minflt - before.ru_minflt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--videos", type=int, default=8, help="videos per generation")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", default="kinetics-like")
    parser.add_argument("--code", default=REPO, help="the vbench checkout to measure (default: this one)")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.code))
    from vbench.bench.sysinfo import cpu_model
    counts = [int(w) for w in args.workers.split(",")]
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}")
    runs = {w: [] for w in counts}
    for _ in range(args.repeats):
        for workers in counts:
            runs[workers].append(generate(args.videos, workers, args.preset))
            seconds, cpu, faults = runs[workers][-1]
            print(f"  {workers} workers: {args.videos / seconds:.2f} videos/s, "
                  f"{cpu / args.videos:.2f} CPU s/video, {faults / args.videos:.0f} faults/video", flush=True)
    base = statistics.median(args.videos / s for s, _, _ in runs[counts[0]])
    print(f"{args.videos} {args.preset} videos, median of {args.repeats}; load average now "
          f"{os.getloadavg()[0]:.2f}")
    for workers in counts:
        rate = statistics.median(args.videos / s for s, _, _ in runs[workers])
        cpu = statistics.median(c / args.videos for _, c, _ in runs[workers])
        print(f"{workers:>3} workers: {rate:6.2f} videos/s ({rate / base:.2f}x), {cpu:.2f} CPU s per video")


if __name__ == "__main__":
    main()
