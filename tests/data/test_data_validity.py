"""Data validity (docs/PROTOCOL.md, "Data"): dataset fingerprints, clip lists, bad data bounded before
training, and the score's check of the data, on tiny generated videos and real (tiny) training runs."""
import logging
import os
import shutil
from pathlib import Path

import av
import pytest

from vbench.bench.results import ResultsError, load_results, validate_results
from vbench.cli.data import check_main, prepare_main
from vbench.cli.score import score_main
from vbench.cli.train import train_main
from vbench.config import load_config
from vbench.data import index as index_module
from vbench.data.clip_list import MISSING_REASON, read_clip_list
from vbench.data.layouts import DatasetError
from vbench.data.loader import build_loader

from scaffold import REPO, TINY_RUN, X3D, fake_results
from videos import write_audio_only, write_numbered_video  # noqa: E402


@pytest.fixture(autouse=True)
def restore_vbench_logger():
    """train_main sets the vbench logger up for its run (handlers on this test's captured stdout, no
    propagation): give later tests the logger as it was."""
    logger = logging.getLogger("vbench")
    handlers, propagate = list(logger.handlers), logger.propagate
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate = propagate


def clip_name(cls, index):
    return f"{cls}{index}_000000_000010.mp4"  # Kinetics-style clip IDs


def make_dataset(root, train_per_class=3, val_per_class=2, classes=("a", "b")):
    """<root>/{train,val}/<class>/<clip>: 1.3 s numbered videos (2 windows of 4 frames at 7.5 fps)."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for cls in classes:
            for i in range(count):
                path = root / split / cls / clip_name(cls, i + (100 if split == "val" else 0))
                path.parent.mkdir(parents=True, exist_ok=True)
                write_numbered_video(path, 40, fps=30, gop=10)
    return root


def write_clip_list(folder, root):
    """A clip list naming every video of `root` (sorted), one file per split."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        names = sorted(str(p.relative_to(root)) for p in (root / split).rglob("*.mp4"))
        (folder / f"{split}.txt").write_text("\n".join(names) + "\n")
    return folder


DATA_OPTS = ["DATA.LAYOUT", "folder", "DATA.NUM_FRAMES", "4", "DATA.FRAME_RATE", "7.5",
             "DATA.FRAMES_BETWEEN_CLIPS", "4", "DATA_LOADER.NUM_WORKERS", "0", "DATA_LOADER.INDEX_WORKERS", "1"]


def fingerprint(root, cache, split="train", *opts):
    cfg = load_config(None, ["NUM_GPUS", "0", "DATA.PATH_TO_DATA_DIR", str(root), "DATA.INDEX_CACHE_DIR", str(cache),
                             "TRAIN.BATCH_SIZE", "2", "TEST.BATCH_SIZE", "2", *DATA_OPTS, *opts])
    return build_loader(cfg, split, training=split == "train").fingerprint()


def zero_payloads(path):
    """Keep the container, zero every compressed frame: probes fine, decodes nothing."""
    with av.open(str(path)) as container:
        payloads = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    data = bytearray(path.read_bytes())
    for position, size in payloads:
        data[position:position + size] = bytes(size)
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_across_moving_reindexing_and_reencoding(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    first = fingerprint(root, tmp_path / "cache")
    assert first["videos_listed"] == first["videos_readable"] == 6 and first["classes"] == 2
    assert first["excluded"] == [] and first["clips_per_epoch"] == 12 and first["sha256"] == first["listed_sha256"]
    assert first["bytes"] == sum(p.stat().st_size for p in (root / "train").rglob("*.mp4"))
    moved = tmp_path / "elsewhere" / "kinetics"
    moved.parent.mkdir()
    shutil.move(str(root), str(moved))

    def no_probing(path, scan_packets=True):
        raise AssertionError(f"{path} was probed: the cached index should have answered")

    with monkeypatch.context() as patch:  # moved folder, same cache: nothing is read again
        patch.setattr(index_module, "probe_video", no_probing)
        assert fingerprint(moved, tmp_path / "cache") == first
    assert fingerprint(moved, tmp_path / "fresh_cache") == first  # indexed from scratch
    video = moved / "train" / "a" / clip_name("a", 0)  # re-encode one clip as .mkv with other settings
    video.unlink()
    write_numbered_video(video.with_suffix(".mkv"), 40, fps=30, gop=3, size=(80, 60))
    reencoded = fingerprint(moved, tmp_path / "cache")
    assert reencoded["sha256"] == first["sha256"] and reencoded["bytes"] != first["bytes"]


def test_fingerprint_changes_when_a_clip_is_removed_added_or_unreadable(tmp_path):
    root = make_dataset(tmp_path / "ds")
    cache = tmp_path / "cache"
    base = fingerprint(root, cache)
    (root / "train" / "b" / clip_name("b", 2)).unlink()
    removed = fingerprint(root, cache)
    assert removed["videos_listed"] == 5 and removed["sha256"] != base["sha256"]
    write_numbered_video(root / "train" / "b" / clip_name("b", 2), 40, fps=30)
    write_numbered_video(root / "train" / "b" / clip_name("b", 7), 40, fps=30)
    added = fingerprint(root, cache)
    assert added["videos_listed"] == 7 and added["sha256"] not in (base["sha256"], removed["sha256"])
    (root / "train" / "b" / clip_name("b", 7)).unlink()
    broken = root / "train" / "a" / clip_name("a", 1)
    broken.write_bytes(broken.read_bytes()[:300])  # truncated: the index cannot read it
    unreadable = fingerprint(root, cache)
    assert unreadable["listed_sha256"] == base["listed_sha256"] and unreadable["sha256"] != base["sha256"]
    assert unreadable["videos_readable"] == 5 and [p for p, _ in unreadable["excluded"]] == ["train/a/" + broken.name]


def test_results_schema_validates_the_dataset_block(tmp_path):
    results = fake_results(X3D, "cnn", 100.0)
    validate_results(results)
    results["dataset"]["val"]["excluded"] = [["val/a/x.mp4"]]
    results["dataset"]["train"]["sha256"] = 5
    with pytest.raises(ResultsError) as error:
        validate_results(results)
    assert "dataset.val.excluded[0]" in str(error.value) and "dataset.train.sha256" in str(error.value)


# ---------------------------------------------------------------------------------- clip lists


def test_clip_list_defines_the_split_and_data_check_compares_with_it(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    lists = write_clip_list(tmp_path / "lists", root)
    (root / "train" / "b" / clip_name("b", 1)).unlink()  # listed, missing
    write_numbered_video(root / "train" / "a" / "unlisted_000000_000010.mp4", 40, fps=30)  # extra
    (root / "train" / "a" / clip_name("a", 2)).write_text("not a video")  # listed, unreadable
    cache = tmp_path / "cache"
    train = fingerprint(root, cache, "train", "DATA.CLIP_LIST", str(lists))
    assert train["videos_listed"] == 6 and train["videos_readable"] == 4
    assert dict(map(tuple, train["excluded"]))["train/b/" + clip_name("b", 1)] == MISSING_REASON
    assert "train/a/" + clip_name("a", 2) in dict(map(tuple, train["excluded"]))
    val = fingerprint(root, cache, "val", "DATA.CLIP_LIST", str(lists))

    config = tmp_path / "check.yaml"  # the same data settings as a run: the same fingerprints
    config.write_text(f"DATA: {{PATH_TO_DATA_DIR: {root}, CLIP_LIST: {lists}, LAYOUT: folder, NUM_FRAMES: 4, "
                      f"FRAME_RATE: 7.5, FRAMES_BETWEEN_CLIPS: 4}}\n")
    assert check_main(["--cfg", str(config), "--cache-dir", str(cache), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert f"sha256 {train['sha256']}" in out and f"sha256 {val['sha256']}" in out
    assert f"{train['clips_per_epoch']} clips per epoch" in out
    assert f"[train] missing: train/b/{clip_name('b', 1)}" in out
    assert f"[train] unreadable: train/a/{clip_name('a', 2)}" in out
    assert "[train] extra: train/a/unlisted_000000_000010.mp4: not in the clip list" in out
    per_class = out.split("against the clip list, per class:")[1].split("\n\n")[0].split("\n")
    assert [line.split() for line in per_class[2:]] == [["train", "a", "0", "1", "1"], ["train", "b", "1", "0", "0"]]


def test_malformed_clip_list_names_the_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("train/a/x_000000_000010.mp4\nval/a/y_000000_000010.mp4\n")
    with pytest.raises(DatasetError, match=r"train.txt, line 2: .* not in split 'train'"):
        read_clip_list(str(path), "train")
    path.write_text("train/a/x_000000_000010.mp4\ntrain/b/x_000000_000010.mkv\n")
    with pytest.raises(DatasetError, match="line 2: clip 'x_000000_000010' is listed twice"):
        read_clip_list(str(path), "train")


# ---------------------------------------------------------------------------------- runs

def tiny_config(tmp_path, data):
    """test_trainer's tiny X3D run on `data` (no synthetic data), one epoch."""

    base = tmp_path / "tiny_base.yaml"
    base.write_text(TINY_RUN.replace("{data}", str(data)).replace("{cache}", str(tmp_path / "cache")))
    path = tmp_path / "tiny.yaml"
    path.write_text("_BASE_: tiny_base.yaml\nSYNTH: {AUTO_GENERATE: False}\nSOLVER: {MAX_EPOCH: 1}\n")
    return str(path)


def train(cfg_file, out, capsys, *opts):
    code = train_main(["--cfg", cfg_file, "OUTPUT_DIR", str(out), *opts])
    return code, capsys.readouterr().err, load_results(str(out))


def test_five_of_twelve_unreadable_training_videos_stop_the_run_before_training(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", train_per_class=6, val_per_class=1)
    train_dir = root / "train"
    broken = {"a/" + clip_name("a", 0): b"", "a/" + clip_name("a", 1): None, "a/" + clip_name("a", 2): b"hello\n",
              "b/" + clip_name("b", 0): os.urandom(5000), "b/" + clip_name("b", 1): "audio"}
    for name, content in broken.items():
        path = train_dir / name
        if content is None:
            path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])  # truncated
        elif content == "audio":
            path.unlink()
            write_audio_only(path)  # a valid file without a video stream
        else:
            path.write_bytes(content)
    code, err, results = train(tiny_config(tmp_path, root), tmp_path / "run", capsys)
    assert code == 1
    for name in broken:
        assert f"train/{name}" in err
    assert "5 of 12 training videos (41.7%) are missing or unreadable" in err and "vbench data check" in err
    assert results["run"]["status"] == "failed" and results["epochs"] == []
    assert results["benchmark"]["total_time_s"] == 0.0  # the clock never started
    assert len(results["dataset"]["train"]["excluded"]) == 5 and len(results["bad_videos"]["train"]) == 5


def test_unreadable_validation_video_stops_the_run_or_makes_the_score_non_compliant(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    cfg_file = tiny_config(tmp_path, root)
    code, err, clean = train(cfg_file, tmp_path / "clean", capsys)
    assert code == 0 and clean["benchmark"]["reached"], err
    reference = tmp_path / "reference.yaml"
    assert score_main(["--make-reference", "--cnn", str(tmp_path / "clean"), "--out", str(reference)]) == 0
    capsys.readouterr()

    bad = root / "val" / "b" / clip_name("b", 101)
    original = bad.read_bytes()
    bad.write_text("not a video")  # unreadable when indexed: the run stops before training
    code, err, stopped = train(cfg_file, tmp_path / "stopped", capsys)
    assert code == 1 and f"val/b/{bad.name}" in err and "DATA.MAX_VAL_EXCLUDED_FRACTION" in err
    assert stopped["epochs"] == [] and stopped["dataset"]["val"]["excluded"][0][0] == f"val/b/{bad.name}"

    bad.write_bytes(original)
    zero_payloads(bad)  # readable when indexed, fails to decode during evaluation
    code, err, lenient = train(cfg_file, tmp_path / "lenient", capsys, "DATA.MAX_VAL_EXCLUDED_FRACTION", "0.5")
    assert code == 0, err
    assert [item["path"] for item in lenient["bad_videos"]["eval_excluded"]] == [f"val/b/{bad.name}"]
    assert score_main(["--cnn", str(tmp_path / "lenient"), "--reference", str(reference)]) == 0
    out = capsys.readouterr().out
    assert "NON-COMPLIANT" in out and "DATA.MAX_VAL_EXCLUDED_FRACTION" in out
    assert "val: 1 of the 4 reference clips were not evaluated (3 were" in out
    assert score_main(["--cnn", str(tmp_path / "clean"), "--reference", str(reference)]) == 0
    assert "NON-COMPLIANT" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------- prepare_kinetics

KINETICS20 = REPO / "configs" / "datasets" / "kinetics20"


def test_prepare_kinetics_builds_the_listed_clips_a_partial_copy_has_and_reports_the_rest(tmp_path, capsys):
    train = (KINETICS20 / "train.txt").read_text().split()
    val = (KINETICS20 / "val.txt").read_text().split()
    src = tmp_path / "k400"

    def put(listed, where):  # a Kinetics copy: label folders with spaces, or flat, in any split folder
        path = src / where / Path(listed).name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_numbered_video(path, 30, fps=25)
        return path

    have = [train[0], train[500], val[7]]
    put(train[0], "train/" + train[0].split("/")[1].replace("_", " "))
    put(train[500], "train")
    put(val[7], "train/" + val[7].split("/")[1])  # a validation clip filed under train/ is found too
    put(train[900], "train").write_text("404 page")  # listed but unreadable: reported
    put("train/abseiling/notlisted_000001_000011.mp4", "train/abseiling")  # not listed: not copied
    dst = tmp_path / "kinetics20"
    assert prepare_main(["--src", str(src), "--dst", str(dst), "--workers", "2"]) == 1
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*.mp4")) == sorted(have)
    out = capsys.readouterr().out
    assert f"{len(train) + len(val) - 3} listed clips could not be written" in out
    unreadable = src / "train" / Path(train[900]).name
    assert f"{unreadable}  not a readable video" in out  # named with the reason, before the missing ones
    report = (dst / "prepare_report.txt").read_text().splitlines()
    assert len(report) == 2 + len(train) + len(val) - 3  # two header lines, then one line per clip
    reported = {line.split("\t")[2] for line in report[2:]}
    assert {Path(train[1]).stem, Path(val[0]).stem, str(unreadable)} <= reported
    assert not any(Path(clip).stem in reported for clip in have)
