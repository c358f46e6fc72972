"""Video decoders: `get_decoder(backend, threads, device)` -> an object with
`decode(path, frame_indices, info=None) -> torch.uint8 [N, H, W, 3]` (see `base.Decoder`)."""
from vbench.errors import VideoDecodeError

from .base import Decoder
from .pyav import PyAVDecoder
from .torchcodec import TorchCodecDecoder

BACKENDS = ("pyav", "torchcodec")


def get_decoder(backend="pyav", threads=0, device="cpu"):
    """The decoder for DATA.DECODING_BACKEND / DATA.DECODER_THREADS / DATA.DECODER_DEVICE.

    threads: 0 keeps the backend's default, 1 decodes on one thread, N > 1 uses N decoder threads.
    device: "cpu", or "cuda"/"cuda:N" (torchcodec only, on NVDEC; frames come back on that GPU;
    without CUDA, torchcodec or FFmpeg libraries a RuntimeError names what is missing).
    """
    backend = str(backend).lower()
    if backend == "pyav":
        if not str(device).startswith("cpu"):
            raise ValueError(f"the pyav backend decodes on the CPU only (got device {device!r}); "
                             "set DATA.DECODER_DEVICE cpu or DATA.DECODING_BACKEND torchcodec")
        return PyAVDecoder(threads=threads)
    if backend == "torchcodec":
        return TorchCodecDecoder(threads=threads, device=device)
    raise ValueError(f"unknown decoding backend {backend!r} (DATA.DECODING_BACKEND); choose one of {list(BACKENDS)}")


__all__ = ["BACKENDS", "Decoder", "VideoDecodeError", "get_decoder"]
