"""The benchmark score: `t_ref / t_bench * (n_gpu_ref / n_gpu_bench)` per track, averaged over tracks.

    vbench score --cnn RUN [RUN ...] --transformer RUN [RUN ...] [--reference FILE] [--report DIR]
    vbench score --make-reference --cnn RUN ... --transformer RUN ... --out FILE [--name NAME]

A RUN is a run folder or its results.json. Several runs per track are aggregated as MLPerf does:
one run is taken as is, 2-4 runs by their median time, 5 or more by the mean after dropping the
fastest and the slowest. A run that never reached its target counts as an infinite time.
A run is compliant when its config differs from the track's benchmark config only in resource keys
(`compliance.py`), its data matches the reference table's fingerprints (`dataset_check.py`) and
their encoding (`encoding_check.py`), and the runs of its track used distinct seeds; a run that
converged faster than the reference's runs allow is marked suspect (`run_set.py`).
"""
import math
import statistics
from dataclasses import dataclass, field

from vbench.errors import ScoreError

from .compliance import compare_with_recipe, recipe_config, setup_differences
from .dataset_check import check_dataset
from .encoding_check import check_encoding
from .reference import TRACKS, resolve_config_path
from .results import load_results
from .run_set import aggregate_times, convergence_problem, seed_problems
from .score_format import encoding_lines, run_encodings
from .telemetry import energy_text
from .world import describe_world, mixed_hardware


@dataclass
class RunScore:
    path: str
    results: dict
    reached: bool
    t_bench_s: float  # math.inf when the target was not reached
    n_gpu_bench: int
    score: float
    reason: str = ""
    world: str = ""  # the devices, nodes and processes that trained (`describe_world`)
    mixed_hardware: str = ""  # non-empty when the ranks ran on different hardware (flagged)
    differences: list = field(default_factory=list)
    data_problems: list = field(default_factory=list)  # the data differs from the reference's
    data_notes: list = field(default_factory=list)  # e.g. training clips it lacked (still compliant)
    suspect: str = ""  # why its convergence is suspect (`run_set.convergence_problem`); "" when it is not

    @property
    def compliant(self):
        return not self.differences and not self.data_problems


@dataclass
class TrackScore:
    track: str
    reference: object  # TrackReference
    runs: list
    t_bench_s: float
    aggregation: str
    median_t_s: float
    cv: float  # coefficient of variation of t_bench over reached runs; nan below 2 runs
    score: float
    seed_problems: list = field(default_factory=list)  # runs that shared a seed (`run_set.seed_problems`)

    @property
    def compliant(self):
        return all(run.compliant for run in self.runs) and not self.seed_problems

    @property
    def suspect(self):
        return any(run.suspect for run in self.runs)


def track_score_value(t_ref_s, n_gpu_ref, t_bench_s, n_gpu_bench):
    """The formula exactly: t_ref / t_bench * (n_gpu_ref / n_gpu_bench); 0 for a missed target."""
    if not math.isfinite(t_bench_s):
        return 0.0
    return t_ref_s / t_bench_s * (n_gpu_ref / n_gpu_bench)


def coefficient_of_variation(times):
    finite = [t for t in times if math.isfinite(t)]
    if len(finite) < 2:
        return math.nan
    return statistics.stdev(finite) / statistics.mean(finite)


def score_run(path, results, track_ref, recipe):
    """One run against its track's reference: time, GPUs, score, compliance differences.

    n_gpu_bench is the run's recorded world.num_devices: the distinct GPUs its ranks trained on,
    gathered from the process group (1 for a CPU run), never the config's NUM_GPUS."""
    bench, world = results["benchmark"], results["world"]
    n_gpu = int(world["num_devices"])
    reached = bool(bench["reached"]) and bench["time_to_target_s"] is not None
    t_bench = float(bench["time_to_target_s"]) if reached else math.inf
    reason = "" if reached else (
        f"never reached top-1 {bench['target_top1']} (status {results['run'].get('status')})")
    differences = compare_with_recipe(results["config"], recipe)
    if reached and float(bench["target_top1"]) < track_ref.target_top1:
        reason = f"its target {bench['target_top1']} is below the reference target {track_ref.target_top1}"
    score = track_score_value(track_ref.t_ref_s, track_ref.n_gpu_ref, t_bench, n_gpu)
    data_problems, data_notes = check_dataset(results, track_ref.dataset, recipe)
    data_problems += check_encoding(results, track_ref.dataset)
    return RunScore(path, results, reached, t_bench, n_gpu, score, reason, describe_world(world),
                    mixed_hardware(world), differences, data_problems, data_notes,
                    convergence_problem(path, results, track_ref.epochs_to_target))


def check_same_setup(track, runs):
    """Runs of one track must share hardware and config; refuse them together otherwise."""
    first = runs[0]
    for other in runs[1:]:
        if _hardware_key(first.results) != _hardware_key(other.results):
            raise ScoreError(
                f"{track} runs were made on different hardware and cannot be aggregated: "
                f"'{first.path}' ran on {_hardware_key(first.results)}, "
                f"'{other.path}' on {_hardware_key(other.results)}. Score them separately.")
        differences = setup_differences(first.results["config"], other.results["config"])
        if differences:
            listed = "; ".join(str(d) for d in differences[:5])
            raise ScoreError(
                f"{track} runs use different configs and cannot be aggregated: '{first.path}' vs "
                f"'{other.path}' differ in {listed}. Score them separately.")


def _hardware_key(results):
    hw = results.get("hardware") or {}
    gpu = hw.get("gpu") or {}
    cpu = hw.get("cpu") or {}
    return (gpu.get("model"), results["world"]["num_devices"], cpu.get("model"))


def score_track(track, paths, reference):
    """Load, check and score every run of one track."""
    track_ref = reference.tracks.get(track)
    if track_ref is None:
        raise ScoreError(f"the reference file '{reference.path}' has no '{track}' track.")
    recipe = recipe_config(resolve_config_path(track_ref.config))
    runs = [score_run(path, load_results(path), track_ref, recipe) for path in paths]
    for run in runs:
        run_track = run.results["benchmark"].get("track")
        if run_track and run_track != track:
            raise ScoreError(f"'{run.path}' is a {run_track} run; it was given as a {track} run.")
    check_same_setup(track, runs)
    times = [run.t_bench_s for run in runs]
    t_agg, method = aggregate_times(times)
    value = track_score_value(track_ref.t_ref_s, track_ref.n_gpu_ref, t_agg, runs[0].n_gpu_bench)
    return TrackScore(track, track_ref, runs, t_agg, method, statistics.median(times),
                      coefficient_of_variation(times), value,
                      seed_problems([(run.path, run.results) for run in runs]))


def benchmark_score(track_scores):
    """Mean of the two track scores, or None when a track is missing."""
    if any(track not in track_scores for track in TRACKS):
        return None
    return sum(track_scores[t].score for t in TRACKS) / len(TRACKS)


def _fmt_time(seconds):
    return "not reached" if not math.isfinite(seconds) else f"{seconds:.1f} s"


def format_track(ts):
    """Human-readable lines for one track: per-run rows, aggregation and the track score."""
    ref = ts.reference
    lines = [f"{ts.track} track ({ref.model or ref.config}): target top-1 {ref.target_top1}, "
             f"t_ref {ref.t_ref_s:.2f} s, n_gpu_ref {ref.n_gpu_ref}"]
    for run in ts.runs:
        mark = ("" if run.compliant else "  [NON-COMPLIANT]") + ("  [SUSPECT]" if run.suspect else "")
        energy = energy_text(run.results)
        lines.append(f"  {run.path}: t_bench {_fmt_time(run.t_bench_s)}{f', {energy}' if energy else ''}, "
                     f"n_gpu {run.n_gpu_bench}, score {run.score:.3f}{mark}")
        lines.append(f"      world: {run.world}")
        if run.mixed_hardware:
            lines.append(f"      MIXED HARDWARE: {run.mixed_hardware}; n_gpu counts every GPU alike, so "
                         f"this score does not describe one kind of GPU")
        if run.reason:
            lines.append(f"      {run.reason}")
        for difference in run.differences:
            lines.append(f"      differs from the benchmark config: {difference}")
        lines += [f"      data differs from the reference: {problem}" for problem in run.data_problems]
        lines += [f"      data: {note}" for note in run.data_notes]
        lines += [f"      SUSPECT: {run.suspect}"] if run.suspect else []
    lines += [f"  run set: {problem}" for problem in ts.seed_problems]
    lines += encoding_lines(ts)
    cv = "n/a" if math.isnan(ts.cv) else f"{100 * ts.cv:.1f}%"
    lines.append(f"  t_bench = {_fmt_time(ts.t_bench_s)} ({ts.aggregation}; median "
                 f"{_fmt_time(ts.median_t_s)}; CV {cv})")
    status = "" if ts.compliant else " (NON-COMPLIANT: see the differences above)"
    status += " (SUSPECT: see the convergence above)" if ts.suspect else ""
    lines.append(f"  {ts.track}_score = {ts.score:.3f}{status}")
    return lines


def summary_dict(track_scores, reference):
    """Everything printed, as JSON-ready data."""
    total = benchmark_score(track_scores)
    tracks = {}
    for track, ts in track_scores.items():
        tracks[track] = {
            "score": ts.score, "t_bench_s": None if math.isinf(ts.t_bench_s) else ts.t_bench_s,
            "aggregation": ts.aggregation, "cv": None if math.isnan(ts.cv) else ts.cv,
            "compliant": ts.compliant, "t_ref_s": ts.reference.t_ref_s,
            "n_gpu_ref": ts.reference.n_gpu_ref,
            "runs": [{"path": r.path, "reached": r.reached, "n_gpu_bench": r.n_gpu_bench,
                      "world": r.world, "mixed_hardware": bool(r.mixed_hardware),
                      "mixed_hardware_note": r.mixed_hardware,
                      "t_bench_s": None if math.isinf(r.t_bench_s) else r.t_bench_s,
                      "score": r.score, "reason": r.reason,
                      "energy_kj": (r.results.get("telemetry") or {}).get("energy_kj"),
                      "differences": [[d.key, d.recipe, d.run] for d in r.differences],
                      "data_problems": r.data_problems, "data_notes": r.data_notes, "suspect": r.suspect,
                      "seed": r.results["config"].get("RNG_SEED"),
                      "encoding": run_encodings(r.results)}
                     for r in ts.runs],
            "seed_problems": ts.seed_problems, "suspect": ts.suspect,
        }
    return {"reference": reference.path, "benchmark_score": total, "tracks": tracks,
            "missing_tracks": [t for t in TRACKS if t not in track_scores]}
