"""Load a config: defaults <- YAML (with `_BASE_`) <- `KEY VALUE` overrides, then check and freeze.

Errors name the key, where it came from (file or command line) and what to do.
"""
import ast
import difflib
import os

import yaml
from fvcore.common.config import CfgNode

from vbench.errors import ConfigError

from .checks import assert_and_infer_cfg
from .defaults import AUTO, AUTO_KEYS, get_cfg

BASE_KEY = "_BASE_"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _all_keys(node, prefix=""):
    for key, value in node.items():
        full = f"{prefix}{key}"
        if isinstance(value, CfgNode):
            yield from _all_keys(value, full + ".")
        else:
            yield full


def _closest_keys(cfg, key):
    matches = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.5)
    return ", ".join(matches) if matches else "none (see vbench/config/defaults.py)"


def _lookup(cfg, key, source):
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, CfgNode) or part not in node:
            raise ConfigError(
                f"unknown config key '{key}' (from {source}). "
                f"Closest valid keys: {_closest_keys(cfg, key)}."
            )
        if i < len(parts) - 1:
            node = node[part]
    return node, parts[-1]


def _describe_type(value):
    if isinstance(value, (list, tuple)):
        return "a list"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _coerce(key, old, new, source):
    """Convert `new` to the type of the default `old`, or raise naming the expected type."""
    if key in AUTO_KEYS:
        if new == AUTO:
            return AUTO
        old = AUTO_KEYS[key]()  # an example of the key's type, whatever its default
    if isinstance(new, str) and not isinstance(old, str):
        try:
            new = ast.literal_eval(new)
        except (ValueError, SyntaxError):
            pass
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
    elif isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
    elif isinstance(old, float):
        if isinstance(new, (int, float)) and not isinstance(new, bool):
            return float(new)
    elif isinstance(old, str):
        if isinstance(new, str):
            return new
    elif isinstance(old, (list, tuple)):
        if isinstance(new, (list, tuple)):
            return list(new)
    elif old is None:
        return new
    expected = _describe_type(old) + (f' or "{AUTO}"' if key in AUTO_KEYS else "")
    raise ConfigError(
        f"config key '{key}' (from {source}) expects {expected}, "
        f"got {new!r}. Example default: {old!r}."
    )


def _set(cfg, key, value, source):
    node, leaf = _lookup(cfg, key, source)
    if isinstance(node[leaf], CfgNode):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' (from {source}) is a section; set its sub-keys.")
        for sub_key, sub_value in value.items():
            _set(cfg, f"{key}.{sub_key}", sub_value, source)
        return
    node[leaf] = _coerce(key, node[leaf], value, source)


def _read_yaml(path, seen=()):
    """The YAML mapping of `path` with its `_BASE_` chain merged below it, as (key, value, file)."""
    if not os.path.isfile(path):
        raise ConfigError(
            f"config file not found: '{path}'. Give a path to a YAML file, e.g. "
            f"configs/Kinetics/X3D_M.yaml (relative to the current folder)."
        )
    if os.path.abspath(path) in seen:
        raise ConfigError(f"config file '{path}' includes itself through {BASE_KEY}.")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, not {type(data).__name__}.")
    entries = []
    base = data.pop(BASE_KEY, None)
    if base:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        entries.extend(_read_yaml(base_path, seen + (os.path.abspath(path),)))
    for key, value in data.items():
        entries.extend(_flatten(str(key), value, path))
    return entries


def _flatten(key, value, path):
    if isinstance(value, dict):
        for sub_key, sub_value in value.items():
            yield from _flatten(f"{key}.{sub_key}", sub_value, path)
    else:
        yield key, value, path


def find_repo_path(path):
    """A path named in a config or reference file (e.g. configs/datasets/kinetics20): absolute, from
    the current folder, or from the vbench checkout; None when it exists in neither."""
    for candidate in (path, os.path.join(REPO_ROOT, path)):
        if path and os.path.exists(candidate):
            return candidate
    return None


def merge_yaml(cfg, path):
    for key, value, source in _read_yaml(path):
        _set(cfg, key, value, f"config file '{source}'")
    return cfg


def merge_opts(cfg, opts):
    """Merge `KEY VALUE KEY VALUE ...` command-line overrides."""
    opts = list(opts or [])
    if opts and opts[0] == "--opts":
        opts = opts[1:]
    if len(opts) % 2:
        raise ConfigError(
            f"overrides must come in KEY VALUE pairs; '{opts[-1]}' has no value "
            f"(got {len(opts)} words: {' '.join(opts)})."
        )
    for key, value in zip(opts[0::2], opts[1::2]):
        _set(cfg, key, value, "the command line")
    return cfg


def replace_values(cfg, values, source="the run-time resolution of \"auto\" values"):
    """A frozen copy of `cfg` with the dotted keys of `values` set, checked like overrides."""
    out = cfg.clone()
    out.defrost()
    for key, value in values.items():
        _set(out, key, value, source)
    out.freeze()
    return out


def load_config(cfg_file=None, opts=None, freeze=True):
    """Defaults, then `cfg_file` (with `_BASE_`), then overrides; checked and frozen."""
    cfg = get_cfg()
    if cfg_file:
        merge_yaml(cfg, cfg_file)
    merge_opts(cfg, opts)
    return assert_and_infer_cfg(cfg, freeze=freeze)
