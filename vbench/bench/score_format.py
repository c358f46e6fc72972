"""Lines of `vbench score` output beyond the times: how the data of the runs and of the reference
was encoded. Printed for every track, since a score always compares machines (the runs' and the
reference's), and a time is comparable only on equally encoded data (docs/PROTOCOL.md, "Data")."""
import json

from vbench.data.encoding import format_encoding


def run_encodings(results):
    """{split: encoding summary or None} of one run's results.json."""
    return {split: f.get("encoding") for split, f in (results.get("dataset") or {}).items()}


def _split_lines(title, encodings):
    lines = [f"  {title}:"]
    for split, encoding in encodings.items():
        text = format_encoding(encoding) if encoding else "not recorded (a run of an older vbench)"
        lines.append(f"    {split}: {text}")
    return lines if encodings else [f"  {title}: not recorded (no dataset fingerprint)"]


def encoding_lines(ts):
    """The runs' encodings (once when they agree, else per run) and the reference's when it has one;
    `ts` is a score.TrackScore."""
    groups = {}
    for run in ts.runs:
        encodings = run_encodings(run.results)
        groups.setdefault(json.dumps(encodings, sort_keys=True), (encodings, []))[1].append(run.path)
    lines = []
    for encodings, paths in groups.values():
        if len(groups) == 1:
            who = "the run's data" if len(paths) == 1 else f"the {len(paths)} runs' data"
        else:
            who = "the data of " + ", ".join(repr(path) for path in paths)
        lines += _split_lines(f"encoding of {who}", encodings)
    reference = {split: e["encoding"] for split, e in ts.reference.dataset.items() if e.get("encoding")}
    if reference:
        lines += _split_lines("encoding of the reference's data", reference)
    else:
        lines.append("  encoding of the reference's data: not in the reference table (the encoding was not checked)")
    return lines
