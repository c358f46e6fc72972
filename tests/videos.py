"""Tiny numbered test videos, encoded with PyAV: every frame shows its own index.

The index is drawn as a grid of black/white blocks (a 10-bit binary code, most significant bit
top-left), big enough to survive lossy compression, so a test can check that a decoder returned
exactly the frames it was asked for.

Public API (keep it small; other test files import it):

    write_numbered_video(path, num_frames, fps=30, codec="libx264", size=(64, 48), gop=None,
                         start_pts=0.0, vfr=False, bframes=None) -> list[float]
        Encode frames 0..num_frames-1 into `path`; the container comes from the suffix
        (.mp4, .avi, .webm, .mkv). Returns each frame's expected presentation time in SECONDS,
        in presentation order (frame i is shown at result[i]).
    read_frame_number(frame_uint8_hwc) -> int
        Read the index back from a decoded uint8 H x W x 3 frame (numpy array or torch tensor).
    encoder_available(codec) -> bool
        Whether this PyAV build can encode with `codec` (e.g. "libx265").
    write_audio_only(path, seconds=1.0)
        A valid media file with one audio stream and no video stream (.m4a / .mp4 / .mka).
    SHARED_VIDEOS
        Real clips nobody here encoded (../shared/videos beside the checkout, or
        $VBENCH_SHARED_VIDEOS); tests that read them skip when the folder is absent.
    ffmpeg_encoders() -> set[str]
        Encoders of the `ffmpeg` command-line tool (empty when there is none).
    ffmpeg_run(*args)
        Run `ffmpeg -v error -y ARGS` (raises CalledProcessError with ffmpeg's message).
    ffmpeg_rgb24(path, width, height, stream_index=None) -> uint8 array N x H x W x 3
        FFmpeg's own RGB conversion of every frame of one video stream (default: ffmpeg's choice).
    BACKENDS, decoder_or_skip(backend)
        The CPU decoding backends to parametrize a test with (torchcodec, an optional package, is
        marked `extras`), and get_decoder(backend) or a skip naming what is missing.

Typical calls: H.264 mp4 with a long GOP (`gop=250`), MPEG-4 avi (`codec="mpeg4"`, `.avi`),
HEVC mp4 (`codec="libx265"`), VP9 webm (`codec="libvpx-vp9"`, `.webm`), variable frame rate
(`vfr=True`, mp4/mkv/webm only: AVI cannot store it) and a non-zero start time (`start_pts=1.5`).
"""
import functools
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vbench.data.decoders import get_decoder

BITS = 10  # frame numbers 0..1023
GRID_COLS, GRID_ROWS = 5, 2
VFR_TICKS = (1, 1, 1, 9, 8)  # frame durations in ticks of 1/(4*fps) for vfr=True (mean 4 ticks):
# uneven enough that no constant rate explains the timestamps
TICKS_PER_FRAME = 4
SHARED_VIDEOS = Path(os.environ.get("VBENCH_SHARED_VIDEOS",
                                    Path(__file__).resolve().parents[2] / "shared" / "videos"))


BACKENDS = ["pyav", pytest.param("torchcodec", marks=pytest.mark.extras)]


def decoder_or_skip(backend, **kwargs):
    try:
        return get_decoder(backend, **kwargs)
    except RuntimeError as error:  # torchcodec or FFmpeg's shared libraries are missing
        pytest.skip(f"{backend} unavailable: {error}")


def encoder_available(codec):
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # unknown codec or decoder-only build
        return False
    return True


def _cell_bounds(length, parts):
    edges = np.linspace(0, length, parts + 1).round().astype(int)
    return list(zip(edges[:-1], edges[1:]))


def _draw_number(number, width, height):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    rows, cols = _cell_bounds(height, GRID_ROWS), _cell_bounds(width, GRID_COLS)
    for bit in range(BITS):
        if (number >> (BITS - 1 - bit)) & 1:
            (y0, y1), (x0, x1) = rows[bit // GRID_COLS], cols[bit % GRID_COLS]
            image[y0:y1, x0:x1] = 255
    return image


def read_frame_number(frame_uint8_hwc):
    """Index drawn by `write_numbered_video`, read from the centre of each block."""
    frame = np.asarray(frame_uint8_hwc.cpu() if hasattr(frame_uint8_hwc, "cpu") else frame_uint8_hwc)
    height, width = frame.shape[:2]
    rows, cols = _cell_bounds(height, GRID_ROWS), _cell_bounds(width, GRID_COLS)
    number = 0
    for bit in range(BITS):
        (y0, y1), (x0, x1) = rows[bit // GRID_COLS], cols[bit % GRID_COLS]
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        centre = frame[y0 + dy:y1 - dy, x0 + dx:x1 - dx].astype(np.float32).mean()
        number = (number << 1) | int(centre > 127)
    return number


def _time_base(codec, fps, vfr, path):
    if str(path).endswith(".avi"):
        if vfr:
            raise ValueError("AVI cannot store variable frame rate; use .mp4, .mkv or .webm")
        return 1 / Fraction(fps)  # AVI timestamps count frames
    return 1 / (Fraction(fps) * TICKS_PER_FRAME)


def write_numbered_video(path, num_frames, fps=30, codec="libx264", size=(64, 48), gop=None,
                         start_pts=0.0, vfr=False, bframes=None):
    """Encode `num_frames` numbered frames; see the module docstring. `size` is (width, height).

    gop: frames between keyframes (None = the encoder's default); start_pts: presentation time
    of frame 0 in seconds; vfr: frame durations cycle through uneven values instead of 1/fps;
    bframes: maximum consecutive B-frames (None = the encoder's default; MPEG-4 in AVI with
    B-frames gives the "packed B-frames" files whose pts are unreliable).
    """
    if num_frames > 2 ** BITS:
        raise ValueError(f"at most {2 ** BITS} frames can be numbered")
    width, height = size
    time_base = _time_base(codec, fps, vfr, path)
    ticks_per_frame = round(1 / (Fraction(fps) * time_base))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if gop is not None:
            stream.codec_context.gop_size = gop
            if codec == "libx264":
                stream.codec_context.options = {"keyint_min": str(gop), "sc_threshold": "0"}
            elif codec == "libx265":
                params = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=none"
                stream.codec_context.options = {"x265-params": params}
        elif codec == "libx265":
            stream.codec_context.options = {"x265-params": "log-level=none"}
        pts = round(Fraction(start_pts) / time_base)
        expected = []
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(_draw_number(index, width, height), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = pts, time_base
            expected.append(float(pts * time_base))
            container.mux(stream.encode(frame))
            pts += VFR_TICKS[index % len(VFR_TICKS)] if vfr else ticks_per_frame
        container.mux(stream.encode(None))
    return expected


def write_audio_only(path, seconds=1.0, rate=16000):
    """A media file with a single audio stream (a sine tone) and no video."""
    codec = "aac" if not str(path).endswith(".mka") else "libopus"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        samples_per_frame = 1024
        t = 0
        while t < seconds * rate:
            wave = np.sin(2 * np.pi * 440 * (t + np.arange(samples_per_frame)) / rate)
            frame = av.AudioFrame.from_ndarray((wave[None] * 0.3).astype(np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = rate, t
            container.mux(stream.encode(frame))
            t += samples_per_frame
        container.mux(stream.encode(None))


@functools.lru_cache(maxsize=1)
def ffmpeg_encoders():
    if shutil.which("ffmpeg") is None:
        return frozenset()
    listing = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True,
                             timeout=60).stdout
    rows = [line.split() for line in listing.splitlines() if "=" not in line]  # skip the legend
    return frozenset(row[1] for row in rows if len(row) > 1 and row[0][:1] in "VAS")


def ffmpeg_run(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True, capture_output=True,
                   timeout=120)


def ffmpeg_rgb24(path, width, height, stream_index=None):
    mapping = ["-map", f"0:{stream_index}"] if stream_index is not None else []
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), *mapping, "-fps_mode", "passthrough",
                          "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], check=True, capture_output=True,
                         timeout=120).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
