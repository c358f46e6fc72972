"""Data: layouts, index, epoch plans, decoders, transforms, dataset and loader."""
from .dataset import check_bad_fraction
from .loader import ClipLoader, build_loader
from .sampling import ClipRef

__all__ = ["ClipLoader", "ClipRef", "build_loader", "check_bad_fraction"]
