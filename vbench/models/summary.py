"""`vbench models`: registered models with parameter counts and GFLOPs per view.

    vbench models                                   every model at its usual input, 400 classes
    vbench models --names x3d_m,r3d_18              just those
    vbench models --cfg configs/Kinetics/X3D_M.yaml [KEY VALUE ...]
                                                    the config's model at the config's clip size
    vbench models --all-configs                     every model config under --configs-dir
    vbench models --markdown                        a Markdown table (docs/MODEL_ZOO.md)

GFLOPs are counted by fvcore's `FlopCountAnalysis` on one clip (batch 1, eval mode). fvcore counts
one fused multiply-add as one flop, the convention of SlowFast and the X3D / MViT papers (other
tools may report twice as many "FLOPs"). Fused attention (`scaled_dot_product_attention`), which
fvcore does not know, is counted here as its two matrix products. Operations fvcore cannot count
(element-wise ones: additions, activations, softmax) are left out and listed in a footnote.
With --cfg the clip is DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE^2: the training crop, which fixes the
size of MViT position embeddings. Evaluation at a larger DATA.TEST_CROP_SIZE costs more.
"""
import glob
import math
import os
import sys
import warnings
from dataclasses import dataclass, field

import torch
import yaml
from tqdm import tqdm

with warnings.catch_warnings():  # importing fvcore.nn scripts a function: deprecated in torch 2.10+
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

from vbench.config import load_config

from .registry import get_builder, registered_models

KINETICS400_CLASSES = 400
DESCRIPTION = "List registered video models with parameters and GFLOPs per view."


@dataclass
class ModelRow:
    name: str
    family: str
    params: int
    gflops_per_view: float  # None when fvcore could not trace the model
    input_size: tuple  # (T, H, W) of one view
    uncounted_ops: dict = field(default_factory=dict)  # op name -> calls fvcore left out
    error: str = ""
    config: str = ""  # the config file the row was built from, if any
    num_classes: int = 0


def config_for_model(name, input_size, num_classes=KINETICS400_CLASSES):
    """A checked config that builds `name` for clips of `input_size` (T, H, W)."""
    frames, height, _ = input_size
    return load_config(None, [
        "MODEL.MODEL_NAME", name, "MODEL.NUM_CLASSES", num_classes,
        "DATA.NUM_FRAMES", frames, "DATA.TRAIN_CROP_SIZE", height, "DATA.TEST_CROP_SIZE", height,
        "DATA.TRAIN_MIN_MAX_SCALE", [max(256, height), max(320, height)],
    ])


def _with_model_name(cfg, name):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.MODEL_NAME = name
    cfg.freeze()
    return cfg


def attention_flops(inputs, outputs):
    """fvcore handle for aten::scaled_dot_product_attention: q k^T and (softmax) v, multiply-adds."""
    q, k, v = (get_shape(value) for value in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def count_model(name, cfg, input_size):
    """Parameters and fvcore GFLOPs of model `name` built from `cfg`, for one view of `input_size`."""
    builder = get_builder(name)
    model = builder(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    row = ModelRow(name, builder.model_family, params, None, tuple(input_size),
                   num_classes=cfg.MODEL.NUM_CLASSES)
    clip = torch.zeros(1, 3, *input_size)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes
            flops = FlopCountAnalysis(model, clip)
            flops.set_op_handle("aten::scaled_dot_product_attention", attention_flops)
            flops.unsupported_ops_warnings(False)
            flops.uncalled_modules_warnings(False)
            row.gflops_per_view = flops.total() / 1e9
            row.uncounted_ops = dict(flops.unsupported_ops())
    except Exception as err:  # noqa: BLE001 - one model failing to trace must not stop the table
        row.error = f"fvcore could not trace it ({type(err).__name__}: {str(err)[:120]})"
    return row


def model_table(cfg=None, names=None, progress=True):
    """One `ModelRow` per model.

    Without `cfg`: each model in `names` (default: all registered) at its registered input size,
    with 400 classes. With `cfg`: MODEL.MODEL_NAME (or each of `names`) built from `cfg`, at
    DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE^2.
    """
    if names is None:
        names = [cfg.MODEL.MODEL_NAME] if cfg is not None else registered_models()
    names = [name.lower() for name in names]
    for name in names:
        get_builder(name)  # unknown names fail now, not after minutes of counting
    rows = []
    bar = tqdm(names, desc="counting GFLOPs", unit="model", disable=not progress, file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        if cfg is None:
            input_size = get_builder(name).input_size
            model_cfg = config_for_model(name, input_size)
        else:
            crop = cfg.DATA.TRAIN_CROP_SIZE
            input_size = (cfg.DATA.NUM_FRAMES, crop, crop)
            model_cfg = _with_model_name(cfg, name)
        rows.append(count_model(name, model_cfg, input_size))
    return rows


def explicit_model_name(path, seen=()):
    """MODEL.MODEL_NAME set in the YAML file `path` or its `_BASE_` chain, else "" (the default)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return ""
    name = (data.get("MODEL") or {}).get("MODEL_NAME", "") if isinstance(data, dict) else ""
    base = data.get("_BASE_") if isinstance(data, dict) else None
    if name or not base or path in seen:
        return str(name).lower()
    return explicit_model_name(os.path.join(os.path.dirname(path), base), seen + (path,))


def model_config_files(configs_dir="configs"):
    """(path relative to the folder above `configs_dir`, model name) of every YAML file under
    `configs_dir` that names a model; recipe files that only serve as `_BASE_` are left out."""
    found = []
    top = os.path.dirname(os.path.abspath(configs_dir))
    for path in sorted(glob.glob(os.path.join(configs_dir, "**", "*.yaml"), recursive=True)):
        name = explicit_model_name(path)
        if name:
            found.append((os.path.relpath(path, top), name))
    return found


def find_config_files(name, configs_dir="configs"):
    """Config files under `configs_dir` whose MODEL.MODEL_NAME is `name`."""
    return [path for path, model in model_config_files(configs_dir) if model == name]


def config_table(configs_dir="configs", progress=True):
    """One `ModelRow` per model config under `configs_dir`, at the config's own clip and classes."""
    rows = []
    files = model_config_files(configs_dir)
    top = os.path.dirname(os.path.abspath(configs_dir))
    bar = tqdm(files, desc="counting GFLOPs", unit="config", disable=not progress, file=sys.stderr)
    for rel_path, _ in bar:
        bar.set_postfix_str(rel_path)
        cfg = load_config(os.path.join(top, rel_path))
        (row,) = model_table(cfg, progress=False)
        row.config = rel_path
        rows.append(row)
    return rows


def _cells(row, configs_dir):
    gflops = f"{row.gflops_per_view:.2f}" if row.gflops_per_view is not None else "n/a"
    cells = [row.name, row.family, f"{row.params / 1e6:.2f}", gflops,
             " x ".join(str(s) for s in row.input_size)]
    if row.config:
        return [row.config] + cells[:2] + [str(row.num_classes)] + cells[2:]
    if configs_dir:
        cells.append(", ".join(find_config_files(row.name, configs_dir)) or "-")
    return cells


def format_table(rows, markdown=False, configs_dir=""):
    header = ["model", "family", "params (M)", "GFLOPs/view", "input T x H x W"]
    by_config = any(row.config for row in rows)
    if by_config:
        header = ["config"] + header[:2] + ["classes"] + header[2:]
    elif configs_dir:
        header.append("config")
    body = [_cells(row, configs_dir) for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    numeric = {3, 4, 5} if by_config else {2, 3}

    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(c) for c in body])


def footnotes(rows):
    notes = ["GFLOPs: fvcore FlopCountAnalysis, batch 1, eval mode; one multiply-add = one flop "
             "(SlowFast, X3D and MViT papers); fused attention counted as its two matrix products."]
    uncounted = [row for row in rows if row.uncounted_ops]
    if uncounted:
        notes.append("Not counted (fvcore has no rule for them; mostly element-wise): "
                     + "; ".join(f"{row.config or row.name} {sum(row.uncounted_ops.values())} calls"
                                 for row in uncounted) + ".")
        kinds = sorted({op for row in uncounted for op in row.uncounted_ops})
        notes.append("Uncounted op kinds: " + ", ".join(kinds) + ".")
    notes += [f"{row.config or row.name}: {row.error}" for row in rows if row.error]
    return notes
