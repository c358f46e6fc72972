"""Build kinetics20 (the benchmark's exact clip list) or another Kinetics subset from a Kinetics download.

Input: the clips in `<src>/<split>/<label>/` (label with spaces or underscores) or flat in
`<src>/<split>/`, named `<youtube_id>_<start:06d>_<end:06d>.<ext>`; a clip not found under its own
split's folder is looked for under the other split folders. Output: the folder layout
`<dst>/<split>/<class>/<clip>` (class names with underscores), `<dst>/subset.csv` (the clips
written, annotation format, reusable with --from-list) and a report file listing every missing or
unreadable clip instead of failing on it.

Which clips:
- by default exactly the clips of the benchmark's list, configs/datasets/kinetics20 (--clip-list
  names another list folder); a listed clip that is missing or unreadable is reported, never
  replaced, and the exit status is 1 unless every listed clip was written;
- --from-list subset.csv: exactly the clips of an earlier run;
- --classes / --train-per-class / --val-per-class / --seed: a class subset picked per class in a
  seeded shuffled order from the official annotations (`<src>/annotations/<split>.csv` or
  `<src>/<split>.csv`, header `label,youtube_id,time_start,time_end,split`); a missing or unreadable
  clip is replaced by the next candidate.
Existing output files are kept, so an interrupted run can be restarted.

`--mode reencode` writes the canonical re-encode (docs/PROTOCOL.md, "The encoding"; REENCODE
below): FFmpeg's best video stream, short side scaled to 256 (bicubic, both sides even), H.264
yuv420p at CRF 23 with x264's "medium" preset, one keyframe every 250 frames (no scene-cut
keyframes), one encoder thread (the same bytes from the same source and x264 build), the source's
timestamps, no audio, in MP4.
"""
import csv
import difflib
import os
import random
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import av
from av.video.frame import PictureType
from tqdm import tqdm

from vbench.errors import DatasetError

from .clip_list import list_file, read_clip_list
from .index import probe_video, select_video_stream
from .layouts import SPLIT_NAMES, find_kinetics_video, kinetics_annotation_file, kinetics_stem, read_kinetics_csv

KINETICS20_CLASSES = (
    "abseiling", "bending_back", "bungee_jumping", "cleaning_floor", "curling_hair", "drinking",
    "exercising_with_an_exercise_ball", "giving_or_receiving_award", "hurdling", "laughing",
    "moving_furniture", "playing_basketball", "playing_paintball", "push_up", "roller_skating",
    "shredding_paper", "sniffing", "swimming_breast_stroke", "tobogganing", "washing_feet")
DEFAULT_CLIP_LIST = "configs/datasets/kinetics20"  # the benchmark's clips (DATA.CLIP_LIST of the recipe)
# A sampled subset (--classes ...): these defaults give about the size of kinetics20.
SAMPLING_DEFAULTS = {"classes": "kinetics20", "train_per_class": 64, "val_per_class": 5, "seed": 0}
# The canonical re-encode (docs/PROTOCOL.md, "The encoding"); --short-side changes only the size.
REENCODE = {"short_side": 256, "codec": "libx264", "pix_fmt": "yuv420p", "crf": 23, "preset": "medium",
            "gop": 250, "interpolation": "BICUBIC"}


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


def split_kinetics_stem(stem):
    """(youtube_id, start, end) of `<youtube_id>_<start>_<end>`; DatasetError for another name."""
    parts = stem.rsplit("_", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise DatasetError(f"clip '{stem}' is not named <youtube_id>_<start>_<end> like a Kinetics clip.")
    return parts[0], int(parts[1]), int(parts[2])


def rows_from_clip_list(folder, split):
    """{class folder name: rows} of `<folder>/<split>.txt`, in the list's order."""
    chosen = defaultdict(list)
    for clip in read_clip_list(list_file(folder, split), split):
        chosen[clip.class_name].append((clip.class_name, *split_kinetics_stem(clip.clip_id)))
    return dict(chosen)


def find_source(src, split, label, stem, listings):
    """The clip in `<src>/<split>/`, else in another split folder of `src` (None when absent)."""
    for folder in dict.fromkeys([split, *SPLIT_NAMES]):
        path = find_kinetics_video(os.path.join(src, folder), label, stem, listings)
        if path is not None:
            return path
    return None


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


def reencode_size(width, height, short_side):
    """(width, height) with the short side scaled to `short_side`, both rounded to even numbers."""
    scale = short_side / min(width, height)
    return 2 * round(width * scale / 2), 2 * round(height * scale / 2)


def x264_options():
    r = REENCODE
    return {"crf": str(r["crf"]), "preset": r["preset"],
            "x264-params": f"keyint={r['gop']}:min-keyint={r['gop'] // 10}:scenecut=0:threads=1"}


def reencode(src_path, dst_path, short_side=REENCODE["short_side"]):
    """Write the canonical re-encode of `src_path` (REENCODE, the module docstring) to `dst_path`."""
    with av.open(src_path, metadata_errors="ignore") as source:
        stream, _ = select_video_stream(source)
        out_w, out_h = reencode_size(stream.codec_context.width, stream.codec_context.height, short_side)
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        with av.open(dst_path, mode="w", format="mp4") as target:
            out = target.add_stream(REENCODE["codec"], rate=rate)
            out.width, out.height, out.pix_fmt = out_w, out_h, REENCODE["pix_fmt"]
            out.time_base = stream.time_base
            out.codec_context.time_base = stream.time_base
            out.codec_context.thread_count = 1
            out.codec_context.options = x264_options()
            for frame in source.decode(stream):
                scaled = frame.reformat(width=out_w, height=out_h, format=REENCODE["pix_fmt"],
                                        interpolation=REENCODE["interpolation"])
                scaled.pts, scaled.time_base = frame.pts, stream.time_base
                scaled.pict_type = PictureType.NONE  # else x264 keeps the source's keyframes
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


def wanted_rows(args, split):
    """{class folder name: candidate rows} of `split` for the chosen source."""
    if args.source == "clip list":
        return rows_from_clip_list(args.clip_list, split)
    if args.source == "from list":
        return rows_from_list(args.from_list, split)
    return candidates_by_class(args.src, split, args.classes, args.seed)


def build_split(args, split, per_class, results):
    rows = wanted_rows(args, split)
    listings = {}
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
                    src_path = find_source(args.src, split, label, stem, listings)
                    if src_path is None:
                        results.missing.append(f"{split}\t{name}\t{stem}\tmissing under {args.src}")
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


def recipe_text(args):
    """The re-encode recipe for the report header ("" for copy and link)."""
    if args.mode != "reencode":
        return ""
    r = REENCODE
    canonical = "canonical" if args.short_side == r["short_side"] else "NOT the canonical recipe: short side changed"
    return (f": {r['codec']} {r['pix_fmt']}, short side {args.short_side}, CRF {r['crf']}, preset {r['preset']}, "
            f"keyframe every {r['gop']} frames; {canonical}")


def write_outputs(args, chosen, results):
    with open(os.path.join(args.dst, "subset.csv"), "w") as f:
        f.write("label,youtube_id,time_start,time_end,split\n")
        for (label, youtube_id, start, end), split in chosen:
            f.write(f"{label},{youtube_id},{start},{end},{split}\n")
    report = args.report or os.path.join(args.dst, "prepare_report.txt")
    with open(report, "w") as f:
        f.write(f"# prepare_kinetics: {args.src} -> {args.dst} (mode {args.mode}{recipe_text(args)})\n")
        f.write(f"# {sum(results.written.values())} clips written, {len(results.missing)} missing, "
                f"{len(results.unreadable)} unreadable\n")
        for line in results.missing + results.unreadable:
            f.write(line + "\n")
    return report


def report_incomplete(args, results, report, limit=50):
    """For an exact clip list: name every clip not written; 1 unless all were written."""
    lines = results.unreadable + results.missing
    if not lines:
        return 0
    print(f"{len(lines)} listed clips could not be written (split, class, clip, why):")
    for line in lines[:limit]:
        print("  " + line.replace("\t", "  "))
    if len(lines) > limit:
        print(f"  ... and {len(lines) - limit} more in {report}")
    print("A benchmark run needs every validation clip and lets at most DATA.MAX_BAD_FRACTION of the "
          "training list be missing or unreadable (docs/PROTOCOL.md, \"Data\"); find the clips above in "
          "another Kinetics copy and run this command again (clips already written are kept).")
    return 1
