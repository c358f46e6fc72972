"""Faults a long run meets, on real CPU training runs (tools/run_net.py, real loader workers, real
gloo processes): a training loader worker killed with SIGKILL mid-epoch is survived with the same
per-epoch metrics, or past DATA_LOADER.MAX_WORKER_RESTARTS ends the run with the resume command; a
rank stopped with SIGSTOP, or a one-process run whose loader hangs, is named by the watchdog within
its limit, with stacks, results.json "failed" and loadable checkpoints."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vbench.bench.results import load_results
from vbench.engine.checkpoint import Checkpointer, load_checkpoint_file

from scaffold import REPO, run_net, worker_pids

LOADER = ("DATA_LOADER.NUM_WORKERS", "2", "DATA_LOADER.PREFETCH_FACTOR", "1", "TEST.ENABLE", "False")
METRICS = ("epoch", "loss", "lr", "clip_top1", "clip_top5", "video_top1", "video_top5", "bad_videos")


def wait_for(predicate, process, timeout_s=240, what="the run to get there"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert process.poll() is None, f"the run ended before {what}: {(process.communicate()[0] or '')[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def training_lines(out, epoch):
    """json_stats train_iter lines of `epoch` (1-based) written so far."""
    path = out / "json_stats.log"
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines()
            if '"train_iter"' in line and f'"epoch": "{epoch}/' in line]


def loader_workers(process):
    """The run's loader worker processes (forked: the run's own command line), oldest first: the
    training loader's workers start with the first epoch, the evaluation loader's at its first
    evaluation."""
    parent = psutil.Process(process.pid)
    children = [c for c in parent.children() if c.cmdline() == parent.cmdline()]
    return sorted(children, key=lambda c: (c.create_time(), c.pid))


def kill_worker_in_epoch_2(cfg_file, out, worker, *opts):
    """Runs the tiny config with two loader workers, SIGKILLs training worker `worker` once epoch 2
    has logged a step, and waits for the run's end: (the killed process, exit status, output)."""
    process = run_net(cfg_file, out, *LOADER, *opts, wait=False)
    wait_for(lambda: training_lines(out, 2), process, what="epoch 2's first logged step")
    victim = loader_workers(process)[worker]
    victim.send_signal(signal.SIGKILL)
    output = process.communicate(timeout=300)[0]
    return victim, process.returncode, output


def test_sigkill_of_a_training_loader_worker_mid_epoch_is_survived_with_the_same_metrics(tiny_cfg_file, tmp_path):
    run_net(tiny_cfg_file, tmp_path / "clean", *LOADER)
    expected = load_results(str(tmp_path / "clean"))

    out = tmp_path / "killed"
    victim, returncode, output = kill_worker_in_epoch_2(tiny_cfg_file, out, 0)  # training worker 0
    assert returncode == 0, output[-3000:]
    assert (f"train loader worker 0 of 2 of rank 0 (pid {victim.pid}) was killed by signal SIGKILL: most "
            f"likely the kernel's out-of-memory killer") in output
    assert "lower DATA_LOADER.NUM_WORKERS (now 2), DATA_LOADER.PREFETCH_FACTOR (now 1)" in output

    results = load_results(str(out))
    assert results["run"]["status"] == expected["run"]["status"] == "reached"
    [event] = results["loader_restarts"]
    assert event["role"] == "train" and event["pid"] == victim.pid and event["epoch"] == 2
    assert event["how"] == "was killed by signal SIGKILL" and 0 < event["at_batch"] < 9
    assert [row["loader_restarts"] for row in results["epochs"]] == [0, 1, 0]
    # the restarted epoch delivered the same batches: the same losses, rates and accuracies
    assert [{k: row[k] for k in METRICS} for row in results["epochs"]] == \
           [{k: row[k] for k in METRICS} for row in expected["epochs"]]
    stats = [json.loads(line.split("json_stats: ", 1)[1]) for line in (out / "json_stats.log").read_text().splitlines()]
    assert [s["loader_restarts"] for s in stats if s["_type"] == "train_epoch"] == [0, 1, 0]


def test_past_max_worker_restarts_the_run_stops_saying_what_happened_and_how_to_resume(tiny_cfg_file, tmp_path):
    out = tmp_path / "run"
    victim, returncode, output = kill_worker_in_epoch_2(tiny_cfg_file, out, 1, "DATA_LOADER.MAX_WORKER_RESTARTS", "0")
    assert returncode == 1, output[-3000:]
    assert (f"vbench: error: train loader worker 1 of 2 of rank 0 (pid {victim.pid}) was killed by signal "
            f"SIGKILL") in output
    assert "more than DATA_LOADER.MAX_WORKER_RESTARTS = 0: the run stops" in output
    assert "Traceback" not in output  # a user's error: the message says it all
    assert f'{out / "results.json"} says "failed".' in output
    assert "To resume from epoch 1, rerun the same command" in output


# ------------------------------------------------------------------------------ the watchdog
WATCHED = ("TEST.ENABLE", "False", "SOLVER.MAX_EPOCH", "20", "WATCHDOG.STALL_TIMEOUT_S", "12")
LIMIT_S = 12


def start_run(cfg_file, out, *opts):
    """tools/run_net.py writing its output to a file (a pipe would stay open while the stopped
    processes of the test, which inherited it, live on)."""
    out.mkdir(parents=True)
    log = open(out.parent / "output.txt", "w")
    command = [sys.executable, str(REPO / "tools" / "run_net.py"),
               "--cfg", cfg_file, "OUTPUT_DIR", str(out), *opts]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)


def stop_and_wait(process, pids, stop, timeout_s):
    """SIGSTOP `stop` (pids); returns (output, seconds from the stop to the run's end). Every pid is
    continued and killed afterwards, whatever happened."""
    try:
        for pid in stop:
            os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        process.wait(timeout=timeout_s)
        took = time.monotonic() - stopped
        return (Path(process.args[process.args.index("OUTPUT_DIR") + 1]).parent / "output.txt").read_text(), took
    finally:
        if process.poll() is None:
            process.kill()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def assert_checkpoints_load(out):
    paths = Checkpointer(str(out), is_main=False).list_checkpoints()
    assert len(paths) >= 2
    for path in paths:
        assert load_checkpoint_file(path)["epoch"] >= 1
    assert not [name for name in os.listdir(out / "checkpoints") if not name.endswith(".pyth")]


@pytest.mark.parametrize("stopped", [1, 0])
def test_sigstop_of_a_rank_is_named_within_the_limit_with_stacks_and_the_run_marked_failed(
        tiny_cfg_file, tmp_path, stopped):

    out = tmp_path / "run"
    process = start_run(tiny_cfg_file, out, "NUM_CPU_PROCS", "2", *WATCHED)
    pids = worker_pids(process)
    wait_for((out / "checkpoints" / "checkpoint_epoch_00002.pyth").exists, process, what="epoch 2's checkpoint")
    output, took = stop_and_wait(process, pids, [pids[stopped]], timeout_s=LIMIT_S + 60)
    assert process.returncode == 1, output[-3000:]
    assert took < LIMIT_S + 30, (took, output[-3000:])
    named = f"watchdog: rank {stopped} of 2 (host {socket.gethostname()}, pid {pids[stopped]})"
    if stopped == 1:  # rank 0 finds it: the process of rank 1 no longer runs
        assert f"vbench.errors.RankStalled: {named} has not run for" in output
        assert "its process is stopped (SIGSTOP, a suspended job) or its machine froze" in output
    else:  # rank 1 finds it: the store, in rank 0's process, no longer answers
        assert f"vbench.errors.RankStalled: {named} stopped answering: the process group's store" in output
    assert f"Limit {LIMIT_S} s = max(WATCHDOG.STALL_TIMEOUT_S {LIMIT_S}" in output
    finder = 1 - stopped
    stacks = (out / "watchdog" / f"stacks_rank{finder}.txt").read_text()  # the stopped rank cannot answer
    assert "train_loop.py" in stacks and "Thread 0x" in stacks  # every thread, the training one in the loop
    assert not (out / "watchdog" / f"stacks_rank{stopped}.txt").exists()
    assert f"vbench watchdog: Python stacks of rank {finder}" in output
    assert load_results(str(out))["run"]["status"] == "failed"
    assert_checkpoints_load(out)
    assert "To resume from epoch" in output
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_a_one_process_run_whose_loader_hangs_is_ended_by_its_own_watchdog(tiny_cfg_file, tmp_path):
    out = tmp_path / "run"
    process = start_run(tiny_cfg_file, out, *WATCHED, "DATA_LOADER.NUM_WORKERS", "2")
    wait_for((out / "checkpoints" / "checkpoint_epoch_00002.pyth").exists, process, what="epoch 2's checkpoint")
    workers = [w.pid for w in loader_workers(process)]  # its stopped workers: the batches never come
    output, took = stop_and_wait(process, workers, workers, timeout_s=LIMIT_S + 60)
    assert process.returncode == 1, output[-3000:]
    assert took < LIMIT_S + 30, (took, output[-3000:])
    assert (f"vbench: error: watchdog: rank 0 of 1 (host {socket.gethostname()}, pid {process.pid}) made no "
            f"progress for") in output
    stacks = (out / "watchdog" / "stacks_rank0.txt").read_text()
    assert "in _try_get_data" in stacks and "in next_batch" in stacks  # where it waits: for a batch
    assert load_results(str(out))["run"]["status"] == "failed"
    assert_checkpoints_load(out)
    assert "To resume from epoch" in output and "rerun the same command" in output
