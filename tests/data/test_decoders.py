"""Decoders return exactly the requested frames (numbers read from the pixels) and fail cleanly."""
import pickle
import random
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vbench.data.decoders import VideoDecodeError, get_decoder
from vbench.data.decoders.pyav import PyAVDecoder, Timeline
from vbench.data.index import VideoInfo, info_from_probe, probe_video

from videos import (  # noqa: E402
    BACKENDS,
    SHARED_VIDEOS,
    decoder_or_skip,
    encoder_available,
    read_frame_number,
    write_audio_only,
    write_numbered_video,
)

NUM_FRAMES = 50

# name -> (file name, write_numbered_video options, expected index timestamps mode)
CASES = {
    "h264_long_gop": ("h264_long.mp4", dict(codec="libx264", gop=250), "cfr"),
    "h264_gop12": ("h264_gop12.mp4", dict(codec="libx264", gop=12), "cfr"),
    "mpeg4_avi": ("mpeg4.avi", dict(codec="mpeg4", gop=10), "cfr"),
    "mpeg4_avi_bframes": ("mpeg4_b.avi", dict(codec="mpeg4", gop=12, bframes=2), "count"),
    "hevc": ("hevc.mp4", dict(codec="libx265", gop=12), "cfr"),
    "vp9_webm": ("vp9.webm", dict(codec="libvpx-vp9", gop=10), "cfr"),
    "vfr_mp4": ("vfr.mp4", dict(codec="libx264", gop=10, vfr=True), "vfr"),
    "vfr_webm": ("vfr.webm", dict(codec="libvpx-vp9", gop=10, vfr=True), "vfr"),
    "start_1_5s_mp4": ("start.mp4", dict(codec="libx264", gop=12, start_pts=1.5), "cfr"),
    "start_vfr_mkv": ("start_vfr.mkv", dict(codec="libx264", gop=9, start_pts=0.7, vfr=True), "vfr"),
}


def info_for(path):
    return info_from_probe(VideoInfo(Path(path).name, str(path), 0), probe_video(str(path)))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    made = {}
    for name, (file_name, options, _) in CASES.items():
        if encoder_available(options["codec"]):
            write_numbered_video(folder / file_name, NUM_FRAMES, fps=30, **options)
            made[name] = str(folder / file_name)
    return made


def video_of(videos, case):
    if case not in videos:
        pytest.skip(f"this PyAV build cannot encode {CASES[case][1]['codec']}")
    return videos[case]


def index_sets(seed=0):
    rng = random.Random(seed)
    sets = [[NUM_FRAMES - 1], [0], [0, 0, 1], [NUM_FRAMES - 2, NUM_FRAMES - 1, NUM_FRAMES - 1], [13, 25, 37]]
    sets += [sorted(rng.choices(range(NUM_FRAMES), k=rng.randint(2, 10))) for _ in range(8)]
    return sets


def numbers(frames):
    return [read_frame_number(frame) for frame in frames]


@pytest.mark.parametrize("case", list(CASES))
def test_pyav_returns_exactly_the_requested_frames(videos, case):
    path = video_of(videos, case)
    info = info_for(path)
    assert info.timestamps == CASES[case][2] and info.num_frames == NUM_FRAMES
    decoder = get_decoder("pyav")
    for indices in index_sets():
        frames = decoder.decode(path, indices, info)
        assert frames.dtype == torch.uint8 and tuple(frames.shape) == (len(indices), 48, 64, 3)
        assert numbers(frames) == indices, indices
    assert numbers(decoder.decode(path, [3, 44, 44], None)) == [3, 44, 44]  # probes the file itself


@pytest.mark.parametrize("case", ["h264_gop12", "vfr_mp4", "mpeg4_avi_bframes"])
def test_pyav_threaded_decoding_gives_the_same_frames(videos, case):
    path, info = videos[case], info_for(videos[case])
    for indices in index_sets(seed=1)[:6]:
        assert numbers(get_decoder("pyav", threads=2).decode(path, indices, info)) == indices


def test_pyav_seeks_to_the_keyframe_before_the_first_wanted_frame(videos, monkeypatch):
    path = videos["h264_gop12"]
    info = info_for(path)
    assert info.keyframes == [0, 12, 24, 36, 48]
    first_decoded = []
    original = PyAVDecoder._run

    def recording_run(self, *args):
        frames, first_index = original(self, *args)
        first_decoded.append(first_index)
        return frames, first_index

    monkeypatch.setattr(PyAVDecoder, "_run", recording_run)
    assert numbers(PyAVDecoder().decode(path, [40, 41], info)) == [40, 41]
    assert first_decoded == [36]  # decoding started at keyframe 36, not at 0 nor at frame 40


def test_pyav_recovers_when_a_seek_lands_after_the_wanted_frame(videos, monkeypatch):
    path = videos["h264_gop12"]
    info = info_for(path)
    real_pts_of = Timeline.pts_of
    monkeypatch.setattr(Timeline, "pts_of", lambda self, index: real_pts_of(self, 48))  # a bad seek target
    assert numbers(PyAVDecoder().decode(path, [30, 31], info)) == [30, 31]


def cut_with_edit_list(source, target, drop_frames):
    """Stream-copy `source`, shifting timestamps so its first `drop_frames` frames fall before 0:
    the mp4 muxer writes an edit list and the demuxer marks those packets as discarded (what
    `ffmpeg -ss T -c copy` does), so frame 0 is not a keyframe."""
    with av.open(source) as inp, av.open(target, "w") as out:
        stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(stream)
        shift = round(drop_frames / stream.average_rate / stream.time_base)
        for packet in inp.demux(stream):
            if packet.size:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, out_stream
                out.mux(packet)


@pytest.fixture
def edit_list_cut(tmp_path):
    """A 60-frame file cut at source frame 15 by an edit list, mid-GOP: (path, index entry)."""
    source, cut = tmp_path / "source.mp4", tmp_path / "cut.mp4"
    write_numbered_video(source, 60, fps=30, gop=20)
    cut_with_edit_list(str(source), str(cut), drop_frames=15)
    info = info_for(cut)
    assert info.num_frames == 45 and info.keyframes == [5, 25]  # presented frame 0 is source frame 15
    return cut, info


@pytest.mark.parametrize("backend", BACKENDS)
def test_edit_list_cut_mid_gop_decodes_the_presented_frames(edit_list_cut, backend):
    decoder = decoder_or_skip(backend)
    cut, info = edit_list_cut
    for indices in ([0, 1], [4, 5, 6], [24, 25, 26, 44], [44]):
        assert numbers(decoder.decode(str(cut), indices, info)) == [15 + i for i in indices]


def test_pyav_decodes_frames_before_the_first_keyframe_in_one_pass(edit_list_cut, monkeypatch):
    cut, info = edit_list_cut
    runs = []
    original = PyAVDecoder._run
    monkeypatch.setattr(PyAVDecoder, "_run", lambda self, *args: runs.append(args[-1]) or original(self, *args))
    PyAVDecoder().decode(str(cut), [0, 1], info)
    assert runs == [None]  # frames before the first keyframe: one pass from the start, no seek


@pytest.mark.extras
@pytest.mark.parametrize("case", list(CASES))
def test_torchcodec_agrees_with_pyav_frame_for_frame(videos, case):
    decoder = decoder_or_skip("torchcodec")
    path = video_of(videos, case)
    info = info_for(path)
    for indices in index_sets(seed=2)[:7]:
        expected = get_decoder("pyav").decode(path, indices, info)
        got = decoder.decode(path, indices, info)
        assert got.shape == expected.shape and got.dtype == torch.uint8
        assert numbers(got) == indices
        assert torch.equal(got, expected)


def sequential_frames(path, wanted):
    """Ground truth: decode the whole file in order and keep the frames at positions `wanted`."""
    kept = {}
    with av.open(path) as container:
        for position, frame in enumerate(container.decode(video=0)):
            if position in wanted:
                kept[position] = frame.to_ndarray(format="rgb24")
    return kept


@pytest.mark.skipif(not SHARED_VIDEOS.is_dir(), reason=f"real clips not found at {SHARED_VIDEOS}")
@pytest.mark.parametrize("name", ["kinetics_style_340x256_30fps.mp4", "mpeg4_320x240_25fps.avi",
                                  "hevc_128x128_10fps.mp4"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_clips_decode_the_right_frames(name, backend):
    decoder = decoder_or_skip(backend)
    path = str(SHARED_VIDEOS / name)
    if not Path(path).exists():
        pytest.skip(f"{path} is absent")
    info = info_for(path)
    assert info.error is None and info.num_frames > 0
    n = info.num_frames
    sets = [[0, 1], [n // 2, n // 2, n // 2 + 3], [n - 2, n - 1], sorted(random.Random(3).choices(range(n), k=6))]
    if info.keyframes and info.keyframes[-1] > 0:
        k = info.keyframes[-1]
        sets.append([k - 1, k, k + 1] if k + 1 < n else [k - 1, k])  # around a keyframe
    truth = sequential_frames(path, {i for s in sets for i in s})
    for indices in sets:
        frames = decoder.decode(path, indices, info)
        assert tuple(frames.shape) == (len(indices), info.height, info.width, 3)
        for frame, index in zip(frames, indices):
            assert np.array_equal(frame.numpy(), truth[index]), index


# ---------------------------------------------------------------- failures


def bad_files(videos, folder):
    folder.mkdir(exist_ok=True)
    good = Path(videos["h264_gop12"]).read_bytes()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "half.mp4").write_bytes(good[: len(good) // 2])  # moov atom at the end: unreadable
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    write_audio_only(folder / "audio_only.m4a")
    return {"missing": folder / "missing.mp4", "empty": folder / "empty.mp4", "truncated": folder / "half.mp4",
            "text": folder / "text.mp4", "audio_only": folder / "audio_only.m4a"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_raise_video_decode_error_naming_the_path(videos, tmp_path, backend):
    decoder = decoder_or_skip(backend)
    for kind, path in bad_files(videos, tmp_path / "bad").items():
        for info in (None, info_for(path)):
            with pytest.raises(VideoDecodeError) as error:
                decoder.decode(str(path), [0, 1], info)
            assert error.value.path == str(path) and str(path) in str(error.value), kind
            assert error.value.reason, kind
    assert "no video stream" in info_for(tmp_path / "bad" / "audio_only.m4a").error
    assert "empty" in info_for(tmp_path / "bad" / "empty.mp4").error


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_requests_raise_video_decode_error(videos, backend):
    decoder = decoder_or_skip(backend)
    path = videos["h264_gop12"]
    info = info_for(path)
    bad = (([NUM_FRAMES], "past the end"), ([5, 3], "ascending"), ([], "no frame"), ([-1], "negative"))
    for indices, reason in bad:
        with pytest.raises(VideoDecodeError, match=reason):
            decoder.decode(path, indices, info)
    with pytest.raises(VideoDecodeError, match="past the end"):
        decoder.decode(path, [NUM_FRAMES + 3], None)


def test_truncated_file_with_a_stale_frame_count_clamps_or_fails_clearly(videos, tmp_path):
    source = Path(videos["vp9_webm"])
    stale_info = info_for(source)  # the index was built before the file got cut
    cut = tmp_path / "cut.webm"
    shutil.copy(source, cut)
    data = cut.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    stale_info.path = str(cut)
    real = info_for(cut).num_frames
    assert 0 < real < NUM_FRAMES
    decoder = get_decoder("pyav")
    assert numbers(decoder.decode(str(cut), [0, 5], stale_info)) == [0, 5]
    # one frame past the real end (a header overstating by one): the last real frame is repeated
    assert numbers(decoder.decode(str(cut), [real - 1, real], stale_info)) == [real - 1, real - 1]
    with pytest.raises(VideoDecodeError, match="decoding ended at frame"):
        decoder.decode(str(cut), [NUM_FRAMES - 1], stale_info)


def test_get_decoder_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown decoding backend"):
        get_decoder("opencv")
    with pytest.raises(ValueError, match="CPU only"):
        get_decoder("pyav", device="cuda")
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # import now fails
    with pytest.raises(RuntimeError, match="pip install torchcodec.*DATA.DECODING_BACKEND pyav"):
        get_decoder("torchcodec")


def test_video_decode_error_survives_pickling():
    error = pickle.loads(pickle.dumps(VideoDecodeError("/x/y.mp4", "file not found")))
    assert (error.path, error.reason) == ("/x/y.mp4", "file not found")
    assert "/x/y.mp4" in str(error)
