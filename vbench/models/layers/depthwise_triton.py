"""Depthwise Conv3d in Triton on channels-last grids: forward, input gradient, weight gradient.

Tensors are grids of shape (B, G, T, H, W, C) whose channels are contiguous (stride 1); the other
five strides are free, so a channels_last_3d (N, C, T, H, W) tensor (a permuted view) and MViT's
token grids, B x heads x (T H W) x C slices of the q/k/v projection, are read in place. One
filter of kT x kH x kW taps per channel (groups = channels, no dilation, no bias); any stride and
zero padding. Inputs in float32, bfloat16 or float16; every sum runs in float32 and the result is
rounded once to the input's dtype.

    forward       y[b,g,o,c]  = sum over taps k of x[b,g,o*s-p+k,c] * w[c,k]
    input grad    dx[b,g,i,c] = sum over taps k with (i+p-k) divisible by s of dy[b,g,(i+p-k)/s,c] * w[c,k]
    weight grad   dw[c,k]     = sum over outputs o of dy[b,g,o,c] * x[b,g,o*s-p+k,c]

One program computes a tile of BLOCK_P flattened positions x BLOCK_C channels, looping over the
taps (loops, not unrolled: a fully unrolled 3x3x3 kernel took ptxas minutes). Forward and input
gradient add the taps in one fixed order, so their results do not depend on the tile shape. The
weight gradient is deterministic: one program per (chunk of output positions, channel block)
loops over the taps, and over the chunk's positions for each, so that the chunk's dy and x come
from memory once and from the cache for the other taps; it writes one partial sum per tap, and
`_dw_reduce` adds the partials chunk by chunk in index order. The chunk length depends on the
shape only (`chunk_size`), but the sum inside a chunk depends on the tile shape and warp count,
so autotuning (which may pick another tile in another process) is used for the weight gradient
only while `torch.are_deterministic_algorithms_enabled()` is off; with it on, one fixed tile.

On a GPU the kernels are autotuned over a small space (TUNE_CONFIGS) the first time each shape
runs, and Triton keeps the choice on disk for later processes. Under TRITON_INTERPRET=1 (read by
Triton when this module is imported) the kernels run on the CPU in Triton's interpreter, slowly,
with one fixed tile.
"""
import functools
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
# Tiles of few positions per thread: the threads of a warp cover consecutive channels (coalesced
# loads), so every position of the tile is live in each thread; at 32 elements per thread
# ((64, 64) with 4 warps) the kernels spilled (255 registers, a stack frame; ptxas for sm_90).
# Four candidates: every one is compiled (about a second each) per kernel, geometry and dtype at
# the first step that meets them.
TUNE_CONFIGS = [  # (BLOCK_P positions x BLOCK_C channels, warps): 48-141 registers, no spills
    triton.Config({"BLOCK_P": 8, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_P": 16, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_P": 8, "BLOCK_C": 128}, num_warps=4),
    triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=8),
]
FIXED = TUNE_CONFIGS[0]  # the deterministic weight gradient's tile
if INTERPRET:  # one wide tile: the interpreter's cost is per operation, not per element
    FIXED = triton.Config({"BLOCK_P": 128, "BLOCK_C": 64}, num_warps=4)
CONFIGS = [FIXED] if INTERPRET else TUNE_CONFIGS
TUNE_KEY = ["C", "P", "T", "H", "W", "TO", "HO", "WO", "KT", "KH", "KW", "ST", "SH", "SW"]
# Short timing per candidate: 4 candidates x 3 kernels x each distinct shape at the first step.
_bench = functools.partial(triton.testing.do_bench, warmup=5, rep=20)


# Sizes and strides are not specialised (Triton would compile a variant per divisibility by 16
# of each, i.e. per shape; the loads do not vectorise across channels anyway): one compiled
# kernel per geometry, dtype and tile.
_RUNTIME_INTS = ("G", "C", "T", "H", "W", "TO", "HO", "WO", "P", "NCHUNK", "sxb", "sxg", "sxt", "sxh",
                 "sxw", "syb", "syg", "syt", "syh", "syw", "sgb", "sgg", "sgt", "sgh", "sgw")
_kernel = triton.jit(do_not_specialize=_RUNTIME_INTS)


@triton.jit
def _decode(p, G, TO, HO, WO):
    """Flattened output position -> (b, g, t, h, w) of the (B, G, TO, HO, WO) grid."""
    w = p % WO
    r = p // WO
    h = r % HO
    r = r // HO
    t = r % TO
    n = r // TO
    return n // G, n % G, t, h, w


@triton.jit
def _wide(v, WIDE: tl.constexpr):
    """Offsets in int64 only where a tensor has 2**31 elements or more (WIDE)."""
    if WIDE:
        return v.to(tl.int64)
    return v


@_kernel
def _dw_fwd(x, w, y, G, C, T, H, W, TO, HO, WO, P,
            sxb, sxg, sxt, sxh, sxw, syb, syg, syt, syh, syw,
            KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
            ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
            PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
            WIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok, c_ok = p < P, c < C
    b, g, to, ho, wo = _decode(p, G, TO, HO, WO)
    b, g, to, ho, wo = _wide(b, WIDE), _wide(g, WIDE), _wide(to, WIDE), _wide(ho, WIDE), _wide(wo, WIDE)
    row = b * sxb + g * sxg
    t0, h0, w0 = to * ST - PT, ho * SH - PH, wo * SW - PW  # the first tap's input position
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for kt in range(KT):
        t_ok = p_ok & (t0 + kt >= 0) & (t0 + kt < T)
        for kh in range(KH):
            th_ok = t_ok & (h0 + kh >= 0) & (h0 + kh < H)
            for kw in range(KW):
                ok = th_ok & (w0 + kw >= 0) & (w0 + kw < W)
                off = row + (t0 + kt) * sxt + (h0 + kh) * sxh + (w0 + kw) * sxw
                xv = tl.load(x + off[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
                wv = tl.load(w + c * (KT * KH * KW) + (kt * KH + kh) * KW + kw, mask=c_ok, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    off = b * syb + g * syg + to * syt + ho * syh + wo * syw
    tl.store(y + off[:, None] + c[None, :], acc.to(y.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@_kernel
def _dw_dgrad(dy, w, dx, G, C, T, H, W, TO, HO, WO, P,
              sgb, sgg, sgt, sgh, sgw, sxb, sxg, sxt, sxh, sxw,
              KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
              ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
              PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
              WIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """P counts input positions here: each program writes a tile of dx. Tap k reaches input i
    from output o = (i + p - k) / s where that divides exactly (and 0 <= o < the output size)."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok, c_ok = p < P, c < C
    b, g, ti, hi, wi = _decode(p, G, T, H, W)
    b, g, ti, hi, wi = _wide(b, WIDE), _wide(g, WIDE), _wide(ti, WIDE), _wide(hi, WIDE), _wide(wi, WIDE)
    row = b * sgb + g * sgg
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for kt in range(KT):
        nt = ti + PT - kt
        to = tl.where(nt >= 0, nt, 0) // ST  # (negative: masked; keeps the division exact)
        t_ok = p_ok & (nt >= 0) & (nt == to * ST) & (to < TO)
        for kh in range(KH):
            nh = hi + PH - kh
            ho = tl.where(nh >= 0, nh, 0) // SH
            th_ok = t_ok & (nh >= 0) & (nh == ho * SH) & (ho < HO)
            for kw in range(KW):
                nw = wi + PW - kw
                wo = tl.where(nw >= 0, nw, 0) // SW
                ok = th_ok & (nw >= 0) & (nw == wo * SW) & (wo < WO)
                off = row + to * sgt + ho * sgh + wo * sgw
                gv = tl.load(dy + off[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
                wv = tl.load(w + c * (KT * KH * KW) + (kt * KH + kh) * KW + kw, mask=c_ok, other=0.0)
                acc += gv.to(tl.float32) * wv.to(tl.float32)[None, :]
    off = b * sxb + g * sxg + ti * sxt + hi * sxh + wi * sxw
    tl.store(dx + off[:, None] + c[None, :], acc.to(dx.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@_kernel
def _dw_wgrad(x, dy, part, G, C, T, H, W, TO, HO, WO, P,
              sxb, sxg, sxt, sxh, sxw, sgb, sgg, sgt, sgh, sgw,
              KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
              ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
              PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
              WIDE: tl.constexpr, CHUNK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """part[chunk, tap, c] = the sum over the chunk's CHUNK output positions, for every tap.

    Taps outside, positions inside: the chunk's dy and x (with its halo) are read from memory by
    the first tap and from the cache by the others."""
    chunk = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    start = chunk * CHUNK
    end = tl.minimum(start + CHUNK, P)
    for kt in range(KT):
        for kh in range(KH):
            for kw in range(KW):
                acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
                for p0 in range(start, end, BLOCK_P):
                    p = p0 + tl.arange(0, BLOCK_P)
                    p_ok = p < end
                    b, g, to, ho, wo = _decode(p, G, TO, HO, WO)
                    b, g, to, ho, wo = (_wide(b, WIDE), _wide(g, WIDE), _wide(to, WIDE), _wide(ho, WIDE),
                                        _wide(wo, WIDE))
                    ti, hi, wi = to * ST - PT + kt, ho * SH - PH + kh, wo * SW - PW + kw
                    ok = p_ok & (ti >= 0) & (ti < T) & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
                    x_off = b * sxb + g * sxg + ti * sxt + hi * sxh + wi * sxw
                    g_off = b * sgb + g * sgg + to * sgt + ho * sgh + wo * sgw
                    xv = tl.load(x + x_off[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
                    gv = tl.load(dy + g_off[:, None] + c[None, :], mask=p_ok[:, None] & c_ok[None, :],
                                 other=0.0)
                    acc += xv.to(tl.float32) * gv.to(tl.float32)
                tap = (kt * KH + kh) * KW + kw
                tl.store(part + (chunk * (KT * KH * KW) + tap) * C + c, tl.sum(acc, axis=0), mask=c_ok)


@_kernel
def _dw_reduce(part, dw, NCHUNK, C, TAPS: tl.constexpr, BLOCK: tl.constexpr):
    """dw[c * TAPS + tap] = the sum of part[k, tap, c] over k = 0, 1, ... in that order."""
    j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # j = tap * C + c
    ok = j < TAPS * C
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(NCHUNK):
        acc += tl.load(part + k * TAPS * C + j, mask=ok, other=0.0)
    tl.store(dw + (j % C) * TAPS + j // C, acc.to(dw.dtype.element_ty), mask=ok)


def _autotuned(kernel):
    return triton.autotune(configs=CONFIGS, key=TUNE_KEY, do_bench=_bench, cache_results=True)(kernel)


_fwd_tuned, _dgrad_tuned, _wgrad_tuned = _autotuned(_dw_fwd), _autotuned(_dw_dgrad), _autotuned(_dw_wgrad)


def chunk_size(positions, channels):
    """Output positions per weight-gradient program, a function of the shape only (so the sums'
    order does not depend on the tile): the largest of 2048, 1024, 512 that still gives about 4
    programs per SM of an H100 (132 SMs) at 64 channels per program, else 256 (a multiple of
    every BLOCK_P; small late-stage grids stay parallel; tiny test shapes get several chunks)."""
    for chunk in (2048, 1024, 512):
        if triton.cdiv(positions, chunk) * triton.cdiv(channels, 64) >= 4 * 132:
            return chunk
    return 256


def out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _geometry(kernel_size, stride, padding):
    names = ("KT", "KH", "KW", "ST", "SH", "SW", "PT", "PH", "PW")
    return dict(zip(names, (*kernel_size, *stride, *padding)))


def _wide_offsets(*tensors):
    """Whether element offsets into `tensors` (their storage, from its start) need int64."""
    return any(t.untyped_storage().nbytes() // t.element_size() >= 2**31 - 1 for t in tensors)


def _channels_unit_stride(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _grid_args(t):
    """The five strides of a (B, G, T, H, W, C) grid, in elements."""
    return t.stride()[:5]


def taps_major_strides(weight):
    """Strides of a (C, 1, kT, kH, kW) weight whose element (c, tap) sits at c * taps + tap (the
    order the kernels read and write): the weight's own strides when they have that order (both
    contiguous and channels_last_3d weights do), else None."""
    taps = weight.shape[2] * weight.shape[3] * weight.shape[4]
    order = (taps, weight.shape[3] * weight.shape[4], weight.shape[4], 1)
    stride = weight.stride()
    return stride if (stride[0], *stride[2:]) == order else None


def _taps_major(weight):
    return weight if taps_major_strides(weight) else weight.contiguous()


def forward(x, weight, stride, padding):
    """y (B, G, TO, HO, WO, C), contiguous, from grid x (B, G, T, H, W, C) and weight (C, 1, k...)."""
    x = _channels_unit_stride(x)
    batch, groups, t, h, w, channels = x.shape
    kernel = tuple(weight.shape[2:])
    to, ho, wo = (out_size(*a) for a in zip((t, h, w), kernel, stride, padding))
    y = x.new_empty((batch, groups, to, ho, wo, channels))
    positions = batch * groups * to * ho * wo
    if y.numel():
        grid = lambda meta: (triton.cdiv(positions, meta["BLOCK_P"]), triton.cdiv(channels, meta["BLOCK_C"]))
        _fwd_tuned[grid](x, _taps_major(weight), y, groups, channels, t, h, w, to, ho, wo, positions,
                         *_grid_args(x), *_grid_args(y), **_geometry(kernel, stride, padding),
                         WIDE=_wide_offsets(x, y))
    return y


def input_grad(grad, weight, input_shape, stride, padding):
    """dx (B, G, T, H, W, C), contiguous, from dy (B, G, TO, HO, WO, C)."""
    grad = _channels_unit_stride(grad)
    batch, groups, t, h, w, channels = input_shape
    to, ho, wo = grad.shape[2:5]
    dx = grad.new_empty(input_shape)
    positions = batch * groups * t * h * w
    if dx.numel():
        grid = lambda meta: (triton.cdiv(positions, meta["BLOCK_P"]), triton.cdiv(channels, meta["BLOCK_C"]))
        _dgrad_tuned[grid](grad, _taps_major(weight), dx, groups, channels, t, h, w, to, ho, wo,
                           positions, *_grid_args(grad), *_grid_args(dx),
                           **_geometry(tuple(weight.shape[2:]), stride, padding),
                           WIDE=_wide_offsets(grad, dx))
    return dx


def new_weight_grad(weight):
    """An empty gradient for `weight`: its strides where the kernels can write them (so that the
    gradient obeys the parameter's layout, as DDP's buckets expect), else contiguous."""
    strides = taps_major_strides(weight)
    if strides is None:
        return torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    return torch.empty_strided(weight.shape, strides, dtype=weight.dtype, device=weight.device)


def weight_grad(x, grad, weight, stride, padding):
    """dw, shaped and laid out as `weight` (`new_weight_grad`), deterministic (module docstring)."""
    x, grad = _channels_unit_stride(x), _channels_unit_stride(grad)
    batch, groups, t, h, w, channels = x.shape
    to, ho, wo = grad.shape[2:5]
    kernel = tuple(weight.shape[2:])
    taps = kernel[0] * kernel[1] * kernel[2]
    positions = batch * groups * to * ho * wo
    chunk = chunk_size(positions, channels)
    chunks = max(triton.cdiv(positions, chunk), 1)
    part = torch.empty((chunks, taps, channels), device=x.device, dtype=torch.float32)
    args = (x, grad, part, groups, channels, t, h, w, to, ho, wo, positions,
            *_grid_args(x), *_grid_args(grad))
    geometry = dict(_geometry(kernel, stride, padding), WIDE=_wide_offsets(x, grad, part))
    if torch.are_deterministic_algorithms_enabled():
        grid = (chunks, triton.cdiv(channels, FIXED.kwargs["BLOCK_C"]))
        _dw_wgrad[grid](*args, **geometry, CHUNK=chunk, **FIXED.kwargs, num_warps=FIXED.num_warps)
    else:
        grid = lambda meta: (chunks, triton.cdiv(channels, meta["BLOCK_C"]))
        _wgrad_tuned[grid](*args, **geometry, CHUNK=chunk)
    dw = new_weight_grad(weight)
    block = 256
    _dw_reduce[(triton.cdiv(taps * channels, block),)](part, dw, chunks, channels, TAPS=taps, BLOCK=block)
    return dw
