"""Video models: a registry of builders, one model family per file.

Importing this package imports every model file, which registers its models
(timm's layout: the registry itself imports no model).
"""
from . import mvit, torchvision_video, x3d  # noqa: F401  (registers the models)
from .build import build_model
from .registry import get_builder, register_model, registered_models

__all__ = ["build_model", "get_builder", "register_model", "registered_models"]
