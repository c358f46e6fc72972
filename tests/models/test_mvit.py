"""MViT v1: parameter counts, a tiny forward/backward, configs, and fidelity to torchvision and
PyTorchVideo through the state-dict converters (CPU, fp32, eval)."""

import pytest
import torch
import torch.nn.functional as F

from vbench.config import ConfigError, get_cfg, load_config
from vbench.models import get_builder
from vbench.models.mvit import MVIT_B_16X4, build_mvit, set_pool_norm_eps
from vbench.models.mvit_convert import (
    convert_pytorchvideo_mvit_state_dict,
    convert_slowfast_mvit_state_dict,
    convert_torchvision_mvit_state_dict,
)

from scaffold import REPO

MVIT_B_PARAMS_400 = 36_610_672
# 32x3 differs from 16x4 only by 8 more temporal position embeddings of width 96.
MVIT_B_32X3_PARAMS_400 = MVIT_B_PARAMS_400 + 8 * 96

TINY = ["MVIT.DEPTH", 3, "MVIT.EMBED_DIM", 16, "MVIT.NUM_HEADS", 1,
        "MVIT.DIM_MUL", [[1, 2.0]], "MVIT.HEAD_MUL", [[1, 2.0]],
        "MVIT.POOL_Q_STRIDE", [[1, 1, 2, 2]], "MVIT.POOL_KV_STRIDE_ADAPTIVE", [1, 4, 4],
        "DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32, "MODEL.NUM_CLASSES", 5]


def _cfg(opts=()):
    cfg = get_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


def _num_params(model):
    return sum(p.numel() for p in model.parameters())


def _build_on_meta(name, cfg):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return get_builder(name)(cfg)


def _randomize(model, seed):
    """Perturb every parameter, including LayerNorms, biases and position embeddings that a
    fresh init leaves at 1/0/small, so a wrong mapping cannot hide behind default values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif param.dim() == 1 or "pos" in name or "token" in name:
                param.copy_(0.1 * noise)
            else:
                param.add_(0.01 * noise)
    return model.eval()


def test_mvit_b_16x4_has_reference_parameter_count():
    assert _num_params(_build_on_meta("mvit_b_16x4", _cfg())) == MVIT_B_PARAMS_400


def test_mvit_b_32x3_preset_builds():
    model = _build_on_meta("mvit_b_32x3", _cfg())
    assert _num_params(model) == MVIT_B_32X3_PARAMS_400
    assert model.patch_grid == (16, 56, 56)


def test_presets_ignore_mvit_keys_but_take_classes_and_dropout():
    cfg = _cfg(TINY + ["MODEL.NUM_CLASSES", 20, "MODEL.DROPOUT_RATE", 0.3])
    model = _build_on_meta("mvit_b_16x4", cfg)
    assert len(model.blocks) == 16 and model.head.out_features == 20
    assert model.head_drop.p == 0.3
    assert model.blocks[-1].drop_path.drop_prob == pytest.approx(0.2)


def test_benchmark_config_documents_mvit_b_16x4():
    cfg = load_config(str(REPO / "configs/Kinetics/MVIT_B_16x4.yaml"), ["MODEL.NUM_CLASSES", "400"])
    assert (cfg.MODEL.ARCH, cfg.MODEL.MODEL_NAME, cfg.BENCHMARK.TRACK) == ("mvit", "mvit", "transformer")
    assert cfg.BENCHMARK.TARGET_TOP1 == pytest.approx(34.70)
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TEST.BATCH_SIZE, cfg.DATA.TEST_CROP_SIZE) == (48, 48, 224)
    for key, value in MVIT_B_16X4.items():
        assert cfg.MVIT[key] == value, key
    assert _num_params(_build_on_meta("mvit", cfg)) == MVIT_B_PARAMS_400


def test_32x3_config_builds_32_frame_model():
    cfg = load_config(str(REPO / "configs/Kinetics/MVIT_B_32x3.yaml"), ["MODEL.NUM_CLASSES", "400"])
    assert cfg.DATA.NUM_FRAMES == 32 and cfg.DATA.FRAME_RATE == pytest.approx(10.0)
    assert _num_params(_build_on_meta("mvit", cfg)) == MVIT_B_32X3_PARAMS_400


def test_mvit_arch_needs_test_crop_equal_to_train_crop():
    with pytest.raises(ConfigError, match="TEST_CROP_SIZE"):
        load_config(str(REPO / "configs/Kinetics/MVIT_B_16x4.yaml"), ["DATA.TEST_CROP_SIZE", "256"])


def test_tiny_mvit_forward_backward_uses_sdpa(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    torch.manual_seed(0)
    model = get_builder("mvit")(_cfg(TINY + ["MVIT.DROPPATH_RATE", 0.1, "MVIT.DROPOUT_RATE", 0.1]))
    # 4 clips: stochastic depth drops a branch for every clip of the batch far less often.
    logits = model(torch.randn(4, 3, 4, 32, 32))
    assert logits.shape == (4, 5)
    F.cross_entropy(logits, torch.tensor([0, 3, 1, 2])).backward()
    assert len(calls) == 3  # one attention per block, all through SDPA
    assert calls[0] == (4, 1, 1 + 2 * 8 * 8, 16) and calls[1] == (4, 2, 1 + 2 * 4 * 4, 16)
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_wrong_input_size_is_a_clear_error():
    model = get_builder("mvit")(_cfg(TINY)).eval()
    with pytest.raises(ValueError, match="TRAIN_CROP_SIZE"):
        model(torch.randn(1, 3, 4, 48, 48))


@pytest.mark.parametrize("opts, word", [
    (["MVIT.POOL_Q_STRIDE", [[3, 1, 2, 2]]], "POOL_Q_STRIDE"),
    (["MVIT.DIM_MUL", [[1, 2.0, 3]]], "DIM_MUL"),
    (["MVIT.POOL_KV_STRIDE", [[0, 1, 2, 2]]], "POOL_KV_STRIDE"),
    (["MVIT.NORM", "batchnorm"], "NORM"),
])
def test_bad_mvit_keys_raise_config_error(opts, word):
    with pytest.raises(ConfigError, match=word):
        get_builder("mvit")(_cfg(TINY + opts))


def test_torchvision_mvit_v1_b_fidelity():
    """torchvision mvit_v1_b and vbench MViT-B 16x4 give the same logits on one clip."""
    from torchvision.models.video import mvit_v1_b

    torch.manual_seed(0)
    reference = _randomize(mvit_v1_b(weights=None), seed=1)
    model = get_builder("mvit_b_16x4")(_cfg(["MODEL.NUM_CLASSES", 400])).eval()
    model.load_state_dict(convert_torchvision_mvit_state_dict(reference.state_dict()))
    # torchvision's eps after q/k/v pooling (see mvit_convert): k and v in 16 blocks, q in 3.
    assert set_pool_norm_eps(model, 1e-6) == 2 * 16 + 3
    clip = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, actual = reference(clip), model(clip)
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero outputs
    max_diff = (expected - actual).abs().max().item()
    print(f"torchvision mvit_v1_b vs vbench mvit_b_16x4: max abs logit diff {max_diff:.3g}")
    assert max_diff <= 1e-4


def _pytorchvideo_model(settings, input_size, num_classes):
    from pytorchvideo.models.vision_transformers import create_multiscale_vision_transformers

    return create_multiscale_vision_transformers(
        spatial_size=input_size[1], temporal_size=input_size[0], depth=settings["DEPTH"],
        cls_embed_on=settings["CLS_EMBED_ON"], sep_pos_embed=settings["SEP_POS_EMBED"],
        patch_embed_dim=settings["EMBED_DIM"], num_heads=settings["NUM_HEADS"],
        pooling_mode=settings["MODE"], pool_first=settings["POOL_FIRST"],
        embed_dim_mul=settings["DIM_MUL"], atten_head_mul=settings["HEAD_MUL"],
        pool_q_stride_size=settings["POOL_Q_STRIDE"],
        pool_kv_stride_adaptive=settings["POOL_KV_STRIDE_ADAPTIVE"],
        pool_kvq_kernel=settings["POOL_KVQ_KERNEL"] or None,
        head_num_classes=num_classes,
    )


def _check_pytorchvideo_fidelity(settings, input_size, num_classes=7):
    torch.manual_seed(0)
    reference = _randomize(_pytorchvideo_model(settings, input_size, num_classes), seed=1)
    model = build_mvit(settings, input_size, num_classes=num_classes).eval()
    state = convert_pytorchvideo_mvit_state_dict(reference.state_dict(),
                                                 fuse_qkv=not settings["POOL_FIRST"])
    model.load_state_dict(state)
    clip = torch.randn((2, 3) + tuple(input_size), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, actual = reference(clip), model(clip)
    assert expected.abs().max() > 0.1
    assert (expected - actual).abs().max().item() <= 1e-4


@pytest.mark.extras
def test_pytorchvideo_mvit_b_structure_fidelity():
    """MViT-B's 16-block schedule (widths, heads, q and adaptive kv strides) against PyTorchVideo's
    builder, at 1/6 of the width and on an 8x64x64 clip to stay cheap on CPU."""
    pytest.importorskip("pytorchvideo")
    _check_pytorchvideo_fidelity(dict(MVIT_B_16X4, EMBED_DIM=16), (8, 64, 64))


@pytest.mark.extras
@pytest.mark.parametrize("mode, pool_first, sep_pos, cls_on, kernel", [
    ("max", False, True, True, []),
    ("avg", True, False, False, [3, 3, 3]),
    ("conv", True, True, False, [1, 3, 3]),
    ("conv", False, False, True, []),
])
def test_pytorchvideo_variant_fidelity(mode, pool_first, sep_pos, cls_on, kernel):
    pytest.importorskip("pytorchvideo")
    settings = dict(MVIT_B_16X4, DEPTH=3, EMBED_DIM=16, DIM_MUL=[[1, 2.0]], HEAD_MUL=[[1, 2.0]],
                    POOL_Q_STRIDE=[[1, 1, 2, 2]], POOL_KV_STRIDE_ADAPTIVE=[1, 2, 2],
                    POOL_KVQ_KERNEL=kernel, MODE=mode, POOL_FIRST=pool_first,
                    SEP_POS_EMBED=sep_pos, CLS_EMBED_ON=cls_on)
    _check_pytorchvideo_fidelity(settings, (6, 32, 32))  # avg_pool3d needs T >= kernel


def _to_slowfast(state_dict, split_qkv):
    """vbench names -> SlowFast names (DataParallel-prefixed), the inverse of the converter."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace("head.", "head.projection.")
        if split_qkv and ".attn.qkv." in key:
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out["module." + key.replace(".qkv.", f".{name}.")] = part
        else:
            out["module." + key] = value
    return out


@pytest.mark.parametrize("split_qkv", [False, True])
def test_slowfast_converter_round_trip(split_qkv):
    model = get_builder("mvit")(_cfg(TINY))
    state = model.state_dict()
    converted = convert_slowfast_mvit_state_dict(_to_slowfast(state, split_qkv))
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[key], state[key]) for key in state)


def test_converters_reject_mismatched_keys():
    reference = get_builder("mvit")(_cfg(TINY)).state_dict()
    with pytest.raises(ValueError, match="cls_token"):  # vbench names are not torchvision's
        convert_torchvision_mvit_state_dict(reference)
    mvit_v2 = {"conv_proj.weight": torch.zeros(1), "blocks.0.attn.rel_pos_h": torch.zeros(1)}
    with pytest.raises(ValueError, match="MViT v2"):
        convert_torchvision_mvit_state_dict(mvit_v2)
    with pytest.raises(ValueError, match=r"patch_embed\.proj\.weight"):  # SlowFast keys as PyTorchVideo
        convert_pytorchvideo_mvit_state_dict(_to_slowfast(reference, split_qkv=True))
    with pytest.raises(ValueError, match="non-empty"):
        convert_slowfast_mvit_state_dict({})
