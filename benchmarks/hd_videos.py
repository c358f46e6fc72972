"""Larger copies of generated kinetics-like videos, for decoding at other frame sizes
(`bench_loader.py --frame-size 1920x1080`, the NVDEC comparison): every frame scaled by FFmpeg's
scaler (bicubic) and encoded again with x264 (veryfast, the same GOP, frame rate and length) at a
bit rate for the new size (0.1 bit per pixel and frame: 6 Mbit/s at 1080p30). Scaled-up content is
smoother than real video of that size, so it decodes a little faster: a lower bound on decoding's
cost there."""
import os
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction

import av

BITS_PER_PIXEL = 0.1


def transcode(source, target, width, height):
    """One video: `source` scaled to width x height into `target` (written via a temporary name)."""
    partial = target + ".part.mp4"
    with av.open(source) as inp, av.open(partial, "w") as out:
        video = inp.streams.video[0]
        rate = round(video.average_rate)  # the generated videos are constant-rate
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = int(BITS_PER_PIXEL * width * height * rate)
        stream.options = {"preset": "veryfast", "g": "250", "threads": "1"}
        for number, frame in enumerate(inp.decode(video)):
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
            scaled.pts, scaled.time_base = number, Fraction(1, rate)  # in frames, as the generator writes them
            out.mux(stream.encode(scaled))
        out.mux(stream.encode(None))
    os.replace(partial, target)


def scaled_copy(root, target_root, width, height, videos, workers):
    """`target_root` holding the first `videos` training videos of `root` (folder layout) at
    width x height; made once, reused when complete. Returns target_root."""
    sources = []
    train = os.path.join(root, "train")
    for name in sorted(os.listdir(train)):
        folder = os.path.join(train, name)
        if os.path.isdir(folder):
            sources += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".mp4")]
    sources = sources[:videos]
    targets = [os.path.join(target_root, os.path.relpath(s, root)) for s in sources]
    todo = [(s, t) for s, t in zip(sources, targets) if not os.path.exists(t)]
    for target in targets:
        os.makedirs(os.path.dirname(target), exist_ok=True)
    if todo:
        print(f"scaling {len(todo)} videos to {width}x{height} into {target_root} with {workers} workers ...",
              flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(transcode, *zip(*todo), [width] * len(todo), [height] * len(todo)))
    return target_root
