"""Score: the formula, multi-run aggregation, compliance, refusals and bad results files."""
import math
import os

import pytest
import yaml

from vbench.bench.reference import DEFAULT_REFERENCE, ScoreError, load_reference, resolve_config_path
from vbench.bench.run_set import aggregate_times
from vbench.bench.score import benchmark_score, score_track, track_score_value
from vbench.cli.score import score_main as main
from vbench.config import load_config

from scaffold import MVIT, X3D, fake_results, save


@pytest.fixture
def reference():
    return load_reference()


def test_formula_by_hand():
    assert track_score_value(3657.96, 4, 1828.98, 4) == pytest.approx(2.0)
    # the same time on half the GPUs is worth twice as much
    assert track_score_value(3657.96, 4, 1828.98, 2) == pytest.approx(4.0)
    assert track_score_value(6682.53, 4, 6682.53, 8) == pytest.approx(0.5)
    assert track_score_value(100.0, 4, math.inf, 4) == 0.0


def test_single_run_per_track_and_benchmark_score(tmp_path, reference):
    cnn = save(tmp_path, "cnn", fake_results(X3D, "cnn", 3657.96 / 2, num_devices=4))
    tr = save(tmp_path, "tr", fake_results(MVIT, "transformer", 6682.53, num_devices=2))
    scores = {"cnn": score_track("cnn", [cnn], reference),
              "transformer": score_track("transformer", [tr], reference)}
    assert scores["cnn"].score == pytest.approx(2.0)
    assert scores["transformer"].score == pytest.approx(2.0)  # same time on 2 instead of 4 GPUs
    assert benchmark_score(scores) == pytest.approx(2.0)
    assert scores["cnn"].compliant and scores["transformer"].compliant


def test_missed_target_scores_zero_with_reason(tmp_path, reference):
    run = save(tmp_path, "cnn", fake_results(X3D, "cnn", 100.0, reached=False))
    ts = score_track("cnn", [run], reference)
    assert ts.score == 0.0 and ts.runs[0].score == 0.0
    assert "never reached" in ts.runs[0].reason


def test_missing_track_gives_no_benchmark_score(tmp_path, reference, capsys):
    cnn = save(tmp_path, "cnn", fake_results(X3D, "cnn", 1000.0))
    assert benchmark_score({"cnn": score_track("cnn", [cnn], reference)}) is None
    assert main(["--cnn", cnn]) == 0
    out = capsys.readouterr().out
    assert "missing track(s) transformer" in out and "benchmark_score =" not in out


def test_aggregation_one_three_six_runs():
    assert aggregate_times([10.0]) == (10.0, "single run")
    assert aggregate_times([30.0, 10.0, 20.0])[0] == 20.0
    six = [10.0, 100.0, 20.0, 30.0, 40.0, 1.0]
    value, method = aggregate_times(six)
    assert value == pytest.approx((10 + 20 + 30 + 40) / 4) and "dropped" in method
    # one missed run among five is dropped as the slowest; two are not
    assert math.isfinite(aggregate_times([1.0, 2.0, 3.0, 4.0, math.inf])[0])
    assert math.isinf(aggregate_times([1.0, 2.0, 3.0, math.inf, math.inf])[0])


def test_track_with_six_runs(tmp_path, reference):
    times = [900.0, 1000.0, 1100.0, 1200.0, 1300.0, 5000.0]
    runs = [save(tmp_path, f"r{i}", fake_results(X3D, "cnn", t, RNG_SEED=i)) for i, t in enumerate(times)]
    ts = score_track("cnn", runs, reference)
    assert ts.t_bench_s == pytest.approx(1150.0)
    assert ts.median_t_s == pytest.approx(1150.0)
    assert ts.score == pytest.approx(3657.96 / 1150.0)
    assert ts.cv > 0


@pytest.mark.parametrize("key,value,allowed", [
    ("DATA_LOADER.NUM_WORKERS", 32, True),
    ("TRAIN.PRECISION", "bf16", True),
    ("MODEL.COMPILE", True, True),
    ("DATA.DECODING_BACKEND", "torchcodec", True),
    ("SOLVER.BASE_LR", 0.02, False),
    ("TRAIN.BATCH_SIZE", 128, False),
    ("DATA.NUM_FRAMES", 8, False),
    ("BENCHMARK.TARGET_TOP1", 5.0, False),
])
def test_compliance_per_kind_of_key(tmp_path, reference, key, value, allowed):
    run = save(tmp_path, "cnn", fake_results(X3D, "cnn", 1000.0, **{key: value}))
    ts = score_track("cnn", [run], reference)
    assert ts.compliant is allowed
    if not allowed:
        (difference,) = ts.runs[0].differences
        assert difference.key == key and difference.run == (tuple(value) if isinstance(value, list) else value)
    assert ts.score == pytest.approx(3657.96 / 1000.0)  # still printed, marked


def test_runs_on_different_hardware_or_configs_are_refused(tmp_path, reference):
    a = save(tmp_path, "a", fake_results(X3D, "cnn", 1000.0, gpu="NVIDIA H100"))
    b = save(tmp_path, "b", fake_results(X3D, "cnn", 1000.0, gpu="NVIDIA A100"))
    with pytest.raises(ScoreError, match="different hardware"):
        score_track("cnn", [a, b], reference)
    c = save(tmp_path, "c", fake_results(X3D, "cnn", 1000.0, **{"DATA_LOADER.NUM_WORKERS": 4}))
    with pytest.raises(ScoreError, match="DATA_LOADER.NUM_WORKERS"):
        score_track("cnn", [a, c], reference)


def test_wrong_track_refused(tmp_path, reference):
    run = save(tmp_path, "tr", fake_results(MVIT, "transformer", 1000.0))
    with pytest.raises(ScoreError, match="transformer run"):
        score_track("cnn", [run], reference)


def test_garbled_and_missing_results_files(tmp_path, capsys):
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "results.json").write_text("{not json")
    assert main(["--cnn", str(garbled)]) == 2
    assert "results.json" in capsys.readouterr().err
    assert main(["--cnn", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_make_reference_round_trip(tmp_path):
    runs = [save(tmp_path, f"r{i}", fake_results(X3D, "cnn", t, RNG_SEED=i))
            for i, t in enumerate([90.0, 110.0, 100.0])]
    out = tmp_path / "ref.yaml"
    assert main(["--make-reference", "--cnn", *runs, "--out", str(out), "--name", "lab"]) == 0
    table = yaml.safe_load(out.read_text())
    assert table["tracks"]["cnn"]["t_ref_s"] == 100.0 and table["tracks"]["cnn"]["n_gpu_ref"] == 4
    assert table["hardware"] == "4 x NVIDIA H100"
    ref = load_reference(str(out))
    ts = score_track("cnn", [runs[0]], ref)
    assert ts.score == pytest.approx(100.0 / 90.0)


@pytest.mark.parametrize("name", ["reference.yaml", "reference_synthetic.yaml"])
def test_shipped_reference_tables_match_their_configs(name):
    ref = load_reference(os.path.join(os.path.dirname(DEFAULT_REFERENCE), name))
    assert set(ref.tracks) == {"cnn", "transformer"}
    for track, entry in ref.tracks.items():
        cfg = load_config(resolve_config_path(entry.config), [])
        assert cfg.BENCHMARK.TRACK == track
        assert cfg.BENCHMARK.TARGET_TOP1 == pytest.approx(entry.target_top1)
        assert entry.t_ref_s > 0 and entry.n_gpu_ref >= 1


def test_bad_reference_file(tmp_path):
    bad = tmp_path / "ref.yaml"
    bad.write_text("tracks:\n  cnn:\n    config: x.yaml\n    target_top1: 1.0\n    n_gpu_ref: 4\n")
    with pytest.raises(ScoreError, match="t_ref_s is missing"):
        load_reference(str(bad))
    with pytest.raises(ScoreError, match="not found"):
        load_reference(os.path.join(str(tmp_path), "absent.yaml"))
