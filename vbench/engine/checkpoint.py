"""Checkpoints: atomic writes, the newest-loadable search for auto-resume, RNG state capture,
and loading a checkpoint or weights file given by TRAIN/TEST.CHECKPOINT_FILE_PATH.

A checkpoint is one file written by rank 0, OUTPUT_DIR/checkpoints/checkpoint_epoch_00005.pyth,
holding everything needed to continue bit-for-bit: model, optimizer, grad scaler, LR schedule,
the number of finished epochs, the RNG states of EVERY process (gathered to rank 0 as a list
indexed by rank), the benchmark clock, the epoch history and the config hash. A checkpoint taken
inside an epoch (on a scheduler's signal, preemption.py) also names the steps done in the next
epoch: checkpoint_epoch_00005_step_00037.pyth (5 epochs and 37 steps of the sixth).

Checkpoints hold plain data only (tensors, numbers, strings, lists, tuples, dicts; the RNG states
too), so every file is read by torch's weights-only unpickler (`safe_torch_load`): a checkpoint
from someone else cannot run code. A write that would hold anything else is refused. A file that
needs more (an older vbench's checkpoint with NumPy objects, or a planted one) is never unpickled;
`vbench checkpoint convert --trust FILE` (checkpoint_convert.py) rewrites a file one trusts.
"""
import glob
import os
import random
import re

import numpy as np
import torch

from vbench.engine.log import get_logger
from vbench.errors import CheckpointError, ConfigError, UnsafeFileError
from vbench.files import atomic_open
from vbench.models.weights import load_weights, read_weights_file, safe_torch_load

CHECKPOINT_DIR = "checkpoints"
FORMAT_TAG = "vbench_checkpoint"
_NAME_RE = re.compile(r"checkpoint_epoch_(\d+)(?:_step_(\d+))?\.pyth$")


def checkpoint_position(path):
    """(epochs done, steps done in the next epoch) of a checkpoint file name, or None for another
    name: checkpoint_epoch_00005.pyth is (5, 0), checkpoint_epoch_00005_step_00037.pyth (5, 37)."""
    match = _NAME_RE.search(os.path.basename(path))
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def checkpoint_epoch(path):
    """The epoch in a checkpoint file name (checkpoint_epoch_00005.pyth: 5), or None for another name."""
    position = checkpoint_position(path)
    return position[0] if position else None


def atomic_torch_save(obj, path, what_to_do="", check=None):
    """Write to a temporary file, fsync, then rename: a crash or a full disk never leaves a
    half-written `path` (a full disk raises DiskFullError naming the path, the free space and
    `what_to_do`; vbench/files.py). `check(temporary_path, path)`, if given, may refuse the written
    file (by raising) before the rename; `path` then keeps its previous content."""
    with atomic_open(path, what_to_do, check) as f:
        torch.save(obj, f)


def require_safe_checkpoint(written, path):
    """Refuse a checkpoint that torch's weights-only loader could not read back: vbench would then
    refuse to resume from it. `written`: the file to check (read from its pickle's opcodes only)."""
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(written)
    if unsafe:
        raise CheckpointError(
            f"checkpoint '{path}' was not written: its state holds Python objects "
            f"({', '.join(unsafe)}) that vbench's safe loader does not rebuild, so a run could not "
            f"resume from it (the previous checkpoints are kept). Checkpoint state must be tensors, "
            f"numbers, strings, lists and dicts; a model's state_dict (get_extra_state) or a hook "
            f"added something else.")


def capture_rng_state(device):
    """The RNG states of Python, NumPy and torch (and CUDA on a GPU) as plain data."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return plain_rng_state(state)


def plain_rng_state(state):
    """An RNG state with Python's and NumPy's own tuples (NumPy's holds an ndarray, which the safe
    loader does not rebuild; older vbench checkpoints hold these) as dicts of lists and numbers.
    Lossless: `restore_rng_state` gives back the same streams."""
    state = dict(state)
    if isinstance(state["python"], tuple):
        version, internal, gauss_next = state["python"]
        state["python"] = {"version": version, "internal": list(internal), "gauss_next": gauss_next}
    if isinstance(state["numpy"], tuple):
        name, key, pos, has_gauss, gauss = state["numpy"]
        state["numpy"] = {"bit_generator": str(name), "key": np.asarray(key).tolist(), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return state


def restore_rng_state(state, device):
    python, numpy = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    np.random.set_state((numpy["bit_generator"], np.asarray(numpy["key"], dtype=np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_checkpoint_file(path):
    """The vbench training checkpoint in `path`, read by the safe loader (nothing in it runs).

    CheckpointError when the file is missing, damaged or not a training checkpoint;
    UnsafeFileError when it holds Python objects beyond plain data (it is not loaded).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: '{path}'.")
    state = safe_torch_load(path, "checkpoint", CheckpointError)
    if not is_training_checkpoint(state):
        raise CheckpointError(f"'{path}' is not a vbench training checkpoint.")
    return state


def is_training_checkpoint(obj):
    return isinstance(obj, dict) and obj.get("format") == FORMAT_TAG and "model" in obj


class Checkpointer:
    """Saves, prunes and finds the checkpoints of one run folder."""

    def __init__(self, output_dir, keep=2, is_main=True):
        self.folder = os.path.join(output_dir, CHECKPOINT_DIR)
        self.keep = max(1, int(keep))
        self.is_main = is_main
        if is_main:
            os.makedirs(self.folder, exist_ok=True)

    def path_for(self, epoch, step=0):
        name = f"checkpoint_epoch_{epoch:05d}" + (f"_step_{step:05d}" if step else "")
        return os.path.join(self.folder, name + ".pyth")

    def list_checkpoints(self):
        """Checkpoint paths, newest (highest epoch, then step) first."""
        paths = glob.glob(os.path.join(self.folder, "checkpoint_epoch_*.pyth"))
        return sorted((path for path in paths if checkpoint_position(path) is not None),
                      key=checkpoint_position, reverse=True)

    def save(self, state, epoch, step=0):
        """Write `state` after `epoch` epochs and `step` steps of the next (rank 0 only) and delete all
        but the newest `keep`."""
        if not self.is_main:
            return None
        path = self.path_for(epoch, step)
        atomic_torch_save(dict(state, format=FORMAT_TAG, epoch=epoch, step=step), path,
                          self._full_disk_hint(), check=require_safe_checkpoint)
        # Only files up to this position are pruned: one further on (a refused or damaged file
        # this run resumed before) must not push out the checkpoint just written.
        earlier = [old for old in self.list_checkpoints() if checkpoint_position(old) <= (epoch, step)]
        for old in earlier[self.keep:]:
            os.remove(old)
        return path

    def _full_disk_hint(self):
        older = self.list_checkpoints()
        kept = f"The checkpoint before it, {older[0]}, is intact. " if older else ""
        return (kept + "Free space there (or move the run folder to a larger disk and point "
                "OUTPUT_DIR at it), then run the same command again"
                + (" to resume from that checkpoint." if older else " (no checkpoint exists yet)."))

    def load_newest(self):
        """(path, state) of the newest checkpoint that loads, or (None, None) when there is none.

        A damaged file is skipped with a warning. A file holding Python objects beyond plain data
        is never unpickled: it is skipped with a warning that says so, and when no checkpoint is
        left to resume from, UnsafeFileError stops the run instead of starting it over (which
        would silently discard, e.g., an older vbench's checkpoints that only need converting).
        """
        refused = []
        for path in self.list_checkpoints():
            try:
                return path, load_checkpoint_file(path)
            except UnsafeFileError as err:
                refused.append(path)
                get_logger().warning(f"refusing checkpoint: {err}")
            except CheckpointError as err:
                get_logger().warning(f"skipping damaged checkpoint: {err}")
        if refused:
            raise UnsafeFileError(
                f"no checkpoint in '{self.folder}' can be resumed: {', '.join(refused)} hold(s) "
                f"Python objects that vbench does not unpickle (that could run code), and nothing "
                f"was loaded. If you trust them, convert each with `vbench checkpoint convert --trust "
                f"FILE` and rerun; otherwise delete them, or use a new OUTPUT_DIR to start over.")
        return None, None


def model_state(model):
    """State dict of the bare model (no DDP `module.` or torch.compile `_orig_mod.` prefix)."""
    return unwrap_model(model).state_dict()


def unwrap_model(model):
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def load_initial_weights(model, path, cfg):
    """Model weights from TRAIN.CHECKPOINT_FILE_PATH or TEST.CHECKPOINT_FILE_PATH: a vbench training
    checkpoint (its "model", strictly) or any weights file `load_weights` understands.

    The file is read once, by the safe loader; what it holds decides how it is used, so no
    unsafe loader ever sees it.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint '{path}' (TRAIN.CHECKPOINT_FILE_PATH or "
                          f"TEST.CHECKPOINT_FILE_PATH) does not exist.")
    contents = read_weights_file(path, "checkpoint", CheckpointError)
    if is_training_checkpoint(contents):
        try:
            model.load_state_dict(contents["model"])
        except RuntimeError as err:
            raise CheckpointError(f"checkpoint '{path}' does not fit the model "
                                  f"'{cfg.MODEL.MODEL_NAME}': {str(err)[:500]}") from None
    else:
        load_weights(model, path, cfg.MODEL.WEIGHTS_FORMAT, cfg.MODEL.MODEL_NAME, contents=contents)
    get_logger().info(f"loaded weights from {path}")


def find_test_checkpoint(cfg):
    """TEST.CHECKPOINT_FILE_PATH, else the newest loadable checkpoint in OUTPUT_DIR, else None."""
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        return cfg.TEST.CHECKPOINT_FILE_PATH
    return Checkpointer(cfg.OUTPUT_DIR, is_main=False).load_newest()[0]
