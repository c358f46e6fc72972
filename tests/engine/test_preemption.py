"""Preemption: a scheduler's signal saves a checkpoint at the next step boundary and the rerun of the
same command continues to the metrics of an uninterrupted run: in-process (fake data, a model with
dropout), the launcher forwarding a signal to spawned processes, and a real 2-process gloo run
whose rank 1 alone receives SIGUSR1 in the middle of an epoch."""
import json
import logging
import os
import signal
import sys
import time

import pytest
import torch

from vbench.bench.results import load_results
from vbench.engine.defaults import build_trainer
from vbench.engine.distributed import DistContext
from vbench.engine.launch import launch_workers
from vbench.engine.log import setup_logging
from vbench.engine.preemption import REQUEUE_EXIT, Preempted, notices_kept, stop_requested

from scaffold import (
    EVAL_BATCHES,
    REPO,
    TRAIN_BATCHES,
    TWO_PROCESSES,
    DropoutModel,
    FakeLoader,
    SignalAt,
    fake_cfg,
    report_cfg,
    run_net,
    worker_pids,
)

ROW_KEYS = ("epoch", "loss", "lr", "clip_top1", "clip_top5", "video_top1", "video_top5")


def dropout_trainer(cfg):
    setup_logging(cfg.OUTPUT_DIR)
    return build_trainer(cfg, DistContext(), model=DropoutModel(), train_loader=FakeLoader(TRAIN_BATCHES),
                         val_loader=FakeLoader(EVAL_BATCHES))


def test_a_signal_saves_at_the_next_step_and_the_rerun_trains_as_without_it(tmp_path):
    opts = ("SOLVER.MAX_EPOCH", "3", "BENCHMARK.TARGET_TOP1", "0.0", "SOLVER.LR_POLICY", "cosine")
    straight = dropout_trainer(fake_cfg(tmp_path / "straight", *opts))
    straight.train()
    cfg = fake_cfg(tmp_path / "stopped", *opts)
    trainer = dropout_trainer(cfg)
    trainer.register_hooks([SignalAt(epoch=1, step=1)])
    with pytest.raises(Preempted, match=r"stopped on SIGUSR1 at epoch 2, step 2 of 4: saved .*"
                                        r"checkpoint_epoch_00001_step_00002.pyth; rerun the same command"):
        trainer.train()
    assert stop_requested() is None  # the handler is gone and the request forgotten
    assert sorted(os.listdir(tmp_path / "stopped" / "checkpoints")) == [
        "checkpoint_epoch_00001.pyth", "checkpoint_epoch_00001_step_00002.pyth"]
    stopped = load_results(cfg.OUTPUT_DIR)
    assert stopped["run"]["status"] == "preempted" and [e["epoch"] for e in stopped["epochs"]] == [1]

    resumed = dropout_trainer(cfg)
    assert resumed.start_epoch == 1 and resumed.saved_progress["steps"] == 2
    resumed.train()
    a, b = load_results(straight.output_dir), load_results(cfg.OUTPUT_DIR)
    assert b["run"]["status"] == "finished" and b["benchmark"]["resumes"] == 1
    assert [[e[k] for k in ROW_KEYS] for e in b["epochs"]] == [[e[k] for k in ROW_KEYS] for e in a["epochs"]]
    assert torch.equal(resumed.bare_model.bias, straight.bare_model.bias)  # dropout drew the same masks


def test_a_resume_inside_an_epoch_whose_loader_batches_otherwise_is_named(tmp_path, caplog):
    opts = ("SOLVER.MAX_EPOCH", "2", "BENCHMARK.TARGET_TOP1", "0.0", "TRAIN.BATCH_SIZE", "4",
            "DATA_LOADER.NUM_WORKERS", "2", "DATA_LOADER.PIECE_SIZE", "2")
    cfg = fake_cfg(tmp_path, *opts)
    trainer = dropout_trainer(cfg)
    trainer.register_hooks([SignalAt(epoch=1, step=1)])
    with pytest.raises(Preempted):
        trainer.train()

    def resumed(cfg):  # the warning is logged while the trainer is built, after its logging is set up
        setup_logging(cfg.OUTPUT_DIR)
        logging.getLogger("vbench").propagate = True  # let caplog see it
        build_trainer(cfg, DistContext(), model=DropoutModel(), train_loader=FakeLoader(TRAIN_BATCHES),
                      val_loader=FakeLoader(EVAL_BATCHES))

    with caplog.at_level(logging.WARNING, logger="vbench"):
        resumed(fake_cfg(tmp_path, *opts))  # the same loader: the same batches, no warning
        assert "resuming inside" not in caplog.text
        resumed(fake_cfg(tmp_path, *opts, "DATA_LOADER.PIECE_SIZE", "4", "DATA_LOADER.NUM_WORKERS", "3"))
    assert ("resuming inside epoch 2 after 2 steps, which were trained with DATA_LOADER.NUM_WORKERS 2, "
            "DATA_LOADER.PIECE_SIZE 2; this run has DATA_LOADER.NUM_WORKERS 3, DATA_LOADER.PIECE_SIZE 4") in caplog.text
    assert "rerun with DATA_LOADER.NUM_WORKERS 2 DATA_LOADER.PIECE_SIZE 2." in caplog.text


def test_a_notice_during_set_up_stops_the_run_when_training_starts(tmp_path):
    cfg = fake_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2")
    with notices_kept():  # as `vbench train` (launch) runs
        trainer = dropout_trainer(cfg)
        os.kill(os.getpid(), signal.SIGUSR1)  # while the trainer was being built
        with pytest.raises(Preempted, match="stopped on SIGUSR1 before training started: nothing new to save"):
            trainer.train()
    assert load_results(cfg.OUTPUT_DIR)["run"]["status"] == "preempted" and stop_requested() is None
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")


def _wait_for_signal(cfg, ctx):
    """A spawned job: tell the test it runs, then stop as training would on a scheduler's signal."""
    open(os.path.join(cfg.OUTPUT_DIR, f"ready{ctx.rank}"), "w").close()
    deadline = time.monotonic() + 120
    while stop_requested() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    raise Preempted("stopped") if stop_requested() else RuntimeError("no signal came")


def test_the_launcher_passes_a_signal_on_and_its_processes_exit_for_a_requeue(tmp_path):
    import threading

    def signal_when_ready():
        while not all((tmp_path / f"ready{rank}").exists() for rank in (0, 1)):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR1)  # as `scancel --signal=USR1` or the sbatch trap would

    threading.Thread(target=signal_when_ready, daemon=True).start()
    with pytest.raises(Preempted, match="2 of 2 processes saved and stopped on a scheduler's signal"):
        launch_workers(report_cfg(tmp_path), _wait_for_signal)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the launcher's forwarding is undone


TWO_STEPS_A_RANK = TWO_PROCESSES + ("TRAIN.BATCH_SIZE", "2", "SOLVER.MAX_EPOCH", "2")  # 18 steps an epoch


@pytest.fixture(scope="module")
def straight_run(tiny_cfg_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    run_net(tiny_cfg_file, out, *TWO_STEPS_A_RANK, "DATA.DROP_CACHE", "True")
    return out


def test_a_cpu_run_records_why_telemetry_is_absent_and_the_page_cache(straight_run):
    results = load_results(str(straight_run))
    assert results["telemetry"] == {"available": False, "reason": "no GPU: the run is on the CPU (NUM_GPUS 0)"}
    cache = results["data_cache"]
    assert cache["dropped"] is True and (cache["nodes"], cache["files"]) == (1, 10)
    assert cache["measured_bytes"] == cache["bytes"] > 0 and cache["problem_count"] == 0
    assert cache["resident_share"] < 0.5  # evicted after indexing, before the clock (ext4 here, not tmpfs)


def test_sigusr1_to_one_rank_mid_epoch_saves_exits_for_a_requeue_and_the_same_command_resumes(
        tiny_cfg_file, straight_run, tmp_path):
    out = tmp_path / "preempted"
    process = run_net(tiny_cfg_file, out, *TWO_STEPS_A_RANK, "DATA.DROP_CACHE", "True", wait=False)
    pids = worker_pids(process)
    stats = out / "json_stats.log"
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline and '"epoch": "1/2"' not in (
            stats.read_text() if stats.exists() else ""):
        time.sleep(0.02)
    os.kill(pids[1], signal.SIGUSR1)  # one rank only: both must agree on the step
    output = process.communicate(timeout=240)[0]
    assert process.returncode == REQUEUE_EXIT, output[-3000:]
    (saved,) = [name for name in os.listdir(out / "checkpoints") if "_step_" in name]
    assert saved.startswith("checkpoint_epoch_00000_step_")  # inside the first epoch
    step = int(saved.split("_step_")[1].split(".")[0])
    assert 0 < step < 18
    assert "vbench: preempted: 2 of 2 processes saved and stopped on a scheduler's signal" in output
    assert f"Newest checkpoint: {out / 'checkpoints' / saved} (epoch 0 of 2, and {step} steps of epoch 1)." in output
    assert f"To resume from epoch 0, step {step} of epoch 1, rerun the same command" in output
    assert "vbench: error" not in output and "Traceback" not in output
    assert load_results(str(out))["run"]["status"] == "preempted"
    command = [line.strip() for line in output.splitlines() if line.startswith("    cd ")]
    assert len(command) == 1

    resumed = run_net(tiny_cfg_file, out, *TWO_STEPS_A_RANK, "DATA.DROP_CACHE", "True")  # the same command
    assert f"(epoch 0 done and {step} steps of the next)" in resumed
    assert f"epoch 1: continuing at step {step + 1}" in resumed
    a, b = load_results(str(straight_run)), load_results(str(out))
    assert b["run"]["status"] == a["run"]["status"] and b["benchmark"]["resumes"] == 1
    assert b["benchmark"]["resume_added_s"] < 5.0  # the checkpoint holds the clock at the signal
    assert [[e[k] for k in ROW_KEYS] for e in b["epochs"]] == [[e[k] for k in ROW_KEYS] for e in a["epochs"]]
    final = "checkpoints/checkpoint_epoch_00002.pyth"
    weights_a = torch.load(straight_run / final, weights_only=False)["model"]
    weights_b = torch.load(out / final, weights_only=False)["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert json.loads((out / "classes.json").read_text()) == ["move_down", "move_up"]


ROOT = str(REPO)


def test_the_one_node_sbatch_script_requeues_after_the_notice_and_its_rerun_finishes(tiny_cfg_file, tmp_path):
    import subprocess

    bin_dir, log, out = tmp_path / "bin", tmp_path / "scontrol.log", tmp_path / "run"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')  # records the requeue
    (bin_dir / "scontrol").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=ROOT,
               CONFIG=tiny_cfg_file, OUT=str(out), GPUS="0", PYTHON=sys.executable)
    command = ["bash", "tools/slurm/train_1node.sbatch", "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "2"]
    script = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stats = out / "json_stats.log"
    deadline = time.monotonic() + 240
    while script.poll() is None and time.monotonic() < deadline and "train_iter" not in (
            stats.read_text() if stats.exists() else ""):
        time.sleep(0.02)
    script.send_signal(signal.SIGUSR1)  # Slurm's --signal=B:USR1@180 reaches the batch script only
    output = script.communicate(timeout=240)[0]
    assert script.returncode == REQUEUE_EXIT, output[-3000:]
    assert "vbench job: SIGUSR1: vbench saves at its next training step" in output
    assert "requeueing job 42 (the same command resumes it)" in output and log.read_text() == "requeue 42\n"
    assert [name for name in os.listdir(out / "checkpoints") if name.startswith("checkpoint_epoch_00000_step_")]

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "continuing at step" in rerun.stdout and log.read_text() == "requeue 42\n"  # no second requeue
    assert load_results(str(out))["run"]["status"] == "reached"
