"""Faults a long run meets, on real CPU training runs (tools/run_net.py, real loader workers, real
gloo processes): a training loader worker killed with SIGKILL mid-epoch is survived with the same
per-epoch metrics; a rank stopped with SIGSTOP is named by the watchdog within its limit."""
import json
import os
import signal
import sys
import time

import psutil

from vbench.bench.results import load_results

sys.path.insert(0, os.path.dirname(__file__))
from test_trainer import run_net, tiny_cfg_file  # noqa: E402, F401 (a fixture)

LOADER = ("DATA_LOADER.NUM_WORKERS", "2", "DATA_LOADER.PREFETCH_FACTOR", "1", "TEST.ENABLE", "False")
METRICS = ("epoch", "loss", "lr", "clip_top1", "clip_top5", "video_top1", "video_top5", "bad_videos")


def wait_for(predicate, process, timeout_s=240, what="the run to get there"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()[0][-3000:]}"
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


def test_sigkill_of_a_training_loader_worker_mid_epoch_is_survived_with_the_same_metrics(tiny_cfg_file, tmp_path):
    run_net(tiny_cfg_file, tmp_path / "clean", *LOADER)
    expected = load_results(str(tmp_path / "clean"))

    out = tmp_path / "killed"
    process = run_net(tiny_cfg_file, out, *LOADER, wait=False)
    wait_for(lambda: training_lines(out, 2), process, what="epoch 2's first logged step")
    victim = loader_workers(process)[0]  # training worker 0
    victim.send_signal(signal.SIGKILL)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
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
