"""benchmarks/bench_train.py: the peak-FLOPS lookup and the training-FLOPs arithmetic of the MFU."""
import os

import pytest

from vbench.config import load_config
from vbench.models.summary import count_model

import bench_train


def results(gpu_model, precision="bf16"):
    return {"hardware": {"gpu": {"model": gpu_model, "count": 1} if gpu_model else None},
            "world": {"precision": precision}}


def test_peak_flops_by_gpu_name_and_precision():
    assert bench_train.peak_tflops(results("NVIDIA H100 80GB HBM3"), None) == 989.4
    assert bench_train.peak_tflops(results("NVIDIA H100 PCIe"), None) == 756.0
    assert bench_train.peak_tflops(results("NVIDIA H200"), None) == 989.4
    assert bench_train.peak_tflops(results("NVIDIA H100 80GB HBM3", "fp32"), None) is None
    assert bench_train.peak_tflops(results(None, "fp32"), None) is None
    assert bench_train.peak_tflops(results(None, "fp32"), 2.5) == 2.5  # --peak-tflops wins


def test_training_flops_are_six_times_the_fvcore_count():
    cfg_file = os.path.join(bench_train.ROOT, bench_train.TRACK_CONFIGS["cnn"])
    opts = ["DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "64", "DATA.TEST_CROP_SIZE", "64",
            "DATA.TRAIN_MIN_MAX_SCALE", "[64, 80]", "DATA.TEST_MIN_SHORT_SIDE_SCALE", "64"]
    forward = count_model("x3d", load_config(cfg_file, opts), (4, 64, 64)).gflops_per_view
    assert bench_train.train_gflops_per_clip(cfg_file, opts) == pytest.approx(6 * forward)
    assert forward > 0
