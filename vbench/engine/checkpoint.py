"""Checkpoints: atomic writes, the newest-loadable search for auto-resume, RNG state capture.

A checkpoint is one file written by rank 0, OUTPUT_DIR/checkpoints/checkpoint_epoch_00005.pyth,
holding everything needed to continue bit-for-bit: model, optimizer, grad scaler, LR schedule,
the number of finished epochs, the RNG states of EVERY process (gathered to rank 0 as a list
indexed by rank), the benchmark clock, the epoch history and the config hash. A checkpoint taken
inside an epoch (on a scheduler's signal, preemption.py) also names the steps done in the next
epoch: checkpoint_epoch_00005_step_00037.pyth (5 epochs and 37 steps of the sixth).
"""
import glob
import os
import random
import re

import numpy as np
import torch

from vbench.engine.log import get_logger
from vbench.errors import CheckpointError, ConfigError
from vbench.models.weights import load_weights

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


def atomic_torch_save(obj, path):
    """Write to a temporary file, fsync, then rename: a crash never leaves a half-written `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


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
        atomic_torch_save(dict(state, format=FORMAT_TAG, epoch=epoch, step=step), path)
        for old in self.list_checkpoints()[self.keep:]:
            os.remove(old)
        return path

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


def load_initial_weights(model, path, cfg):
    """Model weights only, from a vbench checkpoint or any format `load_weights` understands."""
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint '{path}' (TRAIN.CHECKPOINT_FILE_PATH or "
                          f"TEST.CHECKPOINT_FILE_PATH) does not exist.")
    try:
        model.load_state_dict(load_checkpoint_file(path)["model"])
    except CheckpointError:
        load_weights(model, path, cfg.MODEL.WEIGHTS_FORMAT, cfg.MODEL.MODEL_NAME)
    get_logger().info(f"loaded weights from {path}")


def find_test_checkpoint(cfg):
    """TEST.CHECKPOINT_FILE_PATH, else the newest loadable checkpoint in OUTPUT_DIR, else None."""
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        return cfg.TEST.CHECKPOINT_FILE_PATH
    return Checkpointer(cfg.OUTPUT_DIR, is_main=False).load_newest()[0]
