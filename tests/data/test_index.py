"""Video index: metadata from headers/packets, the location-independent cache, unreadable files."""
import json
import logging
import os
import shutil
from fractions import Fraction

import av
import pytest

from vbench.data import index as index_module
from vbench.data.index import CACHE_FILE, build_index, probe_video
from vbench.data.layouts import read_split

from videos import write_numbered_video  # noqa: E402


def make_dataset(root):
    """4 small videos in the folder layout, plus one corrupt file; returns expected pts per file."""
    expected = {}
    specs = {
        "train/a/h264.mp4": dict(num_frames=40, fps=30, codec="libx264", gop=10, size=(64, 48)),
        "train/a/vfr.mp4": dict(num_frames=30, fps=25, codec="libx264", gop=8, vfr=True, size=(48, 32)),
        "train/b/offset.webm": dict(num_frames=20, fps=20, codec="libvpx-vp9", start_pts=2.0, size=(64, 48)),
        "train/b/mpeg4.avi": dict(num_frames=24, fps=24, codec="mpeg4", gop=6, size=(32, 32)),
    }
    for rel, spec in specs.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        expected[rel] = (spec, write_numbered_video(root / rel, **spec))
    (root / "train/b/broken.mp4").write_text("not a video")
    return expected


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    return root, make_dataset(root)


class ProbeCounter:
    def __init__(self, monkeypatch):
        self.calls = []
        real = index_module.probe_video

        def counting_probe(path, *args, **kwargs):
            self.calls.append(path)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(index_module, "probe_video", counting_probe)


def test_metadata_matches_what_was_encoded(dataset, tmp_path):
    root, expected = dataset
    entries, _ = read_split(root, "train")
    infos = {info.rel_path: info for info in build_index(entries, cache_dir=tmp_path / "cache", num_workers=2,
                                                         progress=False)}
    for rel, (spec, pts_s) in expected.items():
        info = infos[rel]
        assert info.error is None, (rel, info.error)
        assert info.num_frames == spec["num_frames"]
        assert (info.width, info.height) == spec["size"]
        assert info.start_s == pytest.approx(spec.get("start_pts", 0.0), abs=1e-3)
        assert info.keyframes[0] == 0
        if spec.get("vfr"):
            assert info.timestamps == "vfr"
            base = Fraction(info.time_base)
            assert [float(p * base) for p in info.frame_pts] == pytest.approx(pts_s, abs=1e-3)
        else:
            assert info.timestamps == "cfr" and info.frame_pts is None
            assert info.fps == pytest.approx(spec["fps"])
            assert info.duration_s == pytest.approx(spec["num_frames"] / spec["fps"])
    assert infos["train/a/h264.mp4"].keyframes == [0, 10, 20, 30]
    assert infos["train/a/h264.mp4"].codec == "h264"
    assert infos["train/b/offset.webm"].codec == "vp9"
    assert infos["train/b/mpeg4.avi"].keyframes == [0, 6, 12, 18]
    assert "not a readable video" in infos["train/b/broken.mp4"].error
    assert {infos[rel].pix_fmt for rel in expected} == {"yuv420p"}
    for rel in expected:  # the video stream's compressed size: every packet, no container overhead
        with av.open(str(root / rel)) as container:
            packets = sum(packet.size for packet in container.demux(video=0))
        assert 0 < infos[rel].video_bytes == packets < infos[rel].file_bytes


def test_order_labels_and_paths_follow_the_entries(dataset, tmp_path):
    root, _ = dataset
    entries, _ = read_split(root, "train")
    infos = build_index(entries, cache_dir=tmp_path / "cache", num_workers=3, progress=False)
    assert [(i.rel_path, i.path, i.label) for i in infos] == [(e.rel_path, e.path, e.label) for e in entries]


def test_second_build_is_served_from_the_cache(dataset, tmp_path, monkeypatch, caplog):
    root, _ = dataset
    entries, _ = read_split(root, "train")
    counter = ProbeCounter(monkeypatch)
    cache = tmp_path / "cache"
    first = build_index(entries, cache_dir=cache, num_workers=2, progress=False)
    assert len(counter.calls) == 5
    with caplog.at_level(logging.INFO, logger="vbench.data.index"):
        second = build_index(entries, cache_dir=cache, num_workers=2, progress=False)
    assert len(counter.calls) == 5  # nothing probed again
    assert second == first
    assert "5 videos" in caplog.text and "5 cached / 0 probed, 1 errors" in caplog.text
    assert [p.name for p in cache.iterdir()] == [CACHE_FILE]  # no temporary files left behind


def test_cache_survives_moving_the_data_folder(dataset, tmp_path, monkeypatch):
    root, _ = dataset
    cache = tmp_path / "cache"
    before = build_index(read_split(root, "train")[0], cache_dir=cache, progress=False)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(root), str(moved))
    counter = ProbeCounter(monkeypatch)
    after = build_index(read_split(moved, "train")[0], cache_dir=cache, progress=False)
    assert counter.calls == []
    assert [i.path for i in after] == [str(moved / i.rel_path) for i in before]
    def metadata(infos):
        return [(i.num_frames, i.keyframes, i.error) for i in infos]

    assert metadata(after) == metadata(before)


def test_mtime_change_invalidates_only_that_file(dataset, tmp_path, monkeypatch):
    root, _ = dataset
    entries = read_split(root, "train")[0]
    cache = tmp_path / "cache"
    build_index(entries, cache_dir=cache, progress=False)
    touched = root / "train/a/h264.mp4"
    stat = touched.stat()
    os.utime(touched, (stat.st_atime, stat.st_mtime + 60))
    counter = ProbeCounter(monkeypatch)
    build_index(entries, cache_dir=cache, progress=False)
    assert counter.calls == [str(touched)]


def test_damaged_cache_is_ignored_with_a_warning_and_rebuilt(dataset, tmp_path, monkeypatch, caplog):
    root, _ = dataset
    entries = read_split(root, "train")[0]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / CACHE_FILE).write_text('{"probe_version": 1, "entries": {"tr')  # cut mid-write
    counter = ProbeCounter(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="vbench.data.index"):
        infos = build_index(entries, cache_dir=cache, progress=False)
    assert "damaged video index cache" in caplog.text
    assert len(counter.calls) == 5 and infos[0].num_frames > 0
    stored = json.loads((cache / CACHE_FILE).read_text())
    assert len(stored["entries"]) == 5


def test_missing_file_gets_an_error_instead_of_raising(dataset, tmp_path):
    root, _ = dataset
    entries = read_split(root, "train")[0]
    os.remove(entries[0].path)
    infos = build_index(entries, cache_dir=tmp_path / "cache", progress=False)
    assert infos[0].error == "file not found"
    assert all(i.error is None for i in infos[1:] if not i.rel_path.endswith("broken.mp4"))


def test_header_only_probe_agrees_on_constant_rate_files(dataset):
    root, expected = dataset
    path = str(root / "train/a/h264.mp4")
    header, scanned = probe_video(path, scan_packets=False), probe_video(path)
    assert header["num_frames"] == scanned["num_frames"] == 40
    assert header["fps"] == scanned["fps"] == 30.0
    assert "keyframes" not in header and scanned["keyframes"] == [0, 10, 20, 30]
