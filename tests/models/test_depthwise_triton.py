"""vbench's Triton depthwise Conv3d (vbench/models/layers/depthwise_triton.py, depthwise_op.py):
outputs and both gradients against F.conv3d (groups = channels) in float64, on fresh random
inputs, for the kernel sizes, strides and paddings of X3D (3x3x3 stride 1 and 1x2x2, the 5x1x1
stem) and MViT (3x3x3 pooling, strides 1x2x2, 1x4x4, 1x8x8, on B x heads x T x H x W x C token
grids read in place), plus a temporal stride, an even kernel and odd sizes; batch 1 and 3. Also
the deterministic weight gradient, the op under torch.compile, the ConfigError where the kernels
cannot run, and X3D and MViT models equal with MODEL.DEPTHWISE_CONV triton and default.

Where to run: on CUDA when a GPU is present; otherwise on the CPU in Triton 3.8's interpreter.
Triton reads TRITON_INTERPRET when `@triton.jit` wraps each kernel, i.e. when
depthwise_triton.py is first imported, so tests/conftest.py sets TRITON_INTERPRET=1 before any
test module loads (on machines without CUDA). Setting it inside a test is too late once another
test has imported the kernels, and a subprocess per test would pay torch's import each time.
The interpreter runs one program at a time in NumPy (about a second per kernel here), so the
shapes are tiny; it runs CPU tensors, so the same tests cover both devices.
"""
import copy
import math
import os
import subprocess
import sys
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from vbench.config import ConfigError, get_cfg
from vbench.models import get_builder, mvit_blocks
from vbench.models.layers import depthwise
from vbench.models.layers.depthwise import depthwise_conv, depthwise_pool_grid, set_depthwise_impl

CUDA = torch.cuda.is_available()
REASON = depthwise.triton_unavailable("cuda" if CUDA else "cpu")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"Triton kernels cannot run: {REASON}")
DEVICE = "cuda" if CUDA else "cpu"

# Relative error ||out - ref|| / ||ref|| allowed per dtype: float32 the goal (its
# accumulation error here is ~1e-7); float16 and bfloat16 about twice their unit roundoff
# (2^-11, 2^-8), the error of rounding the float32 result once.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}

# (source, batch, heads, channels, (T, H, W), kernel, stride, padding)
CASES = {
    "x3d_block": ("channels_last", 3, 1, 70, (2, 5, 7), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    "x3d_block_strided": ("channels_last", 1, 1, 6, (3, 9, 7), (3, 3, 3), (1, 2, 2), (1, 1, 1)),
    "x3d_stem": ("channels_last", 3, 1, 4, (5, 3, 5), (5, 1, 1), (1, 1, 1), (2, 0, 0)),
    "mvit_pool_q": ("tokens", 3, 2, 5, (2, 5, 5), (3, 3, 3), (1, 2, 2), (1, 1, 1)),
    "mvit_pool_kv4": ("tokens", 1, 2, 8, (2, 9, 9), (3, 3, 3), (1, 4, 4), (1, 1, 1)),
    "mvit_pool_kv8": ("tokens", 1, 1, 3, (3, 9, 10), (3, 3, 3), (1, 8, 8), (1, 1, 1)),
    "even_kernel_time_stride": ("channels_last", 1, 1, 3, (5, 4, 6), (3, 2, 3), (2, 1, 2), (1, 0, 1)),
}


def _leaf_and_grid(case, dtype, generator):
    """A fresh leaf tensor and its (B, G, T, H, W, C) grid view, as X3D or MViT hand it over."""
    source, batch, heads, channels, thw, *_ = case
    if source == "channels_last":  # an X3D activation: (N, C, T, H, W) channels_last_3d
        leaf = torch.randn(batch, channels, *thw, generator=generator).to(DEVICE, dtype)
        leaf = leaf.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
        return leaf, lambda t: t.permute(0, 2, 3, 4, 1).unsqueeze(1)
    # MViT's q: a strided slice of the fused qkv projection, class token first
    leaf = torch.randn(batch, 1 + math.prod(thw), 3, heads, channels, generator=generator)
    leaf = leaf.to(DEVICE, dtype).requires_grad_()
    return leaf, lambda t: t.unbind(2)[0].transpose(1, 2)[:, :, 1:].unflatten(2, thw)


def _conv(case, dtype, generator):
    _, _, _, channels, _, kernel, stride, padding = case
    conv = nn.Conv3d(channels, channels, kernel, stride, padding, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
    return conv.to(DEVICE, dtype)


def _reference(conv, leaf, to_grid, grad_out):
    """F.conv3d in float64 on the same (rounded) values: output and both gradients."""
    leaf = leaf.detach().double().requires_grad_()
    weight = conv.weight.detach().double().requires_grad_()
    grid = to_grid(leaf)
    batch, heads = grid.shape[:2]
    x = grid.permute(0, 1, 5, 2, 3, 4).flatten(0, 1)  # (B G, C, T, H, W)
    y = F.conv3d(x, weight, None, conv.stride, conv.padding, groups=conv.groups)
    y = y.unflatten(0, (batch, heads)).permute(0, 1, 3, 4, 5, 2)
    return (y, *torch.autograd.grad(y, (leaf, weight), grad_out.double()))


def _rel_error(actual, expected):
    return ((actual.double() - expected).norm() / expected.norm()).item()


@pytest.fixture(autouse=True)
def one_tile(monkeypatch):
    """On a GPU every kernel runs the FIXED tile: autotuning would compile and time every candidate
    for each test shape (`test_every_tuned_tile_on_cuda` checks those)."""
    if CUDA:
        from vbench.models.layers import depthwise_triton as kernels

        for tuner in (kernels._fwd_tuned, kernels._dgrad_tuned, kernels._wgrad_tuned):
            monkeypatch.setattr(tuner, "configs", [kernels.FIXED])
            monkeypatch.setattr(tuner, "cache", {})


def _check_against_conv3d(name, dtype):
    case = CASES[name]
    generator = torch.Generator().manual_seed(zlib.crc32(f"{name} {dtype}".encode()))
    conv = _conv(case, dtype, generator)
    leaf, to_grid = _leaf_and_grid(case, dtype, generator)
    y = depthwise_pool_grid(conv, to_grid(leaf))
    grad_out = torch.randn(y.shape, generator=generator).to(DEVICE, dtype)
    grad_leaf, grad_weight = torch.autograd.grad(y, (leaf, conv.weight), grad_out)
    expected = _reference(conv, leaf, to_grid, grad_out)
    assert y.dtype == grad_leaf.dtype == grad_weight.dtype == dtype
    assert grad_weight.stride() == conv.weight.stride()  # the parameter's layout (DDP buckets)
    for what, actual, ref in zip(("output", "input grad", "weight grad"),
                                 (y, grad_leaf, grad_weight), expected):
        assert actual.shape == ref.shape, what
        error = _rel_error(actual, ref)  # NaN fails too
        assert error < TOLERANCE[dtype], f"{name} {dtype} {what}: relative error {error:.2e}"


@pytest.mark.parametrize("name, dtype", [(name, torch.float32) for name in CASES] + [
    ("x3d_block", torch.bfloat16), ("mvit_pool_kv4", torch.bfloat16),
    ("x3d_block_strided", torch.float16), ("x3d_stem", torch.float16)])
def test_output_and_both_gradients_equal_conv3d_in_float64(name, dtype):
    _check_against_conv3d(name, dtype)


@pytest.mark.cuda  # the interpreter runs one tile; the tuned ones compile for a GPU
def test_every_tuned_tile_on_cuda(monkeypatch):
    from vbench.models.layers import depthwise_triton as kernels

    for config in kernels.TUNE_CONFIGS:  # 70 channels: 1 to 3 channel blocks, masked
        for tuner in (kernels._fwd_tuned, kernels._dgrad_tuned, kernels._wgrad_tuned):
            monkeypatch.setattr(tuner, "configs", [config])
            monkeypatch.setattr(tuner, "cache", {})
        _check_against_conv3d("x3d_block", torch.bfloat16)
        _check_against_conv3d("x3d_block_strided", torch.float32)


def test_weight_gradient_is_bit_identical_from_run_to_run():
    # 315 output positions: 2 chunks (CHUNK positions each) whose partial sums are reduced
    case = ("channels_last", 3, 1, 6, (3, 5, 7), (3, 3, 3), (1, 1, 1), (1, 1, 1))
    generator = torch.Generator().manual_seed(3)
    conv = _conv(case, torch.float32, generator)
    leaf, to_grid = _leaf_and_grid(case, torch.float32, generator)
    y = depthwise_pool_grid(conv, to_grid(leaf))
    grad_out = torch.randn(y.shape, generator=generator).to(DEVICE)
    first = torch.autograd.grad(y, conv.weight, grad_out, retain_graph=True)[0]
    second = torch.autograd.grad(y, conv.weight, grad_out)[0]
    assert torch.equal(first, second)


def test_x3d_layouts_and_autocast():
    conv = nn.Conv3d(5, 5, 3, stride=(1, 2, 2), padding=1, groups=5, bias=True).to(DEVICE)
    x = torch.randn(2, 5, 3, 6, 5, device=DEVICE)
    expected = conv(x)
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        actual = depthwise_conv(conv, x.contiguous(memory_format=layout), "triton")
        assert actual.is_contiguous(memory_format=layout)  # the caller's layout comes back
        assert _rel_error(actual, expected.double()) < 1e-5  # (the bias is added after the op)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):  # as F.conv3d: computed in bf16
        actual = depthwise_conv(conv, x, "triton")
    assert actual.dtype == torch.bfloat16 and _rel_error(actual, expected.double()) < 1e-2


def test_the_custom_op_passes_torch_library_checks():
    from vbench.models.layers.depthwise_op import depthwise_conv3d

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 2, 4, 3, 3, generator=generator).to(DEVICE).requires_grad_()
    weight = torch.randn(3, 1, 3, 3, 3, generator=generator).to(DEVICE).requires_grad_()
    # schema, fake (meta) kernel, autograd registration, and tracing through AOTAutograd
    torch.library.opcheck(depthwise_conv3d, (x, weight, [1, 2, 2], [1, 1, 1]),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor", "test_aot_dispatch_static"))


def test_inside_torch_compile_as_one_graph():
    # Inductor on CUDA; on the CPU aot_eager (dynamo and AOTAutograd, the op opaque in both: the
    # same graph without inductor's C++ build, which costs tens of seconds here).
    torch._dynamo.reset()
    conv = nn.Conv3d(8, 8, 3, padding=1, groups=8, bias=False).to(DEVICE)
    block = lambda x: F.relu(depthwise_conv(conv, x, "triton")) * 2
    x = torch.randn(2, 8, 3, 4, 5, device=DEVICE).contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    compiled = torch.compile(block, backend="inductor" if CUDA else "aot_eager", fullgraph=True)
    expected, actual = block(x), compiled(x)
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(torch.autograd.grad(actual.sum(), conv.weight)[0],
                               torch.autograd.grad(expected.sum(), conv.weight)[0])
    torch._dynamo.reset()


COMPILE_FOR_HOPPER = """
import itertools
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from vbench.models.layers import depthwise_triton as kernels

geometry = dict(KT=3, KH=3, KW=3, ST=1, SH=2, SW=2, PT=1, PH=1, PW=1, WIDE=False, **kernels.FIXED.kwargs)
for dtype, (kernel, constants) in itertools.product(("bf16", "fp32"), (
        (kernels._dw_fwd, geometry), (kernels._dw_dgrad, geometry),
        (kernels._dw_wgrad, dict(geometry, CHUNK=256)), (kernels._dw_reduce, dict(TAPS=27, BLOCK=256)))):
    names = kernel.arg_names
    signature = {name: "constexpr" if name in constants else "*fp32" if name == "part"
                 else f"*{dtype}" if name in ("x", "w", "y", "dy", "dx", "dw") else "i32" for name in names}
    source = ASTSource(kernel, signature, constexprs={(names.index(k),): v for k, v in constants.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert compiled.asm["cubin"], kernel.__name__
    print(kernel.__name__, dtype, "compiled")
"""


@pytest.mark.skipif(CUDA, reason="with a GPU the other tests compile the kernels for it")
def test_kernels_compile_for_hopper_without_a_gpu():
    # The interpreter runs what Triton's compiler may still reject (types, constexpr use): compile
    # each kernel to a cubin for sm_90 (H100) with the ptxas that comes with Triton, in a process
    # without TRITON_INTERPRET (in this one the kernels are the interpreter's).
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("compiled") == 8  # 4 kernels in bf16 and float32


def test_triton_where_it_cannot_run_is_a_config_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match="MODEL.DEPTHWISE_CONV triton cannot run here.*TRITON_INTERPRET"):
        depthwise.require_triton("cpu")
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` fails
    with pytest.raises(ConfigError, match="Triton is not installed"):
        depthwise.require_triton("cuda")


TINY = {
    "x3d": ["X3D.DEPTH_FACTOR", 0.5, "X3D.WIDTH_FACTOR", 0.5, "X3D.DIM_C5", 16, "DATA.NUM_FRAMES", 2,
            "DATA.TRAIN_CROP_SIZE", 16],
    "mvit": ["MVIT.DEPTH", 2, "MVIT.EMBED_DIM", 8, "MVIT.NUM_HEADS", 1, "MVIT.DIM_MUL", [[1, 2.0]],
             "MVIT.HEAD_MUL", [[1, 2.0]], "MVIT.POOL_Q_STRIDE", [[1, 1, 2, 2]],
             "MVIT.POOL_KV_STRIDE_ADAPTIVE", [1, 4, 4], "DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32],
}


@pytest.mark.parametrize("name, clip", [("x3d", (1, 3, 2, 16, 16)), ("mvit", (1, 3, 4, 32, 32))])
def test_models_with_triton_depthwise_equal_the_default(name, clip, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # (CUDA: fp32 convs in fp32)
    cfg = get_cfg()
    cfg.merge_from_list(TINY[name] + ["MODEL.NUM_CLASSES", 3, "MODEL.DROPOUT_RATE", 0.0,
                                      "MODEL.DEPTHWISE_CONV", "triton"])
    torch.manual_seed(0)
    model = get_builder(name)(cfg).to(DEVICE).eval()  # eval: BN statistics of a 2-clip batch
    with torch.no_grad():  # amplify layout rounding; no zero-initialised layer hides a path
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, device=DEVICE))
    impls = {m.depthwise_impl for m in model.modules() if hasattr(m, "depthwise_impl")}
    assert impls == {"triton"}  # from the config
    reference = copy.deepcopy(model)
    set_depthwise_impl(reference, "default")
    layout = torch.channels_last_3d if name == "x3d" else torch.contiguous_format
    model, reference = model.to(memory_format=layout), reference.to(memory_format=layout)
    x = torch.randn(clip, device=DEVICE).contiguous(memory_format=layout)
    with OpCounter() as counter:
        actual = model(x)
        actual.square().sum().backward()
    expected = reference(x)
    expected.square().sum().backward()
    depthwise_convs = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.groups > 1]
    assert counter.calls == len(depthwise_convs) > 0  # every depthwise conv ran the op
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    # Some gradients are zero in exact arithmetic (MViT's key bias: softmax ignores a constant):
    # rounding noise there is measured against the model's largest gradient.
    scale = max(p.grad.abs().max().item() for p in reference.parameters())
    for (key, param), ref in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(param.grad, ref.grad, rtol=1e-3, atol=1e-5 * scale, msg=key)


class OpCounter(TorchDispatchMode):
    """Counts calls of the Triton op and tensor copies (clone / copy_ / _to_copy)."""

    def __init__(self):
        super().__init__()
        self.calls = self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func.name() == "vbench::depthwise_conv3d"
        self.copies += func.overloadpacket.__name__ in ("clone", "copy_", "_to_copy")
        return func(*args, **(kwargs or {}))


def test_mvit_triton_pooling_reads_the_tokens_in_place():
    conv, norm = mvit_blocks.make_pool("conv", (3, 3, 3), (1, 2, 2), 8, 1e-5)
    conv, norm = conv.to(DEVICE), norm.to(DEVICE)
    generator = torch.Generator().manual_seed(11)
    qkv = torch.randn(2, 1 + 2 * 4 * 3, 3, 2, 8, generator=generator).to(DEVICE).requires_grad_()
    q = qkv.unbind(2)[0].transpose(1, 2)  # 2 heads: no (B heads) view exists without a copy
    with OpCounter() as counter:
        pooled, thw = mvit_blocks.pool_tokens(q, conv, (2, 4, 3), True, norm, "triton")
    assert counter.copies == 0 and thw == (2, 2, 2) and pooled.shape == (2, 2, 9, 8)
    expected, expected_thw = mvit_blocks.pool_tokens(q, conv, (2, 4, 3), True, norm)
    assert expected_thw == thw
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)
    # (not a sum of squares: after a LayerNorm without affine change that is a constant)
    grad_out = torch.randn(pooled.shape, generator=generator).to(DEVICE)
    grads = [torch.autograd.grad(out, (qkv, conv.weight), grad_out) for out in (pooled, expected)]
    for actual, ref in zip(*grads):
        assert _rel_error(actual, ref.double()) < 1e-5
