"""Tolerances for two float results of the same maths computed by different kernels.

Another memory layout, another implementation, torch.compile, DDP's all-reduce or another CPU
(oneDNN and ATen pick other kernels on AVX2 than on AVX-512: other summation orders, other fused
multiply-adds) change only the rounding. A float sum of n terms is off by about eps * sqrt(n)
times the size of its terms (the rounding errors add up like a random walk; eps is
torch.finfo(dtype).eps: 1.2e-7 for float32, 7.8e-3 for bfloat16). So two such tensors must agree
within

    |actual - expected| <= eps * sqrt(n) * (|expected| + max |expected|) + floor

n: how many rounding errors can add up behind one value. For a model's outputs and gradients
   it is at most the number of positions in the batch (N x T x H x W of the clip): the longest
   sum of these models, the weight gradient of the first layer, runs over all of them. In a
   bfloat16 autocast forward every layer rounds its output once more: n is the number of layers.
floor: for the tensors of a whole model (gradients, parameters), eps times the largest value of
   them all. A gradient that is zero in exact arithmetic comes out as the rounding noise of the
   terms that cancel in it, which are about as large as the model's other gradients, not as its
   own size: MViT's `attn.norm_k.bias` is one (adding a constant to every key leaves the softmax
   unchanged), ~1e-8 everywhere while the model's largest gradient is ~6. On AVX2 kernels its two
   layouts differ by 7e-8, under the floor (7e-7) but far over a tolerance relative to its own
   size (1e-12).

tests/README.md shows how to run the numerics tests with the AVX2 kernels on an AVX-512 machine.
"""
import math

import torch


def rounding_rtol(dtype, n):
    """Relative rounding error of a sum of n terms in `dtype`: eps * sqrt(n)."""
    return torch.finfo(dtype).eps * math.sqrt(n)


def assert_same_up_to_rounding(actual, expected, n, floor=0.0, dtype=None, name=""):
    """`actual` equals `expected` up to the rounding of n-term sums in `dtype` (default: the
    dtype of `expected`), measured against the largest value of `expected`, plus `floor`."""
    rtol = rounding_rtol(dtype or expected.dtype, n)
    atol = rtol * expected.abs().max().item() + floor
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=atol,
                               msg=lambda message: f"{name}: {message}" if name else message)


def assert_all_same_up_to_rounding(actual, expected, n):
    """Tensors by name (a model's gradients or parameters): each against its own size, all with
    the floor of one rounding step of the largest value of them all."""
    assert actual.keys() == expected.keys()
    largest = max(value.abs().max().item() for value in expected.values())
    for name, value in expected.items():
        floor = torch.finfo(value.dtype).eps * largest
        assert_same_up_to_rounding(actual[name], value, n, floor, name=name)
