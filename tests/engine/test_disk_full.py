"""A full disk loses nothing: checkpoint, results.json, json_stats and heartbeat writes into a file
system that runs out of space (an injected ENOSPC: the one fault a test cannot cause for real
without root) fail with a message naming the file and the free space, and leave every earlier file
byte-identical, with no temporary file behind."""
import errno
import logging
import os

import pytest
import torch

from vbench.bench.clock import BenchmarkClock
from vbench.bench.results import RESULTS_FILE, load_results, mark_failed
from vbench.engine.checkpoint import Checkpointer, load_checkpoint_file
from vbench.engine.log import JSON_STATS_FILE, log_json_stats, setup_logging
from vbench.errors import DiskFullError, VbenchError
from vbench.files import append_line, atomic_write_bytes

from scaffold import fake_cfg, fake_trainer, make_writer, row

FREE_SPACE = r"[\d.]+ (GiB|MiB|KiB|bytes) free of [\d.]+ (GiB|MiB|KiB|bytes)"


def enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk(folder)`: from now on, os.write into a file under `folder` writes half of what it
    is given, then fails with ENOSPC, as a file system that runs out of space mid-write does."""
    real_write = os.write

    def fill(folder):
        folder = os.path.realpath(folder)

        def write(fd, data):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if not target.startswith(folder + os.sep):
                return real_write(fd, data)
            if len(data) > 1:
                real_write(fd, bytes(data[:len(data) // 2]))
            raise enospc()

        monkeypatch.setattr(os, "write", write)

    return fill


def files_in(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))
            if (folder / name).is_file()}


# ------------------------------------------------------------------------------ the helpers
def test_a_full_disk_error_is_a_user_error_naming_the_file_the_free_space_and_what_to_do(tmp_path, full_disk):
    path = tmp_path / "a.json"
    atomic_write_bytes(str(path), b"old")
    full_disk(tmp_path)
    with pytest.raises(DiskFullError, match=rf"cannot write '{path}': the file system is full "
                                            rf"\({FREE_SPACE} on the file system holding '{tmp_path}'\); "
                                            r"the file is as it was before this write\. Do this\."):
        atomic_write_bytes(str(path), b"new" * 1000, "Do this.")
    assert files_in(tmp_path) == {"a.json": b"old"}  # no temporary file left
    assert issubclass(DiskFullError, VbenchError)


def test_other_write_errors_are_raised_as_they_are(tmp_path, monkeypatch):
    def failing(fd, data):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(OSError) as raised:
        atomic_write_bytes(str(tmp_path / "a"), b"x")
    assert raised.value.errno == errno.EIO and not isinstance(raised.value, DiskFullError)
    assert os.listdir(tmp_path) == []


def test_an_append_that_does_not_fit_is_cut_back_to_the_old_length(tmp_path, full_disk):
    path = tmp_path / "log"
    append_line(str(path), "first")
    full_disk(tmp_path)
    with pytest.raises(DiskFullError, match="log'"):
        append_line(str(path), "second line, longer than one byte")
    assert path.read_bytes() == b"first\n"


# ------------------------------------------------------------------------------ the run files
def test_a_checkpoint_that_does_not_fit_keeps_the_one_before_it(tmp_path, monkeypatch):
    checkpointer = Checkpointer(str(tmp_path), keep=2)
    first = checkpointer.save({"model": {"w": torch.arange(3.0)}}, 1)
    before = files_in(tmp_path / "checkpoints")
    real_save = torch.save

    def save_until_full(obj, f):  # torch writes part of the file, then the disk is full
        f.write(b"\x80" * 1000)
        f.flush()
        raise enospc()

    monkeypatch.setattr(torch, "save", save_until_full)
    second = checkpointer.path_for(2)
    with pytest.raises(DiskFullError) as raised:
        checkpointer.save({"model": {"w": torch.arange(3.0)}}, 2)
    message = str(raised.value)
    assert f"cannot write '{second}': the file system is full" in message
    assert f"The checkpoint before it, {first}, is intact." in message
    assert "run the same command again to resume from that checkpoint" in message
    assert raised.value.__cause__.errno == errno.ENOSPC
    assert files_in(tmp_path / "checkpoints") == before  # byte-identical, no partial or temporary file
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpointer.load_newest()[0] == first


def test_results_json_that_does_not_fit_stays_as_it_was(tmp_path, full_disk):
    writer = make_writer(tmp_path)
    writer.add_epoch(row(1, 12.0, 20.0))
    before = files_in(tmp_path)
    full_disk(tmp_path)
    with pytest.raises(DiskFullError) as raised:
        writer.add_epoch(row(2, 24.0, 60.0))
    message = str(raised.value)
    assert f"cannot write '{tmp_path / RESULTS_FILE}': the file system is full" in message
    assert f"resumes from the newest checkpoint in OUTPUT_DIR ({tmp_path})" in message
    assert files_in(tmp_path) == before
    # the run is failing: its "failed" mark cannot be written either, and must not hide that error
    writer.finish("failed")
    assert files_in(tmp_path) == before
    assert [e["epoch"] for e in load_results(str(tmp_path))["epochs"]] == [1]


def test_the_launcher_failed_mark_on_a_full_disk_leaves_the_file_and_says_so(tmp_path, full_disk):
    make_writer(tmp_path)
    before = files_in(tmp_path)
    full_disk(tmp_path)
    assert mark_failed(str(tmp_path / RESULTS_FILE)) == "running"
    assert files_in(tmp_path) == before


def test_json_stats_on_a_full_disk_warn_once_and_the_run_goes_on(tmp_path, full_disk, caplog):
    setup_logging()
    logging.getLogger("vbench").propagate = True
    log_json_stats({"_type": "train_iter", "loss": 1.0}, str(tmp_path))
    before = files_in(tmp_path)
    full_disk(tmp_path)
    with caplog.at_level(logging.WARNING, logger="vbench"):
        log_json_stats({"_type": "train_iter", "loss": 0.5}, str(tmp_path))
        log_json_stats({"_type": "train_iter", "loss": 0.25}, str(tmp_path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"cannot write '{tmp_path / JSON_STATS_FILE}'" in warnings[0]
    assert "The run goes on" in warnings[0]
    assert files_in(tmp_path) == before  # no partial line


def test_a_heartbeat_that_does_not_fit_is_a_clock_warning_and_the_old_one_stays(tmp_path, full_disk):
    now = [0.0]
    clock = BenchmarkClock(str(tmp_path / "clock_heartbeat.json"), time_fn=lambda: now[0])
    clock.start()
    before = files_in(tmp_path)
    full_disk(tmp_path)
    for _ in range(3):
        now[0] += 60.0
        clock.beat()
    assert clock.running and clock.elapsed() == 180.0
    assert len(clock.warnings) == 1 and "clock_heartbeat.json': the file system is full" in clock.warnings[0]
    assert files_in(tmp_path) == before


def test_a_run_whose_second_checkpoint_does_not_fit_stops_clearly_and_resumes_from_the_first(tmp_path, monkeypatch):
    cfg = fake_cfg(tmp_path, "SOLVER.MAX_EPOCH", "3", "BENCHMARK.STOP_AT_TARGET", "False")
    real_save = torch.save
    saves = []

    def save_once_then_full(obj, f):
        saves.append(obj["epoch"])
        if len(saves) > 1:
            f.write(b"\x80" * 100)
            raise enospc()
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_once_then_full)
    trainer = fake_trainer(cfg)
    with pytest.raises(DiskFullError, match="checkpoint_epoch_00002.pyth': the file system is full"):
        trainer.train()
    folder = tmp_path / "checkpoints"
    assert os.listdir(folder) == ["checkpoint_epoch_00001.pyth"]
    assert load_checkpoint_file(str(folder / "checkpoint_epoch_00001.pyth"))["epoch"] == 1
    assert load_results(str(tmp_path))["run"]["status"] == "failed"

    monkeypatch.setattr(torch, "save", real_save)  # space was freed: the same command resumes
    resumed = fake_trainer(cfg)
    assert resumed.start_epoch == 1
    resumed.train()
    results = load_results(str(tmp_path))
    assert [e["epoch"] for e in results["epochs"]] == [1, 2, 3] and results["run"]["status"] == "reached"
