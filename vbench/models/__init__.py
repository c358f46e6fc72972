"""Video models: a registry of builders, one model family per file."""
from .registry import build_model, get_builder, register_model, registered_models

__all__ = ["build_model", "get_builder", "register_model", "registered_models"]
