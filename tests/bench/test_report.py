"""Score and report from two tiny real training runs: files exist, PNGs are images, numbers match."""
import json

import pytest
import yaml

from vbench.bench.report import bottleneck_verdict
from vbench.bench.results import load_results
from vbench.cli import main as vbench_main
from vbench.cli.score import score_main
from vbench.cli.train import run_net_main

from scaffold import TINY_RUN

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg_file = root / "tiny.yaml"
    cfg_file.write_text(TINY_RUN.replace("{data}", str(root / "data")).replace("{cache}", str(root / "cache")))
    runs = []
    for seed in (1, 2):
        out = root / f"run{seed}"
        assert run_net_main(["--cfg", str(cfg_file), "OUTPUT_DIR", str(out), "RNG_SEED", str(seed),
                             "SOLVER.MAX_EPOCH", "2"]) in (0, None)
        runs.append(str(out))
    reference = root / "reference.yaml"
    reference.write_text(yaml.safe_dump({"name": "tiny", "tracks": {"cnn": {
        "config": str(cfg_file), "target_top1": 1.0, "t_ref_s": 100.0, "n_gpu_ref": 1}}}))
    return runs, str(reference)


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, f"{path} is not a PNG"


def test_score_report_from_two_real_runs(two_runs, tmp_path, capsys):
    runs, reference = two_runs
    report_dir = tmp_path / "report"
    assert score_main(["--cnn", *runs, "--reference", reference, "--report", str(report_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\nreport:")[0])
    times = [load_results(run)["benchmark"]["time_to_target_s"] for run in runs]
    cnn = summary["tracks"]["cnn"]
    assert cnn["t_bench_s"] == pytest.approx(sorted(times)[0] / 2 + sorted(times)[1] / 2)  # median of 2
    assert cnn["score"] == pytest.approx(100.0 / cnn["t_bench_s"])  # n_gpu 1 (CPU) on both sides
    assert summary["benchmark_score"] is None and summary["missing_tracks"] == ["transformer"]

    markdown = (report_dir / "report.md").read_text()
    for name in ("cnn_accuracy.png", "cnn_throughput.png"):
        assert_png(report_dir / name)
        assert f"]({name})" in markdown
    for run, t in zip(runs, times):
        results = load_results(run)
        assert f"time to target: {t:.1f} s" in markdown
        bench = results["benchmark"]  # the default warm-up ran, untimed, inside the set-up
        assert 0 < bench["warmup_s"] < bench["setup_s"]
        assert f"set-up (untimed): {bench['setup_s']:.1f} s, of which warm-up {bench['warmup_s']:.1f} s" in markdown
        first = results["epochs"][0]
        assert f"| 1 | {first['clock_s']:.1f} | {first['loss']:.4f} |" in markdown
    assert "bottleneck:" in markdown and "| run | GPUs | CPU |" in markdown


def test_single_run_report_command(two_runs, capsys):
    runs, _ = two_runs
    assert vbench_main(["report", runs[0]]) == 0
    assert "report:" in capsys.readouterr().out
    results = load_results(runs[0])
    markdown = open(f"{runs[0]}/report/report.md").read()
    assert_png(f"{runs[0]}/report/run_accuracy.png")
    assert_png(f"{runs[0]}/report/run_throughput.png")
    assert f"reached: {'yes' if results['benchmark']['reached'] else 'no'}" in markdown
    assert f"{results['benchmark']['time_to_target_s']:.1f} s" in markdown
    # a CPU run: GPU telemetry absent with the reason; the page cache measured when the clock started
    assert results["telemetry"] == {"available": False, "reason": "no GPU: the run is on the CPU (NUM_GPUS 0)"}
    assert [row["telemetry"] for row in results["epochs"]] == [None] * len(results["epochs"])
    assert "- GPU telemetry: none (no GPU: the run is on the CPU (NUM_GPUS 0))" in markdown
    cache = results["data_cache"]
    assert cache["dropped"] is False and (cache["files"], cache["nodes"]) == (10, 1)  # 6 train + 4 val videos
    assert cache["bytes"] > 0 and 0.0 <= cache["resident_share"] <= 1.0


def test_report_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert vbench_main(["report", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


def _rows(waits, loader_rates, trained):
    return {"epochs": [{"data_wait_fraction": waits[0], "data_wait_by_rank": waits,
                        "loader_clips_per_s_by_rank": loader_rates, "clips_per_s": trained}]}


def test_bottleneck_verdict_reads_the_worst_rank_and_the_loader_rate():
    assert bottleneck_verdict(_rows([0.1, 0.15], [50.0, 50.0], 80.0)).startswith("compute-bound")
    busy = bottleneck_verdict(_rows([0.1, 0.5], [30.0, 30.0], 55.0))  # rank 1 waited: all waited
    assert busy.startswith("input-bound") and "50.0%" in busy and "busy nearly all the time (60.0" in busy
    idle = bottleneck_verdict(_rows([0.6], [200.0], 48.0))
    assert "could deliver 200.0 clips/s" in idle and "not their speed" in idle
    old = bottleneck_verdict({"epochs": [{"data_wait_fraction": 0.6, "clips_per_s": 48.0}]})
    assert old.startswith("input-bound: the training loop waited for data 60.0%") and "Try more" in old
