"""The benchmark models' fast paths on CPU, tiny models: bf16 autocast training steps,
channels_last_3d equal to contiguous, a single torch.compile graph (traced with the "eager"
backend, no code generation), the X3D depthwise conv implementations and the layout paths of
mvit_blocks.py giving the same numbers as the plain modules they replace, and the copies the MViT
pooling makes. The CUDA-only checks (the kernels PyTorch picks, fused SDPA in bf16) skip without
a GPU."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from vbench.config import get_cfg
from vbench.models import get_builder, mvit_blocks
from vbench.models.layers.depthwise import DEPTHWISE_IMPLS, depthwise_conv, set_depthwise_impl
from vbench.models.mvit import MVIT_B_16X4, block_specs

from numerics import assert_all_same_up_to_rounding, assert_same_up_to_rounding  # noqa: E402

TINY_MVIT = ["MVIT.DEPTH", 3, "MVIT.EMBED_DIM", 16, "MVIT.NUM_HEADS", 1,
             "MVIT.DIM_MUL", [[1, 2.0]], "MVIT.HEAD_MUL", [[1, 2.0]],
             "MVIT.POOL_Q_STRIDE", [[1, 1, 2, 2]], "MVIT.POOL_KV_STRIDE_ADAPTIVE", [1, 4, 4],
             "DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32]
TINY_X3D = ["X3D.DEPTH_FACTOR", 1.0, "X3D.WIDTH_FACTOR", 1.0, "X3D.DIM_C5", 32,
            "DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32]
CLIPS = {"mvit": (2, 3, 4, 32, 32), "x3d": (2, 3, 4, 32, 32)}
# The implementations built on PyTorch's convs; "triton" has its own tests at interpreter-sized
# shapes (tests/models/test_depthwise_triton.py).
TORCH_IMPLS = tuple(impl for impl in DEPTHWISE_IMPLS if impl != "triton")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: with several OpenMP threads on a busy machine every op can wait for a
    descheduled thread (~20 ms per op here), which makes these tests 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(name):
    cfg = get_cfg()
    cfg.merge_from_list(TINY_MVIT if name == "mvit" else TINY_X3D)
    cfg.merge_from_list(["MODEL.NUM_CLASSES", 5, "MODEL.DROPOUT_RATE", 0.0])
    torch.manual_seed(0)
    model = get_builder(name)(cfg)
    with torch.no_grad():  # no zero-initialised layer may hide a wrong path
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape))
    return model


def _clip(name, seed=1):
    return torch.randn(CLIPS[name], generator=torch.Generator().manual_seed(seed))


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["mvit", "x3d"])
def test_bf16_autocast_training_step(name):
    model = _tiny(name).train()
    clip, labels = _clip(name), torch.tensor([0, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(clip)
        loss = F.cross_entropy(logits, labels)
    assert logits.dtype == torch.bfloat16
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and param.grad.dtype == torch.float32, param_name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, param_name
    # The same weights and BatchNorm statistics (the step above updated them) in float32 and in
    # bf16 autocast: close, not equal; every layer rounds its output to bf16 once more.
    model.eval()
    with torch.no_grad():
        fp32_logits = model(clip)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_logits = model(clip)
    layers = sum(1 for m in model.modules() if not list(m.children()))
    assert_same_up_to_rounding(bf16_logits, fp32_logits, layers, dtype=torch.bfloat16)


@pytest.mark.parametrize("name", ["mvit", "x3d"])
def test_channels_last_3d_matches_contiguous(name):
    # Eval mode: train-mode BatchNorm on a 2-clip tiny batch amplifies rounding differences of
    # the two layouts' kernels far beyond what this test could tell from a real error.
    model = _tiny(name).eval()
    clip = _clip(name)
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    expected = model(clip)
    expected.square().sum().backward()
    actual = twin(clip.contiguous(memory_format=torch.channels_last_3d))
    actual.square().sum().backward()
    positions = clip.numel() // clip.shape[1]  # n of tests/numerics.py
    assert_same_up_to_rounding(actual, expected, positions)
    assert_all_same_up_to_rounding(_grads(twin), _grads(model), positions)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("name", ["mvit", "x3d"])
def test_traces_as_one_graph_without_breaks(name, bf16):
    torch._dynamo.reset()
    model = _tiny(name).eval()
    clip = _clip(name)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # raises on a graph break
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        torch.testing.assert_close(compiled(clip), model(clip))
    torch._dynamo.reset()


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", TORCH_IMPLS)
@pytest.mark.parametrize("kernel, stride, padding", [
    ((5, 1, 1), (1, 1, 1), (2, 0, 0)),  # X3D stem: runs as a Conv2d on CPU ("default")
    ((3, 3, 3), (1, 2, 2), (1, 1, 1)),  # X3D block: channels-last Conv3d on CPU ("default")
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last_3d])
def test_x3d_depthwise_conv_equals_conv3d(kernel, stride, padding, memory_format, impl, device):
    torch.manual_seed(0)
    conv = nn.Conv3d(6, 6, kernel, stride=stride, padding=padding, groups=6, bias=False).to(device)
    conv = conv.to(memory_format=memory_format)  # a channels_last model's weights are channels-last
    x = torch.randn(2, 6, 5, 7, 9, device=device).contiguous(memory_format=memory_format)
    x.requires_grad_(True)
    expected = conv(x)
    (grad_x, grad_w) = torch.autograd.grad(expected.square().sum(), (x, conv.weight))
    actual = depthwise_conv(conv, x, impl)
    assert actual.is_contiguous(memory_format=memory_format)  # the caller's layout is kept
    (act_grad_x, act_grad_w) = torch.autograd.grad(actual.square().sum(), (x, conv.weight))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(act_grad_x, grad_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(act_grad_w, grad_w, rtol=1e-5, atol=1e-4)
    with torch.autocast(device, dtype=torch.bfloat16):  # in the autocast dtype or float32
        actual = depthwise_conv(conv, x.bfloat16(), impl)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected, rtol=0.03, atol=0.03)


def test_x3d_depthwise_impl_comes_from_the_config_and_keeps_the_model_equal():
    cfg = get_cfg()
    cfg.merge_from_list(TINY_X3D + ["MODEL.NUM_CLASSES", 5, "MODEL.DEPTHWISE_CONV", "contiguous_fp32"])
    model = get_builder("x3d")(cfg)
    impls = {m.depthwise_impl for m in model.modules() if hasattr(m, "depthwise_impl")}
    assert impls == {"contiguous_fp32"}
    plain = _tiny("x3d").eval().to(memory_format=torch.channels_last_3d)
    clip = _clip("x3d").contiguous(memory_format=torch.channels_last_3d)
    expected = plain(clip)
    expected.sum().backward()
    for impl in TORCH_IMPLS:
        twin = copy.deepcopy(plain)
        set_depthwise_impl(twin, impl)
        actual = twin(clip)
        actual.sum().backward()
        positions = clip.numel() // clip.shape[1]  # n of tests/numerics.py
        assert_same_up_to_rounding(actual, expected, positions, name=impl)
        assert_all_same_up_to_rounding(_grads(twin), _grads(plain), positions)
    with pytest.raises(ValueError, match="MODEL.DEPTHWISE_CONV"):
        depthwise_conv(model.stem.conv_t, clip, "cudnn")


@pytest.mark.parametrize("mode", ["conv", "max"])
@pytest.mark.parametrize("has_cls, batch", [(True, 2), (False, 1)])
def test_mvit_channels_last_pooling_equals_contiguous(monkeypatch, mode, has_cls, batch):
    torch.manual_seed(0)
    heads, channels, thw = 2, 8, (3, 4, 5)
    pool, norm = mvit_blocks.make_pool(mode, (3, 3, 3), (1, 2, 2), channels, 1e-5)
    tokens = torch.randn(batch, heads, int(has_cls) + 60, channels, requires_grad=True)
    results = []
    for devices in (("cpu",), ()):  # CPU channels-last path, then the CUDA (contiguous) path
        monkeypatch.setattr(mvit_blocks, "CHANNELS_LAST_POOL_DEVICES", devices)
        pooled, new_thw = mvit_blocks.pool_tokens(tokens, pool, thw, has_cls, norm)
        grad = torch.autograd.grad(pooled.square().sum(), tokens)[0]
        results.append((pooled, new_thw, grad))
    (cl_out, cl_thw, cl_grad), (out, thw_out, grad) = results
    assert cl_thw == thw_out == (3, 2, 3) and cl_out.shape == (batch, heads, int(has_cls) + 18, 8)
    torch.testing.assert_close(cl_out, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cl_grad, grad, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(mvit_blocks, "CHANNELS_LAST_POOL_DEVICES", ("cpu",))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # pooled in float32
        bf16_out = mvit_blocks.pool_tokens(tokens.bfloat16(), pool, thw, has_cls, norm)[0]
    torch.testing.assert_close(bf16_out.float(), out, rtol=0.05, atol=0.05)


class CopyCounter(TorchDispatchMode):
    """Counts the tensor copies (clone / copy_ / _to_copy) and the inputs of pooling kernels."""

    def __init__(self):
        super().__init__()
        self.copies, self.pool_inputs = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.copies += name in ("clone", "copy_", "_to_copy")
        if name in ("convolution", "max_pool3d_with_indices"):
            self.pool_inputs.append(args[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", ["conv", "max"])
@pytest.mark.parametrize("has_cls", [True, False])
@pytest.mark.parametrize("devices", [("cpu",), ()])  # the CPU channels-last path; the CUDA path
def test_mvit_pooling_copies_the_tokens_once(monkeypatch, mode, has_cls, devices):
    # q as MultiScaleAttention makes it: a strided slice of the fused qkv projection, 2 heads.
    monkeypatch.setattr(mvit_blocks, "CHANNELS_LAST_POOL_DEVICES", devices)
    pool, norm = mvit_blocks.make_pool(mode, (3, 3, 3), (1, 2, 2), 8, 1e-5)
    qkv = torch.randn(2, int(has_cls) + 60, 3, 2, 8)
    q = qkv.unbind(2)[0].transpose(1, 2)
    with CopyCounter() as counter:
        mvit_blocks.pool_tokens(q, pool, (3, 4, 5), has_cls, norm)
    assert counter.copies == 1  # (the class token's concatenation writes the result)
    layout = torch.channels_last_3d if devices else torch.contiguous_format
    assert [t.is_contiguous(memory_format=layout) for t in counter.pool_inputs] == [True]


@pytest.mark.cuda
@pytest.mark.parametrize("block", [0, 1])  # head dim 96: one head, then two with pooled queries
def test_mvit_b_attention_runs_on_flash_or_efficient_sdpa_in_bf16(block):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    spec = block_specs(MVIT_B_16X4)[block]
    attn = mvit_blocks.MultiScaleAttention(spec).cuda()
    assert attn.head_dim == 96
    thw = (8, 28, 28)
    x = torch.randn(2, 1 + math.prod(thw), spec.dim, device="cuda", requires_grad=True)
    # Raises "No available kernel" if neither fused kernel takes these inputs (no math fallback).
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, out_thw = attn(x, thw)
        out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16 and out.shape[-1] == spec.dim
    assert out_thw == (thw if block == 0 else (8, 14, 14))
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_contiguous_depthwise_conv_takes_the_native_cuda_kernel(dtype):
    # What MODEL.DEPTHWISE_CONV "contiguous" relies on (aten/src/ATen/native/Convolution.cpp).
    conv = nn.Conv3d(54, 54, 3, padding=1, groups=54, bias=False).to("cuda", dtype)
    x = torch.randn(2, 54, 4, 14, 14, device="cuda", dtype=dtype)
    backend = torch._C._select_conv_backend(x, conv.weight, None, conv.stride, conv.padding,
                                            conv.dilation, False, [0, 0, 0], conv.groups, None)
    assert backend == torch._C._ConvBackend.CudaDepthwise3d
