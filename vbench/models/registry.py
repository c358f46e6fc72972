"""Model registry: `@register_model("name")` on a builder `fn(cfg) -> nn.Module`."""
from vbench.config import ConfigError

MODEL_REGISTRY = {}


def register_model(name, family=None, input_size=(16, 224, 224)):
    """Register `fn(cfg) -> nn.Module` under `name` (case-insensitive).

    `input_size` (T, H, W) is the model's usual clip, used by `vbench models` without a config.
    """

    def decorator(builder):
        key = name.lower()
        if key in MODEL_REGISTRY:
            raise KeyError(f"model '{name}' is registered twice")
        builder.model_family = family or builder.__module__.rsplit(".", 1)[-1]
        builder.input_size = tuple(input_size)
        MODEL_REGISTRY[key] = builder
        return builder

    return decorator


def registered_models():
    """Sorted names of every registered model."""
    _import_model_files()
    return sorted(MODEL_REGISTRY)


def get_builder(name):
    _import_model_files()
    key = name.lower()
    if key not in MODEL_REGISTRY:
        raise ConfigError(
            f"unknown model MODEL.MODEL_NAME '{name}'. Registered models: "
            f"{', '.join(sorted(MODEL_REGISTRY))} (run `vbench models`)."
        )
    return MODEL_REGISTRY[key]


def _import_model_files():
    # Importing the model files runs their @register_model decorators.
    from vbench.models import mvit, torchvision_video, x3d  # noqa: F401


def build_model(cfg):
    """The model named by MODEL.MODEL_NAME, with MODEL.WEIGHTS loaded when set."""
    model = get_builder(cfg.MODEL.MODEL_NAME)(cfg)
    if cfg.MODEL.WEIGHTS:
        from vbench.models.weights import load_weights

        load_weights(model, cfg.MODEL.WEIGHTS, cfg.MODEL.WEIGHTS_FORMAT, cfg.MODEL.MODEL_NAME)
    return model
