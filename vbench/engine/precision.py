"""Numerics of a run: the precision "auto" resolves to, and the autocast context for it.

The trainer and the evaluator both take these from here.
"""
from contextlib import nullcontext

import torch


def resolve_precision(requested, device):
    """fp32 | fp16 | bf16 for "auto": bf16 where supported, fp16 on older GPUs, fp32 on the CPU."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_autocast(precision, device):
    """A zero-argument factory of the autocast context for `precision`."""
    if precision == "fp32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
