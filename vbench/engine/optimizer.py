"""Optimizer construction (SGD / AdamW with weight-decay parameter groups), gradient clipping, LR writes.

Parameter groups, decided per parameter in this order (first match wins; SlowFast's rules):
  1. "bn":        parameters of batch-norm modules (BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm:
                  PyTorch's `_NormBase`), weight decay BN.WEIGHT_DECAY;
  2. "no_decay":  with MVIT.ZERO_DECAY_POS_CLS, position embeddings and class tokens (leaf names
                  `pos_embed*`, `cls_token`, torchvision's `class_token`, `class_pos`, `spatial_pos`,
                  `temporal_pos`, and names from a model's own `no_weight_decay()`), weight decay 0;
                  with SOLVER.ZERO_WD_1D_PARAM, every parameter with at most one dimension (biases,
                  norm weights) and every parameter of another norm module (LayerNorm, GroupNorm,
                  RMSNorm: their weights can be 2-D), weight decay 0;
  3. "decay":     everything else, weight decay SOLVER.WEIGHT_DECAY.
Frozen parameters (requires_grad False) are left out; empty groups are dropped. Each group dict
carries its name under "group_name" (handy for logs; optimizers ignore extra keys).
"""
import torch
from torch import nn

from vbench.errors import ConfigError

from .lr_policy import scaled_base_lr

BN_TYPES = (nn.modules.batchnorm._NormBase,)
OTHER_NORM_TYPES = tuple(
    getattr(nn, name) for name in ("LayerNorm", "GroupNorm", "RMSNorm", "LocalResponseNorm") if hasattr(nn, name)
)
POS_CLS_NAMES = ("cls_token", "class_token", "class_pos", "spatial_pos", "temporal_pos")
POS_EMBED_PREFIX = "pos_embed"

__all__ = ["build_optimizer", "clip_gradients", "param_groups", "scaled_base_lr", "set_lr"]


def _is_pos_cls(leaf_name, extra_names):
    return leaf_name.startswith(POS_EMBED_PREFIX) or leaf_name in POS_CLS_NAMES or leaf_name in extra_names


def _model_no_weight_decay(model):
    """Leaf names a model lists in a timm-style `no_weight_decay()` (DDP wrappers unwrapped)."""
    inner = getattr(model, "module", model)
    names = inner.no_weight_decay() if hasattr(inner, "no_weight_decay") else ()
    return {name.rsplit(".", 1)[-1] for name in names}


def param_groups(model, cfg):
    """The optimizer parameter groups of `model` (see the module docstring)."""
    zero_pos_cls = cfg.MVIT.ZERO_DECAY_POS_CLS
    zero_1d = cfg.SOLVER.ZERO_WD_1D_PARAM
    extra_names = _model_no_weight_decay(model) if zero_pos_cls else set()
    groups = {"bn": [], "no_decay": [], "decay": []}
    seen = set()
    for module in model.modules():
        is_bn = isinstance(module, BN_TYPES)
        is_other_norm = isinstance(module, OTHER_NORM_TYPES)
        for leaf_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if is_bn:
                groups["bn"].append(param)
            elif zero_pos_cls and _is_pos_cls(leaf_name, extra_names):
                groups["no_decay"].append(param)
            elif zero_1d and (param.ndim <= 1 or is_other_norm):
                groups["no_decay"].append(param)
            else:
                groups["decay"].append(param)
    decay = {"bn": cfg.BN.WEIGHT_DECAY, "no_decay": 0.0, "decay": cfg.SOLVER.WEIGHT_DECAY}
    return [
        {"params": params, "weight_decay": decay[name], "group_name": name}
        for name, params in groups.items() if params
    ]


def _check_solver(cfg):
    solver = cfg.SOLVER
    if solver.CLIP_GRAD_VAL > 0 and solver.CLIP_GRAD_L2NORM > 0:
        raise ConfigError(
            f"SOLVER.CLIP_GRAD_VAL ({solver.CLIP_GRAD_VAL}) and SOLVER.CLIP_GRAD_L2NORM "
            f"({solver.CLIP_GRAD_L2NORM}) are both set; set one of them to 0.")
    if solver.OPTIMIZING_METHOD == "sgd" and solver.NESTEROV:
        if solver.MOMENTUM <= 0 or solver.DAMPENING != 0:
            raise ConfigError(
                f"SOLVER.NESTEROV needs SOLVER.MOMENTUM > 0 and SOLVER.DAMPENING = 0 "
                f"(got MOMENTUM {solver.MOMENTUM}, DAMPENING {solver.DAMPENING}); "
                f"set SOLVER.NESTEROV False or fix them.")
    if solver.OPTIMIZING_METHOD == "adamw" and len(solver.BETAS) != 2:
        raise ConfigError(f"SOLVER.BETAS must be [beta1, beta2], got {list(solver.BETAS)}.")


def build_optimizer(model, cfg):
    """SGD or AdamW over `param_groups(model, cfg)`, every group at `scaled_base_lr(cfg)`."""
    _check_solver(cfg)
    solver = cfg.SOLVER
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad False).")
    lr = scaled_base_lr(cfg)
    if solver.OPTIMIZING_METHOD == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=solver.MOMENTUM, dampening=solver.DAMPENING,
                               weight_decay=solver.WEIGHT_DECAY, nesterov=solver.NESTEROV)
    if solver.OPTIMIZING_METHOD == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(solver.BETAS), weight_decay=solver.WEIGHT_DECAY)
    raise ConfigError(f"SOLVER.OPTIMIZING_METHOD is {solver.OPTIMIZING_METHOD!r}; choose 'sgd' or 'adamw'.")


def clip_gradients(model_params, cfg):
    """Clip gradients in place by SOLVER.CLIP_GRAD_VAL or SOLVER.CLIP_GRAD_L2NORM (0 disables).

    Returns the total gradient norm before clipping (a tensor, no host sync) for L2 clipping, else
    None. With AMP, call `scaler.unscale_(optimizer)` first so the thresholds apply to true gradients.
    """
    if cfg.SOLVER.CLIP_GRAD_VAL > 0:
        nn.utils.clip_grad_value_(list(model_params), cfg.SOLVER.CLIP_GRAD_VAL)
    elif cfg.SOLVER.CLIP_GRAD_L2NORM > 0:
        return nn.utils.clip_grad_norm_(list(model_params), cfg.SOLVER.CLIP_GRAD_L2NORM)
    return None


def set_lr(optimizer, lr):
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
