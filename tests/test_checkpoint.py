"""Checkpoints: atomic writes, pruning, damaged-file skipping, RNG state round trips."""
import logging
import os
import random

import numpy as np
import pytest
import torch

from vbench.engine.checkpoint import (CheckpointError, Checkpointer, atomic_torch_save,
                                      capture_rng_state, checkpoint_epoch, checkpoint_position,
                                      load_checkpoint_file, restore_rng_state, unwrap_model)


def _state(value):
    return {"model": {"w": torch.full((3,), float(value))}, "history": [value]}


def test_atomic_save_round_trips_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.pyth"
    atomic_torch_save({"x": torch.arange(4)}, str(path))
    assert torch.equal(torch.load(path)["x"], torch.arange(4))
    assert os.listdir(tmp_path) == ["a.pyth"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / "a.pyth")
    atomic_torch_save({"x": 1}, path)
    with pytest.raises(Exception):
        atomic_torch_save({"x": lambda: 0}, path)  # lambdas cannot be pickled
    assert torch.load(path)["x"] == 1
    assert os.listdir(tmp_path) == ["a.pyth"]


def test_keeps_only_the_newest_checkpoints(tmp_path):
    ckpt = Checkpointer(str(tmp_path), keep=2)
    for epoch in range(1, 5):
        ckpt.save(_state(epoch), epoch)
    names = [os.path.basename(p) for p in ckpt.list_checkpoints()]
    assert names == ["checkpoint_epoch_00004.pyth", "checkpoint_epoch_00003.pyth"]
    path, state = ckpt.load_newest()
    assert state["epoch"] == 4 and state["history"] == [4]


def test_a_checkpoint_inside_an_epoch_sorts_between_the_epochs_around_it(tmp_path):
    ckpt = Checkpointer(str(tmp_path), keep=3)
    ckpt.save(_state(1), 1)
    ckpt.save(_state(2), 1, step=37)  # on a scheduler's signal, 37 steps into epoch 2
    names = [os.path.basename(p) for p in ckpt.list_checkpoints()]
    assert names == ["checkpoint_epoch_00001_step_00037.pyth", "checkpoint_epoch_00001.pyth"]
    path, state = ckpt.load_newest()
    assert (state["epoch"], state["step"]) == (1, 37) and checkpoint_position(path) == (1, 37)
    assert checkpoint_epoch(path) == 1 and checkpoint_position(ckpt.path_for(1)) == (1, 0)
    ckpt.save(_state(3), 2)
    ckpt.save(_state(4), 3)
    names = [os.path.basename(p) for p in ckpt.list_checkpoints()]
    assert names == ["checkpoint_epoch_00003.pyth", "checkpoint_epoch_00002.pyth",
                     "checkpoint_epoch_00001_step_00037.pyth"]
    assert checkpoint_position("checkpoint_epoch_x.pyth") is None


def test_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    ckpt = Checkpointer(str(tmp_path), keep=3)
    for epoch in (1, 2):
        ckpt.save(_state(epoch), epoch)
    newest = ckpt.path_for(2)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    logging.getLogger("vbench").propagate = True
    with caplog.at_level(logging.WARNING, logger="vbench"):
        path, state = ckpt.load_newest()
    assert path == ckpt.path_for(1) and state["epoch"] == 1
    assert "skipping damaged checkpoint" in caplog.text and "00002" in caplog.text


def test_non_checkpoint_file_is_rejected_with_its_path(tmp_path):
    path = str(tmp_path / "weights.pth")
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="weights.pth"):
        load_checkpoint_file(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint_file(str(tmp_path / "missing.pyth"))


def test_rng_state_round_trip_reproduces_every_stream():
    state = capture_rng_state(torch.device("cpu"))
    first = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(state, torch.device("cpu"))
    second = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_unwrap_model_strips_compile_and_ddp_wrappers():
    inner = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap_model(Wrapper(inner)) is inner
