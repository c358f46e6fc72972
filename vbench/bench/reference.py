"""Reference tables: the times a benchmark run is compared with (configs/benchmark/*.yaml), and the
dataset each track must be trained and evaluated on: per split, the number of clips, classes and the
SHA-256 of the sorted clip IDs (`vbench.data.fingerprint`; a run's `listed_sha256`), and optionally
the encoding of those clips (`vbench.data.encoding`). A track may list the epochs to target of the
runs it was made from (`epochs_to_target`), for the score's convergence check (`run_set.py`)."""
import os
from dataclasses import dataclass, field

import yaml

from vbench.config import REPO_ROOT, find_repo_path
from vbench.errors import ScoreError

from .encoding_check import encoding_differences, encoding_problems_in
from .run_set import aggregate_times
from .world import mixed_hardware

TRACKS = ("cnn", "transformer")
DEFAULT_REFERENCE = os.path.join(REPO_ROOT, "configs", "benchmark", "reference.yaml")


@dataclass(frozen=True)
class TrackReference:
    track: str
    config: str  # the benchmark config a compliant run must match
    model: str
    target_top1: float
    t_ref_s: float
    n_gpu_ref: int
    # split -> {"videos", "classes", "sha256"[, "encoding"]}; {}: not checked
    dataset: dict = field(default_factory=dict)
    epochs_to_target: tuple = ()  # of the runs the table was made from; (): convergence not checked


@dataclass(frozen=True)
class Reference:
    name: str
    hardware: str
    tracks: dict  # track -> TrackReference
    path: str


def resolve_config_path(path):
    """A config path as written in a reference file: absolute, from the cwd, or from the repo root."""
    found = find_repo_path(path)
    if found and os.path.isfile(found):
        return found
    raise ScoreError(f"benchmark config '{path}' named by the reference file was not found "
                     f"(looked in the current folder and in {REPO_ROOT}).")


def _track_from_yaml(path, track, entry):
    required = {"config": str, "target_top1": (int, float), "t_ref_s": (int, float), "n_gpu_ref": int}
    for key, kind in required.items():
        if key not in entry:
            raise ScoreError(f"reference file '{path}': tracks.{track}.{key} is missing.")
        if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            raise ScoreError(f"reference file '{path}': tracks.{track}.{key} has the wrong type "
                             f"({entry[key]!r}).")
    if entry["t_ref_s"] <= 0 or entry["n_gpu_ref"] <= 0:
        raise ScoreError(f"reference file '{path}': tracks.{track}: t_ref_s and n_gpu_ref must be positive.")
    return TrackReference(track, entry["config"], str(entry.get("model", "")),
                          float(entry["target_top1"]), float(entry["t_ref_s"]), int(entry["n_gpu_ref"]),
                          _dataset_from_yaml(path, track, entry.get("dataset") or {}),
                          _epochs_from_yaml(path, track, entry.get("epochs_to_target", [])))


def _epochs_from_yaml(path, track, epochs):
    ok = isinstance(epochs, list) and all(isinstance(e, int) and not isinstance(e, bool) and e > 0 for e in epochs)
    if not ok:
        raise ScoreError(f"reference file '{path}': tracks.{track}.epochs_to_target must be a list of positive "
                         f"integers (the epoch at which each reference run reached the target); got {epochs!r}.")
    return tuple(epochs)


def _dataset_from_yaml(path, track, dataset):
    where = f"reference file '{path}': tracks.{track}.dataset"
    if not isinstance(dataset, dict):
        raise ScoreError(f"{where} must map split names to {{videos, classes, sha256}}.")
    for split, expected in dataset.items():
        ok = isinstance(expected, dict) and all(
            isinstance(expected.get(key), kind) and not isinstance(expected.get(key), bool)
            for key, kind in (("videos", int), ("classes", int), ("sha256", str)))
        if not ok:
            raise ScoreError(f"{where}.{split} must hold videos (int), classes (int) and sha256 (hex string); "
                             f"got {expected!r}.")
        problems = encoding_problems_in(expected["encoding"]) if "encoding" in expected else []
        if problems:
            raise ScoreError(f"{where}.{split}.encoding does not follow the encoding summary of "
                             f"vbench.data.encoding: {'; '.join(problems)}.")
    return {str(split): dict(expected) for split, expected in dataset.items()}


def load_reference(path=None):
    """Read a reference table; errors name the file and the key."""
    path = path or DEFAULT_REFERENCE
    if not os.path.isfile(path):
        raise ScoreError(f"reference file not found: '{path}'. The shipped one is {DEFAULT_REFERENCE}.")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ScoreError(f"reference file '{path}' is not valid YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tracks"), dict):
        raise ScoreError(f"reference file '{path}' needs a 'tracks' mapping with 'cnn' and/or 'transformer'.")
    unknown = set(data["tracks"]) - set(TRACKS)
    if unknown:
        raise ScoreError(f"reference file '{path}': unknown track(s) {sorted(unknown)}; use {list(TRACKS)}.")
    tracks = {t: _track_from_yaml(path, t, e) for t, e in data["tracks"].items()}
    return Reference(str(data.get("name", os.path.basename(path))), str(data.get("hardware", "")),
                     tracks, path)


def make_reference(track_runs, name, hardware=""):
    """A reference table (as a dict ready for YAML) from scored runs: {track: [results dicts]}.

    t_ref is the aggregated time to target of the given runs (see `aggregate_times`).
    """
    tracks = {}
    for track, runs in track_runs.items():
        times = [r["benchmark"]["time_to_target_s"] for r in runs if r["benchmark"]["reached"]]
        if len(times) != len(runs):
            raise ScoreError(f"--make-reference: every {track} run must have reached its target; "
                             f"{len(runs) - len(times)} of {len(runs)} did not.")
        first = runs[0]
        check_reference_worlds(track, runs)
        tracks[track] = {
            "config": first["run"]["config_file"],
            "model": first["config"]["MODEL"]["MODEL_NAME"],
            "target_top1": float(first["benchmark"]["target_top1"]),
            "t_ref_s": round(aggregate_times(times)[0], 2),
            "n_gpu_ref": int(first["world"]["num_devices"]),
            "dataset": reference_dataset(track, runs),
            "epochs_to_target": [int(r["benchmark"]["epochs_to_target"]) for r in runs],
        }
    return {"name": name, "hardware": hardware, "tracks": tracks}


def check_reference_worlds(track, runs):
    """A reference time stands for one number of one kind of device: every run of a track must
    have trained on the same recorded device count, and each on one kind of hardware."""
    counts = {int(run["world"]["num_devices"]) for run in runs}
    if len(counts) > 1:
        raise ScoreError(f"--make-reference: the {track} runs trained on different numbers of devices "
                         f"({sorted(counts)}, world.num_devices); give runs of one setup.")
    for run in runs:
        mixed = mixed_hardware(run["world"])
        if mixed:
            raise ScoreError(f"--make-reference: {track} run '{run['run']['output_dir']}': {mixed}. A "
                             f"reference time must come from one kind of device.")


def reference_dataset(track, runs):
    """{split: {videos, classes, sha256}} of the clips the runs listed; they must agree."""
    datasets = [run.get("dataset") for run in runs]
    if not all(datasets):
        raise ScoreError(f"--make-reference: every {track} run needs a dataset fingerprint in its results.json "
                         f"(runs made by an older vbench have none); rerun them with this one.")
    expected = {split: {"videos": f["videos_listed"], "classes": f["classes"], "sha256": f["listed_sha256"]}
                for split, f in datasets[0].items()}
    for run, dataset in zip(runs[1:], datasets[1:]):
        other = {split: f["listed_sha256"] for split, f in dataset.items()}
        if other != {split: e["sha256"] for split, e in expected.items()}:
            raise ScoreError(f"--make-reference: the {track} runs did not use the same clips ('"
                             f"{runs[0]['run']['output_dir']}' and '{run['run']['output_dir']}' differ).")
    for split, entry in expected.items():
        encodings = [dataset[split].get("encoding") for dataset in datasets]
        if all(encodings):  # runs of an older vbench have none: the table then carries none
            entry["encoding"] = encodings[0]
            _check_same_encoding(track, split, runs, encodings)
    return expected


def _check_same_encoding(track, split, runs, encodings):
    for run, encoding in zip(runs[1:], encodings[1:]):
        differences = encoding_differences(encoding, encodings[0])
        if differences:
            raise ScoreError(f"--make-reference: the {track} runs' {split} data was encoded differently ("
                             f"'{run['run']['output_dir']}' against '{runs[0]['run']['output_dir']}': "
                             f"{'; '.join(differences)}).")
