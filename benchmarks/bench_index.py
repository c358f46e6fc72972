"""Index build time vs a decode-everything timestamp scan, on generated Kinetics-like videos.

    python benchmarks/bench_index.py [--videos 12] [--frames 300] [--workers 2] [--folder DIR]
                                     [--real-clip PATH]

Two sets of `--videos` videos: generated H.264 clips (340x256, 30 fps, keyframe every 250 frames,
like real Kinetics clips, but tiny files: flat numbered frames compress to ~30 KB), and copies of
a real Kinetics-style clip (default ../shared/videos/kinetics_style_340x256_30fps.mp4 beside the
checkout, 1.3 MB, skipped when absent). For each set it times per video:
  header   probe_video(scan_packets=False): container header only
  packets  probe_video(): header + demuxing every packet without decoding (what the index does)
  decode   decoding every frame to read its timestamp (the slow way to count frames)
and build_index cold (threads, empty cache) and warm (every entry from the cache).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av

from vbench.data.index import build_index, probe_video
from vbench.data.layouts import read_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from videos import write_numbered_video  # noqa: E402

REAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "videos" / "kinetics_style_340x256_30fps.mp4"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="build_index threads")
    parser.add_argument("--folder", default="", help="dataset folder to create or reuse")
    parser.add_argument("--real-clip", default=str(REAL_CLIP), help="real clip copied --videos times")
    return parser.parse_args(argv)


def copy_real_clip(root, count, clip):
    for i in range(count):
        path = root / "train" / f"class{i % 4}" / f"real{i:03d}.mp4"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, path)


def make_videos(root, count, frames):
    for i in range(count):
        path = root / "train" / f"class{i % 4}" / f"clip{i:03d}.mp4"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_numbered_video(path, frames, fps=30, codec="libx264", size=(340, 256), gop=250)


def decode_timestamps(path):
    with av.open(path) as container:
        return [frame.pts for frame in container.decode(video=0)]


def per_video_ms(function, paths):
    start = time.perf_counter()
    for path in paths:
        function(path)
    return 1000 * (time.perf_counter() - start) / len(paths)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    base = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="bench_index_"))
    print(f"{os.cpu_count()} logical CPUs, av {av.__version__}, build_index with {args.workers} threads")
    make_videos(base / "generated", args.videos, args.frames)
    bench_set("generated", base / "generated", args)
    if Path(args.real_clip).is_file():
        copy_real_clip(base / "real", args.videos, args.real_clip)
        bench_set("real clip", base / "real", args)
    if not args.folder:
        shutil.rmtree(base)


def bench_set(name, root, args):
    entries, _ = read_split(root, "train", layout="folder")
    paths = [e.path for e in entries]
    for path in paths:  # warm the page cache so every method reads from memory
        Path(path).read_bytes()
    header = per_video_ms(lambda p: probe_video(p, scan_packets=False), paths)
    packets = per_video_ms(probe_video, paths)
    decode = per_video_ms(decode_timestamps, paths)
    cache = Path(tempfile.mkdtemp(prefix="bench_index_cache_"))
    start = time.perf_counter()
    infos = build_index(entries, cache_dir=str(cache), num_workers=args.workers, progress=False)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    build_index(entries, cache_dir=str(cache), num_workers=args.workers, progress=False)
    warm = time.perf_counter() - start
    assert all(info.error is None and info.num_frames == len(decode_timestamps(info.path)) for info in infos[:2])
    mb = sum(os.path.getsize(p) for p in paths) / len(paths) / 2 ** 20
    print(f"\n{name}: {len(paths)} videos, {infos[0].num_frames} frames {infos[0].width}x{infos[0].height} "
          f"{infos[0].codec}, keyframes {infos[0].keyframes}, {mb:.2f} MB each")
    print(f"  header only          : {header:7.2f} ms/video")
    print(f"  packet scan (index)  : {packets:7.2f} ms/video")
    print(f"  decode every frame   : {decode:7.2f} ms/video   ({decode / packets:.0f}x the packet scan)")
    print(f"  build_index cold     : {1000 * cold:7.1f} ms for {len(paths)} videos")
    print(f"  build_index warm     : {1000 * warm:7.1f} ms (all from the cache)")
    shutil.rmtree(cache)


if __name__ == "__main__":
    main()
