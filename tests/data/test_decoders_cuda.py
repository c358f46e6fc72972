"""GPU decoding (DATA.DECODER_DEVICE cuda: torchcodec on NVDEC).

Without a GPU: every missing piece is named before a run (config checks, preflight, the decoder).
With CUDA and torchcodec's CUDA build: clips decoded on the GPU equal CPU-decoded ones within
CUDA_MAX_DIFF, through the decoder, the loader (in-process and in spawned workers) and a short
training run.

CUDA_MAX_DIFF is derived, not yet measured on a GPU (none was at hand when it was written; confirm
it on one): torchcodec 0.17's CUDA kernel (color_conversion.cu) converts 8-bit 4:2:0 with one chroma
sample per 2x2 block (as swscale's 8-bit path does), a float matrix and truncation, where swscale
uses integer tables and rounds. NVDEC's YUV output is bit-exact (H.264 and HEVC define decoding
exactly), so only the conversion differs. That kernel, emulated in NumPy on the decoded planes of
8-bit H.264 test patterns and the real H.264 and HEVC clips in ../shared/videos, differed from the
CPU reference by at most 2/255 (mean 0.09-0.60); the bound adds one level for what the emulation
may miss. 10-bit sources are not held to it: the kernel takes chroma per 2x2 block where swscale
interpolates it, up to ~80/255 apart at sharp colour edges of a test pattern.
"""
import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from vbench.config import ConfigError, get_cfg, load_config
from vbench.data.decoders import get_decoder
from vbench.data.index import VideoInfo, info_from_probe, probe_video
from vbench.engine.launch import check_decoder, check_gpu_decoding

from scaffold import REPO
from videos import decoder_or_skip, encoder_available, read_frame_number, write_numbered_video  # noqa: E402

CUDA_MAX_DIFF = 3  # per channel value, 8-bit sources (see the module docstring)
CUDA_MAX_MEAN_DIFF = 1.0


def cuda_decoder_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("GPU decoding needs CUDA")
    decoder_or_skip("torchcodec")
    from vbench.data.decoders.torchcodec import check_cuda_decoding
    try:
        check_cuda_decoding("cuda:0")
    except RuntimeError as error:
        pytest.skip(f"this machine cannot decode on the GPU: {error}")
    return get_decoder("torchcodec", device="cuda:0")


# ------------------------------------------------------------------ missing pieces, named early
@pytest.mark.parametrize("overrides, named", [
    (["DATA.DECODING_BACKEND", "pyav"], "set DATA.DECODING_BACKEND torchcodec"),
    (["NUM_GPUS", "0"], "NUM_GPUS is 0"),
    (["DATA.GPU_TRANSFORMS", "False"], "set DATA.GPU_TRANSFORMS True"),
])
def test_impossible_gpu_decoding_settings_fail_at_config_time(overrides, named):
    gpu_decoding = {"DATA.DECODER_DEVICE": "cuda", "DATA.DECODING_BACKEND": "torchcodec", "NUM_GPUS": "1",
                    "DATA.GPU_TRANSFORMS": "True"}
    gpu_decoding.update(zip(overrides[::2], overrides[1::2]))
    with pytest.raises(ConfigError, match=named):
        load_config(None, [x for item in gpu_decoding.items() for x in item])
    load_config(None, [x for item in {**gpu_decoding, "DATA.DECODER_DEVICE": "cpu"}.items() for x in item])


def test_missing_torchcodec_is_named_before_the_run(monkeypatch):
    cfg = load_config(None, ["DATA.DECODING_BACKEND", "torchcodec", "NUM_GPUS", "0"])
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # the import now fails
    with pytest.raises(ConfigError, match="DATA.DECODING_BACKEND torchcodec: .*pip install torchcodec"):
        check_decoder(cfg)
    check_decoder(load_config(None, ["NUM_GPUS", "0"]))  # the pyav backend needs none of it


@pytest.mark.extras
def test_torchcodec_without_ffmpeg_libraries_is_named(monkeypatch):
    decoder_or_skip("torchcodec")
    import torchcodec
    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", None)  # as when no FFmpeg library loads
    with pytest.raises(RuntimeError, match="found no FFmpeg shared libraries.*apt install ffmpeg"):
        get_decoder("torchcodec")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without CUDA")
@pytest.mark.extras
def test_gpu_decoding_without_cuda_says_what_is_missing():
    decoder_or_skip("torchcodec")
    with pytest.raises(RuntimeError, match="needs CUDA, which is not available here.*DATA.DECODER_DEVICE cpu"):
        get_decoder("torchcodec", device="cuda")
    cfg = get_cfg()
    cfg.merge_from_list(["DATA.DECODER_DEVICE", "cuda", "DATA.DECODING_BACKEND", "torchcodec"])
    with pytest.raises(ConfigError, match="DATA.DECODER_DEVICE cuda: decoding on cuda:0 needs CUDA"):
        check_gpu_decoding(cfg, "cuda:0")
    cfg.merge_from_list(["DATA.DECODER_DEVICE", "cpu"])
    check_gpu_decoding(cfg, "cpu")  # nothing to check


# ------------------------------------------------------------------ on a GPU
def write_colour_video(path, num_frames, codec):
    """Smooth gradients and sharp, moving colour bars (where a conversion's chroma handling shows)."""
    height, width = 64, 96
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            image = np.stack([x * 255 // width, y * 255 // height, ((x + 4 * index) // 12 % 2) * 255], -1)
            image[(y // 16 + (x + 3 * index) // 16) % 3 == 0] = (200, 30, 60)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def assert_close_to_cpu(gpu, cpu, what):
    assert gpu.device.type == "cuda" and gpu.dtype == torch.uint8 and gpu.shape == cpu.shape, what
    difference = (gpu.cpu().to(torch.int16) - cpu.to(torch.int16)).abs()
    assert difference.max() <= CUDA_MAX_DIFF, f"{what}: max difference {int(difference.max())}"
    assert difference.float().mean() <= CUDA_MAX_MEAN_DIFF, f"{what}: mean {float(difference.float().mean())}"


@pytest.mark.extras
@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_cuda_frames_equal_cpu_frames_within_the_bound(tmp_path, codec):
    gpu = cuda_decoder_or_skip()
    if not encoder_available(codec):
        pytest.skip(f"this PyAV build cannot encode {codec}")
    numbered, colour = tmp_path / "numbered.mp4", tmp_path / "colour.mp4"
    write_numbered_video(numbered, 30, fps=30, codec=codec, gop=10)
    write_colour_video(colour, 30, codec)
    cpu = get_decoder("torchcodec")
    for path in (numbered, colour):
        info = info_from_probe(VideoInfo(path.name, str(path), 0), probe_video(str(path)))
        for indices in ([0, 1, 2], [9, 10, 10, 29], list(range(30))):
            frames = gpu.decode(str(path), indices, info)
            assert_close_to_cpu(frames, cpu.decode(str(path), indices, info), f"{codec} {path.name} {indices}")
            if path == numbered:
                assert [read_frame_number(frame) for frame in frames] == indices


def gpu_decoding_cfg(root, workers):
    cfg = get_cfg()
    cfg.merge_from_list([
        "NUM_GPUS", 1, "DATA.PATH_TO_DATA_DIR", str(root), "DATA.LAYOUT", "folder",
        "DATA.INDEX_CACHE_DIR", str(root / "index"), "DATA.NUM_FRAMES", 4, "DATA.FRAME_RATE", 15.0,
        "DATA.FRAMES_BETWEEN_CLIPS", 4, "DATA.TEST_MIN_SHORT_SIDE_SCALE", 48, "DATA.TEST_CROP_SIZE", 32,
        "TEST.BATCH_SIZE", 4, "DATA_LOADER.NUM_WORKERS", workers, "DATA_LOADER.INDEX_WORKERS", 1,
        "DATA.DECODING_BACKEND", "torchcodec", "DATA.GPU_TRANSFORMS", True, "MODEL.NUM_CLASSES", 2])
    return cfg


@pytest.mark.extras
@pytest.mark.parametrize("workers", [0, 1])
def test_loader_clips_decoded_on_the_gpu_stay_there_and_match_the_cpu(tmp_path, workers):
    cuda_decoder_or_skip()
    from vbench.data import build_loader
    for cls, frames in (("a", 40), ("a", 26), ("b", 33)):
        (tmp_path / "val" / cls).mkdir(parents=True, exist_ok=True)
        write_numbered_video(tmp_path / "val" / cls / f"v{frames}.mp4", frames, fps=30, gop=12)
    cfg = gpu_decoding_cfg(tmp_path, workers)
    cpu_batches = list(build_loader(cfg, "val", training=False))
    cfg.merge_from_list(["DATA.DECODER_DEVICE", "cuda"])
    loader = build_loader(cfg, "val", training=False)
    assert not loader.data_loader.pin_memory  # pinning a CUDA tensor raises
    gpu_batches = list(loader)
    assert len(gpu_batches) == len(cpu_batches) == len(loader)
    for gpu, cpu in zip(gpu_batches, cpu_batches):
        assert torch.equal(gpu["frame_indices"], cpu["frame_indices"]) and torch.equal(gpu["labels"], cpu["labels"])
        assert_close_to_cpu(gpu["clips"], cpu["clips"], "loader batch")
        for clip, frames in zip(gpu["clips"], gpu["frame_indices"]):
            assert [read_frame_number(frame) for frame in clip] == frames.tolist()
        clips, _ = loader.to_device(gpu, torch.device("cuda", 0))
        assert clips.device.type == "cuda" and clips.shape == (4, 3, 4, 32, 32)


@pytest.mark.extras
def test_short_training_run_decodes_on_the_gpu(tmp_path):
    cuda_decoder_or_skip()
    command = [sys.executable, str(REPO / "tools" / "run_net.py"), "--cfg",
               str(REPO / "configs" / "Synthetic" / "X3D_XS.yaml"), "OUTPUT_DIR", str(tmp_path / "run"),
               "DATA.PATH_TO_DATA_DIR", str(tmp_path / "data"), "DATA.INDEX_CACHE_DIR", str(tmp_path / "index"),
               "NUM_GPUS", "1", "DATA.DECODING_BACKEND", "torchcodec", "DATA.DECODER_DEVICE", "cuda",
               "DATA.GPU_TRANSFORMS", "True", "DATA_LOADER.NUM_WORKERS", "1", "SYNTH.TRAIN_PER_CLASS", "8",
               "SYNTH.VAL_PER_CLASS", "4", "SOLVER.MAX_EPOCH", "2", "BENCHMARK.STOP_AT_TARGET", "False"]
    process = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.returncode == 0, process.stdout[-3000:]
    from vbench.bench.results import load_results
    results = load_results(str(tmp_path / "run"))
    assert len(results["epochs"]) == 2 and results["epochs"][-1]["clip_top1"] is not None
    assert results["config"]["DATA"]["DECODER_DEVICE"] == "cuda"
