"""Checkpoints: atomic writes, pruning, damaged-file skipping, RNG state round trips, and a state
that torch's weights-only loader reads back in full (model, optimizer, grad scaler, RNG states)."""
import logging
import os
import random

import numpy as np
import pytest
import torch

from vbench.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    atomic_torch_save,
    capture_rng_state,
    checkpoint_epoch,
    checkpoint_position,
    load_checkpoint_file,
    plain_rng_state,
    restore_rng_state,
    unwrap_model,
)


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


def draws():
    return random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(2)


def same_draws(a, b):
    return a[:4] == b[:4] and torch.equal(a[4], b[4])


def test_rng_state_round_trip_through_a_safe_file_reproduces_every_stream(tmp_path):
    random.gauss(0, 1), np.random.randn()  # a cached Gaussian in both states
    path = str(tmp_path / "rng.pyth")
    atomic_torch_save(capture_rng_state(torch.device("cpu")), path)
    first = draws()
    restore_rng_state(torch.load(path, weights_only=True), torch.device("cpu"))
    assert same_draws(first, draws())


def test_an_older_vbench_rng_state_made_plain_gives_the_same_streams():
    random.gauss(0, 1), np.random.randn()
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    assert isinstance(old["numpy"][1], np.ndarray)  # what the safe loader refuses
    first = draws()
    restore_rng_state(plain_rng_state(old), torch.device("cpu"))
    assert same_draws(first, draws())


def test_a_training_state_loads_with_the_weights_only_loader(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizers = [torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True),
                  torch.optim.AdamW(model.parameters(), lr=0.1)]
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    for optimizer in optimizers:
        scaler.scale(model(torch.ones(4, 3)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
             "scaler": scaler.state_dict(), "rng_states": [capture_rng_state(torch.device("cpu"))]}
    assert state["scaler"]["scale"] > 0 and state["optimizers"][0]["state"]  # not empty states
    ckpt = Checkpointer(str(tmp_path))
    path = ckpt.save(state, 1)
    loaded = torch.load(path, weights_only=True)
    restored = torch.optim.AdamW(model.parameters(), lr=0.1)
    restored.load_state_dict(loaded["optimizers"][1])
    exp_avg = [o.state_dict()["state"][0]["exp_avg"] for o in (restored, optimizers[1])]
    assert torch.equal(*exp_avg)
    restored_scaler = torch.amp.GradScaler("cpu", enabled=True)
    restored_scaler.load_state_dict(loaded["scaler"])
    assert restored_scaler.state_dict() == scaler.state_dict()
    assert ckpt.load_newest()[0] == path


def test_a_state_the_safe_loader_cannot_read_back_is_not_written(tmp_path):
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(_state(1), 1)
    with pytest.raises(CheckpointError, match=r"00002.pyth' was not written.*numpy"):
        ckpt.save(dict(_state(2), loss=np.float64(0.5)), 2)  # a NumPy scalar needs NumPy's unpickler
    assert os.listdir(ckpt.folder) == ["checkpoint_epoch_00001.pyth"]  # no temporary file left


def test_pruning_keeps_the_new_checkpoint_when_a_later_epoch_file_was_skipped(tmp_path):
    ckpt = Checkpointer(str(tmp_path), keep=1)
    stale = ckpt.path_for(9)
    with open(stale, "wb") as f:
        f.write(b"not a checkpoint")  # skipped at resume: the run continues from an earlier epoch
    for epoch in (1, 2):
        ckpt.save(_state(epoch), epoch)
    assert sorted(os.listdir(ckpt.folder)) == ["checkpoint_epoch_00002.pyth", "checkpoint_epoch_00009.pyth"]


def test_unwrap_model_strips_compile_and_ddp_wrappers():
    inner = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap_model(Wrapper(inner)) is inner
