"""`vbench checkpoint convert --trust FILE [-o OUT]`: rewrite a checkpoint or weights file that one
trusts as plain data, so that vbench's safe loader reads it.

vbench reads every torch file with torch's weights-only unpickler (`safe_torch_load`), which
rebuilds tensors, numbers, strings, lists and dicts and nothing else. Checkpoints of older vbench
versions hold NumPy RNG states (an ndarray); other tools' files may hold NumPy values or an
argparse.Namespace. Such files are refused. This command is the one place in vbench that unpickles
a file with torch's full unpickler, which runs whatever code the file holds: `--trust` says the
user vouches for the file. It rewrites

- the RNG states of a vbench training checkpoint into the plain form `restore_rng_state` reads
  (lossless: a resumed run continues bit-for-bit);
- NumPy arrays into tensors, NumPy scalars into Python numbers, an argparse.Namespace into a dict;

and leaves everything else as it is. The result is written atomically (to FILE itself unless -o
says otherwise) only when the safe loader's own check finds nothing else in it.
"""
import argparse
import os
from collections import Counter

import numpy as np
import torch

from vbench.engine.checkpoint import atomic_torch_save, is_training_checkpoint, plain_rng_state
from vbench.errors import CheckpointError

_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype,
          torch.device)


def convert_trusted_file(path, out=None):
    """Rewrite the trusted torch file `path` as plain data at `out` (default: `path`, replaced
    atomically); returns a sentence saying what was done."""
    if not os.path.isfile(path):
        raise CheckpointError(f"'{path}' does not exist.")
    out = out or path
    try:
        # The only unsafe load in vbench: it runs any code in the file, which the user trusts (--trust).
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"'{path}' cannot be read by torch.load ({type(err).__name__}: "
                              f"{str(err)[:200]}); it is damaged or not a PyTorch file.") from None
    changes, left = Counter(), []
    kind = "a torch file"
    if is_training_checkpoint(obj):
        kind = f"a vbench training checkpoint (epoch {obj.get('epoch')})"
        obj["rng_states"] = [_plain_rng(state, changes) for state in obj.get("rng_states") or []]
    obj = to_plain(obj, changes, left)
    if not changes:
        return f"'{path}' ({kind}) holds plain data only; nothing to convert, nothing written."

    def require_plain(written, _):
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(written)
        if unsafe:
            where = "; ".join(left[:5]) or "see the names"
            raise CheckpointError(
                f"'{path}' holds Python objects that convert does not turn into plain data "
                f"({', '.join(unsafe)}; at {where}); nothing was written. Save the parts you need "
                f"(e.g. the model's state dict) as tensors yourself.")

    atomic_torch_save(obj, out, check=require_plain)
    done = ", ".join(f"{count} {what}" for what, count in changes.items())
    return (f"converted '{path}' ({kind}): {done}. Wrote '{out}', which vbench's safe loader "
            f"(torch.load with weights_only=True) reads.")


def _plain_rng(state, changes):
    if isinstance(state, dict) and isinstance(state.get("numpy"), tuple):
        changes["RNG state(s) of a process from NumPy's and Python's tuples to lists"] += 1
        return plain_rng_state(state)
    return state


def to_plain(obj, changes, left, where="file"):
    """`obj` with NumPy arrays as tensors, NumPy scalars as Python numbers and Namespaces as dicts.
    Dicts and lists are changed in place (a state dict keeps its `_metadata`); `changes` counts
    what was converted, `left` collects where objects of other types were left as they are."""
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        changes["NumPy array(s) to tensors"] += 1
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        changes["NumPy number(s) to Python numbers"] += 1
        return obj.item()
    if isinstance(obj, argparse.Namespace):
        changes["argparse.Namespace(s) to dicts"] += 1
        obj = vars(obj).copy()
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = to_plain(obj[key], changes, left, f"{where}[{key!r}]")
    elif isinstance(obj, list):
        obj[:] = [to_plain(item, changes, left, f"{where}[{i}]") for i, item in enumerate(obj)]
    elif type(obj) is tuple:
        obj = tuple(to_plain(item, changes, left, f"{where}[{i}]") for i, item in enumerate(obj))
    elif not isinstance(obj, _PLAIN):
        left.append(f"{where} ({type(obj).__module__}.{type(obj).__qualname__})")
    return obj
