"""Numerics and layout of a run: what "auto" resolves to, and the autocast context for a precision.

THE rule for TRAIN.PRECISION, MODEL.CHANNELS_LAST and MODEL.DEPTHWISE_CONV "auto" is the two tables
below; vbench/engine/resources.py applies them at launch. Each entry is a measurement in
docs/BENCHMARKS.md ("Models"); a (model family, device class) without an entry trains in fp32,
contiguous, the path every figure there is compared against, so "auto" is never slower than it.
To update the rule, run the matrix of benchmarks/bench_model.py (`--matrix --json FILE`) on the
machine class: it prints the fastest cell per model and the entry that encodes it.

The trainer and the evaluator take the autocast context from `make_autocast`.
"""
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from vbench.models.layers.depthwise import triton_unavailable


@dataclass(frozen=True)
class TrainingPath:
    precision: str = "fp32"  # TRAIN.PRECISION
    channels_last: bool = False  # MODEL.CHANNELS_LAST


FP32_CONTIGUOUS = TrainingPath()

# (model family, device class) -> the fastest measured path (docs/BENCHMARKS.md, "Models").
FASTEST_PATHS = {
    # H100 80GB, torch 2.11 + cuDNN 9.19, batch 16 x 16 x 224^2, cuDNN autotuning on as in the
    # trainer (bench_model.py --matrix, 2026-11-27): bf16 contiguous 122.6 clips/s, bf16 +
    # channels_last 108.0 (cuDNN attention and layout copies), fp32 contiguous 54.7. X3D-M has no
    # entry: fp32 contiguous 123.7 was its fastest cell (bf16 contiguous 116.2, bf16 +
    # channels_last 100.1, fp32 + channels_last 78.2). The class also holds Ampere and Ada GPUs,
    # unmeasured: bf16 tensor cores there too, and MViT's fp32 matmuls do not use TF32 (PyTorch's
    # default), so bf16 cannot lose to them.
    ("mvit", "cuda_bf16"): TrainingPath("bf16", False),
}

# MODEL.DEPTHWISE_CONV "auto" per (model family, device class, channels_last): one of
# vbench/models/layers/depthwise.py's DEPTHWISE_IMPLS, "triton" included (taken only where Triton
# can run); otherwise "default". Empty: on the H100 no other implementation beat "default" (a
# channels_last X3D with "contiguous": 93.0 clips/s in bf16 against 100.1, 73.0 in fp32 against
# 78.2; bench_model.py --matrix). "triton" is not measured on a GPU yet.
DEPTHWISE_PATHS = {}
DEPTHWISE_FAMILIES = ("x3d", "mvit")  # families with depthwise convs (MViT: its conv pooling)


def device_class(device, capability_of=torch.cuda.get_device_capability):
    """"cpu", "cuda_bf16" (compute capability 8.0 or newer: bf16 tensor cores) or "cuda"."""
    if device.type != "cuda":
        return device.type
    return "cuda_bf16" if capability_of(device) >= (8, 0) else "cuda"


def fastest_path(family, device, capability_of=torch.cuda.get_device_capability):
    """The `TrainingPath` "auto" resolves to for a model family on `device`."""
    return FASTEST_PATHS.get((family, device_class(device, capability_of)), FP32_CONTIGUOUS)


def fastest_depthwise(family, device, channels_last, capability_of=torch.cuda.get_device_capability):
    """MODEL.DEPTHWISE_CONV for "auto": see DEPTHWISE_PATHS."""
    impl = DEPTHWISE_PATHS.get((family, device_class(device, capability_of), bool(channels_last)),
                               "default")
    return "default" if impl == "triton" and triton_unavailable(device.type) else impl


def resolve_precision(requested, device, family=None, capability_of=torch.cuda.get_device_capability):
    """fp32 | fp16 | bf16; "auto" gives `fastest_path(family, device)`'s precision."""
    if requested != "auto":
        return requested
    return fastest_path(family, device, capability_of).precision


def make_autocast(precision, device):
    """A zero-argument factory of the autocast context for `precision`."""
    if precision == "fp32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
