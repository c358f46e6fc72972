"""`vbench data check` on tiny generated datasets."""

import av
import pytest

from vbench.cli import main as vbench_main
from vbench.cli.data import check_main as main
from vbench.cli.data import prepare_main
from vbench.data.check import clip_indices
from vbench.data.decoders import get_decoder
from vbench.data.index import VideoInfo, probe_video
from vbench.data.layouts import read_split
from vbench.data.prepare_kinetics import KINETICS20_CLASSES, resolve_classes

from videos import read_frame_number, write_numbered_video  # noqa: E402


def make_clean_dataset(root):
    for split, per_class in (("train", 2), ("val", 1)):
        for name in ("a", "b"):
            for i in range(per_class):
                path = root / split / name / f"{name}{i}.mp4"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_numbered_video(path, 40, fps=30, gop=10)
    return root


def run(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().out


def test_clean_dataset_passes(tmp_path, capsys):
    root = make_clean_dataset(tmp_path / "ds")
    code, out = run(capsys, [str(root), "--cache-dir", str(tmp_path / "cache"), "--workers", "2"])
    assert code == 0, out
    assert "layout 'folder', splits train, val" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("train", "val"))}
    assert lines["train"][1:4] == ["4", "0.00", "2"] and lines["train"][4] == "2/2.0/2"
    assert lines["val"][1] == "2" and lines["val"][7] == "2"  # 2 videos, 2 decoded
    assert "no problems found" in out


def test_corrupt_and_short_videos_are_problems(tmp_path, capsys):
    root = make_clean_dataset(tmp_path / "ds")
    good = (root / "train/a/a0.mp4").read_bytes()
    (root / "train/b/b1.mp4").write_bytes(good[: len(good) // 2])  # truncated: unreadable
    write_numbered_video(root / "train/a/short.mp4", 12, fps=30)  # 0.4 s < one 16-frame clip at 15 fps
    code, out = run(capsys, [str(root), "--split", "train", "--cache-dir", str(tmp_path / "cache"), "--workers", "1"])
    assert code == 1
    assert "unreadable: train/b/b1.mp4" in out
    assert "too short: train/a/short.mp4" in out
    assert "2 problems found" in out


def test_undecodable_video_that_probes_fine_is_a_problem(tmp_path, capsys):
    root = make_clean_dataset(tmp_path / "ds")
    path = root / "val/a/a0.mp4"
    with av.open(str(path)) as container:
        payloads = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    data = bytearray(path.read_bytes())
    for position, size in payloads:  # container intact, every compressed frame zeroed
        data[position:position + size] = bytes(size)
    path.write_bytes(bytes(data))
    code, out = run(capsys, [str(root), "--split", "val", "--cache-dir", str(tmp_path / "cache")])
    assert code == 1
    assert "decode failed: val/a/a0.mp4: no frame could be decoded" in out
    assert "1 problem found" in out


def test_malformed_csv_line_and_missing_layout(tmp_path, capsys):
    root = tmp_path / "csv"
    root.mkdir()
    (root / "train.csv").write_text("a.mp4 0\nb.mp4 one\n")
    code, out = run(capsys, [str(root), "--cache-dir", str(tmp_path / "cache")])
    assert code == 1 and "train.csv, line 2" in out
    (tmp_path / "nothing").mkdir()
    code, out = run(capsys, [str(tmp_path / "nothing")])
    assert code == 1 and "cannot tell the layout" in out


def test_decode_sample_and_cli_dispatch(tmp_path, capsys):
    root = make_clean_dataset(tmp_path / "ds")
    code = vbench_main(["data", "check", str(root), "--split", "train", "--decode-sample", "1",
                        "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0
    train = next(line.split() for line in out.splitlines() if line.strip().startswith("train"))
    assert train[1] == "4" and train[7] == "1"  # 4 videos, 1 decoded


@pytest.mark.parametrize("fps,num_frames", [(30.0, 300), (25.0, 40), (15.0, 16)])
def test_clip_indices_stay_inside_the_video(fps, num_frames):
    info = VideoInfo("v.mp4", "/v.mp4", 0, num_frames=num_frames, fps=fps)
    indices = clip_indices(info, 16, 15.0)
    assert len(indices) == 16 and indices == sorted(indices)
    assert 0 <= indices[0] and indices[-1] < num_frames


# ---------------------------------------------------------------- tools/prepare_kinetics.py

HEADER = "label,youtube_id,time_start,time_end,split\n"


def make_fake_kinetics(src):
    """3 wanted classes + 1 other; folders by label (spaces or underscores) or flat; 1 missing, 1 corrupt."""
    def clip(split, folder, youtube_id, start, number_of_frames=30):  # 1.2 s: one clip fits
        path = src / split / folder / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_numbered_video(path, number_of_frames, fps=25, gop=5)
        return f"{youtube_id},{start},{start + 10}"

    train = [f"abseiling,{clip('train', 'abseiling', 'ab1', 0)},train",
             f"abseiling,{clip('train', 'abseiling', 'ab2', 5)},train",
             "abseiling,abgone,3,13,train",  # listed but never downloaded
             f"abseiling,{clip('train', 'abseiling', 'abbad', 7)},train",
             f"bending back,{clip('train', 'bending_back', 'bb1', 1)},train",
             f"bending back,{clip('train', 'bending_back', 'bb2', 2)},train",
             f"push up,{clip('train', '', 'pu1', 0)},train",  # flat
             f"push up,{clip('train', '', 'pu2', 0)},train",
             f"zumba,{clip('train', 'zumba', 'zu1', 0)},train"]
    val = [f"abseiling,{clip('val', '', 'vab', 0)},val", f"bending back,{clip('val', 'bending back', 'vbb', 0)},val",
           f"push up,{clip('val', 'push_up', 'vpu', 0)},val", f"zumba,{clip('val', '', 'vzu', 0)},val"]
    (src / "train" / "abseiling" / "abbad_000007_000017.mp4").write_text("corrupt download")
    (src / "annotations").mkdir()
    (src / "annotations" / "train.csv").write_text(HEADER + "\n".join(train) + "\n")
    (src / "annotations" / "val.csv").write_text(HEADER + "\n".join(val) + "\n")
    return src


@pytest.fixture
def fake_kinetics(tmp_path):
    return make_fake_kinetics(tmp_path / "k400")


SUBSET = ("--classes", "abseiling,bending_back,push_up", "--train-per-class", "2", "--val-per-class", "1")


def prepare(src, dst, *extra, subset=SUBSET):
    return prepare_main(["--src", str(src), "--dst", str(dst), *subset, "--workers", "2", *extra])


def test_prepare_kinetics_copies_a_class_subset_and_reports_bad_clips(fake_kinetics, tmp_path, capsys):
    dst = tmp_path / "k3"
    assert prepare(fake_kinetics, dst, "--train-per-class", "0") == 0  # all: every candidate is tried
    train, names = read_split(dst, "train")
    assert names == ["abseiling", "bending_back", "push_up"]
    assert sorted(e.rel_path for e in train) == [
        "train/abseiling/ab1_000000_000010.mp4", "train/abseiling/ab2_000005_000015.mp4",
        "train/bending_back/bb1_000001_000011.mp4", "train/bending_back/bb2_000002_000012.mp4",
        "train/push_up/pu1_000000_000010.mp4", "train/push_up/pu2_000000_000010.mp4"]
    assert len(read_split(dst, "val")[0]) == 3
    report = (dst / "prepare_report.txt").read_text()
    assert "abgone_000003_000013\tmissing" in report and "abbad_000007_000017.mp4" in report
    assert len((dst / "subset.csv").read_text().splitlines()) == 1 + 9
    assert "1 missing, 1 unreadable" in capsys.readouterr().out
    assert main([str(dst), "--cache-dir", str(tmp_path / "cache")]) == 0  # the result passes `data check`


def test_prepare_kinetics_link_from_list_and_unknown_class(fake_kinetics, tmp_path, capsys):
    first = tmp_path / "first"
    assert prepare(fake_kinetics, first) == 0
    linked = tmp_path / "linked"
    assert prepare(fake_kinetics, linked, "--mode", "link", "--from-list", str(first / "subset.csv"), subset=()) == 0
    made = sorted(p.relative_to(linked) for p in linked.rglob("*.mp4"))
    assert made == sorted(p.relative_to(first) for p in first.rglob("*.mp4")) and len(made) == 9
    source = fake_kinetics / "train" / "abseiling" / "ab1_000000_000010.mp4"
    assert (linked / "train/abseiling/ab1_000000_000010.mp4").stat().st_ino == source.stat().st_ino
    code = prepare(fake_kinetics, tmp_path / "x", "--classes", "abseiling,pushup")
    assert code == 2 and "push_up" in capsys.readouterr().err


def test_prepare_kinetics_reencode_to_short_side(fake_kinetics, tmp_path):
    dst = tmp_path / "small"
    assert prepare(fake_kinetics, dst, "--mode", "reencode", "--short-side", "96", "--splits", "val") == 0
    clip = dst / "val" / "bending_back" / "vbb_000000_000010.mp4"
    info = probe_video(str(clip))
    assert (info["width"], info["height"]) == (128, 96) and info["num_frames"] == 30 and info["fps"] == 25.0
    frames = get_decoder("pyav").decode(str(clip), [0, 7, 29])
    assert [read_frame_number(f) for f in frames] == [0, 7, 29]


def test_kinetics20_names_match_official_labels():
    labels = {name.replace("_", " ") for name in KINETICS20_CLASSES} | {"zumba"}
    resolved = resolve_classes("kinetics20", labels)
    assert list(resolved) == list(KINETICS20_CLASSES) and resolved["push_up"] == "push up"
