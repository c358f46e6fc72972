"""The Triton depthwise Conv3d as torch custom ops with autograd, so that torch.compile, DDP and
the autograd engine see one op per conv (and one per gradient), not Triton launches.

    vbench::depthwise_conv3d(x, weight, stride, padding)              forward
    vbench::depthwise_conv3d_input_grad(grad, weight, input_shape, stride, padding)
    vbench::depthwise_conv3d_weight_grad(x, grad, weight, stride, padding)

x is a channels-last grid (B, G, T, H, W, C) (depthwise_triton.py); the forward's output is a
contiguous (B, G, TO, HO, WO, C) tensor. The ops are opaque to torch.compile (their fake kernels
give the shapes and strides), and autocast does not reach them: callers cast (depthwise.py).
Importing this module needs Triton.
"""
from typing import Sequence

import torch

from . import depthwise_triton as kernels


@torch.library.custom_op("vbench::depthwise_conv3d", mutates_args=())
def depthwise_conv3d(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int],
                     padding: Sequence[int]) -> torch.Tensor:
    return kernels.forward(x, weight, tuple(stride), tuple(padding))


@depthwise_conv3d.register_fake
def _(x, weight, stride, padding):
    batch, groups, t, h, w, channels = x.shape
    sizes = [kernels.out_size(*a) for a in zip((t, h, w), weight.shape[2:], stride, padding)]
    return x.new_empty((batch, groups, *sizes, channels))


@torch.library.custom_op("vbench::depthwise_conv3d_input_grad", mutates_args=())
def depthwise_conv3d_input_grad(grad: torch.Tensor, weight: torch.Tensor, input_shape: Sequence[int],
                                stride: Sequence[int], padding: Sequence[int]) -> torch.Tensor:
    return kernels.input_grad(grad, weight, tuple(input_shape), tuple(stride), tuple(padding))


@depthwise_conv3d_input_grad.register_fake
def _(grad, weight, input_shape, stride, padding):
    return grad.new_empty(tuple(input_shape))


@torch.library.custom_op("vbench::depthwise_conv3d_weight_grad", mutates_args=())
def depthwise_conv3d_weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor,
                                 stride: Sequence[int], padding: Sequence[int]) -> torch.Tensor:
    return kernels.weight_grad(x, grad, weight, tuple(stride), tuple(padding))


@depthwise_conv3d_weight_grad.register_fake
def _(x, grad, weight, stride, padding):
    strides = kernels.taps_major_strides(weight)
    if strides is None:
        return weight.new_empty(weight.shape)
    return weight.new_empty_strided(weight.shape, strides)


def _setup_context(ctx, inputs, output):
    x, weight, stride, padding = inputs
    ctx.save_for_backward(x, weight)
    ctx.stride, ctx.padding = tuple(stride), tuple(padding)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = depthwise_conv3d_input_grad(grad, weight, x.shape, ctx.stride, ctx.padding)
    if ctx.needs_input_grad[1]:
        grad_w = depthwise_conv3d_weight_grad(x, grad, weight, ctx.stride, ctx.padding)
    return grad_x, grad_w, None, None


depthwise_conv3d.register_autograd(_backward, setup_context=_setup_context)
