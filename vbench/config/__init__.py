"""Config: defaults, loading with `_BASE_` and overrides, checks."""
from .checks import assert_and_infer_cfg, config_value, world_size_of
from .defaults import AUTO, AUTO_KEYS, get_cfg
from .launcher import launcher_world, world_corrections
from .load import REPO_ROOT, ConfigError, find_repo_path, load_config, merge_opts, merge_yaml, replace_values

__all__ = ["AUTO", "AUTO_KEYS", "REPO_ROOT", "ConfigError", "assert_and_infer_cfg", "config_value",
           "find_repo_path", "get_cfg", "launcher_world", "load_config", "merge_opts", "merge_yaml",
           "replace_values", "world_corrections", "world_size_of"]
