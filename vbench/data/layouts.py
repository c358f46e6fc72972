"""Dataset layouts: which videos a split holds and their labels.

- "csv" (SlowFast): `<root>/<split>.csv`, one `path<SEP>label` per line (label an integer id).
  Paths are joined to DATA.PATH_PREFIX, and relative ones to the data root. Class names come
  from `<root>/classes.txt` (one per line, line i = label i) or `<root>/classnames.json`
  (SlowFast's {"name": id}); without either, the label ids as strings.
- "folder": `<root>/<split>/<class>/<video>` (kinetics20, torchvision). Labels are the sorted
  class folder names of all splits together, so train and val agree even if one lacks a class.
- "kinetics": the official annotation CSVs `<root>/annotations/<split>.csv` or `<root>/<split>.csv`
  with header `label,youtube_id,time_start,time_end,split[,...]`; each row is the video
  `<root>/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` (label folders may use spaces or
  underscores; flat `<root>/<split>/<file>` works too). Listed videos missing on disk are skipped
  with a warning (deleted YouTube videos are normal in Kinetics). Class names: the sorted labels
  of every annotation file found.
"""
import csv
import json
import logging
import os
from dataclasses import dataclass

from vbench.errors import DatasetError

from .registry import register_dataset

logger = logging.getLogger(__name__)

LAYOUTS = ("csv", "folder", "kinetics")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
SPLIT_NAMES = ("train", "val", "validate", "validation", "test")
CLASS_FILES = ("classes.txt", "classnames.json")


@dataclass(frozen=True)
class VideoEntry:
    path: str  # absolute path of the video file
    rel_path: str  # path relative to the data root (the index cache key)
    label: int


def _is_video(name):
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS)


def _subdirs(folder):
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _first_line(path):
    with open(path, newline="") as f:
        for line in f:
            if line.strip():
                return line.strip()
    return ""


def _is_kinetics_csv(path):
    header = [c.strip().lower() for c in _first_line(path).split(",")]
    return tuple(header[:4]) == KINETICS_COLUMNS


def kinetics_annotation_file(root, split):
    """`<root>/annotations/<split>.csv` or `<root>/<split>.csv` if it has the Kinetics header, else None."""
    for path in (os.path.join(root, "annotations", f"{split}.csv"), os.path.join(root, f"{split}.csv")):
        if os.path.isfile(path) and _is_kinetics_csv(path):
            return path
    return None


def detect_layout(data_root, split=None):
    """"csv", "kinetics" or "folder" for `data_root` (looking at `split` first when given)."""
    root = str(data_root)
    if not os.path.isdir(root):
        raise DatasetError(f"dataset folder '{root}' does not exist (DATA.PATH_TO_DATA_DIR).")
    for name in ([split] if split else []) + list(SPLIT_NAMES):
        if kinetics_annotation_file(root, name):
            return "kinetics"
        if os.path.isfile(os.path.join(root, f"{name}.csv")):
            return "csv"
        folder = os.path.join(root, name)
        if os.path.isdir(folder) and _subdirs(folder):
            return "folder"
    raise DatasetError(
        f"cannot tell the layout of dataset folder '{root}': expected <split>.csv (SlowFast CSV), "
        f"annotations/<split>.csv (Kinetics) or <split>/<class>/<video> folders (split names "
        f"{', '.join(SPLIT_NAMES)}). Fix the folder or set DATA.LAYOUT to one of {list(LAYOUTS)}.")


def read_split(data_root, split, layout="auto", path_prefix="", separator=" "):
    """(list of VideoEntry, class names) of `split`; raises DatasetError on user mistakes."""
    root = os.path.abspath(os.path.expanduser(str(data_root)))
    if not os.path.isdir(root):
        raise DatasetError(f"dataset folder '{root}' does not exist (DATA.PATH_TO_DATA_DIR).")
    if layout in ("", "auto", None):
        layout = detect_layout(root, split)
    if layout == "csv":
        return _read_slowfast_csv(root, split, path_prefix, separator)
    if layout == "folder":
        return _read_folders(root, split)
    if layout == "kinetics":
        return _read_kinetics(root, split)
    raise DatasetError(f"unknown dataset layout {layout!r} (DATA.LAYOUT); choose auto or one of {list(LAYOUTS)}.")


# ---------------------------------------------------------------- registered datasets
@register_dataset("kinetics")
def kinetics_dataset(cfg, split):
    """Kinetics-style data in the layout DATA.LAYOUT names ("auto": detected from the folder)."""
    return read_split(cfg.DATA.PATH_TO_DATA_DIR, split, cfg.DATA.LAYOUT, cfg.DATA.PATH_PREFIX,
                      cfg.DATA.PATH_LABEL_SEPARATOR)


@register_dataset("csv")
def csv_dataset(cfg, split):
    """SlowFast's `<split>.csv` lists of `path<DATA.PATH_LABEL_SEPARATOR>label`."""
    return read_split(cfg.DATA.PATH_TO_DATA_DIR, split, "csv", cfg.DATA.PATH_PREFIX,
                      cfg.DATA.PATH_LABEL_SEPARATOR)


@register_dataset("folder")
def folder_dataset(cfg, split):
    """`<split>/<class>/<video>` folders (torchvision's layout)."""
    return read_split(cfg.DATA.PATH_TO_DATA_DIR, split, "folder")


@register_dataset("kinetics_annotations")
def kinetics_annotations_dataset(cfg, split):
    """The official Kinetics annotation CSVs (`annotations/<split>.csv`) and their videos."""
    return read_split(cfg.DATA.PATH_TO_DATA_DIR, split, "kinetics")


@register_dataset("synthetic")
def synthetic_dataset(cfg, split):
    """The synthetic motion-pattern dataset (`vbench data synth`, or SYNTH.AUTO_GENERATE)."""
    if not os.path.isdir(os.path.join(str(cfg.DATA.PATH_TO_DATA_DIR), split)):
        raise DatasetError(
            f"the synthetic dataset has no split '{split}' in '{cfg.DATA.PATH_TO_DATA_DIR}' "
            f"(DATA.PATH_TO_DATA_DIR). Set SYNTH.AUTO_GENERATE True to generate it at start, or "
            f"generate it with `vbench data synth --out {cfg.DATA.PATH_TO_DATA_DIR}` and the "
            f"config's SYNTH.* settings.")
    return read_split(cfg.DATA.PATH_TO_DATA_DIR, split, "folder")


def _entry(root, path, label):
    path = os.path.normpath(os.path.join(root, path))
    return VideoEntry(path=path, rel_path=os.path.relpath(path, root), label=label)


# ---------------------------------------------------------------- class name files


def read_class_file(root):
    """Class names from classes.txt / classnames.json in `root`, or None when neither exists."""
    txt, js = (os.path.join(root, name) for name in CLASS_FILES)
    if os.path.isfile(txt):
        with open(txt) as f:
            return [line.strip() for line in f if line.strip()]
    if os.path.isfile(js):
        try:
            with open(js) as f:
                mapping = json.load(f)
        except ValueError as error:
            raise DatasetError(f"{js} is not valid JSON ({error}); expected {{\"class name\": id, ...}}.") from None
        if isinstance(mapping, list):
            return [str(name) for name in mapping]
        if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
            raise DatasetError(f"{js} must map every class name to a distinct id 0..N-1.")
        return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    return None


def write_class_names(class_names, output_dir):
    """Write the class list (label order) to `<output_dir>/classes.json`; returns the file path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "classes.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump([str(name) for name in class_names], f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- csv (SlowFast)


def _read_slowfast_csv(root, split, path_prefix, separator):
    csv_path = os.path.join(root, f"{split}.csv")
    if not os.path.isfile(csv_path):
        raise DatasetError(f"split '{split}' not found: {csv_path} does not exist (csv layout).")
    entries = []
    with open(csv_path) as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(separator, 1) if separator.strip() == "" else line.split(separator)
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip().lstrip("-").isdigit():
                raise DatasetError(
                    f"{csv_path}, line {line_no}: expected '<video path>{separator}<integer label>' "
                    f"(separator {separator!r} = DATA.PATH_LABEL_SEPARATOR), got {line!r}.")
            label = int(parts[1])
            if label < 0:
                raise DatasetError(f"{csv_path}, line {line_no}: negative label {label}.")
            entries.append(_entry(root, os.path.join(path_prefix, parts[0].strip()), label))
    if not entries:
        raise DatasetError(f"{csv_path} lists no videos.")
    names = read_class_file(root)
    top = max(e.label for e in entries)
    if names is None:
        names = [str(i) for i in range(top + 1)]
    elif top >= len(names):
        raise DatasetError(f"{csv_path} uses label {top} but the class file in {root} names only "
                           f"{len(names)} classes.")
    return entries, names


# ---------------------------------------------------------------- folder


def _read_folders(root, split):
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise DatasetError(f"split '{split}' not found: folder {split_dir} does not exist (folder layout "
                           f"<root>/<split>/<class>/<video>).")
    split_classes = _subdirs(split_dir)
    if not split_classes:
        raise DatasetError(f"split folder {split_dir} has no class folders (expected {split}/<class>/<video>).")
    names = read_class_file(root)
    if names is None:
        siblings = [d for d in _subdirs(root) if d in SPLIT_NAMES or d == split]
        names = sorted(set().union(*(_subdirs(os.path.join(root, d)) for d in siblings)))
    label_of = {name: i for i, name in enumerate(names)}
    entries = []
    for name in split_classes:
        if name not in label_of:
            raise DatasetError(f"class folder {os.path.join(split_dir, name)} is not in the class file of {root}.")
        videos = sorted(v for v in os.listdir(os.path.join(split_dir, name)) if _is_video(v))
        if not videos:
            logger.warning("class folder %s has no video files (%s).", os.path.join(split_dir, name),
                           ", ".join(VIDEO_EXTENSIONS))
        entries += [_entry(root, os.path.join(split, name, v), label_of[name]) for v in videos]
    if not entries:
        raise DatasetError(f"split folder {split_dir} holds no video files ({', '.join(VIDEO_EXTENSIONS)}).")
    return entries, names


# ---------------------------------------------------------------- kinetics annotations


def _parse_time(value, csv_path, line_no, column):
    try:
        return int(float(value))
    except ValueError:
        raise DatasetError(f"{csv_path}, line {line_no}: column '{column}' must be a number of seconds, "
                           f"got {value!r}.") from None


def read_kinetics_csv(csv_path):
    """Rows of an official Kinetics annotation CSV as (label, youtube_id, start, end)."""
    rows = []
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = [c.strip().lower() for c in next(reader, [])]
        if tuple(header[:4]) != KINETICS_COLUMNS:
            raise DatasetError(f"{csv_path}, line 1: expected the header "
                               f"'{','.join(KINETICS_COLUMNS)},split', got {','.join(header)!r}.")
        for row in reader:
            line_no = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) < 4 or not row[0].strip() or not row[1].strip():
                raise DatasetError(f"{csv_path}, line {line_no}: expected 'label,youtube_id,time_start,"
                                   f"time_end,split', got {','.join(row)!r}.")
            start = _parse_time(row[2], csv_path, line_no, "time_start")
            end = _parse_time(row[3], csv_path, line_no, "time_end")
            rows.append((row[0].strip(), row[1].strip(), start, end))
    return rows


def kinetics_stem(youtube_id, start, end):
    """The official clip file name without extension: `<youtube_id>_<start:06d>_<end:06d>`."""
    return f"{youtube_id}_{start:06d}_{end:06d}"


def _video_stems(directory):
    if not os.path.isdir(directory):
        return {}
    return {os.path.splitext(name)[0]: name for name in sorted(os.listdir(directory), reverse=True)
            if _is_video(name)}  # reverse: ".mp4" wins over ".mkv"/".webm" for the same stem


def find_kinetics_video(split_dir, label, stem, listing_cache):
    """Path of the video `stem`.* under `split_dir`/<label, spaces or underscores>/ or flat in
    `split_dir`; None when absent. `listing_cache` (a dict) keeps directory listings between calls."""
    for folder in dict.fromkeys((label, label.replace(" ", "_"), label.replace("_", " "), "")):
        directory = os.path.join(split_dir, folder)
        if directory not in listing_cache:
            listing_cache[directory] = _video_stems(directory)
        if stem in listing_cache[directory]:
            return os.path.join(directory, listing_cache[directory][stem])
    return None


def _read_kinetics(root, split):
    csv_path = kinetics_annotation_file(root, split)
    if csv_path is None:
        raise DatasetError(f"split '{split}' not found: no Kinetics annotation file {root}/annotations/"
                           f"{split}.csv or {root}/{split}.csv with header '{','.join(KINETICS_COLUMNS)},...'.")
    rows = read_kinetics_csv(csv_path)
    names = read_class_file(root)
    if names is None:
        labels = {row[0] for row in rows}
        for other in SPLIT_NAMES:
            other_csv = kinetics_annotation_file(root, other)
            if other_csv and other_csv != csv_path:
                labels |= {row[0] for row in read_kinetics_csv(other_csv)}
        names = sorted(labels)
    label_of = {name: i for i, name in enumerate(names)}
    label_of.update({name.replace("_", " "): i for i, name in enumerate(names)})
    entries, missing, listings = [], [], {}
    for label, youtube_id, start, end in rows:
        if label not in label_of and label.replace("_", " ") not in label_of:
            raise DatasetError(f"{csv_path}: label {label!r} is not in the class file of {root}.")
        stem = kinetics_stem(youtube_id, start, end)
        path = find_kinetics_video(os.path.join(root, split), label, stem, listings)
        if path is None:
            missing.append(stem)
            continue
        entries.append(_entry(root, path, label_of.get(label, label_of.get(label.replace("_", " ")))))
    if missing:
        logger.warning("%s: %d of %d annotated videos are missing under %s (first: %s); they are skipped.",
                       csv_path, len(missing), len(rows), os.path.join(root, split), missing[0])
    if not entries:
        raise DatasetError(f"none of the {len(rows)} videos listed in {csv_path} exists under "
                           f"{os.path.join(root, split)}/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4.")
    return entries, names
