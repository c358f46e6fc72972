"""Clip lists: a split defined by a fixed list of clips (the benchmark's kinetics20), not by whatever
files a folder happens to hold.

A clip list is a folder with one `<split>.txt` per split (configs/datasets/kinetics20). Each line
names one clip relative to the dataset root, `<split>/<class>/<clip id>.<ext>`; the clip ID is the
file name without its extension (a Kinetics clip: `<youtube_id>_<start:06d>_<end:06d>`).

With DATA.CLIP_LIST set, a split is exactly its list (`read_split_files`):
- each listed clip is looked up by (class, clip ID) among the videos the layout finds, so the file
  may have any video extension and a class folder may use spaces or underscores;
- labels are the sorted classes of all the lists in the folder (train and val agree);
- a listed clip with no file stays in the split as missing: the index marks it unusable
  (`index_files`), so it counts as left out like an unreadable video;
- videos the list does not name are not used (a warning counts them).
Without a clip list the split is whatever the layout reads, as before.
"""
import logging
import os
from dataclasses import dataclass, field

from vbench.config import find_repo_path
from vbench.errors import DatasetError

from .index import VideoInfo, build_index
from .layouts import VIDEO_EXTENSIONS, VideoEntry, read_split

logger = logging.getLogger(__name__)

LIST_SUFFIX = ".txt"
MISSING_REASON = "missing: listed in the clip list but not in the data folder"


def clip_id(rel_path):
    """The clip ID of a video path: its file name without the extension."""
    return os.path.splitext(os.path.basename(rel_path))[0]


def class_key(name):
    """Class names compare with spaces and underscores alike ("bending back" = "bending_back")."""
    return name.strip().replace(" ", "_")


@dataclass(frozen=True)
class ListedClip:
    rel_path: str  # as written in the list: <split>/<class>/<clip id>.<ext>
    class_name: str
    clip_id: str


@dataclass
class SplitFiles:
    """The videos of one split, after the clip list (if any) was applied."""
    entries: list  # layouts.VideoEntry of every video of the split (the list's order with a list)
    class_names: list
    list_file: str = ""  # the clip list applied; "" without one
    missing: dict = field(default_factory=dict)  # rel_path -> MISSING_REASON: listed, no file
    unlisted: list = field(default_factory=list)  # rel_paths found in the folder but not listed


def resolve_list_folder(folder):
    """The clip-list folder named by DATA.CLIP_LIST (absolute, from the current folder or the vbench
    checkout); DatasetError when it does not exist."""
    found = find_repo_path(folder)
    if found is None or not os.path.isdir(found):
        raise DatasetError(f"clip list folder '{folder}' (DATA.CLIP_LIST) does not exist; the benchmark's "
                           f"is configs/datasets/kinetics20. Set DATA.CLIP_LIST \"\" to use every video "
                           f"of the data folder.")
    return os.path.abspath(found)


def list_file(folder, split):
    path = os.path.join(resolve_list_folder(folder), split + LIST_SUFFIX)
    if not os.path.isfile(path):
        raise DatasetError(f"clip list folder '{folder}' (DATA.CLIP_LIST) has no {split}{LIST_SUFFIX} "
                           f"for split '{split}'.")
    return path


def read_clip_list(path, split):
    """The ListedClips of a `<split>.txt`; DatasetError naming the line for a malformed entry."""
    clips, seen = [], {}
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            rel_path = line.strip()
            if not rel_path or rel_path.startswith("#"):
                continue
            parts = rel_path.split("/")
            where = f"{path}, line {line_no}"
            if len(parts) != 3 or not all(parts) or not parts[2].lower().endswith(VIDEO_EXTENSIONS):
                raise DatasetError(f"{where}: expected '<split>/<class>/<clip id>.mp4' (a video file "
                                   f"name), got {rel_path!r}.")
            if parts[0] != split:
                raise DatasetError(f"{where}: {rel_path!r} is not in split '{split}' (the list of a split "
                                   f"names only its own clips).")
            clip = ListedClip(rel_path, class_key(parts[1]), clip_id(rel_path))
            if clip.clip_id in seen:
                raise DatasetError(f"{where}: clip '{clip.clip_id}' is listed twice (also line "
                                   f"{seen[clip.clip_id]}).")
            seen[clip.clip_id] = line_no
            clips.append(clip)
    if not clips:
        raise DatasetError(f"clip list {path} names no clips.")
    return clips


def list_class_names(folder):
    """Sorted classes of every `*.txt` list in the folder: the labels of every split."""
    root = resolve_list_folder(folder)
    names = set()
    for name in sorted(os.listdir(root)):
        if name.endswith(LIST_SUFFIX):
            split = name[:-len(LIST_SUFFIX)]
            names |= {clip.class_name for clip in read_clip_list(os.path.join(root, name), split)}
    return sorted(names)


def apply_clip_list(entries, class_names, listed, list_names, root):
    """SplitFiles of the `listed` clips, matched to the layout's `entries` by (class, clip ID)."""
    found = {}
    for entry in entries:
        found.setdefault((class_key(class_names[entry.label]), clip_id(entry.rel_path)), []).append(entry)
    label_of = {name: label for label, name in enumerate(list_names)}
    chosen, missing, used = [], {}, set()
    for clip in listed:
        candidates = found.get((clip.class_name, clip.clip_id), [])
        exact = [e for e in candidates if e.rel_path == clip.rel_path]
        entry = (exact or candidates or [None])[0]
        if entry is None:
            entry = VideoEntry(path=os.path.join(root, *clip.rel_path.split("/")), rel_path=clip.rel_path,
                               label=label_of[clip.class_name])
            missing[clip.rel_path] = MISSING_REASON
        else:
            entry = VideoEntry(entry.path, entry.rel_path, label_of[clip.class_name])
            used.add(entry.rel_path)
        chosen.append(entry)
    unlisted = sorted(e.rel_path for e in entries if e.rel_path not in used)
    return SplitFiles(chosen, list(list_names), missing=missing, unlisted=unlisted)


def read_split_files(data_root, split, layout="auto", path_prefix="", separator=" ", clip_list=""):
    """SplitFiles of `split`: the layout's videos, restricted to DATA.CLIP_LIST when set."""
    entries, class_names = read_split(data_root, split, layout, path_prefix, separator)
    return restrict_to_clip_list(entries, class_names, data_root, split, clip_list)


def restrict_to_clip_list(entries, class_names, data_root, split, clip_list=""):
    """SplitFiles of a split's `entries`: all of them, or exactly the clips DATA.CLIP_LIST lists."""
    if not clip_list:
        return SplitFiles(entries, class_names)
    path = list_file(clip_list, split)
    root = os.path.abspath(os.path.expanduser(str(data_root)))
    files = apply_clip_list(entries, class_names, read_clip_list(path, split), list_class_names(clip_list), root)
    files.list_file = path
    if files.unlisted:
        logger.warning("split '%s': %d videos in %s are not in the clip list %s and are not used (first: %s).",
                       split, len(files.unlisted), root, path, files.unlisted[0])
    if files.missing:
        logger.warning("split '%s': %d of the %d clips listed in %s are missing from %s (first: %s).",
                       split, len(files.missing), len(files.entries), path, root, next(iter(files.missing)))
    return files


def index_files(files, **index_args):
    """VideoInfo of every entry of `files`, in order: the index of the videos present (keyword
    arguments go to `build_index`) and an unusable VideoInfo for each missing clip."""
    present = iter(build_index([e for e in files.entries if e.rel_path not in files.missing], **index_args))
    return [VideoInfo(e.rel_path, e.path, e.label, error=files.missing[e.rel_path])
            if e.rel_path in files.missing else next(present) for e in files.entries]
