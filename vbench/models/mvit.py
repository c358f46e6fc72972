"""Multiscale Vision Transformers v1 (Fan et al., 2021, https://arxiv.org/abs/2104.11227).

`MViT` is built from a list of `BlockSpec`s; `block_specs(...)` derives them from SlowFast's
MVIT.* keys (DIM_MUL, HEAD_MUL, POOL_Q_STRIDE, POOL_KV_STRIDE(_ADAPTIVE), POOL_KVQ_KERNEL, ...).
Registered models:

- "mvit": everything from MVIT.*, DATA.NUM_FRAMES and DATA.TRAIN_CROP_SIZE;
- "mvit_b_16x4" / "mvit_b_32x3": MViT-B as in the PyTorchVideo model hub (16 blocks, 96 -> 768
  channels), whatever MVIT.* says; only MODEL.NUM_CLASSES, MODEL.DROPOUT_RATE (head) and
  MVIT.DROPOUT_RATE come from the config.

MViT-B 16x4 has 36,610,672 parameters at 400 classes, like torchvision's `mvit_v1_b`. The model
returns logits (no softmax). Converters from torchvision, PyTorchVideo and SlowFast state dicts
are in `vbench.models.mvit_convert`.
"""
import torch
from torch import nn

from vbench.errors import ConfigError
from vbench.models.layers.depthwise import set_depthwise_impl
from vbench.models.mvit_blocks import BlockSpec, MultiScaleBlock, PatchEmbed, round_width
from vbench.models.mvit_convert import (
    convert_pytorchvideo_mvit_state_dict,
    convert_slowfast_mvit_state_dict,
    convert_torchvision_mvit_state_dict,
)
from vbench.models.registry import register_model

CONVERTERS = {"pytorchvideo": convert_pytorchvideo_mvit_state_dict,
              "slowfast": convert_slowfast_mvit_state_dict,
              "torchvision": convert_torchvision_mvit_state_dict}

# MViT-B 16x4 (SlowFast configs/Kinetics/MVIT_B_16x4_CONV.yaml, PyTorchVideo `mvit_base_16x4`).
MVIT_B_16X4 = {
    "DEPTH": 16, "EMBED_DIM": 96, "NUM_HEADS": 1,
    "DIM_MUL": [[1, 2.0], [3, 2.0], [14, 2.0]],
    "HEAD_MUL": [[1, 2.0], [3, 2.0], [14, 2.0]],
    "POOL_Q_STRIDE": [[1, 1, 2, 2], [3, 1, 2, 2], [14, 1, 2, 2]],
    "POOL_KV_STRIDE": [], "POOL_KV_STRIDE_ADAPTIVE": [1, 8, 8], "POOL_KVQ_KERNEL": [3, 3, 3],
    "PATCH_KERNEL": [3, 7, 7], "PATCH_STRIDE": [2, 4, 4], "PATCH_PADDING": [1, 3, 3],
    "MLP_RATIO": 4.0, "QKV_BIAS": True, "DROPPATH_RATE": 0.2, "MODE": "conv",
    "POOL_FIRST": False, "CLS_EMBED_ON": True, "SEP_POS_EMBED": True, "NORM": "layernorm",
}
# MViT-B 32x3 (PyTorchVideo `mvit_base_32x3`): the same network on 32 frames; stochastic depth
# 0.3 as in SlowFast's 32x3 recipe.
MVIT_B_32X3 = {**MVIT_B_16X4, "DROPPATH_RATE": 0.3}

# Epsilon of the LayerNorms after q/k/v pooling. PyTorchVideo (the reference definition of the
# benchmark models) and early SlowFast use nn.LayerNorm's default 1e-5 there; torchvision uses
# 1e-6 like every other LayerNorm of the network.
POOL_NORM_EPS = 1e-5
POOL_NORM_NAMES = ("norm_q", "norm_k", "norm_v")


class MViT(nn.Module):
    """Patch embedding + position embeddings (+ class token), MViT blocks, LayerNorm, linear head.

    Args:
        specs: one `BlockSpec` per block.
        input_size: (T, H, W) of the clips; fixes the patch grid and the position embeddings.
        mode: q/k/v pooling, "conv" (depthwise Conv3d + LayerNorm), "max" or "avg".
        cls_embed_on: prepend a class token and classify from it (else mean of all tokens).
        sep_pos_embed: separate spatial and temporal position embeddings (summed).
        dropout: dropout after the position embedding and inside blocks; head_dropout: before
            the classifier.
    """

    repeated_blocks = (MultiScaleBlock,)  # what MODEL.COMPILE compiles (vbench/models/compile.py)

    def __init__(self, specs, input_size=(16, 224, 224), in_chans=3, num_classes=400,
                 patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4), patch_padding=(1, 3, 3),
                 mlp_ratio=4.0, qkv_bias=True, mode="conv", pool_first=False, cls_embed_on=True,
                 sep_pos_embed=True, dropout=0.0, head_dropout=0.5, norm_eps=1e-6,
                 pool_norm_eps=POOL_NORM_EPS, depthwise_impl="default"):
        super().__init__()
        embed_dim = specs[0].dim
        self.input_size = tuple(input_size)
        self.patch_grid = tuple(
            (size + 2 * pad - kernel) // stride + 1
            for size, kernel, stride, pad in zip(input_size, patch_kernel, patch_stride, patch_padding)
        )
        if min(self.patch_grid) < 1:
            raise ValueError(f"MViT input {tuple(input_size)} is smaller than one patch "
                             f"(MVIT.PATCH_KERNEL {list(patch_kernel)}).")
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_kernel, patch_stride, patch_padding)
        self._init_position(embed_dim, cls_embed_on, sep_pos_embed)
        self.pos_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            MultiScaleBlock(spec, mlp_ratio, qkv_bias, mode, pool_first, cls_embed_on, dropout,
                            norm_eps, pool_norm_eps)
            for spec in specs
        )
        self.norm = nn.LayerNorm(specs[-1].dim_out, eps=norm_eps)
        self.head_drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.head = nn.Linear(specs[-1].dim_out, num_classes)
        set_depthwise_impl(self, depthwise_impl)
        self._init_weights()

    def _init_position(self, dim, cls_embed_on, sep_pos_embed):
        t, h, w = self.patch_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_embed_on else None
        self.sep_pos_embed = sep_pos_embed
        if sep_pos_embed:
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, dim))
            self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim)) if cls_embed_on else None
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, t * h * w + int(cls_embed_on), dim))

    def _init_weights(self):
        for param in self.parameters(recurse=False):
            nn.init.trunc_normal_(param, std=0.02)  # class token and position embeddings
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def position_embedding(self):
        """1 x N x C embedding added to the tokens (class token position first)."""
        if not self.sep_pos_embed:
            return self.pos_embed
        spatial, temporal = self.pos_embed_spatial, self.pos_embed_temporal
        # Token t*H*W + s gets temporal[t] + spatial[s].
        pos = (temporal[:, :, None, :] + spatial[:, None, :, :]).flatten(1, 2)
        if self.pos_embed_class is not None:
            pos = torch.cat((self.pos_embed_class, pos), dim=1)
        return pos

    def forward(self, x):
        input_thw = tuple(x.shape[2:])
        x, thw = self.patch_embed(x)
        if thw != self.patch_grid:
            raise ValueError(
                f"MViT was built for clips of T x H x W = {self.input_size} (DATA.NUM_FRAMES, "
                f"DATA.TRAIN_CROP_SIZE) and got {input_thw}: its position embeddings fit only the "
                f"{self.patch_grid} patch grid. Evaluate with DATA.TEST_CROP_SIZE = "
                f"DATA.TRAIN_CROP_SIZE and the training DATA.NUM_FRAMES."
            )
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x + self.position_embedding())
        for block in self.blocks:
            x, thw = block(x, thw)
        x = self.norm(x)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        return self.head(self.head_drop(x))


def set_pool_norm_eps(model, eps):
    """Set the epsilon of every LayerNorm after q/k/v pooling (1e-6 reproduces torchvision's
    `mvit_v1_b` exactly; vbench builds 1e-5 like PyTorchVideo). Returns how many were set."""
    norms = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in POOL_NORM_NAMES]
    for norm in norms:
        norm.eps = eps
    return len(norms)


def _indexed(key, entries, depth, width, limit):
    """{block: values} from SlowFast's [[block, v1, ...], ...] lists, checked."""
    table = {}
    for entry in entries:
        entry = list(entry)
        if len(entry) != width or not 0 <= int(entry[0]) < limit:
            raise ConfigError(
                f"MVIT.{key} entry {entry} must be [block, {', '.join(['value'] * (width - 1))}] "
                f"with block in [0, {limit}) (MVIT.DEPTH = {depth})."
            )
        table[int(entry[0])] = entry[1:]
    return table


def _kv_strides(settings, depth, q_strides):
    adaptive = list(settings["POOL_KV_STRIDE_ADAPTIVE"])
    explicit = _indexed("POOL_KV_STRIDE", settings["POOL_KV_STRIDE"], depth, 4, depth)
    if not adaptive:
        return {i: [int(s) for s in v] for i, v in explicit.items()}
    if explicit:
        raise ConfigError("set only one of MVIT.POOL_KV_STRIDE and MVIT.POOL_KV_STRIDE_ADAPTIVE.")
    if len(adaptive) != 3:
        raise ConfigError(f"MVIT.POOL_KV_STRIDE_ADAPTIVE must be [t, h, w], got {adaptive}.")
    # The initial key/value stride shrinks wherever queries are pooled (SlowFast's rule).
    strides, stride = {}, [int(s) for s in adaptive]
    for i in range(depth):
        if i in q_strides:
            stride = [max(s // int(q), 1) for s, q in zip(stride, q_strides[i])]
        strides[i] = list(stride)
    return strides


def block_specs(settings):
    """One `BlockSpec` per block from SlowFast-named MVIT settings (a dict or `cfg.MVIT`)."""
    depth = int(settings["DEPTH"])
    if depth < 1:
        raise ConfigError(f"MVIT.DEPTH must be >= 1, got {depth}.")
    dim_mul = [1.0] * (depth + 1)
    head_mul = [1.0] * (depth + 1)
    for i, (mul,) in _indexed("DIM_MUL", settings["DIM_MUL"], depth, 2, depth + 1).items():
        dim_mul[i] = float(mul)
    for i, (mul,) in _indexed("HEAD_MUL", settings["HEAD_MUL"], depth, 2, depth + 1).items():
        head_mul[i] = float(mul)
    q_strides = _indexed("POOL_Q_STRIDE", settings["POOL_Q_STRIDE"], depth, 4, depth)
    kv_strides = _kv_strides(settings, depth, q_strides)
    kernel = [int(k) for k in settings["POOL_KVQ_KERNEL"]]
    if kernel and len(kernel) != 3:
        raise ConfigError(f"MVIT.POOL_KVQ_KERNEL must be [] or [t, h, w], got {kernel}.")

    def kernel_for(stride):
        return tuple(kernel) if kernel else tuple(s + 1 if s > 1 else s for s in stride)

    rate = float(settings["DROPPATH_RATE"])
    heads, dim = int(settings["NUM_HEADS"]), int(settings["EMBED_DIM"])
    specs = []
    for i in range(depth):
        heads = round_width(heads, head_mul[i])
        dim = round_width(dim, dim_mul[i], divisor=heads)
        dim_out = round_width(dim, dim_mul[i + 1], divisor=round_width(heads, head_mul[i + 1]))
        stride_q = tuple(int(s) for s in q_strides.get(i, ()))
        stride_kv = tuple(kv_strides.get(i, ()))
        specs.append(BlockSpec(
            dim=dim, dim_out=dim_out, num_heads=heads,
            kernel_q=kernel_for(stride_q) if stride_q else (), stride_q=stride_q,
            kernel_kv=kernel_for(stride_kv) if stride_kv else (), stride_kv=stride_kv,
            drop_path=rate * i / (depth - 1) if depth > 1 else 0.0,
        ))
    return specs


def build_mvit(settings, input_size, num_classes=400, head_dropout=0.5, dropout=0.0, in_chans=3,
               depthwise_impl="default"):
    """An `MViT` from SlowFast-named MVIT settings (a dict or `cfg.MVIT`)."""
    if str(settings["NORM"]).lower() != "layernorm":
        raise ConfigError(f"MVIT.NORM {settings['NORM']!r} is not supported; use 'layernorm'.")
    if settings["MODE"] not in ("conv", "max", "avg"):
        raise ConfigError(f"MVIT.MODE {settings['MODE']!r}: choose 'conv', 'max' or 'avg'.")
    for key in ("PATCH_KERNEL", "PATCH_STRIDE", "PATCH_PADDING"):
        if len(settings[key]) != 3:
            raise ConfigError(f"MVIT.{key} must be [t, h, w], got {list(settings[key])}.")
    return MViT(
        block_specs(settings), input_size=input_size, in_chans=in_chans, num_classes=num_classes,
        patch_kernel=tuple(settings["PATCH_KERNEL"]), patch_stride=tuple(settings["PATCH_STRIDE"]),
        patch_padding=tuple(settings["PATCH_PADDING"]), mlp_ratio=float(settings["MLP_RATIO"]),
        qkv_bias=bool(settings["QKV_BIAS"]), mode=settings["MODE"],
        pool_first=bool(settings["POOL_FIRST"]), cls_embed_on=bool(settings["CLS_EMBED_ON"]),
        sep_pos_embed=bool(settings["SEP_POS_EMBED"]), dropout=float(dropout),
        head_dropout=float(head_dropout), depthwise_impl=depthwise_impl,
    )


def _build_from_cfg(cfg, settings, input_size):
    # MODEL.DEPTHWISE_CONV: "triton" runs the conv pooling through vbench's kernels; the other
    # values keep PyTorch's (the pooling is already contiguous on CUDA); "auto" is resolved at
    # launch (vbench/engine/resources.py).
    impl = "triton" if cfg.MODEL.DEPTHWISE_CONV == "triton" else "default"
    return build_mvit(settings, input_size, num_classes=cfg.MODEL.NUM_CLASSES,
                      head_dropout=cfg.MODEL.DROPOUT_RATE, dropout=cfg.MVIT.DROPOUT_RATE,
                      in_chans=cfg.DATA.INPUT_CHANNEL_NUM[0], depthwise_impl=impl)


@register_model("mvit", family="mvit", input_size=(16, 224, 224), converters=CONVERTERS)
def mvit(cfg):
    """MViT from the MVIT.* keys, on DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE^2 clips."""
    crop = cfg.DATA.TRAIN_CROP_SIZE
    return _build_from_cfg(cfg, cfg.MVIT, (cfg.DATA.NUM_FRAMES, crop, crop))


@register_model("mvit_b_16x4", family="mvit", input_size=(16, 224, 224), converters=CONVERTERS)
def mvit_b_16x4(cfg):
    """MViT-B 16x4 (16 frames, 224^2), independent of MVIT.*."""
    return _build_from_cfg(cfg, MVIT_B_16X4, (16, 224, 224))


@register_model("mvit_b_32x3", family="mvit", input_size=(32, 224, 224), converters=CONVERTERS)
def mvit_b_32x3(cfg):
    """MViT-B 32x3 (32 frames, 224^2), independent of MVIT.*."""
    return _build_from_cfg(cfg, MVIT_B_32X3, (32, 224, 224))
