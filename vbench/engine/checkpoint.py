"""Checkpoints: atomic writes, the newest-loadable search for auto-resume, RNG state capture.

A checkpoint is one file written by rank 0, OUTPUT_DIR/checkpoints/checkpoint_epoch_00005.pyth,
holding everything needed to continue bit-for-bit: model, optimizer, grad scaler, LR schedule,
the number of finished epochs, the RNG states of EVERY process (gathered to rank 0 as a list
indexed by rank), the benchmark clock, the epoch history and the config hash.
"""
import glob
import os
import random
import re

import numpy as np
import torch

from vbench.engine.log import get_logger
from vbench.errors import CheckpointError
from vbench.files import atomic_open

CHECKPOINT_DIR = "checkpoints"
FORMAT_TAG = "vbench_checkpoint"
_NAME_RE = re.compile(r"checkpoint_epoch_(\d+)\.pyth$")


def checkpoint_epoch(path):
    """The epoch in a checkpoint file name (checkpoint_epoch_00005.pyth: 5), or None for another name."""
    match = _NAME_RE.search(os.path.basename(path))
    return int(match.group(1)) if match else None


def atomic_torch_save(obj, path, what_to_do=""):
    """Write to a temporary file, fsync, then rename: a crash or a full disk never leaves a
    half-written `path` (a full disk raises DiskFullError naming the path, the free space and
    `what_to_do`; vbench/files.py)."""
    with atomic_open(path, what_to_do) as f:
        torch.save(obj, f)


def capture_rng_state(device):
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state, device):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_checkpoint_file(path):
    """The checkpoint dict in `path`; CheckpointError naming the file and the reason otherwise."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: '{path}'.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({type(err).__name__}: {err}); "
                              f"it is damaged or was not written by vbench.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_TAG or "model" not in state:
        raise CheckpointError(f"'{path}' is not a vbench training checkpoint.")
    return state


def is_vbench_checkpoint(path):
    try:
        load_checkpoint_file(path)
        return True
    except CheckpointError:
        return False


class Checkpointer:
    """Saves, prunes and finds the checkpoints of one run folder."""

    def __init__(self, output_dir, keep=2, is_main=True):
        self.folder = os.path.join(output_dir, CHECKPOINT_DIR)
        self.keep = max(1, int(keep))
        self.is_main = is_main
        if is_main:
            os.makedirs(self.folder, exist_ok=True)

    def path_for(self, epoch):
        return os.path.join(self.folder, f"checkpoint_epoch_{epoch:05d}.pyth")

    def list_checkpoints(self):
        """Checkpoint paths, newest (highest epoch) first."""
        paths = glob.glob(os.path.join(self.folder, "checkpoint_epoch_*.pyth"))
        return sorted((path for path in paths if checkpoint_epoch(path) is not None),
                      key=checkpoint_epoch, reverse=True)

    def save(self, state, epoch):
        """Write `state` for `epoch` (rank 0 only) and delete all but the newest `keep`."""
        if not self.is_main:
            return None
        path = self.path_for(epoch)
        atomic_torch_save(dict(state, format=FORMAT_TAG, epoch=epoch), path, self._full_disk_hint())
        for old in self.list_checkpoints()[self.keep:]:
            os.remove(old)
        return path

    def _full_disk_hint(self):
        older = self.list_checkpoints()
        kept = f"The checkpoint before it, {older[0]}, is intact. " if older else ""
        return (kept + "Free space there (or move the run folder to a larger disk and point "
                "OUTPUT_DIR at it), then run the same command again"
                + (" to resume from that checkpoint." if older else " (no checkpoint exists yet)."))

    def load_newest(self):
        """(path, state) of the newest checkpoint that loads; damaged ones are skipped with a warning."""
        for path in self.list_checkpoints():
            try:
                return path, load_checkpoint_file(path)
            except CheckpointError as err:
                get_logger().warning(f"skipping damaged checkpoint: {err}")
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
