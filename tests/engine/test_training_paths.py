"""The rule behind TRAIN.PRECISION / MODEL.CHANNELS_LAST / MODEL.DEPTHWISE_CONV "auto"
(vbench/engine/precision.py), per model family and device class; GPUs are described by an
injected compute-capability function, so every class is checked on the CPU."""
import os

import pytest
import torch

from vbench.config import ConfigError, load_config
from vbench.engine import precision
from vbench.engine.precision import (
    FASTEST_PATHS,
    FP32_CONTIGUOUS,
    TrainingPath,
    device_class,
    fastest_depthwise,
    fastest_path,
    resolve_precision,
)
from vbench.engine.resources import resolve_resources, resource_decisions

from scaffold import REPO

CONFIGS = str(REPO / "configs" / "Kinetics")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
HOPPER, AMPERE, VOLTA = (9, 0), (8, 0), (7, 0)


def gpu(capability):
    return lambda device: capability


@pytest.mark.parametrize("device, capability, expected", [
    (CPU, None, "cpu"), (CUDA, HOPPER, "cuda_bf16"), (CUDA, AMPERE, "cuda_bf16"), (CUDA, VOLTA, "cuda"),
])
def test_device_classes(device, capability, expected):
    assert device_class(device, gpu(capability)) == expected


@pytest.mark.parametrize("family, device, capability, expected", [
    ("x3d", CUDA, HOPPER, FP32_CONTIGUOUS),  # H100 matrix: fp32 contiguous 123.7 clips/s, the fastest
    ("mvit", CUDA, HOPPER, TrainingPath("bf16", False)),  # H100 matrix: 122.6 against fp32 54.7
    ("mvit", CUDA, VOLTA, FP32_CONTIGUOUS),  # no bf16 there, nothing measured
    ("mvit", CPU, None, FP32_CONTIGUOUS),
    ("x3d", CPU, None, FP32_CONTIGUOUS),
    ("torchvision", CUDA, HOPPER, FP32_CONTIGUOUS),  # unmeasured family
    (None, CUDA, HOPPER, FP32_CONTIGUOUS),  # a Trainer built by hand does not name its family
])
def test_auto_takes_the_fastest_measured_path_else_fp32_contiguous(family, device, capability, expected):
    assert fastest_path(family, device, gpu(capability)) == expected
    assert resolve_precision("auto", device, family, gpu(capability)) == expected.precision
    assert resolve_precision("fp16", device, family, gpu(capability)) == "fp16"  # explicit wins


def test_every_entry_is_a_precision_the_device_class_has():
    for (family, device_cls), path in FASTEST_PATHS.items():
        assert path.precision in ("fp32", "fp16", "bf16") and isinstance(path.channels_last, bool)
        assert path.precision != "bf16" or device_cls in ("cpu", "cuda_bf16"), (family, device_cls)


def test_depthwise_conv_auto_is_the_default_implementation_where_none_measured_faster():
    for family in ("x3d", "mvit"):
        for channels_last in (True, False):
            assert fastest_depthwise(family, CUDA, channels_last, gpu(HOPPER)) == "default"
            assert fastest_depthwise(family, CPU, channels_last) == "default"


def test_the_depthwise_rule_can_name_triton_where_triton_runs(monkeypatch):
    monkeypatch.setitem(precision.DEPTHWISE_PATHS, ("x3d", "cuda_bf16", True), "triton")
    monkeypatch.setattr(precision, "triton_unavailable", lambda device_type: None)
    assert fastest_depthwise("x3d", CUDA, True, gpu(HOPPER)) == "triton"
    assert fastest_depthwise("x3d", CUDA, False, gpu(HOPPER)) == "default"  # another layout
    assert fastest_depthwise("mvit", CUDA, True, gpu(HOPPER)) == "default"  # another family
    monkeypatch.setattr(precision, "triton_unavailable", lambda device_type: "no Triton")
    assert fastest_depthwise("x3d", CUDA, True, gpu(HOPPER)) == "default"


def test_triton_asked_for_where_it_cannot_run_stops_the_launch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # (tests/conftest.py sets it without a GPU)
    cfg = load_config(os.path.join(CONFIGS, "X3D_M.yaml"), ["NUM_GPUS", "0", "MODEL.DEPTHWISE_CONV", "triton"])
    with pytest.raises(ConfigError, match="MODEL.DEPTHWISE_CONV triton cannot run here"):
        resolve_resources(cfg)


def _cfg(name, *opts):
    return load_config(os.path.join(CONFIGS, name), ["NUM_GPUS", "1", *opts])


def model_decisions(cfg, capability_of):
    """The precision and layout decisions (the loader's are tested in test_loader_resources.py)."""
    decisions = resource_decisions(cfg, capability_of)
    return {key: value for key, value in decisions.items() if key.split(".")[0] in ("TRAIN", "MODEL")}


def test_launch_decisions_on_a_faked_hopper_gpu():
    auto = ["TRAIN.PRECISION", "auto", "MODEL.CHANNELS_LAST", "auto", "MODEL.DEPTHWISE_CONV", "auto"]
    assert model_decisions(_cfg("X3D_M.yaml", *auto), gpu(HOPPER)) == {
        "TRAIN.PRECISION": "fp32", "MODEL.CHANNELS_LAST": False, "MODEL.DEPTHWISE_CONV": "default"}
    # MViT takes bf16, contiguous, and PyTorch's kernels for its conv pooling.
    assert model_decisions(_cfg("MVIT_B_16x4.yaml", *auto), gpu(HOPPER)) == {
        "TRAIN.PRECISION": "bf16", "MODEL.CHANNELS_LAST": False, "MODEL.DEPTHWISE_CONV": "default"}
    assert model_decisions(_cfg("MVIT_B_16x4.yaml", *auto), gpu(VOLTA)) == {
        "TRAIN.PRECISION": "fp32", "MODEL.CHANNELS_LAST": False, "MODEL.DEPTHWISE_CONV": "default"}
    # A user who asks for channels_last X3D keeps the default depthwise conv (measured fastest).
    forced = _cfg("X3D_M.yaml", "TRAIN.PRECISION", "bf16", "MODEL.CHANNELS_LAST", "True")
    assert model_decisions(forced, gpu(HOPPER)) == {"MODEL.DEPTHWISE_CONV": "default"}


def test_benchmark_configs_leave_precision_layout_and_depthwise_conv_to_the_rule():
    for name in ("X3D_M.yaml", "MVIT_B_16x4.yaml"):
        cfg = load_config(os.path.join(CONFIGS, name))
        assert (cfg.TRAIN.PRECISION, cfg.MODEL.CHANNELS_LAST, cfg.MODEL.DEPTHWISE_CONV) == ("auto",) * 3
