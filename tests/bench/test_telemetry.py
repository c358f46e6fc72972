"""GPU telemetry on recorded samples: energy (counter and power integral, over attempts), mean and
max power, median SM clock, seconds throttled by reason, intervals that add up, the epoch fields,
the results block, the texts of score and report; the sampler's intervals; NVML absent."""
import threading
import time

import pytest

from vbench.bench import telemetry
from vbench.bench.results import load_results
from vbench.bench.results_schema import TELEMETRY_SPEC, check_spec
from vbench.bench.telemetry import (
    TelemetrySampler,
    absent_block,
    energy_text,
    epoch_fields,
    gpu_result,
    histogram_median,
    merge,
    open_reader,
    series_points,
    summarize,
    telemetry_block,
    throttle_warnings,
)
from vbench.cli.score import score_main
from vbench.engine.gpu_telemetry import TelemetryHook
from vbench.engine.preemption import Preempted
from vbench.engine.train_loop import HookBase

from scaffold import X3D, SignalAt, fake_cfg, fake_results, fake_trainer, save

POWER_CAP, HW_THERMAL, IDLE = 0x4, 0x40, 0x1


def sample(t, gpu="node:0", attempt=1, power=200.0, sm=1500, temp=60, util=90, mem=10.0, reasons=0, energy=None):
    return {"t": float(t), "attempt": attempt, "gpu": gpu, "power_w": power, "sm_mhz": sm, "mem_mhz": 2600,
            "temp_c": temp, "util_pct": util, "mem_used_gib": mem, "reasons": reasons, "energy_j": energy}


def ten_seconds():
    """GPU node:0 at 200 W for 10 s (counter 5000 J + 200 J/s); SM clock 1400 (1 s), 1500 (6 s), 1980
    (3 s); power cap from 3 s to 6 s, with a thermal slowdown in the last of them; idle in the last."""
    clocks = [None, 1400, 1500, 1500, 1500, 1500, 1500, 1500, 1980, 1980, 1980]
    reasons = [0, 0, 0, POWER_CAP, POWER_CAP, POWER_CAP | HW_THERMAL, 0, 0, 0, 0, IDLE]
    return [sample(t, power=200.0 + (50.0 if t == 7 else 0.0), sm=clocks[t], temp=55 + t, reasons=reasons[t],
                   energy=5000.0 + 200.0 * t) for t in range(11)]


def test_one_interval_gives_energy_power_clock_temperature_and_throttle_seconds():
    (gpu, stats), = summarize(ten_seconds()).items()
    result = gpu_result(stats)
    assert gpu == "node:0" and result["energy_kj"] == pytest.approx(2.0) and result["energy_source"] == "counter"
    assert result["seconds"] == 10.0 and result["samples"] == 10  # the opening sample marks time only
    assert result["mean_power_w"] == pytest.approx(205.0) and result["max_power_w"] == 250.0
    assert result["median_sm_clock_mhz"] == 1500 and result["max_temp_c"] == 65
    assert result["throttled_s"] == {"sw_power_cap": 3.0, "hw_thermal": 1.0, "gpu_idle": 1.0}
    assert result["slowdown_s"] == 3.0  # the thermal second overlaps the power cap; idle is no slowdown
    assert result["mean_util_pct"] == 90 and result["max_memory_used_gib"] == 10.0


def test_without_a_counter_energy_is_the_power_integral_and_attempts_add_up_without_the_gap():
    first = [sample(t, power=300.0) for t in range(5)]  # 4 s at 300 W
    second = [sample(t, attempt=2, power=100.0 + 100.0 * (t - 10)) for t in (10, 11, 12)]  # 100 -> 300 W
    stats = summarize(first + second)["node:0"]
    assert stats["energy_source"] == "power integral"
    assert stats["energy_j"] == pytest.approx(4 * 300.0 + (150.0 + 250.0))
    assert stats["seconds"] == 6.0  # 4 s + 2 s: the time between the attempts has no samples
    counted = [sample(0, energy=100.0), sample(4, energy=900.0),  # the second attempt's counter restarted
               sample(9, attempt=2, energy=10.0), sample(10, attempt=2, energy=310.0)]
    stats = summarize(counted)["node:0"]
    assert stats["energy_source"] == "counter" and stats["energy_j"] == pytest.approx(800.0 + 300.0)


def test_intervals_that_share_their_boundary_sample_add_up_to_the_whole():
    samples = ten_seconds()
    whole = summarize(samples)["node:0"]
    parts = merge(summarize(samples[:4]), summarize(samples[3:8]), summarize(samples[7:]))["node:0"]
    assert parts == whole


def test_histogram_median():
    assert histogram_median({}) is None
    assert histogram_median({1500: 3}) == 1500
    assert histogram_median({1400: 1, 1980: 1}) == 1690
    assert histogram_median({1980: 2, 1400: 1, 1500: 1}) == 1740  # sorted: 1400 1500 1980 1980


def test_epoch_fields_and_the_results_block_over_two_gpus():
    other = [dict(s, gpu="node:1", power_w=100.0, sm_mhz=1200, reasons=0, temp_c=80,
                  energy_j=s["energy_j"] / 2) for s in ten_seconds()]
    per_gpu = summarize(ten_seconds() + other)
    fields = epoch_fields(per_gpu)
    assert fields["energy_kj"] == pytest.approx(2.0 + 1.0) and fields["power_w"] == pytest.approx((205 + 100) / 2)
    assert fields["temp_c"] == 80 and fields["slowdown_s"] == 3.0
    assert fields["sm_clock_mhz"] == 1300  # ten clocks of 1200, then node:0's 1400: the middle pair
    assert epoch_fields({}) is None
    series = series_points(ten_seconds() + other, max_points=5)
    assert series["node:0"]["clock_s"] == [0.5, 2.5, 4.5, 6.5, 9.0]  # buckets of 2 s; the last holds 8, 9, 10
    assert len(series["node:1"]["power_w"]) == 5
    block = telemetry_block(per_gpu, {"node:0": "H100", "node:1": "H100"}, series, True, "580.1", 1.0)
    problems = []
    check_spec(block, TELEMETRY_SPEC, "telemetry", problems)
    assert problems == [] and block["throttled"] and block["energy_kj"] == pytest.approx(3.0)
    assert block["scope"] == "to target" and [g["gpu"] for g in block["gpus"]] == ["node:0", "node:1"]
    assert throttle_warnings(block) == [
        "GPU node:0 (H100) was throttled 3 s of 10 s to target (30.0%): hw_thermal 1 s, sw_power_cap 3 s"]
    assert energy_text({"telemetry": block}) == "energy 3.0 kJ (to target)"
    assert energy_text({"telemetry": absent_block("no GPU")}) == "energy n/a (no GPU)"
    assert energy_text({}) == ""


class ScriptedReader:
    """Stands in for NVML: one GPU whose counter grows 1 J per read."""

    def __init__(self):
        self.reads, self.lock = 0, threading.Lock()

    def read(self, t, attempt):
        with self.lock:
            self.reads += 1
            return [sample(t, attempt=attempt, energy=float(self.reads))]


def test_the_sampler_cuts_intervals_that_open_with_the_previous_closing_sample():
    sampler = TelemetrySampler(ScriptedReader(), interval_s=0.005)
    assert sampler.cut() == []  # not started
    sampler.start(offset_s=100.0, attempt=3)
    while sampler.reader.reads < 5:
        pass
    first = sampler.cut()
    second = sampler.cut()
    sampler.stop()
    times = [s["t"] for s in first]
    assert len(first) >= 6 and times == sorted(times) and times[0] >= 100.0
    assert second[0] == first[-1] and {s["attempt"] for s in first} == {3}
    energy = summarize(first)["node:0"]["energy_j"] + summarize(second)["node:0"]["energy_j"]
    assert energy == second[-1]["energy_j"] - first[0]["energy_j"]  # nothing lost or counted twice


def test_without_nvml_the_reader_says_why(monkeypatch):
    reader, reason = open_reader([(0, None)], "node")
    assert reader is None
    if telemetry.pynvml is not None:  # installed, but this machine has no NVIDIA driver
        assert reason.startswith("NVML could not start (") and "no NVIDIA driver here?" in reason
    monkeypatch.setattr(telemetry, "pynvml", None)
    assert open_reader([(0, None)], "node") == (None, 'nvidia-ml-py is not installed (pip install "vbench[gpu]")')


def test_score_prints_energy_beside_the_time_and_the_report_plots_and_warns(tmp_path, capsys):
    per_gpu = summarize(ten_seconds())
    results = fake_results(X3D, "cnn", 1000.0)
    results["telemetry"] = telemetry_block(per_gpu, {"node:0": "NVIDIA H100"}, series_points(ten_seconds()),
                                           True, "580.1", 1.0)
    for row in results["epochs"]:
        row["telemetry"] = epoch_fields(per_gpu)
    cpu = fake_results(X3D, "cnn", 1100.0)
    cpu["telemetry"] = absent_block("no GPU: the run is on the CPU (NUM_GPUS 0)")
    runs = [save(tmp_path, "gpu", results), save(tmp_path, "cpu", cpu)]
    assert score_main(["--cnn", *runs, "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert f"{runs[0]}: t_bench 1000.0 s, energy 2.0 kJ (to target), n_gpu 4" in out
    assert f"{runs[1]}: t_bench 1100.0 s, energy n/a (no GPU: the run is on the CPU (NUM_GPUS 0)), n_gpu 4" in out
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "](cnn_gpu.png)" in markdown and (tmp_path / "report" / "cnn_gpu.png").read_bytes()[:4] == b"\x89PNG"
    assert "- GPU telemetry (to target, 10 s): energy 2.0 kJ over 1 GPU(s)" in markdown
    assert ("  - node:0 (NVIDIA H100): 2.0 kJ, power 205 W mean, 250 W max; SM clock 1500 MHz median; "
            "65 C max") in markdown
    assert ("- **warning: GPU node:0 (NVIDIA H100) was throttled 3 s of 10 s to target (30.0%): hw_thermal 1 s, "
            "sw_power_cap 3 s**") in markdown
    assert "- GPU telemetry: none (no GPU: the run is on the CPU (NUM_GPUS 0))" in markdown


class MeteredGpu:
    """Stands in for NVML on a machine without a GPU: one GPU at 100 W whose energy counter reads
    100 J per second of the benchmark clock (5000 J at its start), SM clock 1500 MHz."""

    names, driver = {"fake:0": "Fake GPU"}, "0.0"

    def read(self, t, attempt):
        return [sample(t, gpu="fake:0", attempt=attempt, power=100.0, sm=1500, energy=5000.0 + 100.0 * t)]

    def close(self):
        pass


def metered_trainer(cfg):
    class SlowSteps(HookBase):  # steps that take time, so that losing some would show
        def after_step(self):
            time.sleep(0.25)

    trainer = fake_trainer(cfg)
    hook = next(h for h in trainer.hooks if isinstance(h, TelemetryHook))
    hook.reader, hook.interval_s = MeteredGpu(), 0.01
    trainer.register_hooks([SlowSteps()])
    return trainer


def assert_energy_to_target(results):
    block, bench = results["telemetry"], results["benchmark"]
    (gpu,) = block["gpus"]
    assert block["available"] and block["scope"] == "to target" and gpu["gpu"] == "fake:0"
    assert gpu["energy_source"] == "counter" and gpu["energy_kj"] == pytest.approx(0.1 * gpu["seconds"])
    assert gpu["seconds"] == pytest.approx(bench["time_to_target_s"], abs=0.2)  # from the clock's start to its stop
    assert gpu["mean_power_w"] == 100.0 and gpu["median_sm_clock_mhz"] == 1500 and gpu["slowdown_s"] == 0.0
    rows = results["epochs"]
    to_target = sum(row["telemetry"]["energy_kj"] for row in rows[:bench["epochs_to_target"]])
    assert to_target == pytest.approx(block["energy_kj"]) and rows[-1]["telemetry"]["energy_kj"] > 0
    return gpu


def test_the_hook_reports_energy_to_target_and_per_epoch_and_keeps_it_over_a_preemption(tmp_path):
    opts = ("SOLVER.MAX_EPOCH", "3", "TRAIN.EVAL_PERIOD", "2", "BENCHMARK.STOP_AT_TARGET", "False")
    cfg = fake_cfg(tmp_path / "straight", *opts)
    metered_trainer(cfg).train()
    straight = assert_energy_to_target(load_results(cfg.OUTPUT_DIR))
    assert straight["samples"] > 5

    cfg = fake_cfg(tmp_path / "preempted", *opts)
    trainer = metered_trainer(cfg)
    trainer.register_hooks([SignalAt(epoch=1, step=1)])
    with pytest.raises(Preempted):
        trainer.train()
    metered_trainer(cfg).train()  # resumes inside epoch 2
    results = load_results(cfg.OUTPUT_DIR)
    assert results["benchmark"]["resumes"] == 1
    assert_energy_to_target(results)  # both attempts, without the time between them
