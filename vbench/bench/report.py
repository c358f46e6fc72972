"""Markdown + PNG reports: for a scored benchmark (`vbench score --report DIR`) or one run
(`vbench report RUN_DIR [--out DIR]`)."""
import math
import os
import statistics

from .plots import plot_accuracy_vs_time, plot_telemetry, plot_throughput
from .results import load_results
from .score import benchmark_score, format_track
from .telemetry import throttle_warnings
from .world import describe_world, mixed_hardware

INPUT_BOUND_SHARE = 0.20  # data-wait share above which a run is called input-bound
LOADER_BUSY_RATIO = 1.25  # loader rate (while working) under this x the trained rate: workers are the limit


INPUT_ADVICE = ("more loader workers (DATA_LOADER.NUM_WORKERS), GPU transforms (DATA.GPU_TRANSFORMS "
                "True), the torchcodec backend (DATA.DECODING_BACKEND torchcodec), or pre-resized "
                "videos (tools/prepare_kinetics.py --short-side 256)")


def _loader_rate(row):
    """The run's loader clips/s while working (all ranks), or None when a rank has no figure."""
    rates = row.get("loader_clips_per_s_by_rank")
    return sum(rates) if rates and None not in rates else None


def bottleneck_verdict(results):
    """'input-bound' or 'compute-bound' from the data-wait share of the rank that waited most
    (in DDP every rank waits for the slowest), and where an input-bound run loses its time: the
    loader workers' own rate while working against the rate the run trained at."""
    rows = [r for r in results.get("epochs") or [] if r.get("data_wait_fraction") is not None]
    if not rows:
        return "unknown: no epoch rows with a data-wait share"
    share = statistics.mean(max(r.get("data_wait_by_rank") or [r["data_wait_fraction"]]) for r in rows)
    where = f"(mean over {len(rows)} epochs, the rank that waited most)"
    if share <= INPUT_BOUND_SHARE:
        return (f"compute-bound: data wait is {100 * share:.1f}% of training time {where}, <= "
                f"{100 * INPUT_BOUND_SHARE:.0f}%; speed comes from the model step (precision, "
                f"channels_last, compile, more GPUs).")
    verdict = f"input-bound: the training loop waited for data {100 * share:.1f}% of the time {where}. "
    paired = [(_loader_rate(r), r.get("clips_per_s")) for r in rows]
    paired = [(loader, trained) for loader, trained in paired if loader is not None and trained]
    if not paired:
        return verdict + f"Try {INPUT_ADVICE}."
    loader, trained = (statistics.mean(values) for values in zip(*paired))
    if loader < LOADER_BUSY_RATIO * trained:
        return verdict + (f"The loader workers were busy nearly all the time ({loader:.1f} clips/s "
                          f"while working, {trained:.1f} trained): try {INPUT_ADVICE}.")
    return verdict + (
        f"The loader workers could deliver {loader:.1f} clips/s, the run trained at {trained:.1f}: "
        f"the wait comes from when they work, not their speed: the start of each epoch (shuffle "
        f"buffers filling), workers that finish unevenly, or the training process's own CPU work "
        f"(re-batching, pinned copies).")


def _cell(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "not reached" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def hardware_table(runs):
    """Markdown table of hardware and software per (label, results)."""
    lines = ["| run | GPUs | CPU | RAM (GiB) | torch | torchvision | PyAV | precision | vbench |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, results in runs:
        hw, sw, world = results.get("hardware") or {}, results.get("software") or {}, results["world"]
        gpu = hw.get("gpu") or {}
        gpus = f"{gpu.get('count')} x {gpu.get('model')}" if gpu else "none (CPU)"
        cpu = hw.get("cpu") or {}
        lines.append(f"| {label} | {gpus} | {cpu.get('model')} ({cpu.get('logical_cores')} threads) | "
                     f"{_cell(hw.get('ram_gib'), 1)} | {sw.get('torch')} | {sw.get('torchvision')} | "
                     f"{sw.get('av')} | {world.get('precision')} | {results.get('vbench_version')} |")
    return lines


def epoch_table(results):
    lines = ["| epoch | clock (s) | loss | lr | clips/s | data wait | clip top-1 | video top-1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results.get("epochs") or []:
        wait = r.get("data_wait_fraction")
        lines.append(f"| {r['epoch']} | {_cell(r.get('clock_s'), 1)} | {_cell(r.get('loss'), 4)} | "
                     f"{_cell(r.get('lr'), 6)} | {_cell(r.get('clips_per_s'), 1)} | "
                     f"{'-' if wait is None else f'{100 * wait:.1f}%'} | {_cell(r.get('clip_top1'))} | "
                     f"{_cell(r.get('video_top1'))} |")
    return lines


def dataset_line(results):
    """One line on the clips the run used per split (results.json "dataset")."""
    dataset = results.get("dataset")
    if not dataset:
        return "- data: no dataset fingerprint recorded (a run of an older vbench)"
    parts = [f"{split}: {f['videos_readable']} of {f['videos_listed']} listed clips used "
             f"({len(f['excluded'])} missing or unreadable), {f['classes']} classes, sha256 {f['sha256'][:12]}..."
             for split, f in dataset.items()]
    return "- data: " + "; ".join(parts)


def devices_line(world):
    mixed = mixed_hardware(world)
    return (f"- devices: {describe_world(world)} (n_gpu {world['num_devices']})"
            + (f"; MIXED HARDWARE: {mixed}" if mixed else ""))


def _value(value, unit, digits=0):
    return "-" if value is None else f"{value:.{digits}f} {unit}"


def telemetry_lines(results):
    """The run's GPU telemetry: energy, power, SM clock, temperature, and a warning per GPU that
    was throttled (results.json "telemetry")."""
    telemetry = results.get("telemetry")
    if telemetry is None:
        return ["- GPU telemetry: not recorded (a run of an older vbench)"]
    if not telemetry["available"]:
        return [f"- GPU telemetry: none ({telemetry['reason']})"]
    gpus = telemetry["gpus"]
    lines = [f"- GPU telemetry ({telemetry['scope']}, {telemetry['seconds']:.0f} s): energy "
             f"{telemetry['energy_kj']:.1f} kJ over {len(gpus)} GPU(s)"]
    lines += [f"  - {g['gpu']} ({g['name']}): {g['energy_kj']:.1f} kJ, power {_value(g['mean_power_w'], 'W')} mean, "
              f"{_value(g['max_power_w'], 'W')} max; SM clock {_value(g['median_sm_clock_mhz'], 'MHz')} median; "
              f"{_value(g['max_temp_c'], 'C')} max" for g in gpus]
    lines += [f"- **warning: {warning}**" for warning in throttle_warnings(telemetry)]
    lines += [f"- note: {note}" for note in telemetry.get("notes", [])]
    return lines


def run_section(label, results):
    bench = results["benchmark"]
    reached = "yes" if bench.get("reached") else "no"
    lines = [f"### {label}", "",
             f"- target: {bench.get('metric')} top-1 >= {bench.get('target_top1')}; reached: {reached}",
             f"- time to target: {_cell(bench.get('time_to_target_s'), 1)} s "
             f"(epochs: {_cell(bench.get('epochs_to_target'))}); set-up (untimed): "
             f"{_cell(bench.get('setup_s'), 1)} s, of which warm-up {_cell(bench.get('warmup_s'), 1)} s",
             devices_line(results["world"]),
             dataset_line(results),
             *telemetry_lines(results),
             f"- bottleneck: {bottleneck_verdict(results)}", ""]
    return lines + epoch_table(results) + [""]


def _plots(out_dir, name, runs, metric, target, t_ref_s):
    acc = plot_accuracy_vs_time(runs, os.path.join(out_dir, f"{name}_accuracy.png"), metric, target, t_ref_s,
                                title=f"{name}: {metric} top-1 against time")
    thr = plot_throughput(runs, os.path.join(out_dir, f"{name}_throughput.png"), title=f"{name}: throughput")
    lines = [f"![{name} accuracy]({os.path.basename(acc)})", "", f"![{name} throughput]({os.path.basename(thr)})", ""]
    gpu = plot_telemetry(runs, os.path.join(out_dir, f"{name}_gpu.png"), title=f"{name}: GPU power and SM clock")
    return lines + ([f"![{name} GPU power and SM clock]({os.path.basename(gpu)})", ""] if gpu else [])


def write_report(out_dir, track_scores, reference):
    """Report for scored tracks (`vbench score --report`); returns the Markdown path."""
    os.makedirs(out_dir, exist_ok=True)
    total = benchmark_score(track_scores)
    lines = ["# vbench report", "", f"Reference: {reference.name} (`{reference.path}`)", "",
             f"**benchmark_score: {'not computed (a track is missing)' if total is None else f'{total:.3f}'}**", ""]
    for track, ts in track_scores.items():
        runs = [(os.path.basename(os.path.normpath(r.path)) or r.path, r.results) for r in ts.runs]
        metric = ts.runs[0].results["benchmark"].get("metric", "clip")
        lines += [f"## {track} track", "", "```", *format_track(ts), "```", ""]
        lines += _plots(out_dir, track, runs, metric, ts.reference.target_top1, ts.reference.t_ref_s)
        lines += ["Hardware and software:", ""] + hardware_table(runs) + [""]
        for label, results in runs:
            lines += run_section(label, results)
    return _write(out_dir, lines)


def write_run_report(run_path, out_dir=None):
    """Report for one run folder (`vbench report RUN_DIR`); returns the Markdown path."""
    results = load_results(run_path)
    run_dir = run_path if os.path.isdir(run_path) else os.path.dirname(run_path)
    out_dir = out_dir or os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    label = os.path.basename(os.path.normpath(run_dir)) or "run"
    bench = results["benchmark"]
    lines = [f"# vbench run report: {label}", ""]
    lines += _plots(out_dir, "run", [(label, results)], bench.get("metric", "clip"), bench.get("target_top1"), None)
    lines += ["Hardware and software:", ""] + hardware_table([(label, results)]) + [""]
    lines += run_section(label, results)
    return _write(out_dir, lines)


def _write(out_dir, lines):
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
