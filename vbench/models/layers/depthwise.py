"""Which implementation computes a depthwise Conv3d (MODEL.DEPTHWISE_CONV): X3D's 5x1x1 stem and
3x3x3 block convs, MViT's q/k/v pooling convs. All compute the same function.

On CUDA, PyTorch (aten/src/ATen/native/Convolution.cpp) sends a 5-D depthwise conv to cuDNN when
its input OR weight is channels_last_3d, and to its own conv_depthwise3d kernels (PR #40801) when
both are contiguous, in float32 and bf16 alike (benchmarks/results/HISTORY.md, "Why X3D-M is slow
in bf16 + channels_last_3d"; the current figures: docs/BENCHMARKS.md, "Models").

    default          as the model's layout has it (CPU: the oneDNN channels-last path below)
    contiguous       input and weight made contiguous: PyTorch's native depthwise kernel on CUDA
    contiguous_fp32  the same in float32 under autocast (X3D only)
    triton           vbench's Triton kernels on channels-last tensors (depthwise_triton.py), as
                     one torch custom op with autograd (depthwise_op.py); CUDA, or the CPU under
                     TRITON_INTERPRET=1 (slow: for tests)
"""
import os

import torch
import torch.nn.functional as F

from vbench.config import ConfigError

DEPTHWISE_IMPLS = ("default", "contiguous", "contiguous_fp32", "triton")


def check_impl(impl):
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"unknown depthwise conv implementation {impl!r}; choose from "
                         f"{DEPTHWISE_IMPLS} (MODEL.DEPTHWISE_CONV)")


def set_depthwise_impl(model, impl):
    """Make every module of `model` that computes a depthwise conv (an attribute
    `depthwise_impl`: X3D's stem and blocks, MViT's attention) use `impl`."""
    check_impl(impl)
    for module in model.modules():
        if hasattr(module, "depthwise_impl"):
            module.depthwise_impl = impl


def triton_unavailable(device_type):
    """Why the Triton kernels cannot run on `device_type` ("cuda", "cpu"), or None if they can."""
    try:
        import triton  # noqa: F401  (optional: comes with PyTorch's CUDA builds on Linux)
    except ImportError as err:
        return f"Triton is not installed ({err}); it comes with PyTorch's CUDA builds"
    if device_type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA GPU is available"
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return (f"the Triton kernels run on CUDA GPUs, and on the {device_type.upper()} only in "
                f"Triton's interpreter (environment variable TRITON_INTERPRET=1, set before the "
                f"first import of triton code; slow: for tests)")
    from . import depthwise_triton

    if not depthwise_triton.INTERPRET:
        return ("TRITON_INTERPRET=1 was set after vbench's Triton kernels were imported; set it "
                "before the process starts")
    return None


def require_triton(device_type):
    """Raise ConfigError where MODEL.DEPTHWISE_CONV triton cannot run."""
    reason = triton_unavailable(device_type)
    if reason:
        raise ConfigError(f"MODEL.DEPTHWISE_CONV triton cannot run here: {reason}. Choose "
                          f"MODEL.DEPTHWISE_CONV default (or auto).")


def depthwise_conv(conv, x, impl="default"):
    """`conv(x)` for a depthwise nn.Conv3d and an (N, C, T, H, W) x, computed by `impl`
    (DEPTHWISE_IMPLS); the result comes back in x's layout (contiguous or channels_last_3d)."""
    if impl == "default":
        return _default_depthwise(conv, x) if x.device.type == "cpu" else conv(x)
    check_impl(impl)
    if impl == "triton":
        return _triton_conv(conv, x)
    channels_last = _is_channels_last(x)
    if impl == "contiguous_fp32" and torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            y = _conv_contiguous(conv, x.float(), conv.weight.float()).to(x.dtype)
    else:
        y = _conv_contiguous(conv, x, conv.weight)
    return y.contiguous(memory_format=torch.channels_last_3d) if channels_last else y


def depthwise_pool_grid(conv, grid):
    """`conv` over a channels-last grid (B, G, T, H, W, C), by the Triton kernels: the pooled grid
    (B, G, TO, HO, WO, C), contiguous. MViT's q/k/v pooling (G = heads) reads its tokens in place."""
    x, weight = _autocast_inputs(conv, grid)
    y = _triton_op(x.device.type)(x, weight, list(conv.stride), list(conv.padding))
    return y if conv.bias is None else y + conv.bias.to(y.dtype)


def _is_channels_last(x):
    return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def _check_triton_conv(conv, channels):
    if conv.groups != channels or conv.out_channels != channels or conv.dilation != (1, 1, 1) \
            or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"MODEL.DEPTHWISE_CONV triton computes depthwise convs (groups = in = out "
                         f"channels, no dilation, numeric zero padding); got {conv}")


def _triton_op(device_type):
    require_triton(device_type)
    from .depthwise_op import depthwise_conv3d  # Triton is optional: imported where it is used

    return depthwise_conv3d


def _autocast_inputs(conv, x):
    _check_triton_conv(conv, x.shape[-1])
    weight = conv.weight
    if torch.is_autocast_enabled(x.device.type):  # as F.conv3d under autocast: both in its dtype
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    return x, weight


def _triton_conv(conv, x):
    """(N, C, T, H, W) -> the op's (N, 1, T, H, W, C) grid: a view of a channels_last_3d tensor
    (a contiguous one is copied once by the op); the result is a view back, in x's layout."""
    grid = x.permute(0, 2, 3, 4, 1).unsqueeze(1)
    y = depthwise_pool_grid(conv, grid).squeeze(1).permute(0, 4, 1, 2, 3)
    return y if _is_channels_last(x) else y.contiguous()


def _conv_contiguous(conv, x, weight):
    return F.conv3d(x.contiguous(), weight.contiguous(), conv.bias, conv.stride, conv.padding,
                    conv.dilation, conv.groups)


def _default_depthwise(conv, x):
    """The CPU path: oneDNN's depthwise Conv3d is 2-3x faster (forward and backward) on
    channels_last_3d input, which pays for the layout copies around it (the 1x1x1 convs and BNs
    stay contiguous, where they are faster). A k x 1 x 1 kernel runs as the same k x 1 Conv2d
    over H*W: PyTorch sends a single-threaded Conv3d with a 1 x 1 spatial kernel to a reference
    path up to 10x slower. Under CPU autocast the conv runs in float32 (returned in x's dtype):
    oneDNN's bf16 depthwise backward is slower than its float32 one.
    """
    if torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return _default_depthwise(conv, x.float()).to(x.dtype)
    if x.dtype != torch.float32 or conv.weight.dtype != torch.float32:
        return conv(x)  # a bf16 model: these layouts were measured in float32 only
    restore = not x.is_contiguous(memory_format=torch.channels_last_3d)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    if conv.kernel_size[1:] == (1, 1) and conv.stride[1:] == (1, 1) and conv.padding[1:] == (0, 0):
        batch, _, frames, height, width = x.shape
        # An N x C x T x (H*W) view of a channels_last_3d tensor is channels_last (2-D).
        y = F.conv2d(x.reshape(batch, -1, frames, height * width), conv.weight.squeeze(-1),
                     conv.bias, (conv.stride[0], 1), (conv.padding[0], 0), (conv.dilation[0], 1),
                     conv.groups)
        y = y.reshape(batch, y.shape[1], y.shape[2], height, width)
    else:
        y = conv(x)
    return y.contiguous() if restore else y
