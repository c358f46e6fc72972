"""Load pretrained weights from a local file (MODEL.WEIGHTS); vbench never downloads anything.

Accepted files (`torch.save` files, which `safe_torch_load` reads without running code, or
`.safetensors`):
- a vbench training checkpoint ({"format": "vbench_checkpoint", "model": state_dict, ...});
- a bare state dict of the model (vbench, or torchvision's own for torchvision models);
- a PyTorchVideo or SlowFast checkpoint ({"model_state": state_dict, ...}) or state dict;
- torchvision's MViT weights for vbench's MViT.
Foreign key layouts are renamed by the converter registered with the model's family
(`register_model(..., converters={format: function})`).

Loading is strict, with one exception: when only the classifier's class count differs (e.g.
Kinetics-400 weights for a 20-class model), the classifier is dropped with a warning that names
its keys and keeps its fresh initialisation.
"""
import logging
import os
import re
import shlex
from typing import NamedTuple

import torch
import torch.nn as nn
import torchvision

from vbench.errors import ConfigError, UnsafeFileError, WeightsError

from .registry import converters_of, get_builder

logger = logging.getLogger(__name__)

FORMATS = ("auto", "vbench", "pytorchvideo", "slowfast", "torchvision")
SHOWN_KEYS = 5  # keys named in an error message per kind of problem

# Key patterns only a foreign layout has, checked when the keys are not exactly the model's own.
_SIGNATURES = (
    ("pytorchvideo", r"blocks\.\d+\.(conv\.conv_t|res_blocks)\.|patch_embed\.patch_model\.|"
                     r"cls_positional_encoding\."),
    ("slowfast", r"s1\.pathway0_stem\.|head\.projection\.|blocks\.\d+\.attn\.q\.weight"),
    ("torchvision", r"conv_proj\.weight|pos_encoding\.|stem\.0\.weight|layer1\.|features\.\d"),
)

# Where to find pretrained files for the offline hint: registered name -> (zoo, file name).
_ZOO_HINTS = {
    "x3d_xs": ("PyTorchVideo model zoo (kinetics)", "X3D_XS.pyth"),
    "x3d_s": ("PyTorchVideo model zoo (kinetics)", "X3D_S.pyth"),
    "x3d_m": ("PyTorchVideo model zoo (kinetics)", "X3D_M.pyth"),
    "x3d_l": ("PyTorchVideo model zoo (kinetics)", "X3D_L.pyth"),
    "mvit_b_16x4": ("PyTorchVideo model zoo (kinetics)", "MVIT_B_16x4.pyth"),
    "mvit_b_32x3": ("PyTorchVideo model zoo (kinetics)", "MVIT_B_32x3_*.pyth"),
}


class LoadedWeights(NamedTuple):
    path: str
    fmt: str  # the format the file was read as
    dropped_keys: list  # classifier keys left at their initialisation (class count differs)


def load_weights(model, path, fmt="auto", model_name="", contents=None):
    """Load the weights in the local file `path` into `model` (in place); returns `LoadedWeights`.

    `fmt` is MODEL.WEIGHTS_FORMAT ("auto" detects it from the keys); `model_name` is the registered
    name (MODEL.MODEL_NAME), used to pick the converter family and for error messages.
    `contents`: what `read_weights_file(path)` returned, when the caller has read the file already.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"MODEL.WEIGHTS_FORMAT is '{fmt}'; choose one of {list(FORMATS)}.")
    path = os.path.expanduser(path)
    family = _family_of(model, model_name)
    if not os.path.isfile(path):
        raise WeightsError(_missing_file_message(path, model_name, family))
    if contents is None:
        contents = read_weights_file(path)
    state_dict = strip_wrapper_prefixes(extract_state_dict(contents, path))
    model_state = model.state_dict()
    source = fmt if fmt != "auto" else detect_format(state_dict, model_state, family)
    if source not in ("vbench", family):
        state_dict = _convert(state_dict, source, family, path)
    dropped = _drop_mismatched_head(model, state_dict, model_state, path)
    _check_keys(state_dict, model_state, dropped, path, source, model_name)
    model.load_state_dict(state_dict, strict=False)
    logger.info(f"loaded weights from '{path}' ({source} format, {len(state_dict)} tensors)")
    return LoadedWeights(path, source, dropped)


def read_weights_file(path, what="weights file", error=WeightsError):
    """The object stored in `path` (`.safetensors`, or a `torch.save` file read by
    `safe_torch_load`): no code in the file can run. `what` names the file in messages; `error` is
    raised when it cannot be read, `UnsafeFileError` when it holds other Python objects."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
            raise error(f"{what} '{path}' is not a readable safetensors file "
                        f"({type(err).__name__}: {err}).") from None
    return safe_torch_load(path, what, error)


def safe_torch_load(path, what="weights file", error=WeightsError):
    """The object in the `torch.save` file `path`, rebuilt by torch's weights-only unpickler: it
    makes tensors, numbers, strings, lists, tuples and dicts and refuses every other Python
    object, so nothing in the file runs. vbench reads every checkpoint and weights file this way
    and registers no extra types (`torch.serialization.add_safe_globals`).

    Raises `UnsafeFileError` naming the objects when the file holds others (it is not loaded),
    and `error` when it is damaged or not a torch file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        unsafe = _unsafe_globals(path, err) if "Weights only load failed" in str(err) else []
        if unsafe:
            raise UnsafeFileError(unsafe_file_message(path, what, unsafe)) from None
        raise error(f"{what} '{path}' cannot be read by torch.load ({_short_reason(err)}); it is "
                    f"damaged, truncated or not a PyTorch file.") from None


def unsafe_file_message(path, what, found):
    """Why `path` was refused (`found`: the Python objects it holds) and how to convert it."""
    shown = ", ".join(found[:SHOWN_KEYS]) + (", ..." if len(found) > SHOWN_KEYS else "")
    return (f"{what} '{path}' holds pickled Python objects other than tensors, numbers, strings, "
            f"lists and dicts ({shown}). vbench did NOT load it: rebuilding such objects can run "
            f"any code. If you trust the file (you or an older vbench wrote it), convert it: "
            f"`{convert_command(path)}` rewrites it in place as plain data (add -o OUT to write "
            f"elsewhere); otherwise delete it.")


def convert_command(path):
    return f"vbench checkpoint convert --trust {shlex.quote(str(path))}"


def _short_reason(err):
    match = re.search(r"WeightsUnpickler error: *([^\n]*)", str(err))
    detail = match.group(1) if match else (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {detail[:200]}" if detail.strip() else type(err).__name__


def _unsafe_globals(path, err):
    """The Python objects (module.name) the pickle in `path` refers to beyond torch's safe set; torch
    reads them from the pickle's opcodes without running it. For a file in torch's legacy (not zip)
    format, which that reader does not take, the first one, as named in the loader's error `err`."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - a legacy file, or not a readable pickle at all
        return re.findall(r"(?i)unsupported (?:global: )?GLOBAL ([\w.]+)", str(err))[:1]


def extract_state_dict(obj, path=""):
    """The tensor mapping inside a checkpoint (vbench "model", SlowFast/PyTorchVideo "model_state",
    Lightning-style "state_dict") or the object itself when it is already one."""
    if isinstance(obj, dict):
        for key in ("model", "model_state", "state_dict"):
            if isinstance(obj.get(key), dict):
                return extract_state_dict(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
    kind = type(obj).__name__
    found = f" (top-level keys: {', '.join(map(str, list(obj)[:8]))})" if isinstance(obj, dict) else ""
    raise WeightsError(f"weights file '{path}' holds a {kind}{found}, not a state dict or a "
                       f"checkpoint with 'model', 'model_state' or 'state_dict'.")


def strip_wrapper_prefixes(state_dict):
    """Drop DistributedDataParallel ('module.') and torch.compile ('_orig_mod.') key prefixes."""
    stripped = {}
    for key, value in state_dict.items():
        while key.startswith(("module.", "_orig_mod.")):
            key = key.split(".", 1)[1]
        stripped[key] = value
    return stripped


def detect_format(state_dict, model_state, family):
    """The family's own layout ("vbench", or "torchvision" for torchvision models) when the keys
    are exactly the model's, else the foreign layout their names show."""
    native = family if family == "torchvision" else "vbench"

    def keys(mapping):
        return {k for k in mapping if not k.endswith("num_batches_tracked")}

    if keys(state_dict) == keys(model_state):
        return native
    for name, pattern in _SIGNATURES:
        regex = re.compile(pattern)
        if any(regex.match(key) for key in state_dict):
            return name
    return native  # unknown layout: the key check lists what does not match


def _family_of(model, model_name):
    if model_name:
        return get_builder(model_name).model_family
    module = type(model).__module__
    return "torchvision" if module.startswith("torchvision.") else module.rsplit(".", 1)[-1]


def _convert(state_dict, source, family, path):
    converter = converters_of(family).get(source)
    if converter is None:
        raise WeightsError(
            f"weights file '{path}' is in {source} format, and vbench has no converter from it to "
            f"its {family} models (the converters are registered with the models, "
            f"`register_model(..., converters=...)`). Check MODEL.MODEL_NAME, or set "
            f"MODEL.WEIGHTS_FORMAT if the format was detected wrongly.")
    try:
        return strip_wrapper_prefixes(converter(state_dict))
    except (ValueError, KeyError) as err:
        raise WeightsError(f"weights file '{path}' could not be converted from {source} format: "
                           f"{err}") from None


def classifier_keys(model):
    """State-dict keys of the final classifier: the last Linear, else the last convolution."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    conv = [name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    names = linear or conv
    if not names:
        return []
    return [f"{names[-1]}.{p}" for p, _ in model.get_submodule(names[-1]).named_parameters()]


def _drop_mismatched_head(model, state_dict, model_state, path):
    head = [k for k in classifier_keys(model) if k in state_dict and k in model_state]
    differs = [k for k in head if state_dict[k].shape != model_state[k].shape]
    same_features = all(state_dict[k].shape[1:] == model_state[k].shape[1:] for k in differs)
    if not differs or not same_features:
        return []
    file_classes, model_classes = state_dict[differs[0]].shape[0], model_state[differs[0]].shape[0]
    for key in head:
        state_dict.pop(key)
    logger.warning(
        f"weights '{path}': the classifier has {file_classes} classes in the file and "
        f"{model_classes} in the model; not loading {', '.join(head)} (kept at initialisation).")
    return head


def _check_keys(state_dict, model_state, dropped, path, source, model_name):
    missing = [k for k in model_state if k not in state_dict and k not in dropped
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in model_state]
    mismatched = [f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(model_state[k].shape)})"
                  for k in state_dict if k in model_state and state_dict[k].shape != model_state[k].shape]
    problems = []
    for label, keys in (("missing from the file", missing), ("not in the model", unexpected),
                        ("with a different shape", mismatched)):
        if keys:
            shown = ", ".join(keys[:SHOWN_KEYS]) + (", ..." if len(keys) > SHOWN_KEYS else "")
            problems.append(f"{len(keys)} key(s) {label}: {shown}")
    if problems:
        what = f"model '{model_name}'" if model_name else "the model"
        raise WeightsError(
            f"weights file '{path}' (read as {source} format) does not match {what}: "
            + "; ".join(problems) + ". Check MODEL.MODEL_NAME and the model settings it was "
            "trained with, or set MODEL.WEIGHTS_FORMAT.")


def _missing_file_message(path, model_name, family):
    message = (f"weights file not found: '{path}' (MODEL.WEIGHTS). vbench never downloads weights. "
               f"To use pretrained weights offline: download the .pth/.pyth file on a machine with "
               f"internet access, copy it here, and set MODEL.WEIGHTS /path/file.pth")
    hint = _download_hint(model_name, family)
    return message + (f" ({hint})." if hint else ".")


def _download_hint(model_name, family):
    name = model_name.lower()
    if family == "torchvision" and name:
        try:
            return f"torchvision's file for {name}: {torchvision.models.get_model_weights(name).DEFAULT.url}"
        except Exception:  # noqa: BLE001 - a hint only
            return ""
    if name in _ZOO_HINTS:
        zoo, filename = _ZOO_HINTS[name]
        return f"{name}: {filename} from the {zoo}"
    return ""
