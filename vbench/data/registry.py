"""Dataset registry: TRAIN.DATASET and TEST.DATASET name a registered dataset (SlowFast's
DATASET_REGISTRY).

A dataset is a reader `fn(cfg, split) -> (entries, class_names)`: the videos of `split` under
DATA.PATH_TO_DATA_DIR (`layouts.VideoEntry`: path and label) and the names of the labels.
Everything after it is shared: the clip list (DATA.CLIP_LIST), the index, sampling, decoding and
transforms. To add a dataset, write one file with a reader decorated `@register_dataset("name")`
and import it in vbench/data/__init__.py. This module imports no dataset file.
"""
from vbench.errors import ConfigError

DATASET_REGISTRY = {}


def register_dataset(name):
    """Register `fn(cfg, split) -> (entries, class_names)` under `name` (case-insensitive)."""

    def decorator(reader):
        key = name.lower()
        if key in DATASET_REGISTRY:
            raise KeyError(f"dataset '{name}' is registered twice")
        DATASET_REGISTRY[key] = reader
        return reader

    return decorator


def get_dataset(name, key="TRAIN.DATASET"):
    """The reader registered as `name`; a ConfigError naming the config `key` otherwise."""
    reader = DATASET_REGISTRY.get(str(name).lower())
    if reader is None:
        raise ConfigError(f"unknown dataset {key} '{name}'. Registered datasets: "
                          f"{', '.join(sorted(DATASET_REGISTRY))}.")
    return reader
