"""Build a Kinetics class subset (kinetics20 by default) from an official Kinetics-400/600/700 download.

Input: `<src>/annotations/<split>.csv` (or `<src>/<split>.csv`) with the official header
`label,youtube_id,time_start,time_end,split`, and the clips in `<src>/<split>/<label>/` (label with
spaces or underscores) or flat in `<src>/<split>/`, named `<youtube_id>_<start:06d>_<end:06d>.mp4`.
Output: the folder layout `<dst>/<split>/<class>/<clip>` (class names with underscores), plus
`<dst>/subset.csv` (the chosen clips, annotation format, reusable with --from-list) and a report
file listing every missing or unreadable clip instead of failing on it.

Clips are picked per class in a seeded shuffled order; a missing or unreadable clip is replaced by
the next candidate. Existing output files are kept, so an interrupted run can be restarted.
"""
import argparse
import csv
import difflib
import os
import random
import shutil
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import av
from tqdm import tqdm

from .index import probe_video
from .layouts import (DatasetError, find_kinetics_video, kinetics_annotation_file, kinetics_stem,
                      read_kinetics_csv)

KINETICS20_CLASSES = (
    "abseiling", "bending_back", "bungee_jumping", "cleaning_floor", "curling_hair", "drinking",
    "exercising_with_an_exercise_ball", "giving_or_receiving_award", "hurdling", "laughing",
    "moving_furniture", "playing_basketball", "playing_paintball", "push_up", "roller_skating",
    "shredding_paper", "sniffing", "swimming_breast_stroke", "tobogganing", "washing_feet")
# The reference kinetics20 has ~1,276 train clips (~64 per class) and 5 val clips per class.
DEFAULT_TRAIN_PER_CLASS = 64
DEFAULT_VAL_PER_CLASS = 5


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tools/prepare_kinetics.py", description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="Kinetics download root (annotations + <split>/ folders)")
    parser.add_argument("--dst", required=True, help="output dataset folder, e.g. data/kinetics20")
    parser.add_argument("--classes", default="kinetics20",
                        help="'kinetics20', a text file with one class per line, or a comma-separated list")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to build")
    parser.add_argument("--train-per-class", type=int, default=DEFAULT_TRAIN_PER_CLASS,
                        help="train clips per class (0 = every available clip)")
    parser.add_argument("--val-per-class", type=int, default=DEFAULT_VAL_PER_CLASS,
                        help="clips per class for every other split (0 = all)")
    parser.add_argument("--from-list", default="", help="a subset.csv from an earlier run: take exactly these clips")
    parser.add_argument("--mode", choices=("copy", "link", "reencode"), default="copy",
                        help="copy files, hard-link them (falls back to copy across file systems), "
                             "or re-encode to H.264 with the short side scaled to --short-side")
    parser.add_argument("--short-side", type=int, default=256, help="short side for --mode reencode")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-class clip order")
    parser.add_argument("--report", default="", help="report file (default <dst>/prepare_report.txt)")
    return parser.parse_args(argv)


def folder_name(label):
    return label.strip().replace(" ", "_")


def resolve_classes(spec, available):
    """Requested class names mapped to the annotation labels; unknown names are an error."""
    if spec == "kinetics20":
        wanted = list(KINETICS20_CLASSES)
    elif os.path.isfile(spec):
        with open(spec) as f:
            wanted = [line.strip() for line in f if line.strip()]
    else:
        wanted = [name.strip() for name in spec.split(",") if name.strip()]
    by_key = {folder_name(label).lower(): label for label in available}
    resolved, unknown = {}, []
    for name in wanted:
        label = by_key.get(folder_name(name).lower())
        if label is None:
            unknown.append(name)
        else:
            resolved[folder_name(name)] = label
    if unknown:
        hints = [f"{name} (did you mean {', '.join(difflib.get_close_matches(folder_name(name), by_key, 2))}?)"
                 for name in unknown]
        raise DatasetError(f"classes not in the Kinetics annotations: {'; '.join(hints)}.")
    return resolved


def candidates_by_class(src, split, classes, seed):
    """{class folder name: [(label, youtube_id, start, end), ...]} in a seeded shuffled order."""
    csv_path = kinetics_annotation_file(src, split)
    if csv_path is None:
        raise DatasetError(f"no annotation file for split '{split}': expected {src}/annotations/{split}.csv "
                           f"or {src}/{split}.csv with header 'label,youtube_id,time_start,time_end,split'.")
    rows = read_kinetics_csv(csv_path)
    resolved = resolve_classes(classes, {row[0] for row in rows})
    wanted = {label: name for name, label in resolved.items()}
    found = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r[1], r[2])):
        if row[0] in wanted:
            found[wanted[row[0]]].append(row)
    rng = random.Random(seed)
    for rows_of_class in found.values():
        rng.shuffle(rows_of_class)
    return {name: found[name] for name in resolved}


def rows_from_list(list_path, split):
    """{class folder name: rows} for `split` from a subset.csv written by an earlier run."""
    chosen = defaultdict(list)
    with open(list_path, newline="") as f:
        for record in csv.DictReader(f):
            if record.get("split") == split:
                row = (record["label"], record["youtube_id"], int(record["time_start"]), int(record["time_end"]))
                chosen[folder_name(row[0])].append(row)
    return dict(chosen)


# ---------------------------------------------------------------- writing one clip


def reencode(src_path, dst_path, short_side):
    """Decode with PyAV and write H.264 with the short side scaled to `short_side` (even sizes)."""
    with av.open(src_path, metadata_errors="ignore") as source:
        stream = source.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        scale = short_side / min(width, height)
        out_w, out_h = (2 * round(width * scale / 2), 2 * round(height * scale / 2))
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        with av.open(dst_path, mode="w", format="mp4") as target:
            out = target.add_stream("libx264", rate=rate)
            out.width, out.height, out.pix_fmt = out_w, out_h, "yuv420p"
            out.time_base = stream.time_base
            out.codec_context.time_base = stream.time_base
            out.codec_context.options = {"crf": "23", "preset": "veryfast", "threads": "2"}
            for frame in source.decode(stream):
                scaled = frame.reformat(width=out_w, height=out_h, format="yuv420p")
                scaled.pts, scaled.time_base = frame.pts, stream.time_base
                target.mux(out.encode(scaled))
            target.mux(out.encode(None))


def write_clip(src_path, dst_path, mode, short_side):
    """Copy, link or re-encode one clip (through a temporary file); returns None or the failure reason."""
    metadata = probe_video(src_path, scan_packets=False)
    if metadata.get("error"):
        return metadata["error"]
    os.makedirs(os.path.dirname(dst_path), exist_ok=True)
    tmp = f"{dst_path}.tmp{os.getpid()}"
    try:
        if mode == "reencode":
            reencode(src_path, tmp, short_side)
        elif mode == "link":
            try:
                os.link(src_path, tmp)
            except OSError:  # another file system, or links not supported: copy instead
                shutil.copy2(src_path, tmp)
        else:
            shutil.copy2(src_path, tmp)
        os.replace(tmp, dst_path)
    except (av.FFmpegError, OSError, ValueError, ZeroDivisionError) as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        return f"{type(error).__name__}: {error}"
    return None


# ---------------------------------------------------------------- main


class Results:
    def __init__(self):
        self.written, self.wanted = defaultdict(int), {}  # (split, class) -> clips written / asked
        self.missing, self.unreadable = [], []  # report lines


def build_split(args, split, per_class, results):
    rows = rows_from_list(args.from_list, split) if args.from_list else candidates_by_class(
        args.src, split, args.classes, args.seed)
    listings, split_dir = {}, os.path.join(args.src, split)
    chosen = []  # (class, row, src path, dst path)
    bar = tqdm(total=sum(min(len(r), per_class or len(r)) for r in rows.values()), unit="clip",
               desc=f"{args.mode} {split}")

    def process(item):
        name, row, src_path, dst_path = item
        if os.path.exists(dst_path):
            return item, None
        return item, write_clip(src_path, dst_path, args.mode, args.short_side)

    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        for name, class_rows in rows.items():
            queue, need = list(class_rows), per_class or len(class_rows)
            results.wanted[(split, name)] = need
            while need > 0 and queue:
                batch = []
                while queue and len(batch) < need:
                    label, youtube_id, start, end = row = queue.pop(0)
                    stem = kinetics_stem(youtube_id, start, end)
                    src_path = find_kinetics_video(split_dir, label, stem, listings)
                    if src_path is None:
                        results.missing.append(f"{split}\t{name}\t{stem}\tmissing under {split_dir}")
                        continue
                    ext = ".mp4" if args.mode == "reencode" else os.path.splitext(src_path)[1]
                    batch.append((name, row, src_path, os.path.join(args.dst, split, name, stem + ext)))
                for (item_name, row, src_path, dst_path), reason in pool.map(process, batch):
                    if reason:
                        results.unreadable.append(f"{split}\t{item_name}\t{src_path}\t{reason}")
                    else:
                        chosen.append((row, split))
                        results.written[(split, item_name)] += 1
                        need -= 1
                        bar.update(1)
    bar.close()
    return chosen


def write_outputs(args, chosen, results):
    with open(os.path.join(args.dst, "subset.csv"), "w") as f:
        f.write("label,youtube_id,time_start,time_end,split\n")
        for (label, youtube_id, start, end), split in chosen:
            f.write(f"{label},{youtube_id},{start},{end},{split}\n")
    report = args.report or os.path.join(args.dst, "prepare_report.txt")
    with open(report, "w") as f:
        f.write(f"# prepare_kinetics: {args.src} -> {args.dst} (mode {args.mode})\n")
        f.write(f"# {sum(results.written.values())} clips written, {len(results.missing)} missing, "
                f"{len(results.unreadable)} unreadable\n")
        for line in results.missing + results.unreadable:
            f.write(line + "\n")
    return report


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results, chosen = Results(), []
    os.makedirs(args.dst, exist_ok=True)
    try:
        for split in args.splits:
            per_class = 0 if args.from_list else args.train_per_class if split == "train" else args.val_per_class
            chosen += build_split(args, split, per_class, results)
    except DatasetError as error:
        print(f"prepare_kinetics: {error}", file=sys.stderr)
        return 2
    report = write_outputs(args, chosen, results)
    classes = sorted({name for _, name in results.wanted})
    print(f"wrote {sum(results.written.values())} clips of {len(classes)} classes to {args.dst} "
          f"({', '.join(f'{s}: {sum(n for (sp, _), n in results.written.items() if sp == s)}' for s in args.splits)}); "
          f"{len(results.missing)} missing, {len(results.unreadable)} unreadable: see {report}")
    short = [f"{split}/{name}: {results.written[(split, name)]} of {n}"
             for (split, name), n in sorted(results.wanted.items()) if results.written[(split, name)] < n]
    if short:
        print(f"classes with fewer clips than asked: {', '.join(short)}")
    empty = [key for key in results.wanted if results.written[key] == 0]
    if empty:
        print(f"prepare_kinetics: {len(empty)} split/class folders got no clip at all (first: "
              f"{'/'.join(empty[0])}); the class list of the dataset would differ between splits.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
