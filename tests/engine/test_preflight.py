"""`vbench preflight`: the forecast's arithmetic and advice, the NVDEC rule, a real preflight on a
tiny synthetic dataset, and (slow) its prediction against a demo run."""
import json

import pytest

from vbench.bench.forecast import Measured, advice, forecast, limiting_side
from vbench.cli import main as vbench_main
from vbench.config import load_config
from vbench.data import resources
from vbench.data.index import build_index
from vbench.data.layouts import read_split
from vbench.data.sampling import plan_from_cfg


def measured(**changes):
    base = dict(device="cpu", processes=1, cores=16, workers=4, split_videos=100, sample_videos=20,
                frame_size=(256, 340), train_clips=900, eval_clips=200, loader=100.0,
                loader_first_batch_s=2.0, step=50.0, together=48.0, together_wait=0.02,
                eval=150.0)
    base.update(changes)
    return Measured(**base)


def test_the_slower_side_alone_limits_and_close_rates_are_balanced():
    assert limiting_side(loader=100.0, step=50.0) == "model"
    assert limiting_side(loader=40.0, step=50.0) == "loader"
    assert limiting_side(loader=47.0, step=50.0) == "balanced"


def test_the_forecast_counts_training_evaluations_and_the_first_batch():
    m = measured(processes=2)
    result = forecast(m, epochs=5, eval_period=2)
    assert result["clips_per_s"] == 96.0  # together, per process, times the processes
    assert result["train_s"] == pytest.approx(900 / 96.0)
    assert result["eval_s"] == pytest.approx(200 / 300.0)  # the measured evaluation, x 2 processes
    assert result["evaluations"] == 3  # epochs 2, 4 and the last
    assert result["recipe_s"] == pytest.approx(5 * 900 / 96.0 + 3 * 200 / 300.0 + 2.0)


def test_advice_follows_the_limiting_side():
    cfg = load_config(None, ["NUM_GPUS", "1", "DATA.GPU_TRANSFORMS", "False", "TRAIN.PRECISION", "fp32",
                             "DATA_LOADER.NUM_WORKERS", "4"])
    loader_bound = advice(measured(loader=30.0, step=50.0, frame_size=(1080, 1920)), cfg, "loader", "H100")
    text = " ".join(loader_bound)
    assert "DATA_LOADER.NUM_WORKERS 15" in text and "DATA.GPU_TRANSFORMS True" in text
    assert "NVDEC may win at 1920x1080" in text and "re-encode" in text
    assert "TRAIN.PRECISION" not in text
    model_bound = " ".join(advice(measured(), cfg, "model", "H100", ("bf16", False)))
    assert "TRAIN.PRECISION bf16" in model_bound and "MODEL.COMPILE True" in model_bound
    assert "NUM_WORKERS" not in model_bound


def test_nvdec_is_chosen_only_where_a_record_measured_it_faster(monkeypatch):
    cfg = load_config(None, ["NUM_GPUS", "1", "DATA.DECODER_DEVICE", "auto"])
    assert resources.NVDEC_FASTER == ()  # no record yet: the CPU decodes everywhere
    assert resources.decoder_device_choice(cfg, (1080, 1920), "NVIDIA H100 80GB HBM3") == "cpu"
    monkeypatch.setattr(resources, "NVDEC_FASTER", (("H100", 1920 * 1080, "record.json"),))
    assert resources.decoder_device_choice(cfg, (1080, 1920), "NVIDIA H100 80GB HBM3") == "cuda"
    assert resources.decoder_device_choice(cfg, (256, 340), "NVIDIA H100 80GB HBM3") == "cpu"
    assert resources.decoder_device_choice(cfg, (1080, 1920), "NVIDIA A100") == "cpu"
    cpu_run = load_config(None, ["NUM_GPUS", "0", "DATA.DECODER_DEVICE", "auto"])
    assert resources.decoder_device_choice(cpu_run, (1080, 1920), "NVIDIA H100") == "cpu"


TINY = ["NUM_GPUS", "0", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4", "DATA.LAYOUT", "folder",
        "DATA.NUM_FRAMES", "4", "DATA.FRAME_RATE", "7.5", "DATA.FRAMES_BETWEEN_CLIPS", "4",
        "DATA.TRAIN_MIN_MAX_SCALE", "[32, 40]", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_MIN_SHORT_SIDE_SCALE", "32",
        "DATA.TEST_CROP_SIZE", "32", "SYNTH.AUTO_GENERATE", "True", "SYNTH.NUM_CLASSES", "2",
        "SYNTH.TRAIN_PER_CLASS", "3", "SYNTH.VAL_PER_CLASS", "2", "DATA_LOADER.NUM_WORKERS", "1",
        "DATA_LOADER.INDEX_WORKERS", "1", "MODEL.MODEL_NAME", "x3d", "MODEL.NUM_CLASSES", "2",
        "X3D.WIDTH_FACTOR", "0.5", "X3D.DEPTH_FACTOR", "0.5", "X3D.DIM_C5", "32", "SOLVER.MAX_EPOCH", "3"]


def test_preflight_measures_both_sides_and_prints_a_verdict(tmp_path, capsys):
    opts = [*TINY, "DATA.PATH_TO_DATA_DIR", str(tmp_path / "data"), "DATA.INDEX_CACHE_DIR", str(tmp_path / "idx"),
            "OUTPUT_DIR", str(tmp_path / "never")]
    code = vbench_main(["preflight", "--cfg", "", "--budget", "20", "--json", str(tmp_path / "p.json"), *opts])
    assert code == 0
    out = capsys.readouterr().out
    assert "verdict: " in out and "expected: " in out and "clips/s in training" in out
    record = json.loads((tmp_path / "p.json").read_text())
    m, result = record["measured"], record["forecast"]
    assert m["split_videos"] == m["sample_videos"] == 6 and m["unreadable"] == []
    for key in ("loader", "step", "together", "eval"):
        assert m[key] > 0, key
    assert result["side"] in ("loader", "model", "balanced") and result["clips_per_s"] == m["together"]
    entries, _ = read_split(tmp_path / "data", "train", layout="folder")
    infos = build_index(entries, cache_dir=str(tmp_path / "idx"), num_workers=1, progress=False)
    assert m["train_clips"] == len(plan_from_cfg(infos, load_config(None, opts), training=True).clips)
    assert not (tmp_path / "never").exists()  # preflight writes no run folder


@pytest.mark.slow
def test_preflight_predicts_the_demo_run_within_30_percent(tmp_path):
    """Minutes of real time: preflight, then 3 epochs of the demo (configs/Synthetic/X3D_XS.yaml),
    back to back so both see the same machine load (`python benchmarks/bench_preflight.py --cfg
    configs/Synthetic/X3D_XS.yaml` prints the same comparison)."""
    import os
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(repo, "benchmarks"))
    from bench_preflight import compare

    row = compare(os.path.join(repo, "configs/Synthetic/X3D_XS.yaml"), 3,
                  ["DATA.PATH_TO_DATA_DIR", os.path.join(repo, "data/synthetic_demo")], str(tmp_path / "run"), 110)
    assert 0.7 <= row["clips_per_s_ratio"] <= 1.3, row
