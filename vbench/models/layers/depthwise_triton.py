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

One program computes a tile of BLOCK_P flattened positions x BLOCK_C channels. Forward and input
gradient add the taps in one fixed order, so their results do not depend on the tile shape. The
weight gradient is deterministic: one program per (tap, chunk of CHUNK output positions, channel
block) writes its partial sum (programs of the same chunk are launched side by side, so the chunk
is read from memory once and from the L2 cache by the other taps), then `_dw_reduce` adds the
partials chunk by chunk in index order. The partials depend on the tile shape and warp count,
so autotuning, which may pick another tile in another process, is used for the weight gradient
only while `torch.are_deterministic_algorithms_enabled()` is off; with it on, a fixed tile.

On a GPU, forward and input gradient are autotuned over a small space per shape (TUNE_CONFIGS)
the first time each shape runs. Under TRITON_INTERPRET=1 (read by Triton when this module is
imported) the kernels run on the CPU in Triton's interpreter, slowly, with one fixed tile.
"""
import functools
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
# Output positions per weight-gradient program: a multiple of every BLOCK_P below.
CHUNK = 1024
FIXED = triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4)  # the deterministic weight gradient
TUNE_CONFIGS = [
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_P": 128, "BLOCK_C": 64}, num_warps=8),
    triton.Config({"BLOCK_P": 32, "BLOCK_C": 128}, num_warps=4),
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 128}, num_warps=8),
]
if INTERPRET:  # one wide tile: the interpreter's cost is per operation, not per element
    CHUNK = 256  # (still several chunks at test sizes)
    FIXED = triton.Config({"BLOCK_P": 128, "BLOCK_C": 64}, num_warps=4)
CONFIGS = [FIXED] if INTERPRET else TUNE_CONFIGS
TUNE_KEY = ["C", "P", "T", "H", "W", "TO", "HO", "WO", "KT", "KH", "KW", "ST", "SH", "SW"]
# Short timing per candidate: ~6 candidates x 3 kernels x each distinct shape at the first step.
_bench = functools.partial(triton.testing.do_bench, warmup=5, rep=20)


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
def _dw_fwd(x, w, y, G, C, T, H, W, TO, HO, WO, P,
            sxb, sxg, sxt, sxh, sxw, syb, syg, syt, syh, syw,
            KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
            ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
            PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
            BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok, c_ok = p < P, c < C
    b, g, to, ho, wo = _decode(p, G, TO, HO, WO)
    base = b.to(tl.int64) * sxb + g.to(tl.int64) * sxg
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for kt in tl.static_range(KT):
        ti = to * ST - PT + kt
        t_ok = p_ok & (ti >= 0) & (ti < T)
        for kh in tl.static_range(KH):
            hi = ho * SH - PH + kh
            th_ok = t_ok & (hi >= 0) & (hi < H)
            for kw in tl.static_range(KW):
                wi = wo * SW - PW + kw
                ok = th_ok & (wi >= 0) & (wi < W)
                off = base + ti.to(tl.int64) * sxt + hi.to(tl.int64) * sxh + wi.to(tl.int64) * sxw
                xv = tl.load(x + off[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
                wv = tl.load(w + c * (KT * KH * KW) + (kt * KH + kh) * KW + kw, mask=c_ok, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    off = (b.to(tl.int64) * syb + g.to(tl.int64) * syg + to.to(tl.int64) * syt
           + ho.to(tl.int64) * syh + wo.to(tl.int64) * syw)
    tl.store(y + off[:, None] + c[None, :], acc.to(y.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _dw_dgrad(dy, w, dx, G, C, T, H, W, TO, HO, WO, P,
              sgb, sgg, sgt, sgh, sgw, sxb, sxg, sxt, sxh, sxw,
              KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
              ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
              PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """P counts input positions here: each program writes a tile of dx."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok, c_ok = p < P, c < C
    b, g, ti, hi, wi = _decode(p, G, T, H, W)
    base = b.to(tl.int64) * sgb + g.to(tl.int64) * sgg
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for kt in tl.static_range(KT):
        nt = ti + PT - kt  # = to * ST for the output `to` this tap reaches from input ti
        nt = tl.where(nt >= 0, nt, 0)  # (negative: masked below; keeps the division exact)
        to = nt // ST
        t_ok = p_ok & (ti + PT - kt >= 0) & (nt % ST == 0) & (to < TO)
        for kh in tl.static_range(KH):
            nh = hi + PH - kh
            nh = tl.where(nh >= 0, nh, 0)
            ho = nh // SH
            th_ok = t_ok & (hi + PH - kh >= 0) & (nh % SH == 0) & (ho < HO)
            for kw in tl.static_range(KW):
                nw = wi + PW - kw
                nw = tl.where(nw >= 0, nw, 0)
                wo = nw // SW
                ok = th_ok & (wi + PW - kw >= 0) & (nw % SW == 0) & (wo < WO)
                off = base + to.to(tl.int64) * sgt + ho.to(tl.int64) * sgh + wo.to(tl.int64) * sgw
                gv = tl.load(dy + off[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
                wv = tl.load(w + c * (KT * KH * KW) + (kt * KH + kh) * KW + kw, mask=c_ok, other=0.0)
                acc += gv.to(tl.float32) * wv.to(tl.float32)[None, :]
    off = (b.to(tl.int64) * sxb + g.to(tl.int64) * sxg + ti.to(tl.int64) * sxt
           + hi.to(tl.int64) * sxh + wi.to(tl.int64) * sxw)
    tl.store(dx + off[:, None] + c[None, :], acc.to(dx.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _dw_wgrad(x, dy, part, G, C, T, H, W, TO, HO, WO, P,
              sxb, sxg, sxt, sxh, sxw, sgb, sgg, sgt, sgh, sgw,
              KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
              ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
              PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
              CHUNK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """part[chunk, tap, c] = the sum over the chunk's output positions for one tap."""
    tap, chunk = tl.program_id(0), tl.program_id(1)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    kw = tap % KW
    kh = (tap // KW) % KH
    kt = tap // (KW * KH)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for start in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, P), BLOCK_P):
        p = start + tl.arange(0, BLOCK_P)
        p_ok = p < P
        b, g, to, ho, wo = _decode(p, G, TO, HO, WO)
        ti = to * ST - PT + kt
        hi = ho * SH - PH + kh
        wi = wo * SW - PW + kw
        ok = p_ok & (ti >= 0) & (ti < T) & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        b64, g64 = b.to(tl.int64), g.to(tl.int64)
        x_off = (b64 * sxb + g64 * sxg + ti.to(tl.int64) * sxt + hi.to(tl.int64) * sxh
                 + wi.to(tl.int64) * sxw)
        g_off = (b64 * sgb + g64 * sgg + to.to(tl.int64) * sgt + ho.to(tl.int64) * sgh
                 + wo.to(tl.int64) * sgw)
        xv = tl.load(x + x_off[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
        gv = tl.load(dy + g_off[:, None] + c[None, :], mask=p_ok[:, None] & c_ok[None, :], other=0.0)
        acc += xv.to(tl.float32) * gv.to(tl.float32)
    tl.store(part + (chunk * (KT * KH * KW) + tap).to(tl.int64) * C + c, tl.sum(acc, axis=0), mask=c_ok)


@triton.jit
def _dw_reduce(part, dw, NCHUNK, C, TAPS: tl.constexpr, BLOCK: tl.constexpr):
    """dw[c * TAPS + tap] = the sum of part[k, tap, c] over k = 0, 1, ... in that order."""
    j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # j = tap * C + c
    ok = j < TAPS * C
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(NCHUNK):
        acc += tl.load(part + k * TAPS * C + j, mask=ok, other=0.0)
    tl.store(dw + (j % C) * TAPS + j // C, acc.to(dw.dtype.element_ty), mask=ok)


def _autotuned(kernel):
    return triton.autotune(configs=CONFIGS, key=TUNE_KEY, do_bench=_bench)(kernel)


_fwd_tuned, _dgrad_tuned, _wgrad_tuned = _autotuned(_dw_fwd), _autotuned(_dw_dgrad), _autotuned(_dw_wgrad)


def out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _geometry(kernel_size, stride, padding):
    names = ("KT", "KH", "KW", "ST", "SH", "SW", "PT", "PH", "PW")
    return dict(zip(names, (*kernel_size, *stride, *padding)))


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
                         *_grid_args(x), *_grid_args(y), **_geometry(kernel, stride, padding))
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
                           **_geometry(tuple(weight.shape[2:]), stride, padding))
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
    chunks = max(triton.cdiv(positions, CHUNK), 1)
    part = torch.empty((chunks, taps, channels), device=x.device, dtype=torch.float32)
    args = (x, grad, part, groups, channels, t, h, w, to, ho, wo, positions,
            *_grid_args(x), *_grid_args(grad))
    geometry = _geometry(kernel, stride, padding)
    if torch.are_deterministic_algorithms_enabled():
        grid = (taps, chunks, triton.cdiv(channels, FIXED.kwargs["BLOCK_C"]))
        _dw_wgrad[grid](*args, **geometry, CHUNK=CHUNK, **FIXED.kwargs, num_warps=FIXED.num_warps)
    else:
        grid = lambda meta: (taps, chunks, triton.cdiv(channels, meta["BLOCK_C"]))
        _wgrad_tuned[grid](*args, **geometry, CHUNK=CHUNK)
    dw = new_weight_grad(weight)
    block = 256
    _dw_reduce[(triton.cdiv(taps * channels, block),)](part, dw, chunks, channels, TAPS=taps, BLOCK=block)
    return dw
