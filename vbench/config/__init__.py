"""Config: defaults, loading with `_BASE_` and overrides, checks."""
from .checks import assert_and_infer_cfg, world_size_of
from .defaults import get_cfg
from .load import ConfigError, load_config, merge_opts, merge_yaml

__all__ = ["ConfigError", "assert_and_infer_cfg", "get_cfg", "load_config", "merge_opts",
           "merge_yaml", "world_size_of"]
