"""Synthetic dataset: layout, determinism, single frames carry no class, motion does; ensure_synthetic."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vbench.cli.data import synth_main
from vbench.config import ConfigError, get_cfg
from vbench.data import synthetic
from vbench.data.synthetic import PATTERNS, PRESETS, ensure_synthetic, generate_dataset
from vbench.data.synthetic_patterns import _sample_shapes, _shape_state, render_video

av = pytest.importorskip("av")

# small and short, same drawing code as the demo preset
TINY = dataclasses.replace(PRESETS["demo"], name="tiny", width=64, height=48, num_frames=24)


def decode(path, fmt="rgb24"):
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format=fmt) for frame in container.decode(video=0)])


def tiny_cfg(root, **synth):
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(root)
    cfg.DATA_LOADER.NUM_WORKERS = 1
    cfg.SYNTH.AUTO_GENERATE = True
    cfg.SYNTH.NUM_CLASSES, cfg.SYNTH.TRAIN_PER_CLASS, cfg.SYNTH.VAL_PER_CLASS = 2, 2, 1
    for key, value in synth.items():
        setattr(cfg.SYNTH, key, value)
    return cfg


def test_folder_csv_and_classes_layout(tmp_path):
    root = tmp_path / "synth"
    summary = generate_dataset(root, TINY, num_classes=3, train_per_class=2, val_per_class=1,
                               workers=1, progress=False)
    names = sorted(PATTERNS[:3])
    assert summary["classes"] == names and summary["videos"] == {"train": 6, "val": 3}
    assert json.loads((root / "classes.json").read_text()) == names
    assert sorted(os.listdir(root / "train")) == names == sorted(os.listdir(root / "val"))
    for split, count in (("train", 6), ("val", 3)):
        lines = (root / f"{split}.csv").read_text().split("\n")
        assert lines[-1] == "" and len(lines) == count + 1
        for line in lines[:-1]:
            rel_path, label = line.split(" ")
            class_name = rel_path.split("/")[1]
            assert rel_path.startswith(f"{split}/") and (root / rel_path).is_file()
            assert names[int(label)] == class_name  # labels = sorted folder names
    video = decode(root / "train" / "grow" / "grow_0001.mp4")
    assert video.shape == (24, 48, 64, 3)
    with av.open(str(root / "val" / "move_up" / "move_up_0000.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 15
    marker = json.loads((root / "synthetic.json").read_text())
    assert marker["num_classes"] == 3 and marker["preset"] == "tiny"
    assert not [entry for entry in os.listdir(tmp_path) if ".tmp-" in entry]


def test_generation_is_deterministic_and_depends_on_the_seed(tmp_path):
    args = dict(num_classes=2, train_per_class=2, val_per_class=1, progress=False)
    generate_dataset(tmp_path / "a", TINY, seed=7, workers=1, **args)
    generate_dataset(tmp_path / "b", TINY, seed=7, workers=2, **args)  # worker pool, any order
    generate_dataset(tmp_path / "c", TINY, seed=8, workers=1, **args)
    for rel_path in ("train/move_down/move_down_0001.mp4", "val/move_up/move_up_0000.mp4"):
        first, again = decode(tmp_path / "a" / rel_path), decode(tmp_path / "b" / rel_path)
        assert np.array_equal(first, again)
        assert not np.array_equal(first, decode(tmp_path / "c" / rel_path))
    # a class keeps its videos when more classes are generated
    generate_dataset(tmp_path / "d", TINY, seed=7, workers=1, **dict(args, num_classes=4))
    assert np.array_equal(decode(tmp_path / "a/train/move_up/move_up_0000.mp4"),
                          decode(tmp_path / "d/train/move_up/move_up_0000.mp4"))


def test_patterns_change_in_their_named_direction():
    expected = {"move_up": ("y", -1), "move_down": ("y", 1), "move_left": ("x", -1),
                "move_right": ("x", 1), "grow": ("radius", 1), "shrink": ("radius", -1),
                "fade_in": ("alpha", 1), "fade_out": ("alpha", -1), "rotate_cw": ("angle", 1),
                "rotate_ccw": ("angle", -1)}
    assert set(expected) == set(PATTERNS)
    fields = ("x", "y", "angle", "radius", "alpha")
    for pattern, (field, sign) in expected.items():
        shapes = _sample_shapes(np.random.default_rng(0), PRESETS["demo"], pattern, 128.0)
        for shape in shapes:
            before = dict(zip(fields, _shape_state(shape, 0.5, PRESETS["demo"])))
            after = dict(zip(fields, _shape_state(shape, 0.52, PRESETS["demo"])))
            for name in fields:
                change = after[name] - before[name]
                if name == field:
                    assert change * sign > 0 or abs(change) > 5, (pattern, name)  # or wrapped
                else:
                    assert change == 0, (pattern, name)


def frame_features(frame):
    grey = frame.astype(np.float64).mean(axis=2)
    gradient = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return np.array([grey.mean(), grey.std(), gradient, frame[..., 0].mean() - frame[..., 2].mean()])


def test_single_frames_have_the_same_statistics_in_every_class():
    preset = dataclasses.replace(TINY, num_frames=7)
    features = {pattern: [] for pattern in PATTERNS}
    for pattern in PATTERNS:
        for index in range(40):
            seed = synthetic.video_seed(0, "train", pattern, index)
            frames = render_video(preset, pattern, np.random.default_rng(seed))
            features[pattern].append([frame_features(frames[0]), frame_features(frames[6])])
    values = np.array([features[pattern] for pattern in PATTERNS])  # class, video, frame, feature
    class_means = values.mean(axis=1)
    standard_error = values.std(axis=(0, 1)) / np.sqrt(values.shape[1])
    spread = (class_means.max(axis=0) - class_means.min(axis=0)) / standard_error
    assert spread.max() < 4.5, spread  # within sampling noise, for the first and a later frame


class FramePairNet(nn.Module):
    """Per-frame conv on (frame, next - frame) or on one frame, pooled, optional temporal conv."""

    def __init__(self, num_classes, single_frame, channels=8):
        super().__init__()
        self.single_frame = single_frame
        self.conv = nn.Conv2d(1 if single_frame else 2, channels, 5, stride=2, padding=2)
        self.temporal = nn.Conv1d(channels, channels, 3, padding=1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):  # N 1 T H W
        if self.single_frame:
            x = x[:, :, :1]
        else:
            x = torch.cat([x[:, :, :-1], x[:, :, 1:] - x[:, :, :-1]], 1)
        n, c, t, h, w = x.shape
        features = F.relu(self.conv(x.transpose(1, 2).reshape(n * t, c, h, w))).mean((2, 3))
        features = features.view(n, t, -1).transpose(1, 2)
        if not self.single_frame:
            features = F.relu(self.temporal(features))
        return self.fc(features.mean(2))


def load_split(root, split):
    clips, labels = [], []
    for line in (root / f"{split}.csv").read_text().split("\n")[:-1]:
        rel_path, label = line.split(" ")
        clips.append(torch.from_numpy(decode(root / rel_path, "gray")))
        labels.append(int(label))
    clips = F.avg_pool3d(torch.stack(clips).float()[:, None] / 255, (1, 2, 2))  # N 1 T 24 32
    return clips, torch.tensor(labels)


def random_windows(videos, generator, frames=8, stride=2):
    span = (frames - 1) * stride + 1
    starts = torch.randint(0, videos.shape[2] - span + 1, (len(videos),), generator=generator)
    return torch.stack([video[:, start:start + span:stride]
                        for video, start in zip(videos, starts.tolist())])


def train_and_score(model, train_set, val_set, steps=250):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    (videos, labels), (val_videos, val_labels) = train_set, val_set
    for _ in range(steps):
        loss = F.cross_entropy(model(random_windows(videos, generator)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = model(random_windows(val_videos, torch.Generator().manual_seed(1)))
    return (logits.argmax(1) == val_labels).float().mean().item()


@pytest.fixture
def one_torch_thread():
    # two threads on a busy 2-core machine run this tiny model ~10x slower than one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_temporal_model_beats_single_frame_model(tmp_path, one_torch_thread):
    root = tmp_path / "synth"
    generate_dataset(root, TINY, num_classes=4, train_per_class=24, val_per_class=12, workers=1,
                     progress=False)
    train_set, val_set = load_split(root, "train"), load_split(root, "val")
    mean, std = train_set[0].mean(), train_set[0].std()
    train_set = ((train_set[0] - mean) / std, train_set[1])
    val_set = ((val_set[0] - mean) / std, val_set[1])
    temporal = train_and_score(FramePairNet(4, single_frame=False), train_set, val_set)
    single = train_and_score(FramePairNet(4, single_frame=True), train_set, val_set)
    # 48 validation videos, chance 0.25: one frame stays near chance, motion is learnable
    assert single <= 0.45, (temporal, single)
    assert temporal >= 0.5 and temporal >= single + 0.25, (temporal, single)


def test_ensure_synthetic_generates_once_and_is_idempotent(tmp_path):
    root = tmp_path / "data" / "synth"
    cfg = tiny_cfg(root)
    assert ensure_synthetic(cfg) is True
    assert (root / "train").is_dir() and (root / "val.csv").is_file()
    marker = json.loads((root / "synthetic.json").read_text())
    assert (marker["preset"], marker["num_classes"], marker["seed"]) == ("demo", 2, 0)
    stamp = os.path.getmtime(root / "train.csv")
    assert ensure_synthetic(cfg) is False
    assert os.path.getmtime(root / "train.csv") == stamp
    assert ensure_synthetic(tiny_cfg(tmp_path / "other", AUTO_GENERATE=False)) is False
    assert not (tmp_path / "other").exists()


def test_ensure_synthetic_rejects_other_parameters_and_foreign_folders(tmp_path):
    root = tmp_path / "synth"
    assert ensure_synthetic(tiny_cfg(root))
    with pytest.raises(ConfigError, match="SEED|seed") as error:
        ensure_synthetic(tiny_cfg(root, SEED=3))
    assert "Delete the folder" in str(error.value) and "DATA.PATH_TO_DATA_DIR" in str(error.value)
    marker = json.loads((root / "synthetic.json").read_text())
    marker["preset_params"]["shapes_per_video"] = [1, 2]  # data made before the preset changed
    (root / "synthetic.json").write_text(json.dumps(marker))
    with pytest.raises(ConfigError, match=r"preset.shapes_per_video: \[1, 2\] there, \[4, 6\] wanted"):
        ensure_synthetic(tiny_cfg(root))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a dataset")
    with pytest.raises(ConfigError, match="not empty"):
        ensure_synthetic(tiny_cfg(foreign))
    with pytest.raises(ConfigError, match="PATH_TO_DATA_DIR"):
        ensure_synthetic(tiny_cfg(""))


def test_crash_mid_generation_leaves_no_dataset(tmp_path, monkeypatch):
    made = []

    def failing_encode(path, frames, preset):
        if len(made) == 2:
            raise RuntimeError("disk full")
        made.append(path)
        open(path, "wb").close()

    monkeypatch.setattr(synthetic, "encode_video", failing_encode)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_synthetic(tiny_cfg(tmp_path / "synth"))
    assert os.listdir(tmp_path) == []  # neither the dataset nor its temporary folder


def sigterm_handler_name(_):
    import signal

    handler = signal.getsignal(signal.SIGTERM)
    return getattr(handler, "__name__", str(handler))


def test_generation_workers_die_on_sigterm_even_under_the_trainers_handler():
    import signal

    def trainer_handler(signum, frame):  # like vbench.engine.launch._terminate
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, trainer_handler)
    try:
        with synthetic.worker_pool(2) as pool:
            names = list(pool.map(sigterm_handler_name, range(4)))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert names == [str(signal.SIG_DFL)] * 4


def test_bad_arguments_and_cli(tmp_path, capsys):
    with pytest.raises(ValueError, match="classes"):
        generate_dataset(tmp_path / "x", TINY, num_classes=len(PATTERNS) + 1, progress=False)
    with pytest.raises(ValueError, match="preset"):
        generate_dataset(tmp_path / "x", "huge", progress=False)
    out = tmp_path / "cli"
    assert synth_main(["--out", str(out), "--classes", "2", "--train-per-class", "1",
                           "--val-per-class", "1", "--workers", "1", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == {"train": 2, "val": 2}
    with pytest.raises(SystemExit):  # not empty any more
        synth_main(["--out", str(out), "--quiet"])
