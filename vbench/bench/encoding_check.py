"""Is a run's data encoded like the reference's? (docs/PROTOCOL.md, "Data", "The encoding")

A reference table may carry, per split, the encoding summary of the data its times were measured
on (`dataset.<split>.encoding`, `vbench.data.encoding`). A run whose summary differs beyond these
tolerances trained on other bytes than the reference: same clips, another decoding cost. The score
lists each difference and marks the run non-compliant.
"""
from .results_schema import ENCODING_SPEC, check_spec

# figure -> (kind, tolerance): "share" compares each value's share of the videos (absolute, 0..1);
# "relative" compares |run - reference| / reference.
ENCODING_TOLERANCES = {
    "codecs": ("share", 0.05),
    "pixel_formats": ("share", 0.05),
    "short_side": ("relative", 0.05),  # the medians
    "fps": ("relative", 0.05),  # the medians
    "bitrate_kbps": ("relative", 0.20),
    "keyframe_interval": ("relative", 0.20),
    "bytes": ("relative", 0.20),
}
LABELS = {"codecs": "codecs", "pixel_formats": "pixel formats", "short_side": "median short side",
          "fps": "median frame rate", "bitrate_kbps": "bitrate", "keyframe_interval": "keyframe interval",
          "bytes": "size on disk"}
UNITS = {"short_side": "px", "fps": "fps", "bitrate_kbps": "kbit/s", "keyframe_interval": "frames", "bytes": "MB"}


def encoding_problems_in(encoding):
    """Schema problems of an encoding summary (for reference files), as strings."""
    problems = []
    check_spec(encoding, ENCODING_SPEC, "encoding", problems)
    return problems


def _shares(counts):
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()} if total else {}


def _format_shares(shares):
    return "/".join(f"{name} {100 * share:.0f}%" for name, share in sorted(shares.items())) or "none"


def _value(encoding, figure):
    value = encoding.get(figure)
    if isinstance(value, dict):  # {median, min, max}
        value = value.get("median")
    if value is not None and figure == "bytes":
        value = value / 1e6
    return value


def _differs(figure, run, reference):
    """(run text, reference text) when `figure` differs beyond its tolerance, else None."""
    kind, tolerance = ENCODING_TOLERANCES[figure]
    if kind == "share":
        ours, theirs = _shares(run.get(figure) or {}), _shares(reference.get(figure) or {})
        gap = max((abs(ours.get(k, 0.0) - theirs.get(k, 0.0)) for k in set(ours) | set(theirs)), default=0.0)
        return (_format_shares(ours), _format_shares(theirs)) if gap > tolerance else None
    ours, theirs = _value(run, figure), _value(reference, figure)
    if theirs is None:
        return None
    unit = UNITS[figure]
    if ours is None:
        return f"unknown (the index recorded no {LABELS[figure]})", f"{theirs:g} {unit}"
    if abs(ours - theirs) > tolerance * abs(theirs):
        return f"{ours:.4g} {unit}", f"{theirs:.4g} {unit}"
    return None


def _tolerance_text(figure):
    kind, tolerance = ENCODING_TOLERANCES[figure]
    return (f"±{100 * tolerance:g} points per value" if kind == "share" else f"±{100 * tolerance:g}%")


def encoding_differences(run, reference):
    """Messages for every figure of `run` (an encoding summary) that differs from `reference`'s
    beyond ENCODING_TOLERANCES, in the order of the table above."""
    messages = []
    for figure in ENCODING_TOLERANCES:
        texts = _differs(figure, run, reference)
        if texts:
            messages.append(f"{LABELS[figure]} {texts[0]}, the reference {texts[1]} "
                            f"(tolerance {_tolerance_text(figure)})")
    return messages


def check_encoding(results, expected_dataset):
    """Problems of a run's encoding against a reference's `dataset` ({split: expected}); none when
    the reference carries no encoding (the score then says that it was not checked)."""
    expected = {split: e["encoding"] for split, e in (expected_dataset or {}).items() if e.get("encoding")}
    problems = []
    for split, reference in expected.items():
        fingerprint = (results.get("dataset") or {}).get(split)
        if fingerprint is None:
            continue  # the dataset check already says that this split has no fingerprint
        if not fingerprint.get("encoding"):
            problems.append(f"{split}: results.json has no encoding summary (a run of an older vbench); "
                            f"the encoding cannot be checked")
            continue
        problems += [f"{split}: encoding: {message}"
                     for message in encoding_differences(fingerprint["encoding"], reference)]
    return problems
