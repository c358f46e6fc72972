"""`vbench data check PATH`: validate a dataset folder before a run.

Checks the layout and annotation lines, probes every video (through the index cache), decodes one
clip per video (or a random sample), flags videos too short for one clip, reports the class
balance and names the stream decoded in files holding several video streams. With a clip list
(`--clip-list DIR`, or DATA.CLIP_LIST of `--cfg FILE`) it also compares the folder with the list:
clips missing, files the list does not name (extra, not used by a run) and unreadable clips, per
split and per class. Prints a summary table and each split's dataset fingerprint (the one a run
records in results.json); exits 1 when it finds problems, 0 otherwise.

`--cfg FILE` takes the data folder, layout, clip list, splits, clip settings and epoch plans from a
config, so the fingerprints equal the run's; options given on the command line win.
"""
import math
import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from vbench.errors import DatasetError, VideoDecodeError

from .clip_list import class_key, index_files, read_split_files
from .decoders import get_decoder
from .fingerprint import split_fingerprint
from .layouts import SPLIT_NAMES
from .sampling import ClipSettings, build_eval_plan, plan_from_cfg

IMBALANCE_RATIO = 10.0  # largest / smallest class above this is reported as a warning
# option -> (config key, value without --cfg); a value given on the command line wins over both
CONFIG_OPTIONS = {"path": ("DATA.PATH_TO_DATA_DIR", None), "layout": ("DATA.LAYOUT", "auto"),
                  "clip_list": ("DATA.CLIP_LIST", ""), "num_frames": ("DATA.NUM_FRAMES", 16),
                  "frame_rate": ("DATA.FRAME_RATE", 15.0), "path_prefix": ("DATA.PATH_PREFIX", ""),
                  "separator": ("DATA.PATH_LABEL_SEPARATOR", " "), "cache_dir": ("DATA.INDEX_CACHE_DIR", ""),
                  "backend": ("DATA.DECODING_BACKEND", "pyav")}


def splits_present(root, layout):
    """Split names that exist in `root` for `layout`."""
    found = []
    for name in SPLIT_NAMES:
        if layout == "csv" and os.path.isfile(os.path.join(root, f"{name}.csv")):
            found.append(name)
        elif layout == "folder" and os.path.isdir(os.path.join(root, name)):
            found.append(name)
        elif layout == "kinetics" and any(os.path.isfile(os.path.join(root, sub, f"{name}.csv"))
                                          for sub in ("annotations", "")):
            found.append(name)
    return found


def default_splits(root, layout, args):
    """The --cfg config's training and validation splits, else every split found."""
    if args.cfg is not None:
        return list(dict.fromkeys((args.cfg.DATA.TRAIN_SPLIT, args.cfg.DATA.VAL_SPLIT)))
    return splits_present(root, layout)


def clip_indices(info, num_frames, frame_rate):
    """Native frame indices of one clip from the middle of the video (as the sampler would read)."""
    step = info.fps / frame_rate if frame_rate > 0 and info.fps else 1.0
    span = (num_frames - 1) * step
    start = max(0.0, (info.num_frames - 1 - span) / 2)
    return [min(info.num_frames - 1, int(math.floor(start + j * step))) for j in range(num_frames)]


def timeline_frames(info, frame_rate):
    return info.num_frames * frame_rate / info.fps if frame_rate > 0 and info.fps else info.num_frames


class SplitReport:
    def __init__(self, name):
        self.name = name
        self.videos, self.hours, self.class_counts = 0, 0.0, Counter()
        self.unreadable, self.too_short, self.decode_failed = [], [], []
        self.missing, self.extra = [], []  # against the clip list
        self.decoded = 0
        self.fingerprint = None


def decode_check(infos, args, report):
    decoder = get_decoder(args.backend)
    usable = [info for info in infos if info.ok and info.num_frames > 0]
    if args.decode_sample and args.decode_sample < len(usable):
        usable = random.Random(args.seed).sample(usable, args.decode_sample)

    def try_decode(info):
        indices = clip_indices(info, args.num_frames, args.frame_rate)
        try:
            frames = decoder.decode(info.path, indices, info)
        except VideoDecodeError as error:
            return info, error.reason
        if tuple(frames.shape[1:]) != (info.height, info.width, 3):
            return info, f"decoded frames are {tuple(frames.shape[1:])}, the header says {info.height}x{info.width}"
        return info, None

    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        results = pool.map(try_decode, usable)
        for info, reason in tqdm(results, total=len(usable), desc=f"decoding {report.name}", unit="video"):
            report.decoded += 1
            if reason:
                report.decode_failed.append((info.rel_path, reason))


def split_plan(infos, split, args):
    """The epoch plan a run would make of this split: the --cfg config's (training plan for its
    DATA.TRAIN_SPLIT), else every non-overlapping window (the benchmark's plans)."""
    if args.cfg is not None:
        return plan_from_cfg(infos, args.cfg, training=split == args.cfg.DATA.TRAIN_SPLIT)
    return build_eval_plan(infos, ClipSettings(args.num_frames, args.frame_rate, 1, args.num_frames))


def check_split(root, split, layout, args, problems, warnings):
    report = SplitReport(split)
    try:
        files = read_split_files(root, split, layout, args.path_prefix, args.separator, args.clip_list)
    except DatasetError as error:
        problems.append(f"[{split}] {error}")
        return report, None
    class_names = files.class_names
    infos = index_files(files, cache_dir=args.cache_dir, num_workers=args.workers)
    plan = split_plan(infos, split, args)
    report.fingerprint = split_fingerprint(infos, [(infos[v].rel_path, r) for v, r in plan.excluded],
                                           len(class_names), len(plan.clips))
    report.videos = len(infos)
    report.hours = sum(info.duration_s for info in infos if info.ok) / 3600
    report.class_counts = Counter(info.label for info in infos if info.ok)
    report.extra = files.unlisted
    for info in infos:
        if info.rel_path in files.missing:
            report.missing.append(info.rel_path)
        elif not info.ok:
            report.unreadable.append((info.rel_path, info.error))
        elif timeline_frames(info, args.frame_rate) < args.num_frames:
            report.too_short.append((info.rel_path, (
                f"{info.duration_s:.2f} s, {info.num_frames} frames at {info.fps:.2f} fps: shorter than "
                f"one {args.num_frames}-frame clip at {args.frame_rate:g} fps")))
        if info.note:
            warnings.append(f"[{split}] {info.rel_path}: {info.note}")
        if info.ok and info.video_streams > 1:
            warnings.append(f"[{split}] {info.rel_path}: {info.video_streams} video streams; vbench decodes "
                            f"stream #{info.stream_index} ({info.width}x{info.height}, {info.fps:.2f} fps), "
                            f"FFmpeg's best one")
    decode_check(infos, args, report)
    for kind, items in (("unreadable", report.unreadable), ("too short", report.too_short),
                        ("decode failed", report.decode_failed)):
        problems += [f"[{split}] {kind}: {rel}: {reason}" for rel, reason in items]
    problems += [f"[{split}] missing: {rel}: listed in {files.list_file}" for rel in report.missing]
    warnings += [f"[{split}] extra: {rel}: not in the clip list (a run does not use it)" for rel in report.extra]
    check_balance(report, class_names, problems, warnings)
    return report, class_names


def check_balance(report, class_names, problems, warnings):
    empty = [name for label, name in enumerate(class_names) if report.class_counts[label] == 0]
    if empty:
        (problems if report.name == "train" else warnings).append(
            f"[{report.name}] {len(empty)} classes have no readable video: {', '.join(empty[:10])}"
            + (" ..." if len(empty) > 10 else ""))
    counts = [report.class_counts[label] for label in range(len(class_names)) if report.class_counts[label]]
    if counts and max(counts) > IMBALANCE_RATIO * min(counts):
        warnings.append(f"[{report.name}] class imbalance: {min(counts)} to {max(counts)} videos per class")


def print_rows(header, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))


def print_table(reports, class_names):
    header = ("split", "videos", "hours", "classes", "per class min/mean/max", "unreadable", "too short",
              "decoded", "decode failed", "missing", "extra")
    rows = []
    for r in reports:
        counts = [r.class_counts[label] for label in range(len(class_names or []))]
        per_class = f"{min(counts)}/{sum(counts) / len(counts):.1f}/{max(counts)}" if counts else "-"
        rows.append((r.name, r.videos, f"{r.hours:.2f}", len(class_names or []), per_class, len(r.unreadable),
                     len(r.too_short), r.decoded, len(r.decode_failed), len(r.missing), len(r.extra)))
    print_rows(header, rows)


def class_of(rel_path):
    """The class folder of a `<split>/<class>/<file>` path ("-" for other shapes)."""
    parts = rel_path.replace(os.sep, "/").split("/")
    return class_key(parts[-2]) if len(parts) >= 3 else "-"


def print_class_differences(reports):
    """Per split and class: missing, extra and unreadable clips (only classes with any)."""
    rows = []
    for r in reports:
        counts = {kind: Counter(class_of(path) for path in paths) for kind, paths in (
            ("missing", r.missing), ("extra", r.extra), ("unreadable", [p for p, _ in r.unreadable]))}
        for name in sorted(set().union(*counts.values())):
            rows.append((r.name, name, *(counts[kind][name] for kind in ("missing", "extra", "unreadable"))))
    if rows:
        print("\nagainst the clip list, per class:")
        print_rows(("split", "class", "missing", "extra", "unreadable"), rows)


def print_list(title, items, limit=20):
    if not items:
        return
    print(f"\n{title} ({len(items)}):")
    for item in items[:limit]:
        print(f"  - {item}")
    if len(items) > limit:
        print(f"  ... and {len(items) - limit} more")
