"""Both decoders read the same pixels of the same stream.

The reference is FFmpeg's own conversion, `ffmpeg -i FILE -pix_fmt rgb24 -f rawvideo -`: the PyAV
and torchcodec backends must return it exactly, on 8-bit, 10-bit, 4:2:2 and interlaced files
generated here with the ffmpeg command-line tool (colour test patterns with sharp edges, where
chroma siting and filters show) and on the real clips in ../shared/videos. On a file with two
video streams, audio and subtitles, the index and both backends must describe the same stream.
Every test here needs the ffmpeg command-line tool (marker `extras`; tests/README.md).
"""
from pathlib import Path

import numpy as np
import pytest

from vbench.cli.data import check_main
from vbench.data.index import VideoInfo, info_from_probe, probe_video

from videos import BACKENDS, SHARED_VIDEOS, decoder_or_skip, ffmpeg_encoders, ffmpeg_rgb24, ffmpeg_run  # noqa: E402

pytestmark = pytest.mark.extras

FRAMES = 12
# name -> (file name, encoder, size, ffmpeg encoding arguments)
CASES = {
    "h264_8bit": ("h264.mp4", "libx264", "96x64", ["-pix_fmt", "yuv420p"]),
    "h264_high10": ("h264_10.mp4", "libx264", "96x64", ["-pix_fmt", "yuv420p10le"]),
    "h264_high10_odd_width": ("h264_10_odd.mp4", "libx264", "90x52", ["-pix_fmt", "yuv420p10le"]),
    "hevc_main10": ("hevc_10.mp4", "libx265", "96x64", ["-pix_fmt", "yuv420p10le", "-x265-params", "log-level=none"]),
    "h264_422_10bit": ("h264_422_10.mkv", "libx264", "96x64", ["-pix_fmt", "yuv422p10le"]),
    "h264_interlaced": ("h264_tff.mp4", "libx264", "96x64", ["-pix_fmt", "yuv420p", "-flags", "+ildct+ilme",
                                                            "-x264-params", "tff=1"]),
    "vp9_10bit": ("vp9_10.webm", "libvpx-vp9", "96x64", ["-pix_fmt", "yuv420p10le", "-deadline", "realtime",
                                                         "-cpu-used", "8"]),
}
INDEX_SETS = ([0, 1, 2], [4, 5, 11], [7, 7, 8], list(range(FRAMES)))


def require_encoder(encoder):
    if encoder not in ffmpeg_encoders():
        pytest.skip(f"the ffmpeg command-line tool with the {encoder} encoder is needed")


def info_for(path):
    return info_from_probe(VideoInfo(Path(path).name, str(path), 0), probe_video(str(path)))


def assert_same_pixels(got, expected, what):
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert difference.max() == 0, (f"{what}: differs from ffmpeg's rgb24 by up to {difference.max()}/255 "
                                   f"(mean {difference.mean():.3f}, {(difference > 0).mean():.1%} of values)")


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_return_ffmpegs_own_rgb(tmp_path, case, backend):
    file_name, encoder, size, arguments = CASES[case]
    require_encoder(encoder)
    decoder = decoder_or_skip(backend)
    path = tmp_path / file_name
    ffmpeg_run("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-frames:v", FRAMES, "-g", 5,
               "-c:v", encoder, *arguments, path)
    info = info_for(path)
    reference = ffmpeg_rgb24(path, info.width, info.height)
    assert info.error is None and info.num_frames == len(reference) == FRAMES
    for indices in INDEX_SETS:
        frames = decoder.decode(str(path), indices, info).numpy()
        assert_same_pixels(frames, reference[indices], f"{backend} {case} frames {indices}")


@pytest.mark.skipif(not SHARED_VIDEOS.is_dir(), reason=f"real clips not found at {SHARED_VIDEOS}")
@pytest.mark.parametrize("name", ["kinetics_style_340x256_30fps.mp4", "mpeg4_320x240_25fps.avi",
                                  "hevc_128x128_10fps.mp4"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_clips_keep_ffmpegs_own_rgb(name, backend):
    path = SHARED_VIDEOS / name
    if not path.exists() or "libx264" not in ffmpeg_encoders():  # any ffmpeg build has libx264
        pytest.skip(f"{path} or the ffmpeg command-line tool is absent")
    decoder = decoder_or_skip(backend)
    info = info_for(path)
    reference = ffmpeg_rgb24(path, info.width, info.height)
    assert info.num_frames == len(reference)
    n = info.num_frames
    for indices in ([0, 1], [n // 2 - 1, n // 2 + 1], [n - 2, n - 1]):
        frames = decoder.decode(str(path), indices, info).numpy()
        assert_same_pixels(frames, reference[indices], f"{backend} {name} frames {indices}")


def two_stream_file(folder):
    """A 64x36 25 fps stream first and a 96x54 29.97 fps one second (the default), then audio and
    subtitles: the layout where the first stream and FFmpeg's best one differ."""
    subtitles = folder / "subtitles.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:00,800\nhello\n")
    path = folder / "two_streams.mp4"
    ffmpeg_run("-f", "lavfi", "-i", "testsrc2=size=64x36:rate=25:duration=1",
               "-f", "lavfi", "-i", "testsrc=size=96x54:rate=30000/1001:duration=1",
               "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-i", subtitles,
               "-map", "0:v", "-map", "1:v", "-map", "2:a", "-map", "3:s",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", 10, "-c:a", "aac", "-c:s", "mov_text",
               "-disposition:v:0", "0", "-disposition:v:1", "default", path)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_video_streams_index_and_both_backends_read_the_same_one(tmp_path, backend):
    for encoder in ("libx264", "aac", "mov_text"):
        require_encoder(encoder)
    decoder = decoder_or_skip(backend)
    path = two_stream_file(tmp_path)
    info = info_for(path)
    assert (info.stream_index, info.video_streams) == (1, 2)
    assert (info.width, info.height) == (96, 54) and info.fps == pytest.approx(30000 / 1001)
    reference = ffmpeg_rgb24(path, 96, 54, stream_index=1)
    assert info.num_frames == len(reference) == 30
    for indices in ([0, 1, 2], [9, 10, 29]):
        frames = decoder.decode(str(path), indices, info).numpy()
        assert_same_pixels(frames, reference[indices], f"{backend} frames {indices}")
        # the header-only path too: no index entry, the same rule
        assert_same_pixels(decoder.decode(str(path), indices, None).numpy(), reference[indices],
                           f"{backend} without an index entry")
    if backend == "torchcodec":
        from torchcodec.decoders import VideoDecoder
        assert VideoDecoder(str(path)).stream_index == 1  # torchcodec's own default is the same stream


def test_data_check_names_the_stream_it_decodes(tmp_path, capsys):
    require_encoder("mov_text")
    root = tmp_path / "data"
    (root / "train" / "a").mkdir(parents=True)
    two_stream_file(root / "train" / "a")
    check_main([str(root), "--cache-dir", str(tmp_path / "cache"), "--num-frames", "4", "--workers", "1"])
    output = capsys.readouterr().out
    assert ("train/a/two_streams.mp4: 2 video streams; vbench decodes stream #1 (96x54, 29.97 fps), "
            "FFmpeg's best one") in output, output


def test_cover_pictures_are_not_video_streams(tmp_path):
    for encoder in ("libx264", "png", "aac"):
        require_encoder(encoder)
    covered, song = tmp_path / "covered.mp4", tmp_path / "song.m4a"
    picture = ["-f", "lavfi", "-i", "testsrc2=size=32x32:rate=1:duration=1"]
    ffmpeg_run("-f", "lavfi", "-i", "testsrc2=size=48x32:rate=25:duration=1", *picture, "-map", "0", "-map", "1",
               "-c:v:0", "libx264", "-c:v:1", "png", "-disposition:v:1", "attached_pic", covered)
    ffmpeg_run("-f", "lavfi", "-i", "sine=duration=1", *picture, "-map", "0", "-map", "1", "-c:a", "aac",
               "-c:v", "png", "-disposition:v", "attached_pic", song)
    info = info_for(covered)
    assert (info.stream_index, info.video_streams, info.width, info.num_frames) == (0, 1, 48, 25)
    assert info_for(song).error == "no video stream (streams found: audio, cover picture)"
