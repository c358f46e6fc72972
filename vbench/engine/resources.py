"""Run-time resources: every setting left to the machine ("auto") decided in one place, at launch.

`resolve_resources(cfg)` returns (cfg, resolved): a frozen copy of the config in which each such
value is replaced by the one this run uses, and {dotted key: value} of those decisions, which
results.json records under "resolved". Code downstream reads concrete values only; a config that
still holds "auto" (a Trainer built by hand) is refused by `require_resolved`.
"""
import torch

from vbench.config import AUTO, AUTO_KEYS, ConfigError, config_value, replace_values
from vbench.data.resources import loader_decisions
from vbench.engine.precision import DEPTHWISE_FAMILIES, fastest_depthwise, fastest_path
from vbench.models import get_builder
from vbench.models.layers.depthwise import require_triton


def run_device(cfg):
    return torch.device("cuda" if cfg.NUM_GPUS > 0 else "cpu")


def model_family(cfg):
    return get_builder(cfg.MODEL.MODEL_NAME).model_family


def resource_decisions(cfg, capability_of=torch.cuda.get_device_capability):
    """{key: value} for every "auto" in `cfg`, as this machine (its GPUs' `capability_of`)
    resolves it."""
    device = run_device(cfg)
    decisions = {}
    family = model_family(cfg)
    # Precision and memory format: the fastest measured path (the rule: engine/precision.py).
    path = fastest_path(family, device, capability_of)
    if cfg.TRAIN.PRECISION == AUTO:
        decisions["TRAIN.PRECISION"] = path.precision
    if cfg.MODEL.CHANNELS_LAST == AUTO:
        decisions["MODEL.CHANNELS_LAST"] = path.channels_last
    if cfg.MODEL.DEPTHWISE_CONV == AUTO and family in DEPTHWISE_FAMILIES:
        channels_last = decisions.get("MODEL.CHANNELS_LAST", cfg.MODEL.CHANNELS_LAST)
        decisions["MODEL.DEPTHWISE_CONV"] = fastest_depthwise(family, device, channels_last,
                                                              capability_of)
    if decisions.get("MODEL.DEPTHWISE_CONV", cfg.MODEL.DEPTHWISE_CONV) == "triton":
        require_triton(device.type)  # at launch, not at the first step
    decisions.update(loader_decisions(cfg))  # workers, decoder threads, GPU transforms
    return decisions


def resolve_resources(cfg, capability_of=torch.cuda.get_device_capability):
    """(cfg with every "auto" replaced, {key: value resolved}); see the module docstring."""
    decisions = resource_decisions(cfg, capability_of)
    return (replace_values(cfg, decisions) if decisions else cfg), decisions


def require_resolved(cfg):
    """Raise when a key that takes "auto" still holds it (call `resolve_resources` first)."""
    left = [key for key in AUTO_KEYS if config_value(cfg, key) == AUTO]
    if left:
        raise ConfigError(f"config keys {left} are still \"auto\"; resolve them with "
                          f"vbench.engine.resources.resolve_resources(cfg) before building the trainer.")
