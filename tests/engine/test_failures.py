"""A failed process of a multi-process run: the launcher's report (formatting, cheap), results.json
marked "failed" by the launcher, real spawned workers that raise or exit, and real 2-process gloo
training runs whose rank 1 or rank 0 is SIGKILLed from outside, then resumed by the printed command."""
import inspect
import json
import os
import signal
import subprocess
import time

import pytest

from vbench import errors
from vbench.bench.results import RESULTS_FILE, ResultsWriter, load_results, mark_failed, world_block
from vbench.cli.train import USER_ERRORS
from vbench.config import ConfigError
from vbench.engine import distributed as du
from vbench.engine import failures
from vbench.engine.failures import ProcessEnd, WorkersFailed, failure_report, rerun_command
from vbench.engine.launch import launch_workers

from scaffold import CPU_RANK, FAKE_SYSINFO, TWO_PROCESSES, report_cfg, run_net, spawned_children, worker_pids

ARGV = ["tools/run_net.py", "--cfg", "configs/my run.yaml", "OUTPUT_DIR", "runs/a"]


def traceback_of(error):
    return f"Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n{error}\n"


def write_checkpoints(tmp_path, *epochs):
    (tmp_path / "checkpoints").mkdir()
    for epoch in epochs:  # the report reads names only
        (tmp_path / "checkpoints" / f"checkpoint_epoch_{epoch:05d}.pyth").write_bytes(b"")


# ------------------------------------------------------------------------------ the report
def test_report_names_the_killed_rank_the_oom_hint_the_checkpoint_and_the_resume_command(tmp_path):
    write_checkpoints(tmp_path, 1, 2)
    gloo = traceback_of("RuntimeError: [gloo] Connection closed by peer")
    failure = WorkersFailed([ProcessEnd(0, 0, 100, 1, gloo, failed_at=12.5), ProcessEnd(1, 1, 101, -9)], 2, 0)
    lines = failure_report(report_cfg(tmp_path), failure, ARGV, "/home/me/vbench").splitlines()
    # the rank killed outright is the cause, not rank 0 whose collective then lost its peer
    assert lines[0] == ("vbench: error: rank 1 of 2 (pid 101) was killed by signal SIGKILL: likely killed by "
                        "the kernel's out-of-memory killer (check `dmesg` for 'Killed process 101'), or by hand")
    assert lines[1] == "  then rank 0 of 2 (pid 100) failed with RuntimeError: [gloo] Connection closed by peer"
    assert lines[2:5] == [
        f"  no {RESULTS_FILE} was written: the run failed during set-up.",  # no "stopped" line: both ended
        f"  Newest checkpoint: {tmp_path}/checkpoints/checkpoint_epoch_00002.pyth (epoch 2 of 5).",
        "  To resume from epoch 2, rerun the same command (TRAIN.AUTO_RESUME is on: it continues from "
        "the newest checkpoint in OUTPUT_DIR):"]
    python = rerun_command(["x.py"]).split()[0]
    assert lines[5:] == [f"    cd /home/me/vbench && {python} tools/run_net.py --cfg 'configs/my run.yaml' "
                         f"OUTPUT_DIR runs/a"]


def test_report_without_auto_resume_adds_the_key_and_without_checkpoint_reruns(tmp_path):
    failure = WorkersFailed([ProcessEnd(1, 1, 7, 143, failed_at=3.0)], 2, 1)
    cfg = report_cfg(tmp_path, "TRAIN.AUTO_RESUME", "False")
    text = failure_report(cfg, failure, ARGV, "/w")
    assert "rank 1 of 2 (pid 7) exited with code 143 after receiving SIGTERM: stopped from outside" in text
    assert "The launcher stopped the other 1 process(es) of this node." in text
    assert "No checkpoint was written yet." in text and "To run it again, rerun the same command:" in text
    write_checkpoints(tmp_path, 3)
    text = failure_report(cfg, failure, ARGV, "/w")
    assert "TRAIN.AUTO_RESUME is off; to resume from epoch 3, rerun the command with TRAIN.AUTO_RESUME True:" in text
    assert text.endswith("OUTPUT_DIR runs/a TRAIN.AUTO_RESUME True")


def test_report_on_a_second_node_names_the_node_and_resumes_on_every_node(tmp_path):
    cfg = report_cfg(tmp_path, "NUM_SHARDS", "2", "SHARD_ID", "1")
    text = failure_report(cfg, WorkersFailed([ProcessEnd(3, 1, 55, 2)], 4, 1), ARGV, "/w")
    assert text.startswith("vbench: error: rank 3 of 4 (node SHARD_ID 1, local process 1, pid 55) exited "
                           "with code 2\n")
    assert "results.json is written by rank 0, on the node with SHARD_ID 0." in text
    assert "rerun the same command on every node (each with its own SHARD_ID)" in text


def test_report_shows_a_traceback_for_a_bug_but_only_the_message_for_a_user_error(tmp_path):
    bug = WorkersFailed([ProcessEnd(1, 1, 9, 1, traceback_of("KeyError: 'clips'"))], 2, 1)
    text = failure_report(report_cfg(tmp_path), bug, ARGV, "/w")
    assert text.startswith("Traceback (most recent call last):\n")
    assert "\nvbench: error: rank 1 of 2 (pid 9) failed with KeyError: 'clips'\n" in text
    user = WorkersFailed([ProcessEnd(0, 0, 9, 1, traceback_of("vbench.errors.ConfigError: fix KEY"),
                                     user_error=True)], 2, 1)
    text = failure_report(report_cfg(tmp_path), user, ARGV, "/w")
    assert text.startswith("vbench: error: rank 0 of 2 (pid 9) failed with vbench.errors.ConfigError: fix KEY")
    # a user error with a message of several lines: the whole message, no traceback
    many = "vbench.errors.TooManyBadVideos: 2 of 3 training videos are left out\n  a.mp4: empty\n  b.mp4: text"
    bad = WorkersFailed([ProcessEnd(1, 1, 9, 1, traceback_of(many), user_error=True)], 2, 1)
    text = failure_report(report_cfg(tmp_path), bad, ARGV, "/w")
    assert text.startswith("vbench: error: rank 1 of 2 (pid 9) failed with " + many + "\n")


def test_report_of_a_test_only_run_says_nothing_about_training(tmp_path):
    cfg = report_cfg(tmp_path, "TRAIN.ENABLE", "False")
    text = failure_report(cfg, WorkersFailed([ProcessEnd(0, 0, 9, -11)], 2, 1), ["vbench", "test"], "/w")
    assert "was killed by signal SIGSEGV: a crash in native code" in text
    assert "results.json" not in text and "checkpoint" not in text
    assert "To run it again, rerun the same command:" in text


# ------------------------------------------------------------------------------ results.json
def test_mark_failed_changes_only_a_running_results_file(tmp_path):
    cfg = report_cfg(tmp_path)
    writer = ResultsWriter(str(tmp_path / RESULTS_FILE), cfg, world=world_block([CPU_RANK], "fp32"),
                           sysinfo=FAKE_SYSINFO)
    before = load_results(str(tmp_path))
    assert before["run"]["status"] == "running" and before["run"]["finished_at"] is None
    assert mark_failed(writer.path) == "failed"
    after = load_results(str(tmp_path))  # still valid
    assert after["run"]["status"] == "failed" and after["run"]["finished_at"] is not None
    assert {k: v for k, v in after.items() if k != "run"} == {k: v for k, v in before.items() if k != "run"}
    writer.finish("reached")
    assert mark_failed(writer.path) == "reached"
    assert load_results(str(tmp_path))["run"]["status"] == "reached"
    assert mark_failed(str(tmp_path / "missing.json")) is None
    (tmp_path / "damaged.json").write_text('{"run": ')
    assert mark_failed(str(tmp_path / "damaged.json")) is None
    assert (tmp_path / "damaged.json").read_text() == '{"run": '


# ------------------------------------------------------------------------------ spawned workers
def _rank1_raises(cfg, ctx):
    if ctx.rank == 1:
        raise ConfigError("rank 1 cannot go on")
    du.barrier()  # rank 0 waits for rank 1, as in a collective, until it fails or is stopped


def test_a_worker_that_raises_is_named_before_the_rank_its_failure_broke(tmp_path, monkeypatch):
    # Time for rank 1 to end by itself after raising: 5 s (the default) was not enough on 2 cores
    # at load average 12, where the launcher then stopped it (exit code -15, not 1).
    monkeypatch.setattr(failures, "STOP_GRACE_S", 60.0)
    with pytest.raises(WorkersFailed) as info:
        launch_workers(report_cfg(tmp_path), _rank1_raises)
    cause = info.value.ends[0]
    assert (cause.rank, cause.local_rank, cause.exit_code) == (1, 1, 1)
    assert cause.error == "vbench.errors.ConfigError: rank 1 cannot go on" and cause.failed_at > 0
    assert cause.user_error  # a VbenchError: the launcher prints its message without the traceback
    assert str(info.value) == f"rank 1 of 2 (pid {cause.pid}) failed with {cause.error}"
    # rank 0's barrier lost its peer: it failed later, so it is not the cause (or the launcher stopped it)
    assert [end.rank for end in info.value.ends[1:]] == [0] or info.value.stopped == 1
    assert not spawned_children(os.getpid())


class HangingError(Exception):
    def __str__(self):  # the worker hangs while its traceback is written, after it noted its failure
        time.sleep(600)
        return "never"


def _rank1_raises_then_hangs(cfg, ctx):
    if ctx.rank == 1:
        raise HangingError()
    time.sleep(600)  # rank 0 is busy (not in a collective): only the launcher stops it


def test_a_worker_that_fails_then_hangs_is_named_and_a_busy_one_stopped_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(failures, "STOP_GRACE_S", 1.0)
    with pytest.raises(WorkersFailed) as info:
        launch_workers(report_cfg(tmp_path), _rank1_raises_then_hangs)
    cause = info.value.ends[0]
    assert (cause.rank, cause.hung, cause.exit_code) == (1, True, -signal.SIGTERM)
    assert cause.how() == ("failed, then did not end within 1 s and was stopped (its error message is lost; "
                           "it may have hung in a collective or in shutting down)")
    assert len(info.value.ends) == 1 and info.value.stopped == 1  # rank 0 is not blamed
    assert not cause.user_error  # not a VbenchError: a bug, reported with its traceback


# ------------------------------------------------------------------------------ real training runs
def kill_rank_when(process, rank, path, timeout_s=240):
    """SIGKILL `rank` of the run as soon as `path` exists; returns (launcher output, exit code, its pid)."""
    pid = worker_pids(process)[rank]
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(pid, signal.SIGKILL)
    output = process.communicate(timeout=timeout_s)[0]
    return output, process.returncode, pid


def test_sigkill_of_rank_1_is_reported_and_the_printed_command_resumes_the_run(tiny_cfg_file, tmp_path):
    out = tmp_path / "run"
    process = run_net(tiny_cfg_file, out, *TWO_PROCESSES, wait=False)
    first = out / "checkpoints" / "checkpoint_epoch_00001.pyth"
    output, code, pid = kill_rank_when(process, 1, first)
    assert code == 1, output[-3000:]
    assert (f"vbench: error: rank 1 of 2 (pid {pid}) was killed by signal SIGKILL: likely killed by the "
            f"kernel's out-of-memory killer") in output
    assert load_results(str(out))["run"]["status"] == "failed"
    assert "ProcessExitedException" not in output
    assert f"Newest checkpoint: {first} (epoch 1 of 3)." in output
    assert not (out / "checkpoints" / "checkpoint_epoch_00003.pyth").exists()
    command = [line for line in output.splitlines() if line.startswith("    cd ")]
    assert len(command) == 1 and "To resume from epoch 1, rerun the same command" in output

    resumed = subprocess.run(command[0], shell=True, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {first}" in resumed.stdout
    results = load_results(str(out))
    assert results["run"]["status"] == "reached" and results["benchmark"]["resumes"] == 1
    assert [e["epoch"] for e in results["epochs"]] == [1, 2, 3]


def test_sigkill_of_rank_0_leaves_results_marked_failed_by_the_launcher(tiny_cfg_file, tmp_path):
    out = tmp_path / "run"
    process = run_net(tiny_cfg_file, out, *TWO_PROCESSES, wait=False)
    output, code, pid = kill_rank_when(process, 0, out / "clock_heartbeat.json")  # training has begun
    assert code == 1, output[-3000:]
    assert f"vbench: error: rank 0 of 2 (pid {pid}) was killed by signal SIGKILL" in output
    results = json.loads((out / RESULTS_FILE).read_text())
    assert results["run"]["status"] == "failed" and results["run"]["finished_at"] is not None
    load_results(str(out))  # still a valid results file
    assert f'{out / RESULTS_FILE} says "failed".' in output


def test_every_error_class_a_user_can_cause_derives_from_the_one_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 9
    assert all(issubclass(c, errors.VbenchError) for c in classes)
    assert errors.VbenchError in USER_ERRORS
