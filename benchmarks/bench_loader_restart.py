"""What a dead loader worker costs: the training loader's epoch uninterrupted, then the same epoch
with worker 0 killed (SIGKILL) once a given share of the batches has arrived, side by side.

On `kinetics-like` synthetic videos and the X3D-M recipe (as bench_loader.py: every 16-frame window
at 15 fps, random scale, crop and flip, batches of 8). The consumer touches each batch and drops it.
Per setting it prints the epoch's seconds without and with the kill, the seconds the kill added,
that as a share of the uninterrupted epoch, the loader's own `resume_s` (from noticing the death to
the next batch) and whether the batches were the same (video ids, frames and clip values).

    python benchmarks/bench_loader_restart.py                       # 2 workers, kills at 25/50/90%: ~3 min on 2 cores
    python benchmarks/bench_loader_restart.py --workers 4 --at 0.5 --videos-per-worker 8
"""
import argparse
import os
import signal
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_loader import find_or_generate, load_index, recipe_cfg  # noqa: E402
from loader_pipelines import touch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vbench.data.loader import loader_from_index  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="loader workers")
    parser.add_argument("--at", default="0.25,0.5,0.9", help="comma-separated shares of the epoch's batches")
    parser.add_argument("--videos-per-worker", type=int, default=4, help="videos per worker (9 clips each)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backend", default="pyav")
    parser.add_argument("--data", default="", help="dataset root (folder layout); default: generate")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/vbench/bench_loader"))
    args = parser.parse_args(argv)
    args.opts, args.code = [], ""
    args.shares = [float(x) for x in args.at.split(",")]
    return args


def epoch(loader, kill_after=None):
    """(seconds, records, restart events) of epoch 1; SIGKILL worker 0 after `kill_after` batches."""
    loader.set_epoch(1)
    records, start = [], time.perf_counter()
    for index, batch in enumerate(loader):
        touch(batch["clips"])
        records.append((batch["video_ids"].tolist(), batch["frame_indices"].tolist(),
                        float(batch["clips"].double().sum())))
        del batch
        if index + 1 == kill_after:
            os.kill(loader.data_loader._iterator._workers[0].pid, signal.SIGKILL)
    return time.perf_counter() - start, records, list(loader.restarts.events)


def main(argv=None):
    args = parse_args(argv)
    root, _ = find_or_generate(args, args.videos_per_worker * args.workers)
    infos, class_names = load_index(args, root)
    infos = infos[:args.videos_per_worker * args.workers]
    cfg = recipe_cfg(args, root, args.workers, "vbench", torch.device("cpu"))
    torch.set_num_threads(1)
    print(f"{len(infos)} kinetics-like videos, {args.workers} workers, batches of {args.batch_size}, "
          f"{torch.get_num_threads()} main-process thread")
    print("| killed after | batches | epoch s | with the kill s | added s | added / epoch | resume_s | same batches |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for share in args.shares:
        loader = loader_from_index(cfg, infos, class_names, training=True)
        epoch(loader)  # warm-up: the workers start, the files are in the page cache
        clean_s, expected, _ = epoch(loader)
        kill_after = max(1, round(share * len(loader)))
        killed_s, records, events = epoch(loader, kill_after)
        resume = events[0]["resume_s"] if events else float("nan")
        print(f"| {kill_after} of {len(loader)} | {len(records)} | {clean_s:.2f} | {killed_s:.2f} | "
              f"{killed_s - clean_s:.2f} | {(killed_s - clean_s) / clean_s:.2f} | {resume:.2f} | "
              f"{records == expected} |")
        loader.close()


if __name__ == "__main__":
    main()
