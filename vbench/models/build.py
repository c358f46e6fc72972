"""`build_model(cfg)`: the registered model MODEL.MODEL_NAME, with MODEL.WEIGHTS loaded."""
from .registry import get_builder
from .weights import load_weights


def build_model(cfg):
    """The model named by MODEL.MODEL_NAME, with MODEL.WEIGHTS loaded when set."""
    model = get_builder(cfg.MODEL.MODEL_NAME)(cfg)
    if cfg.MODEL.WEIGHTS:
        load_weights(model, cfg.MODEL.WEIGHTS, cfg.MODEL.WEIGHTS_FORMAT, cfg.MODEL.MODEL_NAME)
    return model
