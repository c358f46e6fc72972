"""Model registry: `@register_model("name", ...)` on a builder `fn(cfg) -> nn.Module`.

It imports no model file: `vbench/models/__init__.py` imports them, which runs their decorators,
so importing anything under `vbench.models` registers every model.
"""
from vbench.errors import ConfigError

MODEL_REGISTRY = {}


def register_model(name, family, input_size=(16, 224, 224), converters=None):
    """Register `fn(cfg) -> nn.Module` under `name` (case-insensitive).

    `family` groups the models whose weights share one key layout ("x3d", "mvit", "torchvision");
    `input_size` (T, H, W) is the model's usual clip, used by `vbench models` without a config;
    `converters` maps a foreign weights format ("pytorchvideo", "slowfast", "torchvision") to the
    function that renames such a state dict to this model's keys (models/weights.py).
    """

    def decorator(builder):
        key = name.lower()
        if key in MODEL_REGISTRY:
            raise KeyError(f"model '{name}' is registered twice")
        builder.model_family = family
        builder.input_size = tuple(input_size)
        builder.converters = dict(converters or {})
        MODEL_REGISTRY[key] = builder
        return builder

    return decorator


def registered_models():
    """Sorted names of every registered model."""
    return sorted(MODEL_REGISTRY)


def get_builder(name):
    key = name.lower()
    if key not in MODEL_REGISTRY:
        raise ConfigError(
            f"unknown model MODEL.MODEL_NAME '{name}'. Registered models: "
            f"{', '.join(sorted(MODEL_REGISTRY))} (run `vbench models`)."
        )
    return MODEL_REGISTRY[key]


def converters_of(family):
    """{format: converter} registered for the models of `family` ({} for an unknown family)."""
    for builder in MODEL_REGISTRY.values():
        if builder.model_family == family:
            return builder.converters
    return {}
