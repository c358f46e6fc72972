"""`vbench data check` on tiny generated datasets."""
import sys
from pathlib import Path

import av
import pytest

from vbench.cli import main as vbench_main
from vbench.data.check import clip_indices, main
from vbench.data.index import VideoInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from videos import write_numbered_video  # noqa: E402


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
