"""Launch and DDP: 2 gloo processes match 1 process on the same global batch; a channels-last
X3D under DDP makes no gradient copies (gradients in DDP's buckets); preflight failures."""
import math
import os
import warnings

import pytest
import torch

from vbench.cli.train import train_main
from vbench.config import ConfigError, load_config
from vbench.engine import distributed as du
from vbench.engine import launch
from vbench.engine.defaults import prepare_model
from vbench.engine.hooks import EpochStatsHook, LRScheduleHook
from vbench.engine.launch import launch_workers
from vbench.engine.train_loop import Trainer
from vbench.models import build_model

from numerics import assert_all_same_up_to_rounding  # noqa: E402

GLOBAL_BATCH, STEPS, NUM_CLASSES = 8, 3, 3
CLIP = (3, 2, 6, 6)
POSITIONS = GLOBAL_BATCH * math.prod(CLIP[1:])  # positions in a global batch: n of tests/numerics.py


class GlobalBatchShard:
    """Fixed data: STEPS global batches of GLOBAL_BATCH clips; this rank gets its contiguous share
    of each, split further into `micro` micro-batches."""

    def __init__(self, rank, world, micro=1, clip=CLIP):
        g = torch.Generator().manual_seed(7)
        total = GLOBAL_BATCH * STEPS
        self.labels = torch.arange(total) % NUM_CLASSES
        self.clips = torch.randn(total, *clip, generator=g) + self.labels.view(-1, 1, 1, 1, 1)
        self.rank, self.world, self.micro = rank, world, micro
        self.num_videos, self.class_names = total, [str(i) for i in range(NUM_CLASSES)]
        self.index_excluded = []

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return STEPS * self.micro

    def __iter__(self):
        share = GLOBAL_BATCH // self.world
        size = share // self.micro
        for step in range(STEPS):
            start = step * GLOBAL_BATCH + self.rank * share
            for m in range(self.micro):
                s = slice(start + m * size, start + (m + 1) * size)
                yield {"clips": self.clips[s], "labels": self.labels[s], "bad_videos": []}

    def to_device(self, batch, device):
        return batch["clips"].to(device), batch["labels"].to(device)

    def loader_clips_per_s(self):
        return 100.0 + self.rank  # a figure per rank, to see the epoch-end gather keep rank order


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, NUM_CLASSES))


def _train_job(cfg, ctx, out_path):
    """Train one epoch on the fixed data and save the parameters and the epoch loss (rank 0)."""
    train = GlobalBatchShard(ctx.rank, ctx.world_size, cfg.TRAIN.ACCUM_STEPS)
    trainer = Trainer(cfg, ctx, prepare_model(tiny_model(), cfg, ctx), train, train)
    trainer.register_hooks([LRScheduleHook(), EpochStatsHook()])
    trainer.train()
    record = trainer.storage.epoch_record
    if ctx.is_main:
        torch.save({"params": {k: v.detach().clone() for k, v in trainer.bare_model.state_dict().items()},
                    "loss": record["loss"], "ddp": hasattr(trainer.model, "no_sync"),
                    "loader": record["loader_clips_per_s_by_rank"],
                    "waits": record["data_wait_by_rank"]}, out_path)


def _cfg(tmp_path, procs, accum=1):
    return load_config(None, [
        "NUM_GPUS", "0", "NUM_CPU_PROCS", str(procs), "TRAIN.BATCH_SIZE", str(GLOBAL_BATCH),
        "TEST.BATCH_SIZE", str(GLOBAL_BATCH), "TRAIN.ACCUM_STEPS", str(accum), "SOLVER.MAX_EPOCH", "1",
        "SOLVER.BASE_LR", "0.5", "SOLVER.LR_POLICY", "constant", "SOLVER.WEIGHT_DECAY", "0.0",
        "MODEL.NUM_CLASSES", str(NUM_CLASSES), "OUTPUT_DIR", str(tmp_path / f"run{procs}_{accum}")])


def test_two_gloo_processes_match_one_process_and_accumulation(tmp_path):
    runs = {}
    for procs, accum in ((1, 1), (2, 1), (1, 2)):
        out = tmp_path / f"{procs}_{accum}.pt"
        launch_workers(_cfg(tmp_path, procs, accum), _train_job, str(out))
        runs[procs, accum] = torch.load(out)
    single = runs[1, 1]
    assert runs[2, 1]["ddp"] and not single["ddp"]
    assert runs[2, 1]["loader"] == [100.0, 101.0] and single["loader"] == [100.0]
    assert len(runs[2, 1]["waits"]) == 2 and all(0 <= w <= 1 for w in runs[2, 1]["waits"])
    initial = tiny_model().state_dict()
    for key, value in single["params"].items():
        assert not torch.allclose(value, initial[key]) or "bias" in key  # training moved the weights
    for other in (runs[2, 1], runs[1, 2]):
        assert other["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert_all_same_up_to_rounding(other["params"], single["params"], POSITIONS)


TINY_X3D = ["MODEL.MODEL_NAME", "x3d", "X3D.DEPTH_FACTOR", 0.5, "X3D.WIDTH_FACTOR", 0.5,
            "X3D.DIM_C5", 16, "DATA.NUM_FRAMES", 2, "DATA.TRAIN_CROP_SIZE", 16, "DATA.TEST_CROP_SIZE", 16,
            "MODEL.DROPOUT_RATE", 0.0, "MODEL.CHANNELS_LAST", True, "MODEL.DEPTHWISE_CONV", "default"]


def _x3d_ddp_job(cfg, ctx, out_path):
    """Train a channels-last X3D for STEPS steps with vbench's DDP wrapping, then with DDP's
    defaults (their gradient copies warn once per process, so they go second); rank 0 saves
    the warnings and the weights of each."""
    # One thread and 4 clips per process: PyTorch's reference CPU conv (not oneDNN) computes the
    # 1x1x1 convs' weight gradients, with contiguous strides where their channels_last_3d
    # parameters have others in the size-1 dimensions.
    torch.set_num_threads(1)
    runs = {}
    for plain in (False, True):
        if plain:  # what vbench did before: DDP's defaults, gradients set to None every step
            du.wrap_ddp = lambda model, device: torch.nn.parallel.DistributedDataParallel(model)
            du.zero_grad_in_place = lambda model: False
        data = GlobalBatchShard(ctx.rank, ctx.world_size, clip=(3, 2, 16, 16))
        torch.manual_seed(0)
        trainer = Trainer(cfg, ctx, prepare_model(build_model(cfg), cfg, ctx), data, data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train()
        runs[plain] = {"warnings": [str(w.message) for w in caught],
                       "params": {k: v.detach().clone() for k, v in trainer.bare_model.state_dict().items()},
                       "in_buckets": du.zero_grad_in_place(trainer.model)}
    if ctx.is_main:
        torch.save(runs, out_path)


def test_channels_last_x3d_gradients_need_no_copy_into_ddp_buckets(tmp_path):
    cfg = load_config(None, TINY_X3D + [
        "NUM_GPUS", "0", "NUM_CPU_PROCS", "2", "TRAIN.BATCH_SIZE", str(GLOBAL_BATCH),
        "TEST.BATCH_SIZE", str(GLOBAL_BATCH), "SOLVER.MAX_EPOCH", "1", "SOLVER.LR_POLICY", "constant",
        "MODEL.NUM_CLASSES", str(NUM_CLASSES), "OUTPUT_DIR", str(tmp_path)])
    launch_workers(cfg, _x3d_ddp_job, str(tmp_path / "runs.pt"))
    runs = torch.load(tmp_path / "runs.pt")
    mismatch = "Grad strides do not match bucket view strides"
    # DDP's defaults warn here (so this machine exercises the case); vbench's wrapping does not.
    assert any(mismatch in w for w in runs[True]["warnings"])
    assert not any(mismatch in w for w in runs[False]["warnings"])
    assert runs[False]["in_buckets"] and not runs[True]["in_buckets"]
    for key, value in runs[True]["params"].items():  # zeroed in place: the same training
        torch.testing.assert_close(runs[False]["params"][key], value, rtol=1e-6, atol=1e-7, msg=key)


# ------------------------------------------------------------------------------ preflight failures
def test_more_gpus_than_visible_fails_before_work(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = load_config(None, ["NUM_GPUS", "2", "OUTPUT_DIR", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match=r"NUM_GPUS is 2 but only 1 GPU\(s\) are visible"):
        launch.preflight(cfg)
    assert not (tmp_path / "run").exists()


def test_gpus_without_cuda_fail_with_a_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(None, ["NUM_GPUS", "1", "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ConfigError, match="CUDA is not available.*NUM_GPUS 0"):
        launch.preflight(cfg)


def test_indivisible_batch_fails_for_the_config_and_for_torchrun_worlds(tmp_path):
    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE"):
        load_config(None, ["NUM_GPUS", "0", "NUM_CPU_PROCS", "3", "TRAIN.BATCH_SIZE", "8"])
    cfg = load_config(None, ["NUM_GPUS", "0", "TRAIN.BATCH_SIZE", "8", "TEST.BATCH_SIZE", "9",
                             "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE = 8 .* 3 processes"):
        launch.preflight(cfg, world_size=3)  # e.g. torchrun --nproc_per_node 3


def test_impossible_lr_schedule_fails_before_work(tmp_path):
    cfg = load_config(None, ["NUM_GPUS", "0", "OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_EPOCH", "1",
                             "SOLVER.LR_POLICY", "cosine_linear_warmup", "SOLVER.WARMUP_EPOCHS", "1.0",
                             "DATA.PATH_TO_DATA_DIR", str(tmp_path / "no_data")])
    with pytest.raises(ConfigError, match="COSINE_MAX_EPOCH .* must be larger than SOLVER.WARMUP_EPOCHS"):
        launch.preflight(cfg)  # named before the missing data folder is even looked at


def test_unwritable_output_dir_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = load_config(None, ["NUM_GPUS", "0", "OUTPUT_DIR", str(blocker / "run")])
    with pytest.raises(ConfigError, match="OUTPUT_DIR .*a_file/run' is not writable"):
        launch.preflight(cfg)


def test_missing_data_dir_points_to_the_readme_and_auto_generation(tmp_path):
    missing = str(tmp_path / "no_data")
    cfg = load_config(None, ["NUM_GPUS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
                             "DATA.PATH_TO_DATA_DIR", missing])
    with pytest.raises(ConfigError, match="no_data' does not exist.*data/README.md.*SYNTH.AUTO_GENERATE"):
        launch.preflight(cfg)
    code = train_main(["NUM_GPUS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
                              "DATA.PATH_TO_DATA_DIR", missing])
    assert code == 1


def test_torchrun_environment_runs_in_place_without_spawning(monkeypatch, tmp_path):
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    seen = []

    def job(cfg, ctx):
        seen.append((os.getpid(), ctx.rank, ctx.world_size))

    launch_workers(_cfg(tmp_path, procs=2), job)  # NUM_CPU_PROCS 2 would spawn without torchrun
    assert seen == [(os.getpid(), 0, 1)]
