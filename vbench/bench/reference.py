"""Reference tables: the times a benchmark run is compared with (configs/benchmark/*.yaml)."""
import os
from dataclasses import dataclass

import yaml

from vbench.config import REPO_ROOT, find_repo_path

TRACKS = ("cnn", "transformer")
DEFAULT_REFERENCE = os.path.join(REPO_ROOT, "configs", "benchmark", "reference.yaml")


class ScoreError(ValueError):
    """A problem with score inputs; the message names the file or run and what to do."""


@dataclass(frozen=True)
class TrackReference:
    track: str
    config: str  # the benchmark config a compliant run must match
    model: str
    target_top1: float
    t_ref_s: float
    n_gpu_ref: int


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
                          float(entry["target_top1"]), float(entry["t_ref_s"]), int(entry["n_gpu_ref"]))


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
    from .score import aggregate_times

    tracks = {}
    for track, runs in track_runs.items():
        times = [r["benchmark"]["time_to_target_s"] for r in runs if r["benchmark"]["reached"]]
        if len(times) != len(runs):
            raise ScoreError(f"--make-reference: every {track} run must have reached its target; "
                             f"{len(runs) - len(times)} of {len(runs)} did not.")
        first = runs[0]
        tracks[track] = {
            "config": first["run"]["config_file"],
            "model": first["config"]["MODEL"]["MODEL_NAME"],
            "target_top1": float(first["benchmark"]["target_top1"]),
            "t_ref_s": round(aggregate_times(times)[0], 2),
            "n_gpu_ref": int(first["world"]["num_devices"]),
        }
    return {"name": name, "hardware": hardware, "tracks": tracks}
