"""A loader worker killed with SIGKILL (real processes, real signals): the loader restarts its
workers and the batches after the death are the ones an uninterrupted pass gives, clip for clip."""
import gc
import logging
import os
import signal
import time

import pytest
import torch

from vbench.data import build_loader  # noqa: E402
from vbench.errors import LoaderWorkersDied, RunInterrupted  # noqa: E402

from scaffold import loader_cfg


def record(batch):
    """What a batch holds, copied (the loader's slot memory is reused once the batch is dropped)."""
    return (batch["video_ids"].tolist(), batch["frame_indices"].tolist(), batch["valid"].tolist(),
            batch["clips"].clone())


def kill(loader, process):
    """SIGKILL one of the loader's worker processes; returns its pid. The main process then sleeps
    (not reaping it), so the SIGCHLD arrives while it runs code outside the loader: torch's handler
    would raise there."""
    pid = loader.data_loader._iterator._workers[process].pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    return pid


def passes(cfg, split, training, epochs=(0, 1), kill_at=None, process=0, between_epochs=False):
    """Every batch of `epochs` as `record`s; with `kill_at` = (epoch, batch), SIGKILL worker
    `process` after that batch arrived (or, with `between_epochs`, after that epoch ended)."""
    torch.manual_seed(7)
    loader = build_loader(cfg, split, training=training)
    records, pids = [], []
    for epoch in epochs:
        loader.set_epoch(epoch)
        for index, batch in enumerate(loader):
            records.append(record(batch))
            del batch
            if kill_at == (epoch, index) and not between_epochs:
                pids.append(kill(loader, process))
        if between_epochs and kill_at[0] == epoch:
            pids.append(kill(loader, process))
    after = torch.rand(4)  # the training process's own random stream
    return loader, records, pids, after


def assert_same(records, expected):
    assert len(records) == len(expected)
    for got, want in zip(records, expected):
        assert got[:3] == want[:3]
        assert torch.equal(got[3], want[3])  # the same random crops and flips: the replay drew the same


def shared_segments_of(pid):
    """Shared-memory segments of process `pid` that this process still maps (torch names its
    segments /dev/shm/torch_<creating pid>_...)."""
    with open("/proc/self/maps") as maps:
        return [line for line in maps if f"/torch_{pid}_" in line]


@pytest.mark.parametrize("kill_at,process,batch,piece", [((0, 2), 1, 2, 0), ((0, 5), 0, 2, 0), ((1, 0), 0, 2, 0),
                                                        ((0, 1), 1, 4, 1), ((1, 2), 0, 4, 2)])
def test_a_killed_training_worker_is_replaced_and_every_batch_is_the_uninterrupted_one(
        data_root, kill_at, process, batch, piece, caplog):
    """Pieces of a whole batch, and pieces smaller than a batch (a batch spans both workers). A
    worker killed after it sent its last piece of the epoch is found when the next pass begins."""
    cfg = loader_cfg(data_root, workers=2, batch=batch, DATA_LOADER__PIECE_SIZE=piece, DATA__FRAMES_BETWEEN_CLIPS=2)
    epochs = (0, 1, 2)
    _, expected, _, rng_expected = passes(cfg, "train", True, epochs)
    with caplog.at_level(logging.WARNING, logger="vbench"):
        loader, records, pids, rng_after = passes(cfg, "train", True, epochs, kill_at=kill_at, process=process)
    assert_same(records, expected)  # the same clips, the same order, the same augmentation
    assert torch.equal(rng_after, rng_expected)  # the restart did not move the trainer's random stream
    [event] = loader.restarts.events
    assert event["pid"] == pids[0] and event["how"] == "was killed by signal SIGKILL"
    assert event["role"] == "train" and event["resume_s"] >= 0
    if event["epoch"] is not None:  # noticed within the epoch, at a later batch
        assert event["epoch"] == kill_at[0] + 1 and kill_at[1] < event["at_batch"] + 1 <= len(loader)
    else:  # it had sent its last piece: noticed when the next pass began
        assert event["at_batch"] == 0
    [message] = [r.getMessage() for r in caplog.records if "killed by signal SIGKILL" in r.getMessage()]
    assert f"(pid {pids[0]})" in message and "out-of-memory killer" in message
    assert "DATA_LOADER.NUM_WORKERS (now 2)" in message and "DATA_LOADER.PREFETCH_FACTOR (now 2)" in message
    # batch slots: the dead processes' marks were cleared (no batch fell back to fresh memory) and
    # none of their shared memory is still mapped here once their batches were dropped
    assert loader._ledger.fresh == 0
    gc.collect()
    assert not shared_segments_of(pids[0])
    loader.close()


def test_workers_killed_twice_in_an_epoch_are_replaced_twice_with_the_same_batches(data_root):
    """The second restart replaces processes that already play rotated plan workers (pieces of one
    clip, two ahead per worker, 32 pieces per worker: both kills come with pieces left to send)."""
    cfg = loader_cfg(data_root, workers=2, batch=4, DATA_LOADER__PIECE_SIZE=1, DATA_LOADER__PREFETCH_FACTOR=1,
                     DATA__FRAMES_BETWEEN_CLIPS=1)
    _, expected, _, _ = passes(cfg, "train", True, epochs=(0, 1))
    torch.manual_seed(7)
    loader = build_loader(cfg, "train", training=True)
    records, pids = [], []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        for batch in loader:
            records.append(record(batch))
            del batch
            if epoch == 0 and len(pids) == len(loader.restarts.events) < 2:  # the last kill was handled
                pids.append(kill(loader, 1))
    assert_same(records, expected)
    assert [event["pid"] for event in loader.restarts.events] == pids
    assert [event["epoch"] for event in loader.restarts.events] == [1, 1]
    # the watchdog's count (engine/watchdog.py): batches yielded plus every piece a worker made, the
    # lost and replayed ones included, so it exceeds an uninterrupted run's (clips and one closing
    # piece per worker and epoch)
    assert loader.batches_yielded == len(records)
    assert loader.progress() > len(records) + 2 * (loader.num_clips + 2)
    loader.close()


def test_a_worker_killed_between_epochs_is_replaced_when_the_next_epoch_starts(data_root):
    cfg = loader_cfg(data_root, workers=2, batch=2)
    _, expected, _, _ = passes(cfg, "train", True, epochs=(0, 1, 2))
    loader, records, pids, _ = passes(cfg, "train", True, epochs=(0, 1, 2), kill_at=(0, None),
                                      process=1, between_epochs=True)
    assert_same(records, expected)
    [event] = loader.restarts.events
    assert event["pid"] == pids[0] and event["epoch"] is None and event["at_batch"] == 0
    loader.close()


def test_a_killed_evaluation_worker_is_replaced_too(data_root):
    cfg = loader_cfg(data_root, workers=2, batch=2)
    _, expected, _, _ = passes(cfg, "val", False, epochs=(0,))
    loader, records, pids, _ = passes(cfg, "val", False, epochs=(0,), kill_at=(0, 1), process=0)
    assert_same(records, expected)
    assert [e["role"] for e in loader.restarts.events] == ["eval"]
    loader.close()


def test_past_max_worker_restarts_the_loader_stops_with_what_happened_and_what_to_lower(data_root):
    cfg = loader_cfg(data_root, workers=2, batch=2, DATA_LOADER__MAX_WORKER_RESTARTS=0)
    loader = build_loader(cfg, "train", training=True)
    batches = iter(loader)
    next(batches)
    pid = kill(loader, 0)
    with pytest.raises(LoaderWorkersDied) as info:
        for _ in batches:
            pass
    message = str(info.value)
    assert isinstance(info.value, RunInterrupted)  # the launcher adds the command that resumes
    assert f"train loader worker 0 of 2 of rank 0 (pid {pid}) was killed by signal SIGKILL" in message
    assert "more than DATA_LOADER.MAX_WORKER_RESTARTS = 0: the run stops" in message
    assert "lower DATA_LOADER.NUM_WORKERS (now 2)" in message
    assert loader.restarts.events == [] and loader.data_loader._iterator is None  # old workers stopped
    loader.close()
