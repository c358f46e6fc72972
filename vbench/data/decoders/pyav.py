"""PyAV decoder: seek to the keyframe before the first wanted frame, decode forward, map by pts.

Frame index -> pts comes from the video's index entry (`VideoInfo.timestamps`):
- "cfr": index i <-> pts `start_pts + round(i * ticks_per_frame)`; a decoded frame's index is
  `round((pts - start_pts) / ticks_per_frame)`. The index verified this formula on every packet.
- "vfr": index i <-> `frame_pts[i]` (every frame's pts, stored by the index), looked up exactly.
- "count": the container's pts are unreliable (AVI with B-frames); decode from the first frame
  and count frames in output (presentation) order.
Packets of frames that are not wanted (the pre-roll from the keyframe, and at 15 fps every other
frame between wanted ones) are decoded with skip_frame="NONREF": frames no other frame refers to
(most B-frames) are not decoded at all (1.6x faster pre-roll on a Kinetics-style clip; a quarter
less loader CPU per clip, docs/BENCHMARKS.md "Loader"). Seeking uses the index's keyframe list:
`container.seek(pts_of(keyframe), backward=True, any_frame=False)` lands on that keyframe (or an
earlier one), so decoding forward reaches every wanted frame. If a container's seek still lands
after the first wanted frame, the video is decoded again from its start. The decoded stream is the
one the index chose (`VideoInfo.stream_index`).

RGB: `to_rgb24` gives FFmpeg's reference conversion, what `ffmpeg -i f -pix_fmt rgb24` produces
(the same from FFmpeg 5.1's command line and FFmpeg 8's `scale` filter) and what torchcodec returns:
swscale's default bicubic filter, chroma samples sited at the centre, whole frames. PyAV 18 calls
FFmpeg 8's `sws_scale_frame` directly, which differs in three ways: it converts interlaced-flagged
frames field by field, and wherever swscale's scaler runs (every format but 8-bit yuv420p/yuv422p,
whose unscaled kernels use no filter and no siting) PyAV asks for bilinear and the frame API sites
chroma where the frame's tag says (H.264 and HEVC decoders tag 4:2:0 chroma as left-sited). That
moved values by up to ~130/255 at colour edges of 10-bit H.264 and HEVC, and by up to 255 on
interlaced 8-bit H.264. `to_rgb24` converts such frames from an untagged, progressive copy of
their planes with the bicubic filter; progressive 8-bit 4:2:0 and 4:2:2 frames take the unchanged
fast path.
"""
import bisect

import av
import numpy as np
import torch

from vbench.errors import VideoDecodeError

from ..index import VideoInfo, info_from_probe, probe_video, select_video_stream
from .base import Decoder, check_request

MAX_FILL_GAP = 2  # a wanted frame missing from the decoder output may repeat the frame shown
# before it when that frame is at most this many frames earlier (a header that overstates the
# frame count by one or two, a dropped damaged frame); larger gaps raise VideoDecodeError
MAX_DECODE_ERRORS = 20  # damaged packets tolerated before giving up on a file
UNSCALED_RGB_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p"})  # swscale
# converts these to rgb24 with its unscaled kernels: no filter, no chroma siting


def to_rgb24(frame):
    """H x W x 3 uint8 array of a decoded frame: FFmpeg's reference conversion (module docstring).

    One swscale thread: PyAV's default (0) starts a thread per core for every frame's conversion,
    which cost about twice the CPU time per 340x256 frame on 2 cores (benchmarks/bench_rgb.py); a
    loader worker is one core's worth of work anyway."""
    if frame.format.name in UNSCALED_RGB_FORMATS and not frame.interlaced_frame:
        return frame.to_ndarray(format="rgb24", threads=1)  # the fast path
    if frame.interlaced_frame or frame.format.chroma_width() < frame.width \
            or frame.format.chroma_height() < frame.height:
        frame = _untagged_copy(frame)
    return frame.to_ndarray(format="rgb24", interpolation="BICUBIC", threads=1)


def _untagged_copy(frame):
    """The frame's planes in a new frame without chroma-location and interlacing tags."""
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes):
        width = min(source.line_size, target.line_size)
        rows = np.frombuffer(source, np.uint8).reshape(source.height, source.line_size)[:, :width]
        np.frombuffer(target, np.uint8).reshape(target.height, target.line_size)[:, :width] = rows
    copy.colorspace, copy.color_range = frame.colorspace, frame.color_range
    return copy


class Timeline:
    """Frame index <-> pts of one video, from its VideoInfo."""

    def __init__(self, info):
        self.mode = info.timestamps
        self.frame_pts = info.frame_pts
        self.start = info.start_pts
        num, den = (int(x) for x in info.time_base.split("/"))
        self.ticks = den / (num * info.fps) if info.fps else 1.0
        self.stream_index = info.stream_index

    def pts_of(self, index):
        if self.frame_pts is not None:
            return self.frame_pts[index]
        return self.start + round(index * self.ticks)

    def index_of(self, pts):
        if self.frame_pts is not None:
            i = bisect.bisect_left(self.frame_pts, pts)
            if i == len(self.frame_pts) or (i > 0 and pts - self.frame_pts[i - 1] < self.frame_pts[i] - pts):
                i -= 1  # not an exact match (should not happen): the nearest frame
            return i
        return round((pts - self.start) / self.ticks)


class PyAVDecoder(Decoder):
    name = "pyav"

    def __init__(self, threads=0):
        self.threads = int(threads)

    def decode(self, path, frame_indices, info=None):
        path = str(path)
        indices = check_request(path, frame_indices, info)
        info = self.usable_info(path, info)
        if indices[-1] >= info.num_frames:
            raise VideoDecodeError(
                path, f"frame index {indices[-1]} is past the end: the video has {info.num_frames} frames")
        wanted = sorted(set(indices))
        try:
            frames = self._decode_wanted(path, info, wanted)
        except av.FFmpegError as error:
            raise VideoDecodeError(path, f"{type(error).__name__}: {error}") from None
        if indices != wanted:  # repeats or another order: rows of the wanted frames
            frames = frames[[bisect.bisect_left(wanted, index) for index in indices]]
        return torch.from_numpy(frames)

    def usable_info(self, path, info):
        """`info` when it can drive decoding, else the file probed; raises for unusable videos."""
        if info is None or not info.time_base:
            metadata = probe_video(path)
            info = info_from_probe(VideoInfo(path, path, -1), metadata)
        if info.error:
            raise VideoDecodeError(path, info.error)
        return info

    def _decode_wanted(self, path, info, wanted):
        timeline = Timeline(info)
        seek_pts = None
        if info.timestamps != "count":
            if info.keyframes is None:  # unknown (header-only index): the demuxer finds the keyframe
                start_index = wanted[0]
            else:  # the last keyframe at or before the first wanted frame; none: decode from the start
                k = bisect.bisect_right(info.keyframes, wanted[0]) - 1
                start_index = info.keyframes[k] if k >= 0 else 0
            if start_index > 0:
                seek_pts = timeline.pts_of(start_index)
        with av.open(path, metadata_errors="ignore") as container:
            frames, first_index = self._run(path, container, timeline, wanted, seek_pts)
        if seek_pts is not None and (first_index is None or first_index > wanted[0]):
            # the container's seek landed after the first wanted frame: decode from the start
            with av.open(path, metadata_errors="ignore") as container:
                frames, first_index = self._run(path, container, timeline, wanted, None)
        return frames

    def _configure(self, stream):
        if self.threads > 1:
            stream.thread_type = "AUTO"
            stream.thread_count = self.threads
        elif self.threads == 1:
            stream.thread_count = 1

    def _run(self, path, container, timeline, wanted, seek_pts):
        """Decode until the last wanted frame; returns (N x H x W x C uint8 of the wanted frames in
        order, first decoded index)."""
        stream = _video_stream(path, container, timeline.stream_index)
        self._configure(stream)
        if seek_pts is not None:
            container.seek(int(seek_pts), stream=stream, backward=True, any_frame=False)
        collector = _Collector(path, wanted)
        wanted_set = set(wanted)
        position, errors, skipping = -1, [], False
        for packet in container.demux(stream):
            if timeline.mode != "count":
                # a frame that is not wanted is only decoded when other frames refer to it: the
                # pre-roll from the keyframe, and the frames between wanted ones (at 15 fps from
                # 30 fps, every other frame)
                skip = packet.pts is not None and timeline.index_of(packet.pts) not in wanted_set
                if skip != skipping:
                    stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
            try:
                decoded = packet.decode()
            except av.FFmpegError as error:
                errors.append(error)
                if len(errors) > MAX_DECODE_ERRORS:
                    break
                continue
            for frame in decoded:
                position += 1
                if timeline.mode == "count":
                    index = position
                elif frame.pts is None:  # rare: continue from the previous frame
                    index = position if collector.last_index is None else collector.last_index + 1
                else:
                    index = timeline.index_of(frame.pts)
                if seek_pts is not None and collector.first_index is None and index > wanted[0]:
                    return None, index  # seek overshoot; the caller retries from the start
                if collector.add(index, frame):
                    return collector.frames, collector.first_index
        collector.finish(errors)
        return collector.frames, collector.first_index


def _video_stream(path, container, index):
    """Stream `index` of the container (the index's choice), or the rule's choice when None."""
    if index is None:
        try:
            return select_video_stream(container)[0]
        except ValueError as error:
            raise VideoDecodeError(path, str(error)) from None
    if index >= len(container.streams) or container.streams[index].type != "video":
        raise VideoDecodeError(path, f"stream #{index} named by the index is not a video stream (the "
                                     f"file changed since it was indexed?)")
    return container.streams[index]


class _Collector:
    """Keeps the wanted frames of a forward decode, each converted straight into its row of
    `frames` (N x H x W x 3 uint8, N = len(wanted), made at the first frame) so that the converted
    frame's buffer is released at once; fills small gaps with the frame shown before."""

    def __init__(self, path, wanted):
        self.path, self.wanted, self.next = path, wanted, 0
        self.frames, self.first_index, self.last_index, self.last_frame = None, None, None, None
        self.size = None

    def _store(self, frame):
        """Convert `frame` into the row of the next wanted frame."""
        if self.size is None:
            self.size = (frame.width, frame.height)
            self.frames = np.empty((len(self.wanted), frame.height, frame.width, 3), dtype=np.uint8)
        if (frame.width, frame.height) != self.size:
            frame = frame.reformat(width=self.size[0], height=self.size[1])
        self.frames[self.next] = to_rgb24(frame)

    def _fill(self, index, source_index, source_frame):
        if source_frame is None or abs(index - source_index) > MAX_FILL_GAP:
            raise VideoDecodeError(self.path, f"frame {index} is missing from the decoded stream "
                                              f"(nearest decoded frame: {source_index})")
        self._store(source_frame)

    def add(self, index, frame):
        """Take one decoded frame; True once every wanted frame is collected."""
        if self.first_index is None:
            self.first_index = index
        while self.next < len(self.wanted) and self.wanted[self.next] < index:
            missing = self.wanted[self.next]  # skipped over: use the frame on screen at that time
            if self.last_frame is None:
                self._fill(missing, index, frame)
            else:
                self._fill(missing, self.last_index, self.last_frame)
            self.next += 1
        if self.next < len(self.wanted) and self.wanted[self.next] == index:
            self._store(frame)
            self.next += 1
        self.last_index, self.last_frame = index, frame
        return self.next == len(self.wanted)

    def finish(self, errors):
        """End of stream: frames still wanted are past the real end of the video."""
        if self.next == len(self.wanted):
            return
        detail = f"; {len(errors)} damaged packets, last: {errors[-1]}" if errors else ""
        if self.last_frame is None:
            raise VideoDecodeError(self.path, f"no frame could be decoded{detail}")
        remaining = self.wanted[self.next:]
        if remaining[-1] - self.last_index > MAX_FILL_GAP:
            raise VideoDecodeError(
                self.path, f"frame {remaining[-1]} was requested but decoding ended at frame "
                           f"{self.last_index} (the file is shorter than its index says: truncated "
                           f"or damaged?{detail})")
        for index in remaining:
            self._fill(index, self.last_index, self.last_frame)
            self.next += 1
