"""Config: defaults, loading with `_BASE_` and overrides, checks."""
from .checks import assert_and_infer_cfg, world_size_of
from .defaults import AUTO, AUTO_KEYS, get_cfg
from .load import ConfigError, load_config, merge_opts, merge_yaml, replace_values

__all__ = ["AUTO", "AUTO_KEYS", "ConfigError", "assert_and_infer_cfg", "get_cfg", "load_config",
           "merge_opts", "merge_yaml", "replace_values", "world_size_of"]
