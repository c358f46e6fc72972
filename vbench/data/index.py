"""The video index: per-video metadata from container headers and packets, cached on disk.

`probe_video` opens a file with PyAV, reads the stream header and then demuxes the video packets
WITHOUT decoding them. The packet timestamps give the exact frame count, the keyframe positions
and the presentation timeline, which is what the decoders need to seek exactly:

- timestamps == "cfr": frame i is shown at pts `start_pts + round(i * ticks_per_frame)` (ticks of
  `time_base`, `ticks_per_frame = 1 / (fps * time_base)`); checked against every packet.
- timestamps == "vfr": the packets do not fit a constant rate; `frame_pts` lists every frame's pts
  in presentation order, so frame i is the frame with pts `frame_pts[i]`.
- timestamps == "count": the container's pts are guesses (AVI with B-frames, or packets without
  pts); decoders must decode from the start and count frames.

Which stream: a file may hold several video streams (renditions at other sizes or rates, a cover
picture). vbench decodes FFmpeg's "best" video stream, `av_find_best_stream`: the one ffplay and
torchcodec open when none is named (default disposition first, then a stream FFmpeg could decode
frames of while probing, then the higher bit rate); `ffmpeg`'s own default mapping (mostly the
largest picture) agreed on the files tried. The first video stream is only an accident of muxing
order and can be a preview, a low-resolution rendition or cover art. Attached pictures (cover art)
are never chosen. The index records the chosen stream's container index (`VideoInfo.stream_index`,
as ffprobe numbers streams) and both decoder backends open exactly that stream, so the index's
frame count and timeline and both backends' frames describe one stream.

`build_index` probes many videos in threads and caches the results in one JSON store keyed by
(path relative to the data root, size, mtime in whole seconds): moving or copying the data folder
keeps the cache valid; changing a file invalidates only that file.
"""
import json
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from fractions import Fraction

import av
from tqdm import tqdm

logger = logging.getLogger(__name__)

PROBE_VERSION = 3  # bump when probe_video's output changes; older cache entries are re-probed
CACHE_FILE = f"video_index_v{PROBE_VERSION}.json"
CACHE_MAX_ENTRIES = 500_000  # oldest entries are dropped beyond this


@dataclass
class VideoInfo:
    rel_path: str
    path: str
    label: int
    num_frames: int = 0
    fps: float = 0.0
    duration_s: float = 0.0
    start_s: float = 0.0
    width: int = 0
    height: int = 0
    codec: str = ""
    keyframes: list = None  # frame indices of keyframes (presentation order), None if unknown
    error: str = None  # why the video is unusable; None when it is fine
    time_base: str = ""  # video stream time base, "num/den"
    start_pts: int = 0  # pts of frame 0, in time_base ticks
    timestamps: str = "cfr"  # "cfr", "vfr" or "count" (see the module docstring)
    frame_pts: list = None  # every frame's pts in presentation order ("vfr" only)
    note: str = None  # a non-fatal oddity (e.g. the header claims more frames than exist)
    stream_index: int = None  # container index of the decoded video stream (see `select_video_stream`)
    video_streams: int = 1  # video streams in the file, attached pictures excluded
    pix_fmt: str = ""  # pixel format of the decoded stream (header), e.g. "yuv420p"
    video_bytes: int = 0  # sum of the video packets' sizes (the packet scan; 0: not scanned)
    file_bytes: int = 0  # size on disk, from the stat that keys the cache (not stored in it)

    @property
    def ok(self):
        return self.error is None


METADATA_FIELDS = [f.name for f in fields(VideoInfo) if f.name not in ("rel_path", "path", "label", "file_bytes")]


def _open(path):
    return av.open(str(path), metadata_errors="ignore")


def _is_picture(stream):
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def select_video_stream(container):
    """(the video stream vbench decodes, number of video streams); see the module docstring.
    Raises ValueError naming what the file holds when it has no video stream."""
    videos = [s for s in container.streams.video if not _is_picture(s)]
    if not videos:
        kinds = sorted({"cover picture" if s.type == "video" else s.type for s in container.streams})
        raise ValueError(f"no video stream (streams found: {', '.join(kinds) or 'none'})")
    best = container.streams.best("video")
    return (best if best in videos else videos[0]), len(videos)


def _nominal_rates(stream):
    rates = []
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0 and rate not in rates:
            rates.append(Fraction(rate))
    return rates


def _fits_cfr(pts, ticks_per_frame):
    start = pts[0]
    return all(round((p - start) / ticks_per_frame) == i for i, p in enumerate(pts))


def _fit_timeline(pts, time_base, rates):
    """(timestamps mode, fps) for sorted packet pts: a constant rate if one explains every pts."""
    if len(pts) < 2:
        return "cfr", float(rates[0]) if rates else 0.0
    measured = Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base) if pts[-1] > pts[0] else None
    for rate in rates + ([measured] if measured else []):
        if _fits_cfr(pts, float(1 / (rate * time_base))):
            return "cfr", float(rate)
    return "vfr", float(measured) if measured else 0.0


def _scan_packets(container, stream):
    """Presentation timestamps, keyframe flags and total size of every video packet, without decoding."""
    pts, key_pts, reordered, missing_pts, problem, size = [], [], False, False, None, 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or getattr(packet, "is_discard", False):  # discard: cut by an edit list
                continue
            if packet.pts is None:
                missing_pts = True
            timestamp = packet.pts if packet.pts is not None else packet.dts
            if timestamp is None:
                timestamp = pts[-1] + 1 if pts else 0
            reordered |= packet.dts is not None and packet.pts is not None and packet.dts != packet.pts
            pts.append(timestamp)
            size += packet.size
            if packet.is_keyframe:
                key_pts.append(timestamp)
    except av.FFmpegError as error:  # truncated or damaged after some packets
        problem = f"demuxing stopped after {len(pts)} packets: {error}"
    return pts, key_pts, reordered, missing_pts, problem, size


def _header_frame_count(stream, container, fps):
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        return int(round(float(stream.duration * stream.time_base) * fps))
    if container.duration:
        return int(round(container.duration / 1e6 * fps))
    return 0


def probe_video(path, scan_packets=True):
    """Metadata of one video as a dict of VideoInfo fields; failures set "error" (never raise).

    scan_packets=False reads only the header (fast, but frame count and timeline are the header's
    claims, keyframes are unknown and VFR is not detected); the index always scans packets.
    """
    try:
        if os.path.getsize(path) == 0:
            return {"error": "the file is empty (0 bytes)"}
        with _open(path) as container:
            try:
                stream, count = select_video_stream(container)
            except ValueError as error:
                return {"error": str(error)}
            info = _probe_stream(container, stream, scan_packets)
            return {**info, "stream_index": stream.index, "video_streams": count}
    except FileNotFoundError:
        return {"error": "file not found"}
    except (av.FFmpegError, OSError, ValueError, ZeroDivisionError) as error:
        return {"error": f"not a readable video ({type(error).__name__}: {error})"}


def _probe_stream(container, stream, scan_packets):
    time_base = stream.time_base or Fraction(1, 1000)
    rates = _nominal_rates(stream)
    pixel_format = stream.codec_context.format
    info = {"codec": stream.codec_context.name, "width": stream.codec_context.width,
            "height": stream.codec_context.height, "time_base": f"{time_base.numerator}/{time_base.denominator}",
            "pix_fmt": pixel_format.name if pixel_format else ""}
    if not info["width"] or not info["height"]:
        return {**info, "error": "the video stream has no frame size (damaged header)"}
    if not scan_packets:
        fps = float(rates[0]) if rates else 0.0
        start_pts = stream.start_time or 0
        num_frames = _header_frame_count(stream, container, fps)
        return {**info, "fps": fps, "num_frames": num_frames, "start_pts": start_pts,
                "start_s": float(start_pts * time_base), "duration_s": num_frames / fps if fps else 0.0,
                "timestamps": "cfr", "error": None if num_frames else "no frame count in the header"}
    pts, key_pts, reordered, missing_pts, problem, video_bytes = _scan_packets(container, stream)
    if not pts:
        return {**info, "error": problem or "the video stream has no packets"}
    header_frames = stream.frames or 0
    pts_sorted = sorted(pts)
    timestamps, fps = _fit_timeline(pts_sorted, time_base, rates)
    if missing_pts or (reordered and "avi" in container.format.name.split(",")):
        timestamps = "count"  # pts were guessed by the demuxer; only the frame order is reliable
    position = {p: i for i, p in reversed(list(enumerate(pts_sorted)))}
    duration_s = len(pts) / fps if fps else 0.0
    if timestamps == "vfr":
        duration_s = float((pts_sorted[-1] - pts_sorted[0]) * time_base) * len(pts) / (len(pts) - 1)
    note = problem
    if header_frames > len(pts):
        note = f"the header claims {header_frames} frames but only {len(pts)} were found" + (
            f" ({problem})" if problem else "")
    return {**info, "num_frames": len(pts), "fps": fps, "duration_s": duration_s,
            "start_pts": pts_sorted[0], "start_s": float(pts_sorted[0] * time_base),
            "keyframes": sorted(position[p] for p in set(key_pts)), "timestamps": timestamps,
            "frame_pts": pts_sorted if timestamps == "vfr" else None, "note": note, "video_bytes": video_bytes,
            "error": None}


def info_from_probe(entry, metadata, file_bytes=0):
    """A VideoInfo for a layouts.VideoEntry and the dict `probe_video` returned."""
    known = {k: v for k, v in metadata.items() if k in METADATA_FIELDS}
    return VideoInfo(rel_path=entry.rel_path, path=entry.path, label=entry.label, file_bytes=file_bytes, **known)


# ---------------------------------------------------------------- cache


def default_cache_dir():
    return os.path.join(os.path.expanduser("~"), ".cache", "vbench", "index")


def _cache_key(rel_path, stat):
    return f"{rel_path}|{stat.st_size}|{int(stat.st_mtime)}"


def load_cache(cache_file):
    """The cached entries, or {} when the file is absent or damaged (damage is logged)."""
    if not os.path.exists(cache_file):
        return {}
    try:
        with open(cache_file) as f:
            data = json.load(f)
        if data.get("probe_version") != PROBE_VERSION or not isinstance(data.get("entries"), dict):
            raise ValueError("unknown format or probe version")
        return data["entries"]
    except (OSError, ValueError, AttributeError) as error:
        logger.warning("ignoring the damaged video index cache %s (%s); it will be rebuilt.", cache_file, error)
        return {}


def save_cache(cache_file, new_entries):
    """Merge `new_entries` into the store with an atomic replace (safe with concurrent writers)."""
    os.makedirs(os.path.dirname(cache_file) or ".", exist_ok=True)
    entries = load_cache(cache_file)
    entries.update(new_entries)
    if len(entries) > CACHE_MAX_ENTRIES:
        entries = dict(list(entries.items())[-CACHE_MAX_ENTRIES:])
    tmp = f"{cache_file}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump({"probe_version": PROBE_VERSION, "entries": entries}, f, separators=(",", ":"))
        os.replace(tmp, cache_file)
    except OSError as error:
        logger.warning("could not write the video index cache %s (%s); continuing without it.", cache_file, error)
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------- build


def _stat(path):
    try:
        return os.stat(path)
    except OSError:
        return None


def build_index(entries, cache_dir="", num_workers=8, progress=True):
    """VideoInfo for every layouts.VideoEntry, in the same order; unreadable videos get `error`."""
    start = time.monotonic()
    cache_file = os.path.join(cache_dir or default_cache_dir(), CACHE_FILE)
    cached = load_cache(cache_file)
    infos, to_probe, new_entries, num_cached = [None] * len(entries), [], {}, 0
    for i, entry in enumerate(entries):
        stat = _stat(entry.path)
        if stat is None:
            infos[i] = VideoInfo(entry.rel_path, entry.path, entry.label, error="file not found")
            continue
        key = _cache_key(entry.rel_path, stat)
        if key in cached:
            infos[i] = info_from_probe(entry, cached[key], stat.st_size)
            num_cached += 1
        else:
            to_probe.append((i, key, stat.st_size))
    with ThreadPoolExecutor(max(1, num_workers)) as pool, tqdm(
            total=len(to_probe), desc="probing videos", unit="video", disable=not progress or not to_probe) as bar:
        jobs = [(i, key, size, pool.submit(probe_video, entries[i].path)) for i, key, size in to_probe]
        for i, key, size, job in jobs:
            metadata = job.result()
            infos[i] = info_from_probe(entries[i], metadata, size)
            new_entries[key] = {k: metadata.get(k) for k in METADATA_FIELDS if k in metadata}
            bar.update(1)
    if new_entries:
        save_cache(cache_file, new_entries)
    _log_summary(infos, num_cached, len(to_probe), time.monotonic() - start)
    return infos


def summarize(infos):
    """(videos, hours of video, list of (rel_path, error))."""
    hours = sum(info.duration_s for info in infos if info.ok) / 3600
    return len(infos), hours, [(info.rel_path, info.error) for info in infos if not info.ok]


def _log_summary(infos, num_cached, num_probed, seconds):
    videos, hours, errors = summarize(infos)
    logger.info("video index: %d videos, %.2f h, %d cached / %d probed, %d errors (%.1f s)",
                videos, hours, num_cached, num_probed, len(errors), seconds)
    for rel_path, error in errors[:5]:
        logger.warning("unreadable video %s: %s", rel_path, error)
    if len(errors) > 5:
        logger.warning("... and %d more unreadable videos", len(errors) - 5)
