"""The encoding in the fingerprint (docs/PROTOCOL.md, "Data"): the summary the index gives without
reading a video again, `vbench data check` printing it, and `vbench score` flagging a run whose data
is encoded unlike the reference's."""
import copy
from pathlib import Path

import av
import pytest
import yaml

from vbench.bench.reference import ScoreError, load_reference
from vbench.bench.score import score_track
from vbench.cli.data import check_main, prepare_main
from vbench.cli.score import score_main
from vbench.data import index as index_module
from vbench.data.fingerprint import split_fingerprint
from vbench.data.index import build_index
from vbench.data.layouts import read_split

from scaffold import X3D, fake_results, save
from videos import (
    read_frame_number,
    write_numbered_video,  # noqa: E402
)

# rel path -> write_numbered_video arguments: two H.264 sizes and GOPs, one MPEG-4 AVI
VIDEOS = {
    "train/a/a0_000000_000010.mp4": dict(num_frames=40, fps=30, gop=10, size=(64, 48)),
    "train/a/a1_000000_000010.mp4": dict(num_frames=40, fps=30, gop=5, size=(80, 60)),
    "train/b/b0_000000_000010.avi": dict(num_frames=30, fps=25, gop=6, size=(64, 48), codec="mpeg4"),
}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "ds"
    for rel, spec in VIDEOS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_numbered_video(root / rel, **spec)
    return root


def measured(root):
    """What the summary must say, measured here with PyAV: (video bytes, seconds, frames, keyframes)."""
    video_bytes = seconds = frames = keyframes = 0
    for rel, spec in VIDEOS.items():
        with av.open(str(root / rel)) as container:
            packets = [p for p in container.demux(video=0) if p.size]
        video_bytes += sum(p.size for p in packets)
        keyframes += sum(p.is_keyframe for p in packets)
        frames += len(packets)
        seconds += spec["num_frames"] / spec["fps"]
    return video_bytes, seconds, frames, keyframes


def index(root, cache):
    entries, _ = read_split(str(root), "train")
    return build_index(entries, cache_dir=str(cache), num_workers=1, progress=False)


def test_summary_from_the_index_matches_the_files_and_needs_no_second_read(folder, tmp_path, monkeypatch):
    encoding = split_fingerprint(index(folder, tmp_path / "cache"), [], 2, 0)["encoding"]
    video_bytes, seconds, frames, keyframes = measured(folder)
    assert encoding["videos"] == 3
    assert encoding["codecs"] == {"h264": 2, "mpeg4": 1} and encoding["pixel_formats"] == {"yuv420p": 3}
    assert encoding["short_side"] == {"median": 48, "min": 48, "max": 60}
    assert encoding["fps"] == {"median": 30, "min": 25, "max": 30}
    assert encoding["bitrate_kbps"] == pytest.approx(8 * video_bytes / seconds / 1000, abs=0.05)
    assert encoding["keyframe_interval"] == pytest.approx(frames / keyframes, abs=0.05)
    assert frames / keyframes == pytest.approx(110 / 17)  # 4 + 8 + 5 keyframes in 40 + 40 + 30 frames
    assert encoding["bytes"] == sum(p.stat().st_size for p in folder.rglob("*.*") if p.is_file())

    def no_probing(path, scan_packets=True):
        raise AssertionError(f"{path} was read again: the summary must come from the index cache")

    monkeypatch.setattr(index_module, "probe_video", no_probing)
    assert split_fingerprint(index(folder, tmp_path / "cache"), [], 2, 0)["encoding"] == encoding


def test_an_unreadable_video_is_left_out_of_the_summary(folder, tmp_path):
    (folder / "train/b/b0_000000_000010.avi").write_text("not a video")
    infos = index(folder, tmp_path / "cache")
    bad = [(info.rel_path, info.error) for info in infos if not info.ok]
    encoding = split_fingerprint(infos, bad, 2, 0)["encoding"]
    assert encoding["videos"] == 2 and encoding["codecs"] == {"h264": 2}
    assert encoding["fps"] == {"median": 30, "min": 30, "max": 30}


def test_data_check_prints_the_encoding(folder, tmp_path, capsys):
    assert check_main([str(folder), "--layout", "folder", "--split", "train", "--cache-dir", str(tmp_path / "c"),
                       "--workers", "1", "--num-frames", "4", "--frame-rate", "7.5"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("encoding "))
    assert "h264 2/mpeg4 1, yuv420p, short side 48 px (median; 48-60), 30 fps (median; 25-30)" in line
    assert "keyframe every 6.5 frames" in line and "in 3 videos" in line


# ---------------------------------------------------------------------------------- the score


def kinetics_encoding(videos, short_side=256, kbps=700.0, gop=150.0, codec="h264"):
    return {"videos": videos, "codecs": {codec: videos}, "pixel_formats": {"yuv420p": videos},
            "short_side": {"median": short_side, "min": 240, "max": short_side},
            "fps": {"median": 30, "min": 25, "max": 30}, "bitrate_kbps": kbps, "keyframe_interval": gop,
            "bytes": int(videos * kbps * 10 * 1000 / 8 * 1.15)}


def with_encoding(results, **changes):
    results = copy.deepcopy(results)
    for fingerprint in results["dataset"].values():
        fingerprint["encoding"] = kinetics_encoding(fingerprint["videos_readable"], **changes)
    return results


@pytest.fixture
def reference_file(tmp_path):
    """A reference table made by --make-reference from two runs on 256p H.264 data (epochs 4 and 3,
    so the runs below, at epoch 3, converge as the reference allows)."""
    runs = []
    for seed, (time, epochs) in enumerate([(100.0, 4), (110.0, 3)]):
        results = with_encoding(fake_results(X3D, "cnn", time, RNG_SEED=seed))
        results["benchmark"]["epochs_to_target"] = epochs
        runs.append(save(tmp_path, f"ref{seed}", results))
    out = tmp_path / "ref.yaml"
    assert score_main(["--make-reference", "--cnn", *runs, "--out", str(out)]) == 0
    return out


def test_make_reference_writes_encoding_and_epochs(reference_file):
    table = yaml.safe_load(reference_file.read_text())["tracks"]["cnn"]
    assert table["epochs_to_target"] == [4, 3]
    assert table["dataset"]["train"]["encoding"] == kinetics_encoding(1276)
    assert load_reference(str(reference_file)).tracks["cnn"].epochs_to_target == (4, 3)


def test_score_flags_a_run_on_otherwise_encoded_data_naming_run_and_figure(tmp_path, reference_file, capsys):
    reencoded = save(tmp_path, "reencoded_320p", with_encoding(fake_results(X3D, "cnn", 90.0), short_side=320,
                                                              kbps=1400.0))
    close = save(tmp_path, "close", with_encoding(fake_results(X3D, "cnn", 90.0), kbps=770.0))  # +10%: within
    reference = load_reference(str(reference_file))
    run = score_track("cnn", [reencoded], reference).runs[0]
    assert not run.compliant
    assert run.data_problems[:2] == [
        "train: encoding: median short side 320 px, the reference 256 px (tolerance ±5%)",
        "train: encoding: bitrate 1400 kbit/s, the reference 700 kbit/s (tolerance ±20%)"]
    assert score_track("cnn", [close], reference).compliant
    assert score_main(["--cnn", reencoded, "--reference", str(reference_file)]) == 0
    out = capsys.readouterr().out
    block = out.split(f"  {reencoded}: ")[1]
    assert block.split("\n")[0].endswith("[NON-COMPLIANT]")
    assert "data differs from the reference: train: encoding: median short side 320 px, the reference 256 px" in block
    assert "encoding of the run's data:\n    train: h264, yuv420p, short side 320 px (median; 240-320)" in out
    assert "encoding of the reference's data:\n    train: h264, yuv420p, short side 256 px (median; 240-256)" in out


def test_score_always_prints_the_encodings_of_runs_and_reference(tmp_path, capsys):
    run = save(tmp_path, "run", with_encoding(fake_results(X3D, "cnn", 1000.0), codec="hevc"))
    assert score_main(["--cnn", run]) == 0  # the shipped table: no encoding, so not checked, but shown
    out = capsys.readouterr().out
    assert "encoding of the run's data:\n    train: hevc, yuv420p" in out
    assert "encoding of the reference's data: not in the reference table (the encoding was not checked)" in out
    assert "NON-COMPLIANT" not in out


def test_codec_mix_and_a_run_without_an_encoding_summary(tmp_path, reference_file):
    mixed = with_encoding(fake_results(X3D, "cnn", 90.0))
    mixed["dataset"]["train"]["encoding"]["codecs"] = {"h264": 1176, "vp9": 100}
    old = fake_results(X3D, "cnn", 90.0)  # an older vbench: a fingerprint without an encoding
    reference = load_reference(str(reference_file))
    (problem,) = score_track("cnn", [save(tmp_path, "mixed", mixed)], reference).runs[0].data_problems
    assert problem == "train: encoding: codecs h264 92%/vp9 8%, the reference h264 100% (tolerance ±5 points per value)"
    problems = score_track("cnn", [save(tmp_path, "old", old)], reference).runs[0].data_problems
    assert problems == [f"{split}: results.json has no encoding summary (a run of an older vbench); the encoding "
                        f"cannot be checked" for split in ("train", "val")]


def test_make_reference_refuses_runs_on_differently_encoded_data(tmp_path, capsys):
    a = save(tmp_path, "a", with_encoding(fake_results(X3D, "cnn", 100.0, RNG_SEED=1)))
    b = save(tmp_path, "b", with_encoding(fake_results(X3D, "cnn", 100.0, RNG_SEED=2), gop=16.0))
    assert score_main(["--make-reference", "--cnn", a, b, "--out", str(tmp_path / "r.yaml")]) == 2
    assert "keyframe interval 16 frames, the reference 150 frames" in capsys.readouterr().err


def test_bad_encoding_or_epochs_in_a_reference_file(tmp_path, reference_file):
    table = yaml.safe_load(reference_file.read_text())
    table["tracks"]["cnn"]["dataset"]["val"]["encoding"]["short_side"] = "256p"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(table))
    with pytest.raises(ScoreError, match=r"tracks.cnn.dataset.val.encoding .*'encoding.short_side' must be an object"):
        load_reference(str(bad))
    table = yaml.safe_load(reference_file.read_text())
    table["tracks"]["cnn"]["epochs_to_target"] = [4, "three"]
    bad.write_text(yaml.safe_dump(table))
    with pytest.raises(ScoreError, match="tracks.cnn.epochs_to_target must be a list of positive integers"):
        load_reference(str(bad))


def test_shipped_synthetic_reference_carries_encoding_and_epochs():
    reference = load_reference(str(Path(load_reference().path).with_name("reference_synthetic.yaml")))
    for track in ("cnn", "transformer"):
        entry = reference.tracks[track]
        assert entry.epochs_to_target and all(e > 0 for e in entry.epochs_to_target)
        for split in ("train", "val"):
            encoding = entry.dataset[split]["encoding"]
            assert encoding["videos"] == entry.dataset[split]["videos"]
            assert encoding["codecs"] == {"h264": encoding["videos"]}



# ---------------------------------------------------------------------------------- the canonical re-encode


def test_reencode_writes_the_canonical_recipe_byte_for_byte_again(tmp_path):
    clip = "train/abseiling/vid_000000_000010.mp4"
    source = tmp_path / "k400" / "train" / "abseiling" / "vid_000000_000010.mp4"
    source.parent.mkdir(parents=True)
    write_numbered_video(source, 300, fps=30, gop=100, size=(64, 48))  # keyframes 0, 100, 200
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text(clip + "\n")
    outputs = []
    for name in ("a", "b"):
        dst = tmp_path / name
        assert prepare_main(["--src", str(tmp_path / "k400"), "--dst", str(dst), "--clip-list", str(lists),
                             "--splits", "train", "--mode", "reencode", "--workers", "1"]) == 0
        outputs.append((dst / clip).read_bytes())
    assert outputs[0] == outputs[1]  # one encoder thread: the same bytes every time
    metadata = index_module.probe_video(str(tmp_path / "a" / clip))
    assert (metadata["codec"], metadata["pix_fmt"]) == ("h264", "yuv420p")
    assert (metadata["width"], metadata["height"]) == (342, 256)
    assert metadata["keyframes"] == [0, 250] and metadata["num_frames"] == 300 and metadata["fps"] == 30
    with av.open(str(tmp_path / "a" / clip)) as container:
        numbers = [read_frame_number(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    assert numbers == list(range(300))  # every frame, in order, at its own time
    header = (tmp_path / "a" / "prepare_report.txt").read_text().splitlines()[0]
    assert "libx264 yuv420p, short side 256, CRF 23, preset medium, keyframe every 250 frames; canonical" in header
