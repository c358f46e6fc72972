"""Training-loader throughput: vbench's loader vs per-clip seek decoding vs decode-only.

On `kinetics-like` synthetic videos (340x256, 30 fps, 10 s, H.264 with a 250-frame GOP) and the
X3D-M recipe (every 16-frame window at 15 fps, random short side in [256, 320], 224 crop, flip,
normalise), with the same number of worker processes, one run measures:

1. vbench: `build_loader` (each video decoded once per epoch, clips sliced out, shuffle buffer),
   with the CPU transforms, and with DATA.GPU_TRANSFORMS (the CPU side only: decoded uint8 clips;
   the GPU transform itself is not timed).
2. per-clip baseline: every clip decoded on its own, seeking to the keyframe before its first
   frame and decoding up to its last (how the reference's torchvision VideoClips pipeline read
   clips), then the same CPU transform (or none, to compare with the GPU_TRANSFORMS row), in a
   shuffled torch DataLoader.
3. decode-only ceiling: every frame of every video decoded once to RGB, nothing else.

and prints clips/s of each, the ratios (goals: vbench >= 3x the baseline and >= 70% of the
ceiling) and the mean number of distinct videos in a vbench batch. Beside each rate it prints the
CPU time the pipeline spent per clip (its worker processes and this one, user + system): on a
machine shared with other jobs the rates follow the load, the CPU cost per clip much less.

    python benchmarks/bench_loader.py --videos 6 --workers 2 --repeats 3
"""
import argparse
import os
import resource
import time

import av
import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from vbench.bench.sysinfo import cpu_model
from vbench.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="", help="dataset root (folder layout); default: generate")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/vbench/bench_loader"),
                        help="where generated videos and the index cache go")
    parser.add_argument("--videos", type=int, default=12, help="training videos to generate")
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes (all three)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    parser.add_argument("--backend", default="pyav", help="vbench decoder backend")
    parser.add_argument("--repeats", type=int, default=1, help="measure everything this many times")
    parser.add_argument("--skip-baseline", action="store_true")
    return parser.parse_args(argv)


def make_data(args):
    if args.data:
        return args.data
    from vbench.data.synthetic import generate_dataset
    classes = 2
    per_class = max(1, -(-args.videos // classes))
    root = os.path.join(args.cache, f"kinetics-like-{classes}x{per_class}")
    if not os.path.isdir(os.path.join(root, "train")):
        print(f"generating {classes * per_class} kinetics-like videos into {root} ...")
        generate_dataset(root, preset="kinetics-like", num_classes=classes, train_per_class=per_class,
                         val_per_class=1, seed=0, workers=args.workers)
    return root


def recipe_cfg(args, root, gpu_transforms=False):
    return load_config(os.path.join(REPO, "configs/Kinetics/X3D_M.yaml"), [
        "DATA.GPU_TRANSFORMS", str(gpu_transforms),
        "NUM_GPUS", "0", "DATA.PATH_TO_DATA_DIR", root, "DATA.LAYOUT", "auto", "DATA.CLIP_LIST", "",
        "DATA.INDEX_CACHE_DIR", os.path.join(args.cache, "index"),
        "DATA.DECODING_BACKEND", args.backend, "TRAIN.BATCH_SIZE", str(args.batch_size),
        "DATA_LOADER.NUM_WORKERS", str(args.workers), "DATA_LOADER.INDEX_WORKERS", str(args.workers)])


def warm_page_cache(infos):
    for info in infos:
        with open(info.path, "rb") as f:
            while f.read(1 << 22):
                pass


def cpu_seconds():
    """CPU time (user + system) used so far by this process and all its children, live or ended."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:  # ended meanwhile: counted in RUSAGE_CHILDREN once reaped
            pass
    return total


def timed(run, *args):
    """(clips, seconds, CPU seconds) of `run(*args)` -> (clips, seconds, ...)."""
    cpu = cpu_seconds()
    result = run(*args)
    return result + (cpu_seconds() - cpu,)


# ------------------------------------------------------------------------------------ vbench
def run_vbench(cfg):
    from vbench.data import build_loader
    loader = build_loader(cfg, "train", training=True)
    start = time.perf_counter()
    clips = 0
    for batch in loader:
        clips += int(batch["valid"].sum())
    seconds = time.perf_counter() - start
    return loader, clips, seconds, loader.mixing_stats()["mean_distinct_videos"]


# ------------------------------------------------------------------------------------ baseline
def decode_with_seek(info, frames):
    """The clip's native frames: seek to the keyframe at or before its first frame, decode to its
    last, convert every frame of that range to RGB, keep the requested ones."""
    first, last = frames[0], frames[-1]
    with av.open(info.path) as container:
        stream = container.streams.video[0]
        ticks_per_frame = 1 / (info.fps * stream.time_base)
        start_pts = info.start_pts or 0
        container.seek(int(start_pts + first * ticks_per_frame), backward=True, any_frame=False,
                       stream=stream)
        decoded = {}
        for frame in container.decode(stream):
            index = round((frame.pts - start_pts) / ticks_per_frame)
            if index > last:
                break
            if index >= first:
                decoded[index] = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(np.stack([decoded[i] for i in frames]))


class PerClipDataset(Dataset):
    def __init__(self, infos, clips, transform, seed=0):
        self.infos, self.clips, self.transform, self.seed = infos, clips, transform, seed

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        ref = self.clips[i]
        info = self.infos[ref.video]
        frames = decode_with_seek(info, ref.frames)
        if self.transform is None:
            return frames, info.label
        return self.transform(frames, torch.Generator().manual_seed(self.seed + i)), info.label


def run_baseline(cfg, infos, plan, workers, batch_size, transform=True):
    from vbench.data.transforms import TrainTransform
    dataset = PerClipDataset(infos, plan.clips, TrainTransform(cfg) if transform else None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    clips = sum(len(labels) for _, labels in loader)
    return clips, time.perf_counter() - start


# ------------------------------------------------------------------------------------ ceiling
class DecodeAll(Dataset):
    def __init__(self, infos):
        self.infos = infos

    def __len__(self):
        return len(self.infos)

    def __getitem__(self, i):
        with av.open(self.infos[i].path) as container:
            stream = container.streams.video[0]
            count = 0
            for frame in container.decode(stream):
                frame.to_ndarray(format="rgb24")
                count += 1
            return count


def run_decode_only(infos, workers):
    loader = DataLoader(DecodeAll(infos), batch_size=None, num_workers=workers)
    start = time.perf_counter()
    frames = sum(int(n) for n in loader)
    return frames, time.perf_counter() - start


def measure_once(args, root, infos, cfg):
    """clips/s and CPU ms per clip of each pipeline (one pass each, fresh workers), plus the plan
    and the mixing figure."""
    frames, decode_s, decode_cpu = timed(run_decode_only, infos, args.workers)
    loader, clips, vbench_s, distinct, vbench_cpu = timed(run_vbench, cfg)
    _, raw_clips, raw_s, _, raw_cpu = timed(run_vbench, recipe_cfg(args, root, gpu_transforms=True))
    num_clips = loader.num_clips  # the ceiling: the plan's clips if they cost only the decode
    rates = {"ceiling": num_clips / decode_s, "frames": frames / decode_s, "vbench": clips / vbench_s,
             "vbench_raw": raw_clips / raw_s}
    cpu_ms = {"ceiling": 1000 * decode_cpu / num_clips, "vbench": 1000 * vbench_cpu / clips,
              "vbench_raw": 1000 * raw_cpu / raw_clips}
    if not args.skip_baseline:
        for transform, key in ((True, "base"), (False, "base_raw")):
            n, seconds, cpu = timed(run_baseline, cfg, infos, loader.plan, args.workers,
                                    args.batch_size, transform)
            rates[key], cpu_ms[key] = n / seconds, 1000 * cpu / n
    return rates, cpu_ms, loader, distinct


LABELS = {
    "ceiling": "decode-only ceiling (clips/s)",
    "frames": "decode-only ceiling (frames/s)",
    "vbench": "vbench, CPU transforms",
    "vbench_raw": "vbench, GPU_TRANSFORMS (CPU side)",
    "base": "per-clip seek, CPU transforms",
    "base_raw": "per-clip seek, no transforms",
}
RATIOS = [("vbench", "base", "vbench / per-clip, CPU transforms (goal >= 3x)"),
          ("vbench_raw", "base_raw", "vbench / per-clip, decode side"),
          ("vbench", "ceiling", "vbench CPU transforms / ceiling"),
          ("vbench_raw", "ceiling", "vbench GPU_TRANSFORMS / ceiling (goal >= 0.7)")]


def main(argv=None):
    args = parse_args(argv)
    root = make_data(args)
    cfg = recipe_cfg(args, root)
    from vbench.data.index import build_index
    from vbench.data.layouts import read_split
    entries, _ = read_split(root, "train", layout="auto")
    infos = build_index(entries, cache_dir=cfg.DATA.INDEX_CACHE_DIR, num_workers=args.workers)
    warm_page_cache(infos)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, av {av.__version__}")
    runs, cpu_runs = [], []
    for _ in range(args.repeats):
        rates, cpu_ms, loader, distinct = measure_once(args, root, infos, cfg)
        runs.append(rates)
        cpu_runs.append(cpu_ms)
    print(f"load average after the runs {os.getloadavg()[0]:.1f}")
    print(f"data: {root}: {len(infos)} videos, {loader.num_clips} clips per epoch, {args.workers} "
          f"workers, batch {args.batch_size}, {args.repeats} runs (median [min, max])")
    print(f"{'':<48}  {'clips/s':>8} {'':<15} {'CPU ms/clip':>11}")
    for key, label in LABELS.items():
        if key in runs[0]:
            values = [r[key] for r in runs]
            line = f"{label:<48}: {np.median(values):8.2f} [{min(values):.2f}, {max(values):.2f}]"
            if key in cpu_runs[0]:
                cpu = [r[key] for r in cpu_runs]
                line = f"{line:<75} {np.median(cpu):8.1f} [{min(cpu):.1f}, {max(cpu):.1f}]"
            print(line)
    for top, bottom, label in RATIOS:
        if bottom in runs[0]:
            values = [r[top] / r[bottom] for r in runs]
            line = f"{label:<48}: {np.median(values):8.2f} [{min(values):.2f}, {max(values):.2f}]"
            cpu = [c[bottom] / c[top] for c in cpu_runs]  # the rate ratio if CPU time were all that counts
            print(f"{line:<75} {np.median(cpu):8.2f} [{min(cpu):.2f}, {max(cpu):.2f}]")
    print(f"{'mean distinct videos per vbench batch':<48}: {distinct:8.2f}")
    print("(the CPU column of a ratio is the inverse ratio of CPU ms per clip: the rate ratio on a "
          "machine where the pipelines are CPU-bound and have the cores to themselves)")


if __name__ == "__main__":
    main()
