"""torchvision's video classification models, built from scratch (never downloaded).

Each builder calls `torchvision.models.video.<name>(weights=None, num_classes=...)`, except the two
MViTs, built from torchvision's `MViT` class with the same blocks (the same state dict at 16 x 224^2).
Pretrained weights come only from a local file through MODEL.WEIGHTS (see `vbench.models.weights`).

What the config controls:
- every model: MODEL.NUM_CLASSES;
- models whose torchvision head has dropout (s3d, mvit_v1_b, mvit_v2_s): MODEL.DROPOUT_RATE;
- mvit_v1_b / mvit_v2_s: their position embeddings have a fixed size, so they are built for the
  training clip, DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE^2 (torchvision's own default is 16 x 224^2,
  the size its pretrained weights need); DATA.TEST_CROP_SIZE must equal the training crop.
The ResNets, S3D and Swin3D accept any clip size. Stochastic depth and normalisation layers keep
torchvision's defaults (BN.* keys do not apply to these models).
"""
import torchvision.models.video as tv_video
from torchvision.models.video.mvit import MSBlockConfig

from vbench.errors import ConfigError

from .registry import register_model

FAMILY = "torchvision"


# MViT v1-B and v2-S as torchvision defines them: 16 blocks; stages start at blocks 1, 3 and 14,
# where heads double (1 -> 8), width doubles (96 -> 768) and queries are pooled by (1, 2, 2). Key/value
# pooling starts at (1, 8, 8) and shrinks with each query pooling, so keys keep one resolution.
# v1 widens in the block before a stage and pools queries only where it strides; v2 widens in the
# first block of the stage and pools queries (stride 1) everywhere.
_MVIT_DEPTH = 16
_MVIT_STAGE_STARTS = (1, 3, 14)
_MVIT_OPTIONS = {  # torchvision's MViT switches for each version
    "mvit_v1_b": dict(residual_pool=False, residual_with_cls_embed=False, rel_pos_embed=False,
                      proj_after_attn=False),
    "mvit_v2_s": dict(residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True,
                      proj_after_attn=True),
}
_MVIT_STOCHASTIC_DEPTH = 0.2  # torchvision's default for both


def mvit_block_setting(name):
    """The list of torchvision `MSBlockConfig` for "mvit_v1_b" or "mvit_v2_s"."""
    is_v2 = name == "mvit_v2_s"
    settings, dim, heads, stride_kv = [], 96, 1, [1, 8, 8]
    for i in range(_MVIT_DEPTH):
        starts_stage = i in _MVIT_STAGE_STARTS
        if starts_stage:
            heads *= 2
            stride_kv = [max(s // q, 1) for s, q in zip(stride_kv, (1, 2, 2))]
        widens = starts_stage if is_v2 else (i + 1) in _MVIT_STAGE_STARTS
        out_dim = dim * 2 if widens else dim
        if starts_stage:
            kernel_q, stride_q = [3, 3, 3], [1, 2, 2]
        else:
            kernel_q, stride_q = ([3, 3, 3], [1, 1, 1]) if is_v2 else ([], [])
        settings.append(MSBlockConfig(
            num_heads=heads, input_channels=dim, output_channels=out_dim, kernel_q=kernel_q,
            kernel_kv=[3, 3, 3], stride_q=stride_q, stride_kv=list(stride_kv),
        ))
        dim = out_dim
    return settings


def build_torchvision_mvit(name, cfg):
    """torchvision's MViT built for the clip DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE^2.

    torchvision's `mvit_v1_b()` / `mvit_v2_s()` fix the clip at 16 x 224^2; the `MViT` class itself
    takes any size, so we give it the same blocks for the configured one.
    """
    crop = cfg.DATA.TRAIN_CROP_SIZE
    if cfg.DATA.TEST_CROP_SIZE != crop:  # fail now, not at the first evaluation
        raise ConfigError(
            f"{name} has position embeddings of a fixed size: built for DATA.TRAIN_CROP_SIZE {crop}, "
            f"it cannot take DATA.TEST_CROP_SIZE {cfg.DATA.TEST_CROP_SIZE} crops; set "
            f"DATA.TEST_CROP_SIZE {crop}.")
    return tv_video.MViT(
        spatial_size=(crop, crop),
        temporal_size=cfg.DATA.NUM_FRAMES,
        block_setting=mvit_block_setting(name),
        dropout=cfg.MODEL.DROPOUT_RATE,
        stochastic_depth_prob=_MVIT_STOCHASTIC_DEPTH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        **_MVIT_OPTIONS[name],
    )


def torchvision_model(constructor, cfg, has_dropout=False):
    """`torchvision.models.video.<constructor>`, randomly initialised, for MODEL.NUM_CLASSES."""
    kwargs = {"dropout": cfg.MODEL.DROPOUT_RATE} if has_dropout else {}
    return constructor(weights=None, num_classes=cfg.MODEL.NUM_CLASSES, **kwargs)


# Each input size is the model's usual clip (T, H, W) from torchvision's docs.
@register_model("r3d_18", family=FAMILY, input_size=(16, 112, 112))
def r3d_18(cfg):
    """torchvision's R3D-18."""
    return torchvision_model(tv_video.r3d_18, cfg)


@register_model("mc3_18", family=FAMILY, input_size=(16, 112, 112))
def mc3_18(cfg):
    """torchvision's MC3-18."""
    return torchvision_model(tv_video.mc3_18, cfg)


@register_model("r2plus1d_18", family=FAMILY, input_size=(16, 112, 112))
def r2plus1d_18(cfg):
    """torchvision's R(2+1)D-18."""
    return torchvision_model(tv_video.r2plus1d_18, cfg)


@register_model("s3d", family=FAMILY, input_size=(16, 224, 224))
def s3d(cfg):
    """torchvision's S3D (MODEL.DROPOUT_RATE in its head)."""
    return torchvision_model(tv_video.s3d, cfg, has_dropout=True)


@register_model("mvit_v1_b", family=FAMILY, input_size=(16, 224, 224))
def mvit_v1_b(cfg):
    """torchvision's MViT v1-B, built for the training clip."""
    return build_torchvision_mvit("mvit_v1_b", cfg)


@register_model("mvit_v2_s", family=FAMILY, input_size=(16, 224, 224))
def mvit_v2_s(cfg):
    """torchvision's MViT v2-S, built for the training clip."""
    return build_torchvision_mvit("mvit_v2_s", cfg)


@register_model("swin3d_t", family=FAMILY, input_size=(16, 224, 224))
def swin3d_t(cfg):
    """torchvision's Swin3D-T."""
    return torchvision_model(tv_video.swin3d_t, cfg)


@register_model("swin3d_s", family=FAMILY, input_size=(16, 224, 224))
def swin3d_s(cfg):
    """torchvision's Swin3D-S."""
    return torchvision_model(tv_video.swin3d_s, cfg)


@register_model("swin3d_b", family=FAMILY, input_size=(16, 224, 224))
def swin3d_b(cfg):
    """torchvision's Swin3D-B."""
    return torchvision_model(tv_video.swin3d_b, cfg)
