"""Trainer: clock rules, NaN stop, damaged-checkpoint resume, bad videos (fast, in-process fakes);
end-to-end synthetic training to a target, SIGKILL + resume, multi-view test (real pipeline)."""
import json
import logging
import os

import pytest
import torch

from vbench.bench.clock import BenchmarkClock
from vbench.bench.results import load_results, validate_results
from vbench.cli.train import test_main as run_test_main
from vbench.data.dataset import TooManyBadVideos
from vbench.data.loader import build_loader
from vbench.data.protocol import BatchLoader
from vbench.engine.defaults import build_trainer
from vbench.engine.distributed import DistContext
from vbench.engine.log import setup_logging
from vbench.engine.meters import TrainingDiverged, WaitTimer
from vbench.engine.optimizer import set_lr
from vbench.engine.train_loop import HookBase
from vbench.errors import ConfigError

from scaffold import (
    EVAL_BATCHES,
    TRAIN_BATCHES,
    DropoutModel,
    FakeLoader,
    FakeTime,
    K,
    OneHotModel,
    fake_cfg,
    fake_trainer,
    loader_cfg,
    run_net,
)


# ------------------------------------------------------------------------------ clock rules
def test_clock_excludes_setup_and_stops_at_the_first_evaluation_reaching_the_target(tmp_path):
    fake_time = FakeTime()
    cfg = fake_cfg(tmp_path, "TRAIN.EVAL_PERIOD", "2", "BENCHMARK.STOP_AT_TARGET", "False")
    fake_trainer(cfg, fake_time, setup_s=100.0).train()
    results = load_results(str(tmp_path))
    bench, epochs = results["benchmark"], results["epochs"]
    assert bench["setup_s"] == pytest.approx(100.0)
    # target reached at the first evaluation (end of epoch 2): 2 epochs x 4 train forwards + 2 eval
    assert bench["reached"] and bench["epochs_to_target"] == 2
    assert bench["time_to_target_s"] == pytest.approx(2 * TRAIN_BATCHES + EVAL_BATCHES)
    assert [e["clock_s"] for e in epochs][:2] == pytest.approx([4.0, 10.0])
    assert epochs[0]["clip_top1"] is None and epochs[1]["clip_top1"] == 100.0
    # training went on (STOP_AT_TARGET False); the clock's total kept counting, the result did not
    assert len(epochs) == 4 and results["run"]["status"] == "reached"
    assert bench["total_time_s"] == pytest.approx(4 * TRAIN_BATCHES + 2 * EVAL_BATCHES)


def test_stop_at_target_ends_training_and_a_resumed_clock_continues(tmp_path):
    fake_time = FakeTime()
    cfg = fake_cfg(tmp_path, "TRAIN.EVAL_PERIOD", "2")

    class Crash(HookBase):
        def before_epoch(self):
            if self.trainer.epoch == 1:
                raise KeyboardInterrupt  # the first attempt dies right after checkpoint 1

    trainer = fake_trainer(cfg, fake_time, setup_s=5.0)
    trainer.register_hooks([Crash()])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert load_results(str(tmp_path))["run"]["status"] == "failed"
    fake_time.now += 50.0  # downtime between the crash and the restart, then a new set-up
    resumed = fake_trainer(cfg, fake_time, setup_s=7.0)
    assert resumed.start_epoch == 1
    resumed.train()
    bench = load_results(str(tmp_path))["benchmark"]
    assert bench["reached"] and bench["epochs_to_target"] == 2 and bench["resumes"] == 1
    # same value as an uninterrupted run: the heartbeat proves no time was lost after checkpoint 1
    assert bench["time_to_target_s"] == pytest.approx(2 * TRAIN_BATCHES + EVAL_BATCHES)
    assert len(load_results(str(tmp_path))["epochs"]) == 2  # stopped at the target


# ------------------------------------------------------------------------------ failures
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    class PoisonLR(HookBase):  # fault injection only: an infinite LR in epoch 2 makes weights NaN
        def before_step(self):
            if self.trainer.epoch == 1:
                set_lr(self.trainer.optimizer, float("inf"))

    cfg = fake_cfg(tmp_path, "BENCHMARK.TARGET_TOP1", "0.0")
    trainer = fake_trainer(cfg)
    trainer.register_hooks([PoisonLR()])
    with pytest.raises(TrainingDiverged, match=r"loss became nan \(epoch 2, iteration \d\).*last good checkpoint"):
        trainer.train()
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    assert names == ["checkpoint_epoch_00001.pyth"]
    results = load_results(str(tmp_path))
    assert results["run"]["status"] == "failed" and len(results["epochs"]) == 1
    state = torch.load(tmp_path / "checkpoints" / names[0], weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_auto_resume_skips_a_damaged_checkpoint(tmp_path, caplog):
    cfg = fake_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2", "BENCHMARK.TARGET_TOP1", "0.0")
    fake_trainer(cfg).train()
    newest = tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth"
    newest.write_bytes(newest.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="vbench"):
        trainer = fake_trainer(cfg)
    assert "skipping damaged checkpoint" in caplog.text and "00002" in caplog.text
    assert trainer.start_epoch == 1
    trainer.train()
    epochs = load_results(str(tmp_path))["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]


def test_bad_videos_are_reported_once_and_counted_per_epoch(tmp_path, caplog):
    bad = [("train/a/broken.mp4", "invalid data found")]
    cfg = fake_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2", "DATA.MAX_BAD_FRACTION", "0.5",
                   "BENCHMARK.TARGET_TOP1", "0.0")
    with caplog.at_level(logging.WARNING, logger="vbench"):
        fake_trainer(cfg, bad=bad).train()
    assert caplog.text.count("broken.mp4") == 1
    results = load_results(str(tmp_path))
    assert [e["bad_videos"] for e in results["epochs"]] == [1, 1]
    assert results["bad_videos"]["train"] == [{"path": "train/a/broken.mp4", "reason": "invalid data found"}]


def test_too_many_bad_videos_stop_training(tmp_path):
    bad = [(f"train/a/broken{i}.mp4", "moov atom not found") for i in range(3)]
    cfg = fake_cfg(tmp_path / "run", "DATA.MAX_BAD_FRACTION", "0.1")  # 3 of 16 videos > 10 %
    with pytest.raises(TooManyBadVideos, match="DATA.MAX_BAD_FRACTION"):
        fake_trainer(cfg, bad=bad).train()


def test_tensorboard_events_hold_the_iteration_and_epoch_scalars(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    cfg = fake_cfg(tmp_path, "TENSORBOARD.ENABLE", "True", "SOLVER.MAX_EPOCH", "2",
                   "BENCHMARK.STOP_AT_TARGET", "False")
    fake_trainer(cfg).train()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "epoch/loss", "epoch/clip_top1"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 2 * TRAIN_BATCHES + 1))
    assert [e.value for e in events.Scalars("epoch/clip_top1")] == [100.0, 100.0]


class SlowStartLoader(FakeLoader):
    """A FakeLoader whose first batch of each epoch takes `delay` seconds of the fake clock."""

    def __init__(self, num_batches, fake_time, delay):
        super().__init__(num_batches)
        self.fake_time, self.delay = fake_time, delay

    def __iter__(self):
        for index, batch in enumerate(super().__iter__()):
            self.fake_time.now += self.delay if index == 0 else 0.0
            yield batch


def test_the_wait_of_an_epochs_first_steps_is_recorded_apart_from_the_rest(tmp_path):
    fake_time = FakeTime()
    cfg = fake_cfg(tmp_path, "SOLVER.MAX_EPOCH", "2", "BENCHMARK.STOP_AT_TARGET", "False")
    trainer = build_trainer(cfg, DistContext(), model=OneHotModel(fake_time),
                            train_loader=SlowStartLoader(12, fake_time, delay=10.0),
                            val_loader=FakeLoader(EVAL_BATCHES))
    trainer.wait_timer = WaitTimer(fake_time)  # every forward takes one second of it
    trainer.train()
    rows = load_results(str(tmp_path))["epochs"]
    for row in rows:  # 10 s waited in the first 10 steps (20 s), none in the last 2 (2 s)
        assert row["data_wait_first10"] == pytest.approx(0.5) and row["data_wait_rest"] == 0.0
        assert row["data_wait_fraction"] == pytest.approx(10 / 22)
    stats = [json.loads(line.split("json_stats: ", 1)[1])
             for line in (tmp_path / "json_stats.log").read_text().splitlines()]
    epochs = [s for s in stats if s["_type"] == "train_epoch"]
    assert [(s["data_wait_first10"], s["data_wait_rest"]) for s in epochs] == [(0.5, 0.0)] * 2


# ------------------------------------------------------------------------------ real pipeline
def test_end_to_end_synthetic_run_reaches_its_target_and_tests_multi_view(tiny_cfg_file, tmp_path):
    output = run_net(tiny_cfg_file, tmp_path, "TRAIN.PRECISION", "auto", "MODEL.CHANNELS_LAST", "auto")
    results = load_results(str(tmp_path))  # validates the schema
    validate_results(results)
    resolved = results["resolved"]  # decoder threads 0: the cores over the (in-process) loader
    assert resolved == {"TRAIN.PRECISION": "fp32", "MODEL.CHANNELS_LAST": False,
                        "MODEL.DEPTHWISE_CONV": "default",
                        "DATA.DECODER_THREADS": resolved["DATA.DECODER_THREADS"]}
    assert resolved["DATA.DECODER_THREADS"] >= 1 == results["config"]["DATA_LOADER"]["NUM_WORKERS"] + 1
    assert results["config"]["MODEL"]["CHANNELS_LAST"] is False  # the config the run used
    assert results["run"]["status"] == "reached" and results["benchmark"]["reached"]
    assert results["benchmark"]["time_to_target_s"] > 0 and results["world"]["device"] == "cpu"
    assert len(results["epochs"]) == 3 and "time to target" in output
    assert json.loads((tmp_path / "classes.json").read_text()) == ["move_down", "move_up"]
    stats = [json.loads(line.split("json_stats: ", 1)[1])
             for line in (tmp_path / "json_stats.log").read_text().splitlines()]
    assert {"train_iter", "train_epoch", "val_epoch"} <= {s["_type"] for s in stats}
    for row in results["epochs"]:  # one rank: its wait share and its loader's rate while working
        assert row["data_wait_by_rank"] == [row["data_wait_fraction"]]
        assert len(row["loader_clips_per_s_by_rank"]) == 1 and row["loader_clips_per_s_by_rank"][0] > 0
    epoch_stats = [s for s in stats if s["_type"] == "train_epoch"]
    assert epoch_stats[-1]["loader_clips_per_s_by_rank"] == results["epochs"][-1]["loader_clips_per_s_by_rank"]

    code = run_test_main(["--cfg", tiny_cfg_file, "OUTPUT_DIR", str(tmp_path), "TEST.SAMPLING", "uniform",
                      "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3"])
    assert code == 0
    test = json.loads((tmp_path / "test_results.json").read_text())
    assert test["num_videos"] == 4 and test["num_clips"] == 4 * 2 * 3  # 4 val videos x 6 views
    assert test["checkpoint"].endswith("checkpoint_epoch_00003.pyth")


def test_sigkill_and_rerun_ends_with_the_same_metrics_as_an_uninterrupted_run(tiny_cfg_file, tmp_path):
    import signal
    import time

    run_net(tiny_cfg_file, tmp_path / "straight")
    killed = tmp_path / "killed"
    process = run_net(tiny_cfg_file, killed, wait=False)
    first = killed / "checkpoints" / "checkpoint_epoch_00001.pyth"
    while not first.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "checkpoints" / "checkpoint_epoch_00003.pyth").exists()
    output = run_net(tiny_cfg_file, killed)
    assert "resumed from" in output
    straight, resumed = load_results(str(tmp_path / "straight")), load_results(str(killed))
    assert resumed["benchmark"]["resumes"] == 1
    keys = ("epoch", "loss", "lr", "clip_top1", "clip_top5", "video_top1", "video_top5")
    assert [[e[k] for k in keys] for e in resumed["epochs"]] == [[e[k] for k in keys] for e in straight["epochs"]]
    final = "checkpoints/checkpoint_epoch_00003.pyth"
    a = torch.load(tmp_path / "straight" / final, weights_only=True)["model"]
    b = torch.load(killed / final, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_evaluation_leaving_out_validation_videos_stops_the_run(tmp_path):
    cfg = fake_cfg(tmp_path, "BENCHMARK.TARGET_TOP1", "1.0")
    trainer = fake_trainer(cfg)
    trainer.val_loader.excluded = [("val/c1/x.mp4", "no frame could be decoded")]  # found while evaluating
    with pytest.raises(TooManyBadVideos, match="DATA.MAX_VAL_EXCLUDED_FRACTION") as error:
        trainer.train()
    assert "val/c1/x.mp4: no frame could be decoded" in str(error.value)
    results = load_results(str(tmp_path))
    assert results["run"]["status"] == "failed" and results["epochs"] == [] and not results["benchmark"]["reached"]


# ------------------------------------------------------------------------------ warm-up
def test_the_warm_up_is_untimed_and_leaves_training_exactly_as_without_it(tmp_path):
    runs = {}
    for steps in (0, 3):
        fake_time = FakeTime()
        cfg = fake_cfg(tmp_path / str(steps), "BENCHMARK.WARMUP_STEPS", str(steps), "SOLVER.MAX_EPOCH", "2",
                       "BENCHMARK.STOP_AT_TARGET", "False", "BENCHMARK.TARGET_TOP1", "0.0")
        setup_logging(cfg.OUTPUT_DIR)
        clock = BenchmarkClock(str(tmp_path / f"{steps}.json"), time_fn=fake_time, setup_started=0.0)
        trainer = build_trainer(cfg, DistContext(), clock=clock, model=DropoutModel(fake_time),
                                train_loader=FakeLoader(TRAIN_BATCHES), val_loader=FakeLoader(EVAL_BATCHES))
        trainer.train()
        runs[steps] = (trainer.bare_model.bias.detach().clone(), load_results(cfg.OUTPUT_DIR)["benchmark"],
                       trainer.optimizer.state_dict()["state"])
    (cold_bias, cold, cold_state), (warm_bias, warm, warm_state) = runs[0], runs[3]
    assert torch.equal(cold_bias, warm_bias) and not torch.equal(cold_bias, torch.zeros(K))
    assert all(torch.equal(cold_state[k]["momentum_buffer"], warm_state[k]["momentum_buffer"]) for k in cold_state)
    # the 3 training steps and the evaluation batch ran (one fake second each) before the clock started
    assert "warmup_s" not in cold and warm["warmup_s"] > 0
    assert warm["setup_s"] == pytest.approx(cold["setup_s"] + 4.0)
    assert warm["total_time_s"] == pytest.approx(cold["total_time_s"])


def test_a_warm_up_past_its_limit_stops_the_run_before_the_clock_starts(tmp_path):
    cfg = fake_cfg(tmp_path, "BENCHMARK.WARMUP_STEPS", "2", "BENCHMARK.WARMUP_MAX_S", "0.0")
    with pytest.raises(ConfigError, match=r"warm-up took .* BENCHMARK.WARMUP_MAX_S = 0 s"):
        fake_trainer(cfg).train()
    results = load_results(str(tmp_path))
    assert results["run"]["status"] == "failed" and results["epochs"] == []


def test_the_fake_and_the_real_loader_follow_the_protocol_the_engine_uses(data_root):
    real = build_loader(loader_cfg(data_root), "train", training=True)
    try:
        assert isinstance(real, BatchLoader) and isinstance(FakeLoader(TRAIN_BATCHES), BatchLoader)
    finally:
        real.close()
    assert not isinstance(object(), BatchLoader)  # the check looks at the members
