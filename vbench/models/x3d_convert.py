"""Weight converters for `vbench.models.x3d`: PyTorchVideo `create_x3d` and SlowFast `X3D`
checkpoints renamed to vbench's module names (registered with the X3D models, used by
`vbench.models.weights.load_weights`)."""
import re

import torch

NUM_STAGES = 4  # X3D's res2-res5
_BN = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"
_BN_REQUIRED = ("weight", "bias", "running_mean", "running_var")
_WB = r"(?P<p>weight|bias)"

# PyTorchVideo `create_x3d` names -> vbench names (targets are str.format templates over the
# named groups; "stage" is renumbered). PyTorchVideo's stem calls its 1x3x3 spatial conv `conv_t`
# and its 5x1x1 temporal conv `conv_xy` (swapped), hence the crossed first rows.
_PTV_BLOCK = r"blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<block>\d+)\."
_PYTORCHVIDEO_RULES = [
    (r"blocks\.0\.conv\.conv_t\.weight", "stem.conv_xy.weight"),
    (r"blocks\.0\.conv\.conv_xy\.weight", "stem.conv_t.weight"),
    (rf"blocks\.0\.norm\.{_BN}", "stem.bn.{p}"),
    (_PTV_BLOCK + r"branch1_conv\.weight", "stages.{stage}.{block}.shortcut.conv.weight"),
    (_PTV_BLOCK + rf"branch1_norm\.{_BN}", "stages.{stage}.{block}.shortcut.bn.{p}"),
    (_PTV_BLOCK + r"branch2\.conv_(?P<x>[abc])\.weight", "stages.{stage}.{block}.conv_{x}.weight"),
    (_PTV_BLOCK + rf"branch2\.norm_(?P<x>[ac])\.{_BN}", "stages.{stage}.{block}.bn_{x}.{p}"),
    (_PTV_BLOCK + rf"branch2\.norm_b\.0\.{_BN}", "stages.{stage}.{block}.bn_b.{p}"),
    (_PTV_BLOCK + rf"branch2\.norm_b\.1\.block\.0\.{_WB}", "stages.{stage}.{block}.se.fc1.{p}"),
    (_PTV_BLOCK + rf"branch2\.norm_b\.1\.block\.2\.{_WB}", "stages.{stage}.{block}.se.fc2.{p}"),
    (r"blocks\.5\.pool\.pre_conv\.weight", "head.conv5.weight"),
    (rf"blocks\.5\.pool\.pre_norm\.{_BN}", "head.bn5.{p}"),
    (r"blocks\.5\.pool\.post_conv\.weight", "head.lin5.weight"),
    (rf"blocks\.5\.pool\.post_norm\.{_BN}", "head.lin5_bn.{p}"),
    (rf"blocks\.5\.proj\.{_WB}", "head.fc.{p}"),
]

# SlowFast `X3D` names -> vbench names (SlowFast stage sN is vbench stage N-2).
_SF_BLOCK = r"s(?P<stage>[2-5])\.pathway0_res(?P<block>\d+)\."
_SLOWFAST_RULES = [
    (r"s1\.pathway0_stem\.conv_xy\.weight", "stem.conv_xy.weight"),
    (r"s1\.pathway0_stem\.conv\.weight", "stem.conv_t.weight"),
    (rf"s1\.pathway0_stem\.bn\.{_BN}", "stem.bn.{p}"),
    (_SF_BLOCK + r"branch1\.weight", "stages.{stage}.{block}.shortcut.conv.weight"),
    (_SF_BLOCK + rf"branch1_bn\.{_BN}", "stages.{stage}.{block}.shortcut.bn.{p}"),
    (_SF_BLOCK + r"branch2\.(?P<x>[abc])\.weight", "stages.{stage}.{block}.conv_{x}.weight"),
    (_SF_BLOCK + rf"branch2\.(?P<x>[abc])_bn\.{_BN}", "stages.{stage}.{block}.bn_{x}.{p}"),
    (_SF_BLOCK + rf"branch2\.se\.(?P<fc>fc[12])\.{_WB}", "stages.{stage}.{block}.se.{fc}.{p}"),
    (r"head\.conv_5\.weight", "head.conv5.weight"),
    (rf"head\.conv_5_bn\.{_BN}", "head.bn5.{p}"),
    (r"head\.lin_5\.weight", "head.lin5.weight"),
    (rf"head\.lin_5_bn\.{_BN}", "head.lin5_bn.{p}"),
    (rf"head\.projection\.{_WB}", "head.fc.{p}"),
]


def _unwrap(state_dict):
    """The tensors of a checkpoint: accepts {"model_state": ...} and DataParallel 'module.' keys."""
    if "model_state" in state_dict and isinstance(state_dict["model_state"], dict):
        state_dict = state_dict["model_state"]
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _rename(state_dict, rules, stage_offset, source):
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    converted, unexpected = {}, []
    for key, value in _unwrap(state_dict).items():
        for pattern, target in compiled:
            match = pattern.fullmatch(key)
            if match:
                groups = match.groupdict()
                if "stage" in groups:
                    groups["stage"] = int(groups["stage"]) - stage_offset
                converted[target.format(**groups)] = value
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise ValueError(f"{source} X3D state dict has {len(unexpected)} unexpected key(s) that "
                         f"X3D does not have: {', '.join(unexpected[:10])}. Is it an X3D checkpoint "
                         f"in {source} format? (MODEL.WEIGHTS_FORMAT)")
    _check_complete(converted, source)
    return converted


def _required_keys(converted):
    """Keys an X3D state dict must hold, given the blocks and optional modules it mentions."""
    def bn(prefix):
        return [f"{prefix}.{name}" for name in _BN_REQUIRED]

    required = ["stem.conv_xy.weight", "stem.conv_t.weight", *bn("stem.bn"), "head.conv5.weight",
                *bn("head.bn5"), "head.lin5.weight", "head.fc.weight", "head.fc.bias"]
    blocks = {}
    for key in converted:
        match = re.match(r"stages\.(\d+)\.(\d+)\.", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, -1), block)
    for stage in range(NUM_STAGES):
        for block in range(blocks.get(stage, 0) + 1):  # a stage needs at least block 0
            p = f"stages.{stage}.{block}"
            required += [f"{p}.conv_{x}.weight" for x in "abc"]
            required += [key for x in "abc" for key in bn(f"{p}.bn_{x}")]
            if block == 0:
                required.append(f"{p}.shortcut.conv.weight")
            if any(k.startswith(f"{p}.se.") for k in converted):
                required += [f"{p}.se.fc{i}.{t}" for i in (1, 2) for t in ("weight", "bias")]
            if any(k.startswith(f"{p}.shortcut.bn.") for k in converted):
                required += bn(f"{p}.shortcut.bn")
    if any(k.startswith("head.lin5_bn.") for k in converted):
        required += bn("head.lin5_bn")
    return required


def _check_complete(converted, source):
    missing = [key for key in _required_keys(converted) if key not in converted]
    if missing:
        raise ValueError(f"{source} X3D state dict is missing {len(missing)} key(s) (named after "
                         f"conversion to vbench): {', '.join(missing[:10])}. The checkpoint is "
                         f"truncated or not a complete X3D model.")


def convert_pytorchvideo_x3d_state_dict(state_dict):
    """A PyTorchVideo `create_x3d` / hub x3d_{xs,s,m,l} state dict -> vbench's `X3D` keys.

    Accepts the bare state dict or the hub checkpoint ({"model_state": ...}) and 'module.'
    prefixes. Mapping: blocks.0 -> stem (conv_t/conv_xy swapped back to what they are),
    blocks.{1-4}.res_blocks.{i} -> stages.{0-3}.{i} (branch1_conv/norm -> shortcut.conv/bn,
    branch2.conv_x/norm_x -> conv_x/bn_x, norm_b.0 -> bn_b, norm_b.1.block.{0,2} -> se.fc{1,2}),
    blocks.5.pool.{pre_conv, pre_norm, post_conv, post_norm} -> head.{conv5, bn5, lin5, lin5_bn},
    blocks.5.proj -> head.fc. Tensors are shared, not copied. Raises ValueError naming
    unexpected or missing keys. Shapes are checked when the result is loaded into a model.
    """
    return _rename(state_dict, _PYTORCHVIDEO_RULES, stage_offset=1, source="PyTorchVideo")


def convert_slowfast_x3d_state_dict(state_dict, bn_eps=1e-5):
    """A SlowFast `X3D` (MODEL.ARCH x3d) state dict or checkpoint -> vbench's `X3D` keys.

    Mapping: s1.pathway0_stem.{conv_xy, conv, bn} -> stem.{conv_xy, conv_t, bn};
    s{2-5}.pathway0_res{i} -> stages.{0-3}.{i} (branch1/branch1_bn -> shortcut.conv/bn,
    branch2.{a,b,c}[_bn] -> conv_x/bn_x, branch2.se.fc{1,2} -> se.fc{1,2});
    head.{conv_5, conv_5_bn, lin_5, lin_5_bn, projection} -> head.{conv5, bn5, lin5, lin5_bn, fc}.

    One structural difference: SlowFast gives every projection shortcut a BN, PyTorchVideo
    (and vbench) only those that change the width, i.e. not the first block of the first
    stage. That BN is folded exactly (for inference) into the shortcut conv's weight and the
    block's final BN bias, using `bn_eps` (SlowFast's BN.EPSILON). Fine-tuning from the
    converted weights then treats that shortcut as a frozen affine map.
    Supported: the single-pathway classification X3D of every SlowFast X3D config (any
    WIDTH/DEPTH/BOTTLENECK factor, BN_LIN5); not detection heads or multigrid variants.
    """
    converted = _rename(state_dict, _SLOWFAST_RULES, stage_offset=2, source="SlowFast")
    for key in [k for k in converted if k.endswith(".shortcut.conv.weight")]:
        prefix = key[: -len("conv.weight")]
        weight = converted[key]
        if weight.shape[0] == weight.shape[1] and f"{prefix}bn.weight" in converted:
            bn = {name: converted.pop(f"{prefix}bn.{name}") for name in _BN_REQUIRED}
            converted.pop(f"{prefix}bn.num_batches_tracked", None)
            scale = bn["weight"] / torch.sqrt(bn["running_var"] + bn_eps)
            converted[key] = weight * scale.view(-1, 1, 1, 1, 1).to(weight.dtype)
            block_bias = prefix[: -len("shortcut.")] + "bn_c.bias"
            shift = bn["bias"] - bn["running_mean"] * scale
            converted[block_bias] = converted[block_bias] + shift.to(converted[block_bias].dtype)
    return converted
