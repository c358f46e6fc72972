"""torchcodec decoder (optional; CPU or CUDA): `VideoDecoder(...).get_frames_at(indices)`.

torchcodec numbers frames like vbench does (0 = first frame in presentation order). Files open
with seek_mode="exact" (torchcodec scans the packets, a few ms for a 10 s clip):
"approximate" trusts header frame counts and rates and returned wrong frames for HEVC mp4 and
VP9 webm test videos (and 49 instead of 50 frames for a webm without a frame count).
AVI files with packed B-frames carry wrong frame pts; torchcodec 0.17 then returns neighbouring
frames or fails ("no more frames left to decode"). Videos whose index entry says
timestamps == "count" are therefore decoded by the PyAV backend (counting frames) and moved to
the device. The stream decoded is the index's `VideoInfo.stream_index`, as for PyAV.
"""
from .base import Decoder, VideoDecodeError, check_request
from .pyav import PyAVDecoder

INSTALL_HINT = ("the torchcodec decoding backend needs the `torchcodec` package and FFmpeg shared "
                "libraries (4 to 7): `pip install torchcodec` and install FFmpeg with your system "
                "package manager (e.g. `apt install ffmpeg`, `conda install ffmpeg`); or set "
                "DATA.DECODING_BACKEND pyav")


def import_video_decoder():
    """torchcodec's VideoDecoder class, or a RuntimeError that says how to install it."""
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as error:  # ImportError, or OSError/RuntimeError when FFmpeg libraries are missing
        raise RuntimeError(f"{INSTALL_HINT}. Import failed with: {type(error).__name__}: {error}") from None
    return VideoDecoder


class TorchCodecDecoder(Decoder):
    name = "torchcodec"

    def __init__(self, threads=0, device="cpu"):
        self.threads = int(threads)
        self.device = str(device)
        self._video_decoder = import_video_decoder()
        self._fallback = PyAVDecoder(threads=threads)

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
        except VideoDecodeError:
            raise
        except (RuntimeError, ValueError, IndexError) as error:
            raise VideoDecodeError(path, f"torchcodec: {error}") from None
        row_of = {index: row for row, index in enumerate(wanted)}
        rows = [row_of[index] for index in indices]
        if rows != list(range(len(wanted))):
            batch = batch[rows]
        return batch.permute(0, 2, 3, 1).contiguous()
