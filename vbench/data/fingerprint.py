"""Dataset fingerprints: which clips a run trained and evaluated on, in a form the score can check.

A split's fingerprint (results.json "dataset", `vbench data check`, the reference tables):

    videos_listed     videos the split lists (with DATA.CLIP_LIST: the clips of the list)
    videos_readable   those the epoch plans use
    excluded          [[path, reason], ...]: listed but left out (missing, unreadable at index time)
    clips_per_epoch   clips of one epoch's plan
    bytes             size on disk of the readable videos
    classes           number of classes (labels)
    sha256            SHA-256 of the sorted clip IDs of the readable videos, one per line
    listed_sha256     the same over every listed video (readable or not)
    encoding          how the readable videos are encoded (`vbench.data.encoding`)

Clip IDs are file names without extension, so a fingerprint does not depend on where the folder
lives or how the files were encoded. Nothing here reads a video: sizes come from the stat the index
makes anyway (`VideoInfo.file_bytes`), the encoding from the probe the index caches.
"""
import hashlib

from .clip_list import clip_id
from .encoding import encoding_summary, format_encoding


def ids_sha256(ids):
    """SHA-256 hex of the sorted IDs joined by newlines (UTF-8)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def split_fingerprint(infos, excluded, num_classes, clips_per_epoch):
    """The fingerprint of a split: its `infos` (index.VideoInfo), the (rel_path, reason) pairs the
    plan left out, the number of classes and the clips in one epoch's plan."""
    left_out = {path for path, _ in excluded}
    readable = [info for info in infos if info.rel_path not in left_out]
    return {
        "videos_listed": len(infos), "videos_readable": len(readable),
        "excluded": [[path, reason] for path, reason in sorted(excluded)],
        "clips_per_epoch": int(clips_per_epoch),
        "bytes": sum(info.file_bytes for info in readable),
        "classes": int(num_classes),
        "sha256": ids_sha256(clip_id(info.rel_path) for info in readable),
        "listed_sha256": ids_sha256(clip_id(info.rel_path) for info in infos),
        "encoding": encoding_summary(readable),
    }


def format_fingerprint(split, fingerprint):
    """Three lines for `vbench data check` and logs (two for a fingerprint without an encoding)."""
    f = fingerprint
    text = (f"{split}: {f['videos_readable']} of {f['videos_listed']} listed videos readable, "
            f"{len(f['excluded'])} excluded, {f['classes']} classes, {f['clips_per_epoch']} clips per "
            f"epoch, {f['bytes'] / 1e6:.1f} MB\n    sha256 {f['sha256']}")
    if f.get("encoding"):
        text += f"\n    encoding {format_encoding(f['encoding'])}"
    return text
