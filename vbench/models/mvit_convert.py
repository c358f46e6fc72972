"""Convert MViT v1 state dicts from torchvision, PyTorchVideo and SlowFast to vbench names.

Pure functions: a state dict in, a new state dict out (tensors are shared, or reshaped views).
Every source key must be understood; anything else (an MViT v2 checkpoint, another model, a norm
layer vbench does not build) raises ValueError naming the key. Load the result with
`model.load_state_dict(result)` (strict) to check shapes against the built model.

Known differences that no renaming can fix (see `POOL_NORM_EPS` in vbench.models.mvit):
- torchvision uses eps 1e-6 in the LayerNorms after q/k/v pooling, vbench and PyTorchVideo 1e-5
  (eps is not in a state dict). With randomised MViT-B 16x4 weights the logits then differ by
  ~2e-4 (max abs, logits ~1.8); `vbench.models.mvit.set_pool_norm_eps(model, 1e-6)` brings the
  difference to ~1e-6 (fp32, CPU). With trained weights the effect is smaller still.
- SlowFast heads apply a softmax at test time; vbench returns logits.
- Some early SlowFast versions pooled *before* the q/k/v projection while POOL_FIRST was False.
  A checkpoint from such a version needs MVIT.POOL_FIRST True in vbench and `fuse_qkv=False`.
"""
import re

import torch

_BLOCK = r"blocks\.(\d+)\."


def _token_param(tensor):
    """(C,) or (N, C) -> (1, 1, C) or (1, N, C): vbench keeps a leading batch dim."""
    return tensor.reshape((1,) * (3 - tensor.dim()) + tuple(tensor.shape))


# (pattern, replacement, value transform or None). Patterns match the whole key.
_TORCHVISION_RULES = [
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1", None),
    (r"pos_encoding\.class_token", "cls_token", _token_param),
    (r"pos_encoding\.spatial_pos", "pos_embed_spatial", _token_param),
    (r"pos_encoding\.temporal_pos", "pos_embed_temporal", _token_param),
    (r"pos_encoding\.class_pos", "pos_embed_class", _token_param),
    (_BLOCK + r"(norm1|norm2)\.(weight|bias)", r"blocks.\1.\2.\3", None),
    (_BLOCK + r"attn\.qkv\.(weight|bias)", r"blocks.\1.attn.qkv.\2", None),
    (_BLOCK + r"attn\.project\.0\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
    (_BLOCK + r"attn\.pool_(q|k|v)\.pool\.weight", r"blocks.\1.attn.pool_\2.weight", None),
    (_BLOCK + r"attn\.pool_(q|k|v)\.norm_act\.0\.(weight|bias)", r"blocks.\1.attn.norm_\2.\3", None),
    (_BLOCK + r"mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2", None),
    (_BLOCK + r"mlp\.3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2", None),
    (_BLOCK + r"project\.(weight|bias)", r"blocks.\1.proj.\2", None),
    (r"norm\.(weight|bias)", r"norm.\1", None),
    (r"head\.1\.(weight|bias)", r"head.\1", None),
]

# Block keys that PyTorchVideo and SlowFast name exactly as vbench does.
_SHARED_BLOCK_RULES = [
    (_BLOCK + r"(norm1|norm2)\.(weight|bias)", r"blocks.\1.\2.\3", None),
    (_BLOCK + r"attn\.(q|k|v|qkv|proj)\.(weight|bias)", r"blocks.\1.attn.\2.\3", None),
    (_BLOCK + r"attn\.pool_(q|k|v)\.weight", r"blocks.\1.attn.pool_\2.weight", None),
    (_BLOCK + r"attn\.norm_(q|k|v)\.(weight|bias)", r"blocks.\1.attn.norm_\2.\3", None),
    (_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3", None),
    (_BLOCK + r"proj\.(weight|bias)", r"blocks.\1.proj.\2", None),
]

_PYTORCHVIDEO_RULES = [
    (r"patch_embed\.patch_model\.(weight|bias)", r"patch_embed.proj.\1", None),
    (r"cls_positional_encoding\.(cls_token|pos_embed|pos_embed_spatial|pos_embed_temporal"
     r"|pos_embed_class)", r"\1", None),
    *_SHARED_BLOCK_RULES,
    (r"norm_embed\.(weight|bias)", r"norm.\1", None),
    (r"head\.proj\.(weight|bias)", r"head.\1", None),
]

_SLOWFAST_RULES = [
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1", None),
    (r"(cls_token|pos_embed|pos_embed_spatial|pos_embed_temporal|pos_embed_class)", r"\1", None),
    *_SHARED_BLOCK_RULES,
    (r"norm\.(weight|bias)", r"norm.\1", None),
    (r"head\.projection\.(weight|bias)", r"head.\1", None),
]

_HINTS = {
    "rel_pos": "relative position embeddings belong to MViT v2, which vbench does not build",
    "norm_stem": "a LayerNorm after the patch embedding (MVIT.NORM_STEM) is not built by vbench",
    "norm_patch_embed": "a LayerNorm after the patch embedding is not built by vbench",
}


def _strip_prefix(state_dict, prefixes):
    """Drop a wrapper prefix ('module.' from DataParallel/DDP, 'model.' from SlowFast's PTV
    wrappers) when every key carries it."""
    for prefix in prefixes:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


def _rename(state_dict, rules, source):
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"expected a non-empty {source} MViT state dict (name -> tensor), "
                         f"got {type(state_dict).__name__}.")
    compiled = [(re.compile(pattern), repl, fn) for pattern, repl, fn in rules]
    out, unknown = {}, []
    for key, value in state_dict.items():
        for pattern, repl, fn in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(repl, key)] = fn(value) if fn else value
                break
        else:
            unknown.append(key)
    if unknown:
        hints = sorted({hint for word, hint in _HINTS.items() for key in unknown if word in key})
        raise ValueError(
            f"{len(unknown)} key(s) of the {source} state dict are not part of an MViT v1 "
            f"checkpoint in {source} format: {unknown[:8]}"
            + (f" ({'; '.join(hints)})" if hints else "")
            + f". Check MODEL.WEIGHTS_FORMAT and that the file is an MViT v1 checkpoint from {source}."
        )
    return out


def _fuse_qkv(state_dict, source):
    """Concatenate separate attn.q / attn.k / attn.v into one attn.qkv (vbench's layout when
    MVIT.POOL_FIRST is False; output rows are q, k, v with heads contiguous in each)."""
    out = dict(state_dict)
    for key in [k for k in state_dict if re.fullmatch(_BLOCK + r"attn\.q\.(weight|bias)", k)]:
        parts = [key.replace(".attn.q.", f".attn.{name}.") for name in "qkv"]
        missing = [part for part in parts if part not in state_dict]
        if missing:
            raise ValueError(f"{source} state dict has {key} but not {missing}.")
        out[key.replace(".attn.q.", ".attn.qkv.")] = torch.cat([out.pop(p) for p in parts], dim=0)
    return out


def convert_torchvision_mvit_state_dict(state_dict):
    """torchvision `mvit_v1_b` state dict -> vbench MViT-B 16x4 ("mvit_b_16x4")."""
    state_dict = _strip_prefix(state_dict, ("module.",))
    return _rename(state_dict, _TORCHVISION_RULES, "torchvision")


def convert_pytorchvideo_mvit_state_dict(state_dict, fuse_qkv=True):
    """PyTorchVideo `create_multiscale_vision_transformers` (hub `mvit_base_16x4`,
    `mvit_base_32x3`) state dict -> vbench MViT.

    PyTorchVideo keeps separate q/k/v projections; they are fused into `attn.qkv` unless
    `fuse_qkv` is False (for vbench models built with MVIT.POOL_FIRST True).
    """
    state_dict = _strip_prefix(state_dict, ("module.", "model."))
    out = _rename(state_dict, _PYTORCHVIDEO_RULES, "PyTorchVideo")
    return _fuse_qkv(out, "PyTorchVideo") if fuse_qkv else out


def convert_slowfast_mvit_state_dict(state_dict, fuse_qkv=True):
    """SlowFast `MViT` (v1 configs, e.g. MVIT_B_16x4_CONV) state dict -> vbench MViT.

    Takes the "model_state" of a SlowFast checkpoint. Fused `attn.qkv` is kept; separate
    q/k/v (POOL_FIRST models, or older SlowFast) are fused unless `fuse_qkv` is False.
    """
    state_dict = _strip_prefix(state_dict, ("module.",))
    out = _rename(state_dict, _SLOWFAST_RULES, "SlowFast")
    return _fuse_qkv(out, "SlowFast") if fuse_qkv else out
