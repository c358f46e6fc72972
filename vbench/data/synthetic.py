"""The synthetic motion-pattern dataset: generation, auto-generation from a config, `vbench data synth`.

Layout written under `root` (the same as kinetics20, plus SlowFast CSVs)::

    train/<class>/<class>_0000.mp4 ...     val/<class>/<class>_0000.mp4 ...
    train.csv, val.csv                     lines `train/<class>/<class>_0000.mp4 <label>`
    classes.json                           JSON list of class names; label = position
    synthetic.json                         the generation parameters (checked on reuse)

Labels are the positions of the class names in sorted order, so a folder-layout reader (labels =
sorted folder names) and the CSVs agree. Each video is a pure function of (seed, split, class,
index), so neither the order of generation nor the number of workers changes any frame.
See `synthetic_patterns.py` for what the classes are and why one frame cannot tell them apart.
"""
import json
import multiprocessing
import os
import shutil
import signal
import socket
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import av
import numpy as np
from tqdm import tqdm

from vbench.errors import ConfigError

from .resources import keep_freed_memory, usable_cores
from .synthetic_patterns import PATTERNS, PRESETS, Preset, render_frames

FORMAT_VERSION = 1  # bump when the frames a seed produces change
MARKER_FILE = "synthetic.json"
SPLITS = ("train", "val")


def class_names(num_classes):
    """The first `num_classes` patterns of `PATTERNS` (generation order, not label order)."""
    if not 1 <= num_classes <= len(PATTERNS):
        raise ValueError(f"the synthetic dataset has 1 to {len(PATTERNS)} classes, "
                         f"got num_classes={num_classes}")
    return list(PATTERNS[:num_classes])


def resolve_preset(preset):
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def video_seed(seed, split, pattern, index):
    """Seed of one video, from its identity only (a class keeps its videos when N changes)."""
    return np.random.SeedSequence([FORMAT_VERSION, seed, SPLITS.index(split),
                                   PATTERNS.index(pattern), index])


def encode_video(path, frames, preset):
    """Write uint8 H x W x 3 RGB frames (an array or an iterable) as H.264 yuv420p, bit-exact for
    the same frames. One encoder thread: generation runs one encoder per core."""
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=preset.fps)
        stream.width, stream.height = preset.width, preset.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        # mbtree off: x264's macroblock-tree assembly gave different bits for the same frames
        # from one encode to the next within a process (seen with x264 core 165)
        params = f"keyint={preset.gop}:min-keyint={preset.gop}:scenecut=0:mbtree=0:threads=1"
        options = {"preset": preset.x264_preset, "x264-params": params}
        if preset.bit_rate:
            stream.bit_rate = preset.bit_rate
        else:
            options["crf"] = str(preset.crf)
        stream.options = options
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _make_video(job):
    path, preset, pattern, seed_sequence = job
    encode_video(path, render_frames(preset, pattern, np.random.default_rng(seed_sequence)), preset)
    return os.path.getsize(path)


def _plan(tmp_root, preset, names, per_split, seed):
    """(jobs, csv lines per split). Labels are positions in the sorted class names."""
    label_of = {name: label for label, name in enumerate(sorted(names))}
    jobs, lines = [], {split: [] for split in SPLITS}
    for split in SPLITS:
        for name in names:
            os.makedirs(os.path.join(tmp_root, split, name), exist_ok=True)
            for index in range(per_split[split]):
                rel_path = f"{split}/{name}/{name}_{index:04d}.mp4"
                path = os.path.join(tmp_root, *rel_path.split("/"))
                jobs.append((path, preset, name, video_seed(seed, split, name, index)))
                lines[split].append(f"{rel_path} {label_of[name]}")
    return jobs, lines


def _init_worker():
    # A forked worker inherits the trainer's Python SIGTERM handler (vbench.engine.launch). With it,
    # Pool.terminate sometimes left a worker alive, blocked on the pool's queue lock, and waited
    # for it forever (seen in about 1 of 3 generations inside the trainer).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    keep_freed_memory()  # the per-frame canvases cost ~18k page faults per kinetics-like video without it


def worker_pool(workers):
    """A process pool for generation. fork: workers start at once (spawn would re-import torch
    through vbench.data); they only use NumPy and PyAV, so a parent's threads or CUDA context do
    not matter. An executor, not `multiprocessing.Pool`: after a failed job, Pool.terminate could
    wait forever for its handler threads (seen in the suite on a loaded machine); the executor
    cancels what has not started and waits for the videos being written."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker)


def _run_jobs(jobs, workers, progress):
    total_bytes = 0
    with tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                total_bytes += _make_video(job)
                bar.update()
            return total_bytes
        with worker_pool(workers) as pool:
            futures = [pool.submit(_make_video, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    total_bytes += future.result()
                    bar.update()
            finally:  # on a failure: start nothing more (the with-exit waits for running jobs)
                for future in futures:
                    future.cancel()
    return total_bytes


def _tmp_prefix(root):
    return f"{root}.tmp-{socket.gethostname()}-"


def _remove_stale_tmp(root):
    """Delete half-written folders left by crashed generations on this host."""
    parent, prefix = os.path.dirname(root), os.path.basename(_tmp_prefix(root))
    for entry in os.listdir(parent):
        pid = entry[len(prefix):]
        if not (entry.startswith(prefix) and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


def _move_into_place(tmp_root, root):
    if os.path.isdir(root) and not os.listdir(root):
        os.rmdir(root)
    try:
        os.rename(tmp_root, root)
    except OSError as error:  # someone created `root` meanwhile (e.g. another rank)
        raise FileExistsError(f"cannot move the generated dataset into {root}: {error}") from None


def generation_params(preset, num_classes, train_per_class, val_per_class, seed):
    """What `synthetic.json` records and what reuse compares (the preset's fields too, so data
    generated before a preset changed is not silently reused)."""
    preset = resolve_preset(preset)
    return {"format_version": FORMAT_VERSION, "preset": preset.name,
            "num_classes": int(num_classes), "train_per_class": int(train_per_class),
            "val_per_class": int(val_per_class), "seed": int(seed),
            "preset_params": json.loads(json.dumps(preset.as_dict()))}


def generate_dataset(root, preset="demo", num_classes=4, train_per_class=16, val_per_class=4,
                     seed=0, workers=2, progress=True):
    """Write the dataset into `root` (absent or empty) atomically; returns a summary dict.

    Videos are written into a sibling `<root>.tmp-<host>-<pid>` folder that is renamed to `root`
    only when complete, so a crash never leaves a dataset that looks finished.
    """
    preset_obj = resolve_preset(preset)
    names = class_names(num_classes)
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError("train_per_class and val_per_class must be at least 1, got "
                         f"{train_per_class} and {val_per_class}")
    root = os.path.abspath(root)
    if os.path.isdir(root) and os.listdir(root):
        raise FileExistsError(f"{root} exists and is not empty; delete it or choose another folder")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    _remove_stale_tmp(root)
    tmp_root = f"{_tmp_prefix(root)}{os.getpid()}"
    shutil.rmtree(tmp_root, ignore_errors=True)
    start = time.perf_counter()
    try:
        per_split = {"train": train_per_class, "val": val_per_class}
        jobs, lines = _plan(tmp_root, preset_obj, names, per_split, seed)
        total_bytes = _run_jobs(jobs, workers, progress)
        for split in SPLITS:
            with open(os.path.join(tmp_root, f"{split}.csv"), "w") as csv_file:
                csv_file.write("\n".join(lines[split]) + "\n")
        with open(os.path.join(tmp_root, "classes.json"), "w") as classes_file:
            json.dump(sorted(names), classes_file, indent=1)
        marker = dict(generation_params(preset_obj, num_classes, train_per_class, val_per_class,
                                        seed), classes=sorted(names))
        with open(os.path.join(tmp_root, MARKER_FILE), "w") as marker_file:
            json.dump(marker, marker_file, indent=1)
        _move_into_place(tmp_root, root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    seconds = time.perf_counter() - start
    summary = {"root": root, "preset": preset_obj.name, "classes": sorted(names),
               "videos": {split: len(lines[split]) for split in SPLITS},
               "size": [preset_obj.width, preset_obj.height], "fps": preset_obj.fps,
               "frames_per_video": preset_obj.num_frames, "bytes": total_bytes,
               "seconds": round(seconds, 3), "videos_per_s": round(len(jobs) / seconds, 2),
               "workers": workers}
    if progress:
        print(f"synthetic dataset: {len(jobs)} videos ({summary['videos']['train']} train, "
              f"{summary['videos']['val']} val, {num_classes} classes, preset {preset_obj.name}) "
              f"in {seconds:.1f} s ({summary['videos_per_s']} videos/s), "
              f"{total_bytes / 1e6:.1f} MB -> {root}")
    return summary


def _flat_params(params):
    """Generation parameters with the preset's fields as "preset.<field>" keys, for comparing."""
    flat = {key: value for key, value in params.items() if key != "preset_params"}
    flat.update({f"preset.{key}": value for key, value in (params.get("preset_params") or {}).items()})
    return flat


def _check_marker(root, wanted):
    """Raise ConfigError when `root` was generated with other parameters."""
    marker_path = os.path.join(root, MARKER_FILE)
    if not os.path.isfile(marker_path):
        return  # a dataset vbench did not generate: use it as it is
    try:
        with open(marker_path) as marker_file:
            found = json.load(marker_file)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {marker_path} ({error}); delete {root} to regenerate "
                          "the synthetic dataset") from None
    found, wanted = _flat_params(found), _flat_params(wanted)
    differences = [f"{key}: {found.get(key)!r} there, {value!r} wanted"
                   for key, value in wanted.items() if found.get(key) != value]
    if differences:
        raise ConfigError(
            f"DATA.PATH_TO_DATA_DIR {root} holds a synthetic dataset generated with other "
            f"parameters ({'; '.join(differences)}). Delete the folder to regenerate it, or set "
            "DATA.PATH_TO_DATA_DIR to another folder (or change the SYNTH.* keys to match).")


def ensure_synthetic(cfg):
    """Generate the dataset into DATA.PATH_TO_DATA_DIR if SYNTH.AUTO_GENERATE and it has no train/.

    Returns True when it generated. Safe to call from several processes at once: one rename wins
    and the others check what it wrote.
    """
    if not cfg.SYNTH.AUTO_GENERATE:
        return False
    root = cfg.DATA.PATH_TO_DATA_DIR
    if not root:
        raise ConfigError("SYNTH.AUTO_GENERATE is on but DATA.PATH_TO_DATA_DIR is empty; set it "
                          "to the folder the synthetic dataset should be generated into.")
    root = os.path.abspath(os.path.expanduser(root))
    synth = cfg.SYNTH
    wanted = generation_params(synth.PRESET, synth.NUM_CLASSES, synth.TRAIN_PER_CLASS,
                               synth.VAL_PER_CLASS, synth.SEED)
    if os.path.isdir(os.path.join(root, "train")):
        _check_marker(root, wanted)
        return False
    if os.path.isdir(root) and os.listdir(root):
        raise ConfigError(f"DATA.PATH_TO_DATA_DIR {root} is not empty but has no train/ folder, so "
                          "the synthetic dataset cannot be generated there; empty it or point "
                          "DATA.PATH_TO_DATA_DIR to a new folder.")
    try:  # the other ranks wait at a barrier meanwhile: every core generates
        generate_dataset(root, synth.PRESET, synth.NUM_CLASSES, synth.TRAIN_PER_CLASS,
                         synth.VAL_PER_CLASS, synth.SEED, workers=usable_cores())
    except FileExistsError:
        if not os.path.isdir(os.path.join(root, "train")):
            raise
        _check_marker(root, wanted)  # another process finished first
        return False
    return True
