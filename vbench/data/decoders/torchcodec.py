"""torchcodec decoder (optional; CPU or CUDA): `VideoDecoder(...).get_frames_at(indices)`.

torchcodec numbers frames like vbench does (0 = first frame in presentation order). Files open
with seek_mode="exact" (torchcodec scans the packets, a few ms for a 10 s clip):
"approximate" trusts header frame counts and rates and returned wrong frames for HEVC mp4 and
VP9 webm test videos (and 49 instead of 50 frames for a webm without a frame count).
AVI files with packed B-frames carry wrong frame pts; torchcodec 0.17 then returns neighbouring
frames or fails ("no more frames left to decode"). Videos whose index entry says
timestamps == "count" are therefore decoded by the PyAV backend (counting frames) and moved to
the device. The stream decoded is the index's `VideoInfo.stream_index`, as for PyAV.

CUDA (DATA.DECODER_DEVICE cuda, device "cuda:N"): torchcodec 0.17 decodes on NVDEC (its default
"nvdec" CUDA backend) and returns uint8 frames on that GPU. Its YUV -> RGB kernel takes one chroma
sample per 2x2 block, applies a float matrix and truncates, where swscale (the CPU reference) uses
integer tables and rounds, and interpolates chroma for high-bit-depth formats; frames therefore
differ from CPU decoding by a few levels (tests/data/test_decoders_cuda.py states the bound). Codecs
NVDEC does not take (torchcodec 0.17 sends all but H.264, HEVC, AV1, VP9, VP8 and MPEG-4 there)
are decoded on the CPU and uploaded; each such case is logged once per process.
`check_cuda_decoding` proves, before a run starts, that this machine can decode on the GPU.
"""
import io
import logging
from fractions import Fraction

import av
import numpy as np
import torch

from vbench.errors import VideoDecodeError

from .base import Decoder, check_request
from .pyav import PyAVDecoder

logger = logging.getLogger(__name__)

INSTALL_HINT = ("the torchcodec decoding backend needs the `torchcodec` package and FFmpeg shared "
                "libraries (versions 4 to 9): `pip install torchcodec` and install FFmpeg with your "
                "system package manager (e.g. `apt install ffmpeg`, `conda install ffmpeg`); or set "
                "DATA.DECODING_BACKEND pyav")


def cuda_hint():
    """What GPU decoding needs, with the torchcodec install line for this torch's CUDA version."""
    tag = "cu" + (torch.version.cuda or "XYZ").replace(".", "")
    return ("GPU decoding needs torchcodec's CUDA build (`pip install torchcodec --index-url "
            f"https://download.pytorch.org/whl/{tag}`), a visible GPU, and NVIDIA's video decoding "
            "library libnvcuvid.so.1, which comes with the driver (in Docker set "
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video); or set DATA.DECODER_DEVICE cpu")


def import_video_decoder():
    """torchcodec's VideoDecoder class, or a RuntimeError that says how to install what is missing."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder
    except Exception as error:  # ImportError, or OSError/RuntimeError when FFmpeg libraries are missing
        raise RuntimeError(f"{INSTALL_HINT}. Import failed with: {type(error).__name__}: {error}") from None
    if getattr(torchcodec, "ffmpeg_major_version", 0) is None:  # recent torchcodec imports without FFmpeg
        raise RuntimeError(f"torchcodec {getattr(torchcodec, '__version__', '')} is installed but found no "
                           f"FFmpeg shared libraries it can load; {INSTALL_HINT}.")
    return VideoDecoder


def check_cuda_device(device):
    """Raise a RuntimeError naming what is missing when `device` ("cuda" or "cuda:N") is unusable."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"decoding on {device} needs CUDA, which is not available here (torch "
                           f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); {cuda_hint()}.")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise RuntimeError(f"decoding on {device}: only {torch.cuda.device_count()} GPU(s) are visible.")


class TorchCodecDecoder(Decoder):
    name = "torchcodec"

    def __init__(self, threads=0, device="cpu"):
        self.threads = int(threads)
        self.device = str(device)
        self._video_decoder = import_video_decoder()
        if self.device != "cpu":
            check_cuda_device(self.device)
        self._fallback = PyAVDecoder(threads=threads)
        self._cpu_fallbacks_logged = set()

    def _open(self, path, stream_index):
        kwargs = {"device": self.device, "seek_mode": "exact", "stream_index": stream_index}
        if self.threads > 0 and self.device == "cpu":
            kwargs["num_ffmpeg_threads"] = self.threads
        return self._video_decoder(path, **kwargs)

    def decode(self, path, frame_indices, info=None):
        path = str(path)
        indices = check_request(path, frame_indices, info)
        info = self._fallback.usable_info(path, info)
        if info.timestamps == "count":
            return self._fallback.decode(path, indices, info).to(self.device)
        wanted = sorted(set(indices))
        try:
            decoder = self._open(path, info.stream_index)
            num_frames = decoder.metadata.num_frames
            if num_frames is not None and wanted[-1] >= num_frames:
                raise VideoDecodeError(
                    path, f"frame index {wanted[-1]} is past the end: the video has {num_frames} frames")
            batch = decoder.get_frames_at(wanted).data  # N x C x H x W uint8
        except (VideoDecodeError, torch.cuda.OutOfMemoryError):  # a full GPU is not a bad video
            raise
        except (RuntimeError, ValueError, IndexError) as error:
            raise VideoDecodeError(path, f"torchcodec: {error}") from None
        if self.device != "cpu":
            self._log_cpu_fallback(decoder, info)
        row_of = {index: row for row, index in enumerate(wanted)}
        rows = [row_of[index] for index in indices]
        if rows != list(range(len(wanted))):
            batch = batch[rows]
        return batch.permute(0, 2, 3, 1).contiguous()

    def _log_cpu_fallback(self, decoder, info):
        status = decoder.cpu_fallback
        if status and info.codec not in self._cpu_fallbacks_logged:
            self._cpu_fallbacks_logged.add(info.codec)
            logger.warning("torchcodec decodes %s videos on the CPU and uploads them to %s (%s), e.g. %s",
                           info.codec or "some", self.device, status, info.rel_path)


def tiny_video(frames=2, size=(128, 96)):
    """An in-memory mp4 (bytes) encoded with PyAV, H.264 (MPEG-4 Part 2 where PyAV lacks libx264),
    for checking a decoder end to end."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(frames):
            image = np.full((size[1], size[0], 3), 40 * index, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def check_cuda_decoding(device="cuda"):
    """Decode a tiny clip on `device` with torchcodec; raise a RuntimeError naming what is missing
    (torchcodec, FFmpeg, CUDA, torchcodec's CUDA build, NVDEC) instead of failing later on every
    video. Returns the decoded frame (uint8 C x H x W on `device`)."""
    video_decoder = import_video_decoder()
    check_cuda_device(device)
    try:
        decoder = video_decoder(tiny_video(), device=device)
        frame = decoder.get_frames_at([0]).data[0]
    except (RuntimeError, ValueError, OSError) as error:  # "Unsupported device: cuda": a CPU-only build
        raise RuntimeError(f"torchcodec cannot decode on {device}: {error}. {cuda_hint()}.") from None
    if decoder.cpu_fallback:
        raise RuntimeError(f"torchcodec decodes on the CPU instead of NVDEC on {device} "
                           f"({decoder.cpu_fallback}); {cuda_hint()}.")
    return frame
