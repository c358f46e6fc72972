"""X3D: parameter counts, presets, configs, converters and fidelity to PyTorchVideo's create_x3d."""
import os
import re

import pytest
import torch
import torch.nn as nn

from vbench.config import get_cfg, load_config
from vbench.models import build_model, get_builder
from vbench.models.x3d import X3D
from vbench.models.x3d_convert import convert_pytorchvideo_x3d_state_dict, convert_slowfast_x3d_state_dict

from scaffold import REPO

PRESETS = ("x3d_xs", "x3d_s", "x3d_m", "x3d_l")
CONFIGS = str(REPO / "configs" / "Kinetics")
X3D_M_PARAMS_400 = 3_794_274


def _num_params(model):
    return sum(p.numel() for p in model.parameters())


def _cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


def _randomise(model, generator):
    """Non-trivial BN statistics/affines (incl. the zero-initialised ones), biases and classifier."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.normal_(0, 0.1, generator=generator)
                m.running_mean.normal_(0, 0.1, generator=generator)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            elif isinstance(m, (nn.Conv3d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0, 0.1, generator=generator)
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.05, generator=generator)


def _pytorchvideo_reference(frames, crop, depth_factor, num_classes, seed=0):
    """A randomised PyTorchVideo X3D returning logits (its eval-mode softmax removed)."""
    x3d_ref = pytest.importorskip("pytorchvideo.models.x3d")
    torch.manual_seed(seed)
    ref = x3d_ref.create_x3d(input_clip_length=frames, input_crop_size=crop,
                             depth_factor=depth_factor, model_num_class=num_classes)
    _randomise(ref, torch.Generator().manual_seed(seed))
    ref.blocks[-1].activation = None  # compare logits with logits
    return ref.eval()


# ----------------------------------------------------------------------------- sizes and presets
def test_x3d_m_parameter_count_matches_pytorchvideo_hub():
    assert _num_params(get_builder("x3d_m")(_cfg("MODEL.NUM_CLASSES", 400))) == X3D_M_PARAMS_400
    cfg = load_config(os.path.join(CONFIGS, "X3D_M.yaml"), ["MODEL.NUM_CLASSES", "400"])
    model = build_model(cfg)
    assert _num_params(model) == X3D_M_PARAMS_400
    assert model.head.pool_size == (16, 7, 7)


def test_preset_sizes_and_registration():
    counts = {name: _num_params(get_builder(name)(_cfg("MODEL.NUM_CLASSES", 400))) for name in PRESETS}
    assert counts == {"x3d_xs": X3D_M_PARAMS_400, "x3d_s": X3D_M_PARAMS_400,
                      "x3d_m": X3D_M_PARAMS_400, "x3d_l": 6_153_384}
    assert get_builder("x3d_xs").input_size == (4, 160, 160)
    assert get_builder("x3d_l").input_size == (16, 312, 312)
    assert get_builder("x3d").model_family == "x3d"
    # Presets ignore the X3D.* keys but honour MODEL.*.
    model = get_builder("x3d_l")(_cfg("X3D.DEPTH_FACTOR", 1.0, "MODEL.NUM_CLASSES", 7,
                                      "MODEL.DROPOUT_RATE", 0.2))
    assert [len(stage) for stage in model.stages] == [5, 10, 25, 15]
    assert model.head.fc.out_features == 7 and model.head.dropout.p == 0.2


def test_residual_blocks_start_as_identity_and_se_every_other_block():
    model = X3D(num_classes=5)
    blocks = [block for stage in model.stages for block in stage]
    assert all(torch.all(block.bn_c.weight == 0) for block in blocks)
    for stage in model.stages:
        assert [not isinstance(b.se, nn.Identity) for b in stage] == [i % 2 == 0 for i in range(len(stage))]
    # Stage 1 keeps 24 channels: strided projection without BN, as PyTorchVideo builds it.
    assert isinstance(model.stages[0][0].shortcut.bn, nn.Identity)
    assert isinstance(model.stages[1][0].shortcut.bn, nn.BatchNorm3d)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_forward_backward_on_tiny_clip(name):
    torch.manual_seed(0)
    model = get_builder(name)(_cfg("MODEL.NUM_CLASSES", 3))
    clip = torch.randn(2, 3, 2, 32, 32)  # stage 4 sees 1x1 positions: the clamped pool still works
    logits = model(clip)
    assert logits.shape == (2, 3)
    logits.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.stem.conv_xy.weight.grad.abs().sum() > 0


def test_generic_x3d_reads_config_keys_and_channels_last():
    cfg = _cfg("X3D.DEPTH_FACTOR", 1.0, "X3D.WIDTH_FACTOR", 1.0, "X3D.BN_LIN5", True,
               "X3D.CHANNELWISE_3x3x3", False, "X3D.DIM_C5", 64, "MODEL.NUM_CLASSES", 4,
               "BN.EPSILON", 1e-3, "DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 96)
    model = get_builder("x3d")(cfg).eval()
    assert [len(stage) for stage in model.stages] == [1, 2, 5, 3]
    assert model.stem.conv_xy.out_channels == 16  # round_width(12, 1.0)
    assert model.stages[0][0].conv_b.groups == 1
    assert model.head.lin5.out_channels == 64 and isinstance(model.head.lin5_bn, nn.BatchNorm3d)
    assert model.stem.bn.eps == 1e-3 and model.head.pool_size == (4, 3, 3)
    clip = torch.randn(2, 3, 4, 96, 96)
    with torch.no_grad():
        expected = model(clip)
        model = model.to(memory_format=torch.channels_last_3d)
        actual = model(clip.contiguous(memory_format=torch.channels_last_3d))
    assert actual.shape == (2, 4)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- configs
def test_configs_load_with_the_recipe():
    m = load_config(os.path.join(CONFIGS, "X3D_M.yaml"))
    assert (m.MODEL.ARCH, m.MODEL.MODEL_NAME, m.MODEL.NUM_CLASSES) == ("x3d", "x3d", 20)
    assert (m.TRAIN.BATCH_SIZE, m.TEST.BATCH_SIZE) == (64, 64)
    assert (m.DATA.TRAIN_CROP_SIZE, m.DATA.TEST_CROP_SIZE, m.DATA.NUM_FRAMES) == (224, 256, 16)
    assert (m.BENCHMARK.TRACK, m.BENCHMARK.TARGET_TOP1, m.MODEL.DROPOUT_RATE) == ("cnn", 16.75, 0.5)
    assert (m.SOLVER.BASE_LR, m.SOLVER.MAX_EPOCH, m.DATA.FRAME_RATE) == (0.01, 20, 15.0)
    expected = {"XS": (4, 160, 160, 182, 2.2), "S": (13, 160, 160, 182, 2.2),
                "L": (16, 312, 312, 356, 5.0)}
    for size, values in expected.items():
        cfg = load_config(os.path.join(CONFIGS, f"X3D_{size}.yaml"))
        assert (cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE,
                cfg.DATA.TEST_MIN_SHORT_SIDE_SCALE, cfg.X3D.DEPTH_FACTOR) == values
        assert cfg.BENCHMARK.TRACK == "" and cfg.MODEL.MODEL_NAME == "x3d"


# ----------------------------------------------------------------------------- fidelity
@pytest.mark.extras
def test_x3d_m_matches_pytorchvideo_create_x3d():
    """Converted random PyTorchVideo X3D-M weights give the same logits (fp32, CPU, eval)."""
    ref = _pytorchvideo_reference(16, 224, 2.2, 400)
    model = get_builder("x3d_m")(_cfg("MODEL.NUM_CLASSES", 400))
    model.load_state_dict(convert_pytorchvideo_x3d_state_dict(ref.state_dict()))
    model.eval()
    clip = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = ref(clip), model(clip)
    assert expected.std() > 0.1  # the comparison is not between near-constant outputs
    max_abs_diff = (actual - expected).abs().max().item()
    print(f"X3D-M vs PyTorchVideo max abs diff: {max_abs_diff:.3g}")
    assert max_abs_diff <= 1e-4


@pytest.mark.extras
def test_sliding_window_head_matches_pytorchvideo_on_larger_clips():
    """X3D-XS (pool 4x5x5) on 192 px clips: both models average a 2x2 window of positions."""
    ref = _pytorchvideo_reference(4, 160, 2.2, 10, seed=2)
    model = get_builder("x3d_xs")(_cfg("MODEL.NUM_CLASSES", 10))
    model.load_state_dict(convert_pytorchvideo_x3d_state_dict({"model_state": ref.state_dict()}))
    model.eval()
    clip = torch.randn(1, 3, 4, 192, 192, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, actual = ref(clip), model(clip)
        globally_pooled = model.head.pool_size
        model.head.pool_size = None
        different = model(clip)
        model.head.pool_size = globally_pooled
    assert (actual - expected).abs().max().item() <= 1e-4
    assert (different - expected).abs().max().item() > 1e-3  # the window really matters


# ----------------------------------------------------------------------------- converters
@pytest.mark.extras
def test_pytorchvideo_converter_rejects_missing_and_unexpected_keys():
    one_tensor = {"blocks.1.res_blocks.0.branch2.conv_a.weight": torch.zeros(54, 24, 1, 1, 1)}
    with pytest.raises(ValueError, match="missing .*stem.conv_xy.weight"):
        convert_pytorchvideo_x3d_state_dict(one_tensor)
    ref = _pytorchvideo_reference(4, 160, 1.0, 4)
    good = ref.state_dict()
    convert_pytorchvideo_x3d_state_dict(good)  # complete: accepted
    extra = dict(good, **{"blocks.5.extra_layer.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected key.*blocks.5.extra_layer.weight"):
        convert_pytorchvideo_x3d_state_dict(extra)
    truncated = {k: v for k, v in good.items() if "blocks.3.res_blocks.1.branch2.norm_b.0" not in k}
    with pytest.raises(ValueError, match=r"missing .*stages\.2\.1\.bn_b\.weight"):
        convert_pytorchvideo_x3d_state_dict(truncated)


def _to_slowfast_names(state_dict):
    """vbench X3D keys -> SlowFast X3D keys (the inverse of the documented mapping)."""
    renamed = {}
    for key, value in state_dict.items():
        key = re.sub(r"^stem\.conv_xy\.", "s1.pathway0_stem.conv_xy.", key)
        key = re.sub(r"^stem\.conv_t\.", "s1.pathway0_stem.conv.", key)
        key = re.sub(r"^stem\.bn\.", "s1.pathway0_stem.bn.", key)
        key = re.sub(r"^stages\.(\d)\.(\d+)\.",
                     lambda m: f"s{int(m.group(1)) + 2}.pathway0_res{m.group(2)}.", key)
        key = key.replace(".shortcut.conv.", ".branch1.").replace(".shortcut.bn.", ".branch1_bn.")
        key = re.sub(r"\.conv_([abc])\.", r".branch2.\1.", key)
        key = re.sub(r"\.bn_([abc])\.", r".branch2.\1_bn.", key)
        key = key.replace(".se.", ".branch2.se.")
        for ours, theirs in (("conv5", "conv_5"), ("bn5", "conv_5_bn"), ("lin5", "lin_5"), ("fc", "projection")):
            key = key.replace(f"head.{ours}.", f"head.{theirs}.")
        renamed["module." + key] = value
    return renamed


def test_slowfast_converter_folds_the_extra_shortcut_bn():
    """SlowFast's res2 shortcut has a BN that PyTorchVideo's lacks; folding it is exact in eval."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(4)
    slowfast_like = X3D(num_classes=6, depth_factor=1.0, head_pool_size=None)
    slowfast_like.stages[0][0].shortcut.bn = nn.BatchNorm3d(24)  # SlowFast's extra BN
    _randomise(slowfast_like, generator)
    slowfast_like.eval()
    checkpoint = {"model_state": _to_slowfast_names(slowfast_like.state_dict())}
    assert "module.s2.pathway0_res0.branch1_bn.running_var" in checkpoint["model_state"]

    model = X3D(num_classes=6, depth_factor=1.0, head_pool_size=None)
    model.load_state_dict(convert_slowfast_x3d_state_dict(checkpoint))  # strict: keys line up
    model.eval()
    clip = torch.randn(2, 3, 4, 64, 64, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), slowfast_like(clip), rtol=1e-4, atol=1e-4)

    del checkpoint["model_state"]["module.head.projection.bias"]
    with pytest.raises(ValueError, match="SlowFast .*missing .*head.fc.bias"):
        convert_slowfast_x3d_state_dict(checkpoint)
