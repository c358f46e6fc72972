"""Building blocks of the Multiscale Vision Transformer (MViT v1).

Tokens are `B x N x C` with N = 1 + T*H*W when a class token leads the sequence. Attention is
"pooling attention": queries, keys and values are pooled on their T x H x W grid (a depthwise
Conv3d followed by a LayerNorm in "conv" mode, or a max/avg pool), which shortens the key/value
sequence everywhere and shortens the query sequence (downsampling the grid) where a stage begins.
The class token is never pooled. Parameter names follow SlowFast / PyTorchVideo (`attn.qkv`,
`attn.pool_q`, `attn.norm_q`, `mlp.fc1`, `proj`, ...) so checkpoints convert with little renaming.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vbench.models.layers.depthwise import depthwise_pool_grid


@dataclass(frozen=True)
class BlockSpec:
    """Shape of one MViT block. Empty kernel/stride tuples mean "no pooling"."""

    dim: int
    dim_out: int
    num_heads: int
    kernel_q: tuple = ()
    stride_q: tuple = ()
    kernel_kv: tuple = ()
    stride_kv: tuple = ()
    drop_path: float = 0.0


def round_width(width, multiplier, divisor=1):
    """`width * multiplier` rounded to the nearest multiple of `divisor` (SlowFast's rule).

    The result is at least `divisor`, and is bumped up one step when rounding lost over 10%.
    """
    if not multiplier:
        return width
    target = width * multiplier
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * target:
        rounded += divisor
    return int(rounded)


# Devices on which q/k/v and skip pooling run on a channels-last (N x T x H x W x C) grid. On
# CPU, oneDNN's depthwise Conv3d and max_pool3d are 2-5x faster in that layout (forward and
# backward; benchmarks/bench_model.py) and the tokens need no transpose copy on either side;
# under CPU autocast the pooling runs in float32, faster than oneDNN's bf16 depthwise backward.
# On CUDA a channels-last depthwise Conv3d goes to cuDNN instead of the native depthwise kernel
# that PyTorchVideo uses, so CUDA keeps the reference's contiguous layout (the "pool_channels_last"
# cell of bench_model.py --matrix measures the other way).
CHANNELS_LAST_POOL_DEVICES = ("cpu",)


def _pool_channels_last(pool, grid):
    """`pool` over a channels-last view of an N x T x H x W x C grid; float32 under CPU autocast."""
    grid = grid.contiguous().permute(0, 4, 1, 2, 3)
    if grid.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return pool(grid)
    with torch.autocast("cpu", enabled=False):
        return pool(grid.float()).to(grid.dtype)


def pool_tokens(x, pool, thw, has_cls, norm=None, depthwise_impl="default"):
    """Pool the T x H x W token grid of `x` (B x heads x N x C); the class token passes through.

    Returns the pooled tokens (same layout) and the new (T, H, W). With MODEL.DEPTHWISE_CONV
    "triton" a conv pooling reads the tokens in place (the kernels take the B x heads x T x H x W
    x C grid view) and writes the pooled grid in the tokens' layout: no layout copy. The other
    paths make one copy of the tokens on the way in and none on the way out (the concatenation
    with the class token, or the norm, writes the result).
    """
    if has_cls:
        cls_token, x = x[:, :, :1], x[:, :, 1:]
    batch, heads, _, channels = x.shape
    if depthwise_impl == "triton" and isinstance(pool, nn.Conv3d):
        grid = depthwise_pool_grid(pool, x.unflatten(2, thw))
        new_thw = tuple(grid.shape[2:5])
        x = grid.flatten(2, 4)
    elif x.device.type in CHANNELS_LAST_POOL_DEVICES and (
            x.dtype == torch.float32 or torch.is_autocast_enabled(x.device.type)):
        grid = _pool_channels_last(pool, x.reshape(batch * heads, *thw, channels))
        new_thw = tuple(grid.shape[2:])
        x = grid.permute(0, 2, 3, 4, 1).reshape(batch, heads, -1, channels)
    else:
        # One copy, straight into the contiguous N x C x T x H x W grid that PyTorch's native
        # depthwise and pooling kernels take (a strided view would be copied inside them).
        grid = pool(x.transpose(2, 3).reshape(batch * heads, channels, *thw).contiguous())
        new_thw = tuple(grid.shape[2:])
        x = grid.reshape(batch, heads, channels, -1).transpose(2, 3)
    if has_cls:
        x = torch.cat((cls_token, x), dim=2)
    if norm is not None:
        x = norm(x)
    return x, new_thw


def is_pooling(kernel, stride):
    """A pooling layer is needed unless kernel and stride are both absent or all ones."""
    return bool(kernel) and (math.prod(kernel) > 1 or math.prod(stride) > 1)


def make_pool(mode, kernel, stride, channels, norm_eps):
    """(pool, norm) for one of q/k/v; (None, None) when the spec asks for no pooling."""
    if not is_pooling(kernel, stride):
        return None, None
    padding = [k // 2 for k in kernel]
    if mode == "conv":
        conv = nn.Conv3d(channels, channels, kernel, stride=stride, padding=padding,
                         groups=channels, bias=False)
        return conv, nn.LayerNorm(channels, eps=norm_eps)
    if mode == "max":
        return nn.MaxPool3d(kernel, stride, padding), None
    if mode == "avg":
        return nn.AvgPool3d(kernel, stride, padding), None
    raise ValueError(f"unknown MViT pooling mode {mode!r}; use 'conv', 'max' or 'avg' (MVIT.MODE).")


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability `drop_prob`.

    The keep probability is a (non-persistent) buffer rather than a Python float, so that
    torch.compile does not specialise on it: blocks that differ only in their rate share one
    compiled graph (regional compilation, vbench/models/compile.py).
    """

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob
        self.enabled = drop_prob > 0.0
        self.register_buffer("keep_prob", torch.tensor(1.0 - drop_prob), persistent=False)

    def forward(self, x):
        if not (self.enabled and self.training):
            return x
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(self.keep_prob)
        return x * mask.div_(self.keep_prob)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(self, in_features, hidden_features, out_features, dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class MultiScaleAttention(nn.Module):
    """Multi-head pooling attention over `dim` channels (MViT v1: width does not change here).

    With `pool_first` the tokens are pooled before the q/k/v projections (separate `q`, `k`, `v`
    layers, since the three sequences differ in length); otherwise one fused `qkv` projection runs
    first and its outputs are pooled.
    """

    def __init__(self, spec, qkv_bias=True, mode="conv", pool_first=False, has_cls=True,
                 dropout=0.0, pool_norm_eps=1e-5):
        super().__init__()
        dim = spec.dim
        if dim % spec.num_heads:
            raise ValueError(f"MViT block width {dim} is not divisible by its {spec.num_heads} heads.")
        self.num_heads = spec.num_heads
        self.head_dim = dim // spec.num_heads
        self.has_cls = has_cls
        self.pool_first = pool_first
        if pool_first:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.k = nn.Linear(dim, dim, bias=qkv_bias)
            self.v = nn.Linear(dim, dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.pool_q, self.norm_q = make_pool(mode, spec.kernel_q, spec.stride_q, self.head_dim,
                                             pool_norm_eps)
        self.pool_k, self.norm_k = make_pool(mode, spec.kernel_kv, spec.stride_kv, self.head_dim,
                                             pool_norm_eps)
        self.pool_v, self.norm_v = make_pool(mode, spec.kernel_kv, spec.stride_kv, self.head_dim,
                                             pool_norm_eps)
        self.depthwise_impl = "default"  # MODEL.DEPTHWISE_CONV for conv pooling: "triton" or not

    def _pool(self, x, pool, norm, thw):
        if pool is None:
            return x, thw
        return pool_tokens(x, pool, thw, self.has_cls, norm, self.depthwise_impl)

    def _split_heads(self, x):
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x):
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)

    def forward(self, x, thw):
        batch, length, dim = x.shape
        if self.pool_first:
            q = k = v = self._split_heads(x)
        else:
            # Unbinding dim 2 (not a permuted dim 0) lets backward stack the three gradients
            # straight into the B x N x 3C layout of the projection: one copy, not two.
            qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dim)
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        q, q_thw = self._pool(q, self.pool_q, self.norm_q, thw)
        k, _ = self._pool(k, self.pool_k, self.norm_k, thw)
        v, _ = self._pool(v, self.pool_v, self.norm_v, thw)
        if self.pool_first:
            q = self._split_heads(self.q(self._merge_heads(q)))
            k = self._split_heads(self.k(self._merge_heads(k)))
            v = self._split_heads(self.v(self._merge_heads(v)))
        # Default scale is 1/sqrt(head_dim), as in MViT.
        x = F.scaled_dot_product_attention(q, k, v)
        x = self.proj_drop(self.proj(self._merge_heads(x)))
        return x, q_thw


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block with pooling attention.

    When queries are pooled the skip connection is max-pooled the same way (kernel stride+1);
    when the width changes (`dim_out != dim`) the MLP widens it and the skip connection is a
    linear projection of the normalised input to the MLP, as in MViT v1.
    """

    def __init__(self, spec, mlp_ratio=4.0, qkv_bias=True, mode="conv", pool_first=False,
                 has_cls=True, dropout=0.0, norm_eps=1e-6, pool_norm_eps=1e-5):
        super().__init__()
        self.has_cls = has_cls
        self.norm1 = nn.LayerNorm(spec.dim, eps=norm_eps)
        self.attn = MultiScaleAttention(spec, qkv_bias, mode, pool_first, has_cls, dropout,
                                        pool_norm_eps)
        self.drop_path = DropPath(spec.drop_path)
        self.norm2 = nn.LayerNorm(spec.dim, eps=norm_eps)
        self.mlp = Mlp(spec.dim, int(spec.dim * mlp_ratio), spec.dim_out, dropout)
        self.proj = nn.Linear(spec.dim, spec.dim_out) if spec.dim != spec.dim_out else None
        self.pool_skip = None
        if spec.stride_q and math.prod(spec.stride_q) > 1:
            kernel = [s + 1 if s > 1 else s for s in spec.stride_q]
            self.pool_skip = nn.MaxPool3d(kernel, spec.stride_q, [k // 2 for k in kernel])

    def forward(self, x, thw):
        x_attn, new_thw = self.attn(self.norm1(x), thw)
        if self.pool_skip is not None:
            x = pool_tokens(x.unsqueeze(1), self.pool_skip, thw, self.has_cls)[0].squeeze(1)
        x = x + self.drop_path(x_attn)
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if self.proj is not None:
            x = self.proj(x_norm)
        return x + self.drop_path(x_mlp), new_thw


class PatchEmbed(nn.Module):
    """Conv3d patchify: B x C x T x H x W -> (B x T'H'W' x dim tokens, (T', H', W'))."""

    def __init__(self, in_chans, dim, kernel, stride, padding):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, kernel, stride=stride, padding=padding)

    def forward(self, x):
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])
