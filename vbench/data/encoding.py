"""How a split's videos are encoded, summarised from the index (no video is read again).

Decoding cost depends on the encoding (codec, picture size, frame rate, bitrate, keyframe spacing),
so two copies of the same clips can differ widely in speed. The dataset fingerprint (results.json
`dataset.<split>.encoding`, `vbench data check`) carries this summary of the readable videos:

    videos             videos summarised (the readable ones)
    codecs             {codec: videos}, e.g. {"h264": 1276}
    pixel_formats      {pixel format: videos}, e.g. {"yuv420p": 1276}
    short_side         {median, min, max} of min(width, height) in pixels
    fps                {median, min, max} of the frame rate (the index's fit of the timestamps)
    bitrate_kbps       video bits over video seconds of the whole split, kbit/s (the video
                       packets' sizes, audio and container overhead excluded)
    keyframe_interval  frames per keyframe over the whole split (all frames / all keyframes); a
                       clip shorter than its GOP counts its length
    bytes              size on disk of the summarised files (audio and container included)

A figure the index does not know for any video (e.g. a cache entry without packet sizes) is null.
"""
import statistics
from collections import Counter


def _spread(values):
    """{median, min, max} of the known (positive) values, or None."""
    known = sorted(v for v in values if v and v > 0)
    if not known:
        return None
    return {"median": _round(statistics.median(known)), "min": _round(known[0]), "max": _round(known[-1])}


def _round(value, digits=3):
    return int(value) if float(value).is_integer() else round(float(value), digits)


def _counts(values):
    return dict(sorted(Counter(value or "unknown" for value in values).items()))


def encoding_summary(infos):
    """The summary above for `infos` (index.VideoInfo of the readable videos)."""
    infos = [info for info in infos if info.ok]
    with_bytes = [info for info in infos if info.video_bytes > 0 and info.duration_s > 0]
    seconds = sum(info.duration_s for info in with_bytes)
    with_keys = [info for info in infos if info.keyframes and info.num_frames > 0]
    keyframes = sum(len(info.keyframes) for info in with_keys)
    return {
        "videos": len(infos),
        "codecs": _counts(info.codec for info in infos),
        "pixel_formats": _counts(info.pix_fmt for info in infos),
        "short_side": _spread(min(info.width, info.height) for info in infos),
        "fps": _spread(info.fps for info in infos),
        "bitrate_kbps": round(8 * sum(i.video_bytes for i in with_bytes) / seconds / 1000, 1) if seconds else None,
        "keyframe_interval": round(sum(i.num_frames for i in with_keys) / keyframes, 1) if keyframes else None,
        "bytes": sum(info.file_bytes for info in infos),
    }


def _format_counts(counts):
    return "/".join(f"{name} {n}" if len(counts) > 1 else name for name, n in counts.items()) or "-"


def _format_spread(spread, unit):
    if not spread:
        return f"? {unit}"
    if spread["min"] == spread["max"]:
        return f"{spread['median']:g} {unit}"
    return f"{spread['median']:g} {unit} (median; {spread['min']:g}-{spread['max']:g})"


def format_encoding(encoding):
    """One line: codecs, pixel formats, short side, frame rate, bitrate, keyframe interval, size."""
    bitrate = encoding.get("bitrate_kbps")
    interval = encoding.get("keyframe_interval")
    return (f"{_format_counts(encoding['codecs'])}, {_format_counts(encoding['pixel_formats'])}, short side "
            f"{_format_spread(encoding['short_side'], 'px')}, {_format_spread(encoding['fps'], 'fps')}, "
            f"{'?' if bitrate is None else f'{bitrate:g}'} kbit/s, "
            f"keyframe every {'?' if interval is None else f'{interval:g}'} frames, "
            f"{encoding['bytes'] / 1e6:.1f} MB in {encoding['videos']} videos")
