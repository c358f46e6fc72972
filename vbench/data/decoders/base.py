"""What every decoder backend shares: the error type and the request checks."""
import os

from vbench.errors import VideoDecodeError


class Decoder:
    """Backend interface.

    `decode(path, frame_indices, info=None)` returns a `torch.uint8` tensor
    `[len(frame_indices), H, W, 3]` holding exactly the requested native frames, where frame 0 is
    the first frame in presentation order. Indices must be ascending; repeats are allowed.
    `info` is the video's `vbench.data.index.VideoInfo` (metadata from the index); with None the
    backend probes the file itself. Every failure raises `VideoDecodeError(path, reason)`.
    """

    name = "base"

    def decode(self, path, frame_indices, info=None):
        raise NotImplementedError


def check_request(path, frame_indices, info=None):
    """Reject what no backend can serve, with the reason; returns the indices as a list of ints."""
    indices = [int(i) for i in frame_indices]
    if not indices:
        raise VideoDecodeError(path, "no frame indices were requested")
    if any(b < a for a, b in zip(indices, indices[1:])):
        raise VideoDecodeError(path, f"frame indices must be ascending, got {indices}")
    if indices[0] < 0:
        raise VideoDecodeError(path, f"negative frame index {indices[0]}")
    if info is not None and info.num_frames and indices[-1] >= info.num_frames:
        raise VideoDecodeError(
            path, f"frame index {indices[-1]} is past the end: the video has {info.num_frames} frames")
    check_file(path)
    return indices


def check_file(path):
    """Missing and empty files fail early with a plain reason instead of an FFmpeg message."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except OSError as error:
        raise VideoDecodeError(path, f"cannot read the file ({error.strerror or error})") from None
    if size == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes)")
