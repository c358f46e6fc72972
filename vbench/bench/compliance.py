"""Compliance: a run's config against the shipped benchmark config.

Only resource and numerics-neutral keys may differ (docs/PROTOCOL.md, "Compliance"); any other
difference makes the run non-compliant. Each difference is reported with both values.
"""
from dataclasses import dataclass

from vbench.config import load_config

from .compliance_keys import is_resource_key


@dataclass(frozen=True)
class Difference:
    key: str
    recipe: object
    run: object

    def __str__(self):
        return f"{self.key}: benchmark {self.recipe!r}, run {self.run!r}"


def flatten(config, prefix=""):
    """{'A': {'B': 1}} -> {'A.B': 1}; lists become tuples so they compare by value."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, (list, tuple)) else value
    return flat


def _same(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b))
    return a == b


def recipe_config(config_path):
    """The shipped benchmark config as a plain nested dict."""
    cfg = load_config(config_path, [], freeze=False)
    return _to_dict(cfg)


def _to_dict(node):
    return {k: _to_dict(v) if isinstance(v, dict) else v for k, v in node.items()}


def compare_with_recipe(run_config, recipe):
    """Differences between a run's config and the recipe outside the allowed keys."""
    run_flat, recipe_flat = flatten(run_config), flatten(recipe)
    differences = []
    for key in sorted(set(run_flat) | set(recipe_flat)):
        if is_resource_key(key):
            continue
        expected, got = recipe_flat.get(key, "<absent>"), run_flat.get(key, "<absent>")
        if not _same(expected, got):
            differences.append(Difference(key, expected, got))
    return differences


def setup_differences(config_a, config_b, ignore=("OUTPUT_DIR", "SHARD_ID", "RNG_SEED", "INIT_METHOD")):
    """Keys that differ between two runs' configs, except per-run keys (output, seed, shard)."""
    a, b = flatten(config_a), flatten(config_b)
    return [Difference(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in ignore and not _same(a.get(k), b.get(k))]
