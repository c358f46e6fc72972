"""X3D (Feichtenhofer, CVPR 2020), architecturally identical to PyTorchVideo's `create_x3d`.

    stem    1x3x3 conv (stride 2 in space) -> depthwise 5x1x1 conv -> BN -> ReLU
    stages  [1, 2, 5, 3] x DEPTH_FACTOR bottleneck blocks (1x1x1 -> depthwise 3x3x3 -> 1x1x1),
            squeeze-excitation in every other block, swish after the 3x3x3 conv
    head    1x1x1 conv -> BN -> ReLU -> avg pool -> 1x1x1 conv (2048) -> ReLU -> dropout -> linear

Head pooling: PyTorchVideo and SlowFast pool with a fixed AvgPool3d(kernel = the training clip's
feature size, stride 1), then classify every pooled position and average. vbench does the same
(so a 256 px evaluation crop of a model trained at 224 px gives the reference's 2x2 sliding
window), except that the kernel is clamped to the feature size, so smaller clips work too
(they get a global average). Positions are averaged before the final linear layer, which is
the same as averaging logits because the layer is affine. The model returns logits; the
reference heads apply softmax in eval mode (before averaging positions).

BN: every BN uses BN.EPSILON / BN.MOMENTUM; PyTorchVideo builds its shortcut BNs with PyTorch's
defaults whatever it is given, which is the same at the recipe's values (1e-5, 0.1).

Weights: `x3d_convert.py` maps PyTorchVideo and SlowFast checkpoints onto this file's module names.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers.depthwise import depthwise_conv, set_depthwise_impl
from .registry import register_model
from .x3d_convert import convert_pytorchvideo_x3d_state_dict, convert_slowfast_x3d_state_dict

STAGE_DEPTHS = (1, 2, 5, 3)
SE_RATIO = 0.0625

CONVERTERS = {"pytorchvideo": convert_pytorchvideo_x3d_state_dict,
              "slowfast": convert_slowfast_x3d_state_dict}


def round_width(width, multiplier, min_width=8, divisor=8):
    """Channels after a width multiplier, rounded to a multiple of `divisor` (X3D's rule)."""
    if not multiplier:
        return width
    width *= multiplier
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats, multiplier):
    return int(math.ceil(multiplier * repeats)) if multiplier else repeats


class SqueezeExcite(nn.Module):
    """Channel gate: global average -> 1x1x1 conv -> ReLU -> 1x1x1 conv -> sigmoid."""

    def __init__(self, channels, reduced):
        super().__init__()
        self.fc1 = nn.Conv3d(channels, reduced, 1, bias=True)
        self.fc2 = nn.Conv3d(reduced, channels, 1, bias=True)

    def forward(self, x):
        gate = x.mean(dim=(2, 3, 4), keepdim=True)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate), inplace=True)))
        return x * gate


class X3DStem(nn.Module):
    def __init__(self, in_channels, out_channels, temporal_kernel=5, norm=nn.BatchNorm3d):
        super().__init__()
        self.conv_xy = nn.Conv3d(in_channels, out_channels, (1, 3, 3), stride=(1, 2, 2),
                                 padding=(0, 1, 1), bias=False)
        self.conv_t = nn.Conv3d(out_channels, out_channels, (temporal_kernel, 1, 1),
                                padding=(temporal_kernel // 2, 0, 0), groups=out_channels,
                                bias=False)
        self.bn = norm(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.depthwise_impl = "default"

    def forward(self, x):
        return self.act(self.bn(depthwise_conv(self.conv_t, self.conv_xy(x), self.depthwise_impl)))


class Shortcut(nn.Module):
    """Strided 1x1x1 projection; BN only when the width changes (as in PyTorchVideo)."""

    def __init__(self, in_channels, out_channels, stride, norm=nn.BatchNorm3d):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.bn = norm(out_channels) if in_channels != out_channels else nn.Identity()

    def forward(self, x):
        return self.bn(self.conv(x))


class X3DBlock(nn.Module):
    """Bottleneck residual block; the 3x3x3 conv carries the stride."""

    def __init__(self, in_channels, inner_channels, out_channels, stride=(1, 1, 1),
                 use_se=False, channelwise=True, norm=nn.BatchNorm3d):
        super().__init__()
        needs_projection = in_channels != out_channels or math.prod(stride) > 1
        self.shortcut = Shortcut(in_channels, out_channels, stride, norm) if needs_projection else None
        self.conv_a = nn.Conv3d(in_channels, inner_channels, 1, bias=False)
        self.bn_a = norm(inner_channels)
        self.act_a = nn.ReLU(inplace=True)
        self.conv_b = nn.Conv3d(inner_channels, inner_channels, 3, stride=stride, padding=1,
                                groups=inner_channels if channelwise else 1, bias=False)
        self.bn_b = norm(inner_channels)
        se_channels = round_width(inner_channels, SE_RATIO)
        self.se = SqueezeExcite(inner_channels, se_channels) if use_se else nn.Identity()
        self.act_b = nn.SiLU(inplace=True)  # swish
        self.conv_c = nn.Conv3d(inner_channels, out_channels, 1, bias=False)
        self.bn_c = norm(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.depthwise_impl = "default"

    def forward(self, x):
        shortcut = x if self.shortcut is None else self.shortcut(x)
        x = self.act_a(self.bn_a(self.conv_a(x)))
        if self.conv_b.groups > 1:
            conv_b = depthwise_conv(self.conv_b, x, self.depthwise_impl)
        else:
            conv_b = self.conv_b(x)
        x = self.act_b(self.se(self.bn_b(conv_b)))
        x = self.bn_c(self.conv_c(x))
        return self.act(x + shortcut)


class X3DHead(nn.Module):
    def __init__(self, in_channels, inner_channels, hidden_channels, num_classes, pool_size=None,
                 dropout_rate=0.5, bn_lin5=False, norm=nn.BatchNorm3d):
        super().__init__()
        self.pool_size = tuple(pool_size) if pool_size else None
        self.conv5 = nn.Conv3d(in_channels, inner_channels, 1, bias=False)
        self.bn5 = norm(inner_channels)
        self.lin5 = nn.Conv3d(inner_channels, hidden_channels, 1, bias=False)
        self.lin5_bn = norm(hidden_channels) if bn_lin5 else nn.Identity()
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.fc = nn.Linear(hidden_channels, num_classes)

    def pool(self, x):
        if self.pool_size is None:
            return x.mean(dim=(2, 3, 4), keepdim=True)
        kernel = tuple(min(k, s) for k, s in zip(self.pool_size, x.shape[2:]))
        return F.avg_pool3d(x, kernel, stride=1)

    def forward(self, x):
        x = F.relu(self.bn5(self.conv5(x)), inplace=True)
        x = F.relu(self.lin5_bn(self.lin5(self.pool(x))), inplace=True)
        x = x.mean(dim=(2, 3, 4))  # one position at the training size; >1 when evaluating larger
        return self.fc(self.dropout(x))


class X3D(nn.Module):
    """X3D network. Defaults are X3D-M; `head_pool_size` is (T, ceil(H/32), ceil(W/32))."""

    repeated_blocks = (X3DBlock,)  # what MODEL.COMPILE compiles (vbench/models/compile.py)

    def __init__(self, num_classes=400, width_factor=2.0, depth_factor=2.2,
                 bottleneck_factor=2.25, dim_c1=12, dim_c5=2048, scale_res2=False, bn_lin5=False,
                 channelwise_3x3x3=True, dropout_rate=0.5, head_pool_size=(16, 7, 7),
                 in_channels=3, bn_eps=1e-5, bn_momentum=0.1, depthwise_impl="default"):
        super().__init__()

        def norm(channels):
            return nn.BatchNorm3d(channels, eps=bn_eps, momentum=bn_momentum)

        stem_channels = round_width(dim_c1, width_factor)
        self.stem = X3DStem(in_channels, stem_channels, norm=norm)
        base = round_width(dim_c1, 2.0) if scale_res2 else dim_c1
        stage_bases = [base]
        for _ in STAGE_DEPTHS[1:]:
            stage_bases.append(round_width(stage_bases[-1], 2.0))

        stages, in_ch = [], stem_channels
        for base_depth, base_width in zip(STAGE_DEPTHS, stage_bases):
            out_ch = round_width(base_width, width_factor)
            inner_ch = int(bottleneck_factor * out_ch)
            blocks = [
                X3DBlock(in_ch if i == 0 else out_ch, inner_ch, out_ch,
                         stride=(1, 2, 2) if i == 0 else (1, 1, 1), use_se=(i % 2 == 0),
                         channelwise=channelwise_3x3x3, norm=norm)
                for i in range(round_repeats(base_depth, depth_factor))
            ]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.head = X3DHead(in_ch, inner_ch, dim_c5, num_classes, head_pool_size,
                            dropout_rate, bn_lin5, norm)
        self.num_classes = num_classes
        set_depthwise_impl(self, depthwise_impl)
        self.init_weights()

    def init_weights(self, fc_std=0.01):
        """PyTorchVideo's ResNet init: He (fan-out) convs, N(0, 0.01) linear, zero final BN."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=fc_std)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, X3DBlock):
                nn.init.zeros_(m.bn_c.weight)  # each residual block starts as the identity

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def head_pool_size(num_frames, crop_size):
    """The reference heads' AvgPool3d kernel for clips of `num_frames` x `crop_size`^2."""
    side = int(math.ceil(crop_size / 32))
    return (num_frames, side, side)


def _common_kwargs(cfg):
    # MODEL.DEPTHWISE_CONV "auto" is resolved at launch (vbench/engine/resources.py); a model
    # built from an unresolved config takes the default implementation.
    impl = cfg.MODEL.DEPTHWISE_CONV
    return dict(num_classes=cfg.MODEL.NUM_CLASSES, dropout_rate=cfg.MODEL.DROPOUT_RATE,
                in_channels=cfg.DATA.INPUT_CHANNEL_NUM[0], bn_eps=cfg.BN.EPSILON,
                bn_momentum=cfg.BN.MOMENTUM, depthwise_impl="default" if impl == "auto" else impl)


@register_model("x3d", family="x3d", input_size=(16, 224, 224), converters=CONVERTERS)
def x3d(cfg):
    """X3D from the X3D.* keys; the head pools over DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE."""
    return X3D(width_factor=cfg.X3D.WIDTH_FACTOR, depth_factor=cfg.X3D.DEPTH_FACTOR,
               bottleneck_factor=cfg.X3D.BOTTLENECK_FACTOR, dim_c1=cfg.X3D.DIM_C1,
               dim_c5=cfg.X3D.DIM_C5, scale_res2=cfg.X3D.SCALE_RES2, bn_lin5=cfg.X3D.BN_LIN5,
               channelwise_3x3x3=cfg.X3D.CHANNELWISE_3x3x3,
               head_pool_size=head_pool_size(cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE),
               **_common_kwargs(cfg))


# The PyTorchVideo hub presets (XS, S and M are the same network at other clip sizes): X3D.* keys
# are ignored, MODEL.* and BN.* are honoured.
def x3d_preset(cfg, frames, crop, depth_factor):
    return X3D(depth_factor=depth_factor, head_pool_size=head_pool_size(frames, crop),
               **_common_kwargs(cfg))


@register_model("x3d_xs", family="x3d", input_size=(4, 160, 160), converters=CONVERTERS)
def x3d_xs(cfg):
    """X3D-XS: 4 frames x 160 px, depth factor 2.2."""
    return x3d_preset(cfg, frames=4, crop=160, depth_factor=2.2)


@register_model("x3d_s", family="x3d", input_size=(13, 160, 160), converters=CONVERTERS)
def x3d_s(cfg):
    """X3D-S: 13 frames x 160 px, depth factor 2.2."""
    return x3d_preset(cfg, frames=13, crop=160, depth_factor=2.2)


@register_model("x3d_m", family="x3d", input_size=(16, 224, 224), converters=CONVERTERS)
def x3d_m(cfg):
    """X3D-M: 16 frames x 224 px, depth factor 2.2."""
    return x3d_preset(cfg, frames=16, crop=224, depth_factor=2.2)


@register_model("x3d_l", family="x3d", input_size=(16, 312, 312), converters=CONVERTERS)
def x3d_l(cfg):
    """X3D-L: 16 frames x 312 px, depth factor 5.0."""
    return x3d_preset(cfg, frames=16, crop=312, depth_factor=5.0)
