"""CPU cost of the PyAV backend's RGB conversion: FFmpeg's reference conversion vs PyAV's default.

`vbench.data.decoders.pyav.to_rgb24` converts progressive 8-bit yuv420p/yuv422p frames with the
same call as before (`frame.to_ndarray(format="rgb24")`, swscale's unscaled kernels) but on one
swscale thread instead of PyAV's default of one per core, and other formats from an untagged copy
with the bicubic filter (see that module's docstring). This script encodes a 340x256 clip
(Kinetics-sized, moving colour bars, 30 fps) in 8-bit and in 10-bit H.264, decodes its frames once,
then times both conversions on the same frames, interleaved in alternating order, in CPU time of this process
(`time.process_time`, robust to other jobs on the machine), and prints microseconds per frame and
their ratio. It also times the whole PyAV backend (`PyAVDecoder.decode` of every frame) per frame;
`--decoder-only` times just that, so that older code can be measured too:

    python benchmarks/bench_rgb.py --frames 300 --repeats 10
    git archive f547335 vbench | tar -x -C /tmp/before   # the decoder before to_rgb24
    PYTHONPATH=/tmp/before python benchmarks/bench_rgb.py --decoder-only --folder /tmp/clips
    PYTHONPATH=$PWD python benchmarks/bench_rgb.py --decoder-only --folder /tmp/clips
"""
import argparse
import os
import statistics
import tempfile
import time
from fractions import Fraction

import av
import numpy as np

from vbench.data.decoders.pyav import PyAVDecoder
from vbench.data.index import VideoInfo, info_from_probe, probe_video


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="frames per clip")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the frames")
    parser.add_argument("--folder", default="", help="where the clips are written (default: a temporary one)")
    parser.add_argument("--decoder-only", action="store_true", help="time PyAVDecoder.decode only")
    return parser.parse_args(argv)


def write_clip(path, pix_fmt, frames, size=(340, 256)):
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = 250
        for index in range(frames):
            image = np.stack([x * 255 // width, y * 255 // height, ((x + 4 * index) // 24 % 2) * 255], -1)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame.reformat(format=pix_fmt)))
        container.mux(stream.encode(None))


def cpu_us_per_frame(convert, frames):
    start = time.process_time()
    for frame in frames:
        convert(frame)
    return (time.process_time() - start) / len(frames) * 1e6


def conversion_costs(path, repeats):
    """{conversion: median CPU microseconds per frame} over the clip's decoded frames."""
    from vbench.data.decoders.pyav import to_rgb24
    with av.open(path) as container:
        frames = list(container.decode(video=0))
    conversions = {"PyAV default to_ndarray(rgb24)": lambda f: f.to_ndarray(format="rgb24"),
                   "vbench to_rgb24 (reference)": to_rgb24}
    times = {name: [] for name in conversions}
    for repeat in range(repeats):
        order = list(conversions) if repeat % 2 == 0 else list(reversed(conversions))  # no order bias
        for name in order:
            times[name].append(cpu_us_per_frame(conversions[name], frames))
    return {name: statistics.median(t) for name, t in times.items()}


def decoder_cost(path, repeats):
    """Median CPU microseconds per frame of PyAVDecoder.decode of every frame (one thread)."""
    info = info_from_probe(VideoInfo(path, path, 0), probe_video(path))
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        PyAVDecoder(threads=1).decode(path, list(range(info.num_frames)), info)
        runs.append((time.process_time() - start) / info.num_frames * 1e6)
    return statistics.median(runs)


def main(argv=None):
    args = parse_args(argv)
    folder = args.folder or tempfile.mkdtemp(prefix="bench_rgb_")
    print(f"load average {os.getloadavg()[0]:.2f}, av {av.__version__}, {args.frames} frames of 340x256, "
          f"median of {args.repeats} passes, CPU microseconds per frame")
    for pix_fmt in ("yuv420p", "yuv420p10le"):
        path = os.path.join(folder, f"clip_{pix_fmt}.mp4")
        if not os.path.exists(path):
            write_clip(path, pix_fmt, args.frames)
        decode = f"PyAVDecoder.decode (1 thread, conversion included): {decoder_cost(path, args.repeats):7.1f}"
        if args.decoder_only:
            print(f"{pix_fmt:12s} {decode}")
            continue
        conversions = conversion_costs(path, args.repeats)
        default, reference = conversions.values()
        print(f"{pix_fmt:12s} " + "  ".join(f"{k}: {v:7.1f}" for k, v in conversions.items())
              + f"  ratio reference/default: {reference / default:.3f}  {decode}")


if __name__ == "__main__":
    main()
