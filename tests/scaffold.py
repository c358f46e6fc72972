"""What many tests share: the one config factory, a tiny real run, a fake trainer, fake results
and the helpers that watch spawned processes. Test modules import it by name (tests/ is on
sys.path: pytest puts the folder of tests/conftest.py there)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from vbench.bench.clock import BenchmarkClock
from vbench.bench.compliance import recipe_config
from vbench.bench.reference import load_reference, resolve_config_path
from vbench.bench.results import RESULTS_FILE, ResultsWriter, world_block
from vbench.config import get_cfg, load_config
from vbench.data.fingerprint import split_fingerprint
from vbench.data.index import VideoInfo
from vbench.engine.defaults import build_trainer
from vbench.engine.distributed import DistContext
from vbench.engine.log import setup_logging
from vbench.engine.train_loop import HookBase

from videos import read_frame_number, write_numbered_video

REPO = Path(__file__).resolve().parents[1]


def make_cfg(*opts):
    """The config factory: vbench's defaults with `KEY VALUE` overrides, checked and frozen as a
    run's config is (values may be given as Python values; they are passed as text)."""
    return load_config(None, [str(opt) for opt in opts])


# ------------------------------------------------------------------------------ a tiny real run
TINY_RUN = """
NUM_GPUS: 0
RNG_SEED: 3
DETERMINISTIC: True
LOG_PERIOD: 2
TRAIN: {BATCH_SIZE: 4, CHECKPOINT_KEEP: 5}
TEST: {BATCH_SIZE: 4}
DATA:
  PATH_TO_DATA_DIR: {data}
  LAYOUT: folder
  INDEX_CACHE_DIR: {cache}
  NUM_FRAMES: 4
  FRAME_RATE: 7.5
  FRAMES_BETWEEN_CLIPS: 4
  TRAIN_MIN_MAX_SCALE: [32, 40]
  TRAIN_CROP_SIZE: 32
  TEST_MIN_SHORT_SIDE_SCALE: 32
  TEST_CROP_SIZE: 32
SYNTH: {AUTO_GENERATE: True, NUM_CLASSES: 2, TRAIN_PER_CLASS: 3, VAL_PER_CLASS: 2}
DATA_LOADER: {NUM_WORKERS: 0, INDEX_WORKERS: 1}
MODEL: {MODEL_NAME: x3d, NUM_CLASSES: 2, DROPOUT_RATE: 0.0}

X3D: {WIDTH_FACTOR: 0.5, DEPTH_FACTOR: 0.5, DIM_C5: 32}
SOLVER: {BASE_LR: 0.05, LR_POLICY: cosine, MAX_EPOCH: 3, WARMUP_EPOCHS: 0.0}
BENCHMARK: {TRACK: cnn, TARGET_TOP1: 1.0, STOP_AT_TARGET: False}
"""


def run_net(cfg_file, out, *opts, wait=True):
    """Run `tools/run_net.py --cfg cfg_file OUTPUT_DIR out *opts` in a new process; its output
    (asserting success) or, with wait False, the process."""
    command = [sys.executable, str(REPO / "tools" / "run_net.py"),
               "--cfg", cfg_file, "OUTPUT_DIR", str(out), *opts]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output[-3000:]
        return output
    return process


def write_tiny_cfg(folder):
    """TINY_RUN as a config file in `folder`, with its synthetic data and index cache there too."""
    text = TINY_RUN.replace("{data}", str(folder / "data")).replace("{cache}", str(folder / "cache"))
    path = folder / "tiny.yaml"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------ the fake trainer
K = 3  # classes of the fake data
TRAIN_BATCHES, EVAL_BATCHES = 4, 2


class FakeTime:
    """A monotonic clock the test moves by hand; every model forward costs one second."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class OneHotModel(torch.nn.Module):
    """Reads the label planted in the clip (always right); a bias keeps it trainable."""

    def __init__(self, fake_time=None):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(K))
        self.fake_time = fake_time

    def forward(self, x):
        if self.fake_time is not None:
            self.fake_time.now += 1.0
        return 10 * x.mean(dim=(2, 3, 4))[:, :K] + self.bias


class FakeLoader:  # follows vbench.data.protocol.BatchLoader (tests/engine/test_trainer.py checks it)
    """Fixed clips whose first K channels one-hot encode the label; optional bad-video reports."""

    def __init__(self, num_batches, batch=4, bad=()):
        n = num_batches * batch
        self.labels = torch.arange(n) % K
        self.clips = torch.nn.functional.one_hot(self.labels, K).float().view(n, K, 1, 1, 1).expand(n, K, 2, 2, 2)
        self.batch, self.num_batches, self.bad = batch, num_batches, list(bad)
        self.num_videos, self.class_names, self.excluded = n, [f"c{i}" for i in range(K)], []
        self.index_excluded = []
        self.restarts = None  # no worker processes to restart
        self.batches_yielded = 0

    def fingerprint(self):
        infos = [VideoInfo(f"v/c/{i}.mp4", "", int(label)) for i, label in enumerate(self.labels)]
        return split_fingerprint(infos, self.index_excluded, K, len(infos))

    def set_epoch(self, epoch):
        pass

    def file_paths(self):  # no files: the page-cache hook has nothing to evict
        return []

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        for i in range(self.num_batches):
            s = slice(i * self.batch, (i + 1) * self.batch)
            yield {"clips": self.clips[s], "labels": self.labels[s], "video_ids": torch.arange(len(self.labels))[s],
                   "valid": torch.ones(self.batch, dtype=torch.bool), "bad_videos": self.bad if i == 0 else []}
            self.batches_yielded += 1

    def to_device(self, batch, device):
        return batch["clips"].to(device), batch["labels"].to(device)

    def loader_clips_per_s(self):
        return None

    def progress(self):
        return self.batches_yielded

    def close(self):
        pass


def fake_cfg(out, *opts):
    """A config for the fake trainer (FakeLoader, OneHotModel) writing to `out`."""
    return make_cfg(
        "NUM_GPUS", "0", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4", "SOLVER.MAX_EPOCH", "4",
        "SOLVER.LR_POLICY", "constant", "SOLVER.BASE_LR", "0.01", "MODEL.NUM_CLASSES", str(K),
        "LOG_PERIOD", "1", "BENCHMARK.TARGET_TOP1", "50.0", "BENCHMARK.WARMUP_STEPS", "0",
        "OUTPUT_DIR", str(out), *opts)


def fake_trainer(cfg, fake_time=None, bad=(), setup_s=0.0):
    setup_logging(cfg.OUTPUT_DIR)
    logging.getLogger("vbench").propagate = True  # let caplog see warnings
    clock = None
    if fake_time is not None:
        clock = BenchmarkClock(os.path.join(cfg.OUTPUT_DIR, "clock_heartbeat.json"), time_fn=fake_time,
                               setup_started=fake_time.now)
        fake_time.now += setup_s  # building the model, loaders, ... is set-up
    return build_trainer(cfg, DistContext(), clock=clock, model=OneHotModel(fake_time),
                         train_loader=FakeLoader(TRAIN_BATCHES, bad=bad),
                         val_loader=FakeLoader(EVAL_BATCHES))


class DropoutModel(OneHotModel):
    """OneHotModel with dropout: its forward draws from the global RNG."""

    def forward(self, x):
        return torch.nn.functional.dropout(super().forward(x), 0.3, self.training)


class SignalAt(HookBase):
    """Sends this process SIGUSR1 after one step, as a scheduler would (fault injection)."""

    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step

    def after_step(self):
        if (self.trainer.epoch, self.trainer.iter + 1) == (self.epoch, self.step):
            os.kill(os.getpid(), signal.SIGUSR1)


# ------------------------------------------------------------------------------ spawned processes
def report_cfg(tmp_path, *opts):
    """A 2-process CPU run's config writing to `tmp_path` (launcher and failure-report tests)."""
    return make_cfg("NUM_GPUS", "0", "NUM_CPU_PROCS", "2", "TRAIN.BATCH_SIZE", "4",
                    "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_EPOCH", "5", *opts)


TWO_PROCESSES = ("NUM_CPU_PROCS", "2", "TEST.ENABLE", "False")


def spawned_children(pid):
    """The multiprocessing-spawned children of `pid` (a child that ends meanwhile is left out)."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:  # ended, or a zombie not yet reaped
            pass
    return found


def worker_pids(process, count=2, timeout_s=120):
    """The pids of the spawned training processes of `process`, in rank order."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        workers = spawned_children(process.pid)
        if len(workers) == count:
            return [w.pid for w in sorted(workers, key=lambda w: (w.create_time(), w.pid))]
        time.sleep(0.05)
    raise AssertionError(f"{count} training processes did not start: {process.communicate()[0][-3000:]}")


# ------------------------------------------------------------------------------ fake results
X3D = "configs/Kinetics/X3D_M.yaml"
MVIT = "configs/Kinetics/MVIT_B_16x4.yaml"


def complete_dataset(track):
    """The "dataset" block of a run that used every clip of the shipped reference's data."""
    expected = load_reference().tracks[track].dataset
    return {split: {"videos_listed": e["videos"], "videos_readable": e["videos"], "excluded": [],
                    "clips_per_epoch": 9 * e["videos"], "bytes": 600_000 * e["videos"],
                    "classes": e["classes"], "sha256": e["sha256"], "listed_sha256": e["sha256"]}
            for split, e in expected.items()}


def fake_results(config_path, track, t_bench, reached=True, num_devices=4, gpu="NVIDIA H100", **overrides):
    """A results.json dict as the trainer writes it, for a run with the shipped config."""
    config = recipe_config(resolve_config_path(config_path))
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[leaf] = value
    target = config["BENCHMARK"]["TARGET_TOP1"]
    epochs = [{"epoch": e, "clock_s": t_bench * e / 3, "train_s": 1.0, "eval_s": 0.1,
               "data_wait_fraction": 0.05, "clips_per_s": 100.0, "loss": 2.0 / e, "lr": 0.01,
               "clip_top1": target * e / 3, "clip_top5": 50.0, "video_top1": 10.0, "video_top5": 50.0,
               "bad_videos": 0} for e in (1, 2, 3)]
    return {
        "schema_version": 1, "vbench_version": "0.1.0", "git_commit": None,
        "run": {"output_dir": "x", "config_file": config_path, "command": ["run_net.py"],
                "started_at": "2026-11-21T00:00:00", "finished_at": "2026-11-21T01:00:00",
                "status": "reached" if reached else "finished"},
        "config": config, "config_hash": "0" * 64,
        "benchmark": {"track": track, "metric": "clip", "target_top1": target, "reached": reached,
                      "time_to_target_s": t_bench if reached else None,
                      "epochs_to_target": 3 if reached else None, "setup_s": 5.0,
                      "stop_at_target": True, "total_time_s": t_bench},
        "world": {"num_gpus": num_devices, "num_devices": num_devices, "world_size": num_devices,
                  "num_shards": 1, "device": "cuda", "precision": "bf16"},
        "hardware": {"gpu": {"model": gpu, "count": num_devices, "memory_gib": 80.0, "driver": "x",
                             "cuda": "12", "cudnn": "9"},
                     "cpu": {"model": "cpu", "physical_cores": 16, "logical_cores": 32},
                     "ram_gib": 128.0, "storage": None},
        "software": {"python": "3.12", "torch": "2.11", "torchvision": "0.26", "av": "14",
                     "torchcodec": None, "numpy": "2", "platform": "linux"},
        "epochs": epochs, "peak_gpu_memory_gib": 10.0,
        "bad_videos": {"train": [], "eval_excluded": []}, "dataset": complete_dataset(track),
    }


def save(tmp_path, name, results):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps(results))
    return str(run_dir)


FAKE_SYSINFO = {
    "hardware": {"gpu": None, "cpu": {"model": "test cpu", "physical_cores": 1, "logical_cores": 2},
                 "ram_gib": 4.0, "storage": None},
    "software": {"python": "3.11", "torch": "2", "torchvision": "0", "av": "1", "torchcodec": None,
                 "numpy": "2", "platform": "test"},
}


CPU_RANK = {"rank": 0, "node": 0, "local_rank": 0, "host": "a1b2c3d4e5f6", "device": "cpu",
            "device_model": "test cpu", "memory_gib": 4.0, "device_id": "a1b2c3d4e5f6"}


def results_cfg(tmp_path, target=50.0):
    cfg = get_cfg()
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "BENCHMARK.TRACK", "cnn",
                         "BENCHMARK.TARGET_TOP1", target, "NUM_GPUS", 0])
    return cfg


def make_writer(tmp_path, cfg=None, sysinfo_block=FAKE_SYSINFO):
    cfg = cfg or results_cfg(tmp_path)
    return ResultsWriter(str(tmp_path / RESULTS_FILE), cfg, world=world_block([CPU_RANK], "fp32"),
                         config_file="configs/x.yaml", command=["vbench", "train"], sysinfo=sysinfo_block)


def row(epoch, clock_s, top1, loss=1.0):
    return {"epoch": epoch, "clock_s": clock_s, "train_s": 10.0, "eval_s": 2.0, "data_wait_fraction": 0.25,
            "clips_per_s": 30.0, "loss": loss, "lr": 0.01, "clip_top1": top1, "clip_top5": 90.0,
            "video_top1": top1, "video_top5": 95.0, "bad_videos": 0}


# ------------------------------------------------------------------------------ numbered videos
# (class, name, frames at 30 fps): at 15 fps with 4-frame windows -> 5, 4, 3, 5, 2, 1 (short) clips
VIDEOS = [("a", "v0", 40), ("a", "v1", 32), ("a", "v2", 26), ("b", "v3", 40), ("b", "v4", 18), ("b", "v5", 6)]


def write_numbered_dataset(root):
    """A folder dataset of VIDEOS (train and val) whose frames show their own index."""
    for split in ("train", "val"):
        for cls, name, frames in VIDEOS:
            os.makedirs(root / split / cls, exist_ok=True)
            write_numbered_video(root / split / cls / f"{name}.mp4", frames, fps=30, gop=12)
    return root


def loader_cfg(root, workers=0, batch=4, **overrides):
    """A config for loaders over `write_numbered_dataset(root)` (unfrozen: tests change it)."""
    cfg = get_cfg()
    cfg.merge_from_list([
        "NUM_GPUS", 0, "DATA.PATH_TO_DATA_DIR", str(root), "DATA.LAYOUT", "folder",
        "DATA.INDEX_CACHE_DIR", str(root / "index"), "DATA.NUM_FRAMES", 4, "DATA.FRAME_RATE", 15.0,
        "DATA.FRAMES_BETWEEN_CLIPS", 4, "DATA.TRAIN_MIN_MAX_SCALE", [48, 56], "DATA.TRAIN_CROP_SIZE", 32,
        "DATA.TEST_MIN_SHORT_SIDE_SCALE", 48, "DATA.TEST_CROP_SIZE", 32, "TRAIN.BATCH_SIZE", batch,
        "TEST.BATCH_SIZE", batch, "DATA_LOADER.NUM_WORKERS", workers, "DATA_LOADER.SHUFFLE_BUFFER", 8,
        "DATA_LOADER.INDEX_WORKERS", 1, "MODEL.NUM_CLASSES", 2])
    cfg.merge_from_list([x for kv in overrides.items() for x in (kv[0].replace("__", "."), kv[1])])
    return cfg


def clip_records(batches, check_pixels=True):
    """(video, frames) of every valid clip; checks that each clip shows its planned frames."""
    records = []
    for batch in batches:
        assert batch["clips"].dtype == torch.uint8 and batch["clips"].shape[1:] == (4, 48, 64, 3)
        for clip, frames, video, ok in zip(batch["clips"], batch["frame_indices"], batch["video_ids"],
                                           batch["valid"]):
            if check_pixels:
                assert [read_frame_number(f) for f in clip] == frames.tolist()
            if ok:
                records.append((int(video), tuple(frames.tolist())))
    return records
