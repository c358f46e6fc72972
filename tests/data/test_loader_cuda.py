"""The loader's joined batches on a GPU: pinned blocks are reused only after their copy to the
device has finished (a CUDA event per block), and the batches that reach the GPU hold the clips of
the plan. Skipped without CUDA (benchmarks/gpu_suite.sh runs them on the GPU machine)."""
import collections

import pytest
import torch

from vbench.data import build_loader
from vbench.data.buffers import BlockPool
from vbench.data.dataset import RawClip

from scaffold import clip_records, loader_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_pinned_block_waits_for_its_copy_to_the_gpu():
    blocks = BlockPool(pin=True, limit=1)
    block = blocks.empty((64, 1 << 20), torch.uint8)
    assert block.is_pinned()
    pointer = block.data_ptr()
    torch.cuda._sleep(200_000_000)  # the stream is busy for a while: the copy queues behind it
    on_gpu = block.to("cuda", non_blocking=True)
    blocks.copied(block)
    del block
    assert blocks.empty((64, 1 << 20), torch.uint8).data_ptr() != pointer  # copy still queued
    torch.cuda.synchronize()
    assert blocks.empty((64, 1 << 20), torch.uint8).data_ptr() == pointer
    assert on_gpu.shape == (64, 1 << 20)


def test_joined_batches_reach_the_gpu_with_their_planned_clips(data_root):  # noqa: F811
    cfg = loader_cfg(data_root, workers=2, batch=5, NUM_GPUS=1, DATA_LOADER__PIECE_SIZE=2)
    loader = build_loader(cfg, "train", training=True, transform=RawClip())
    assert loader._blocks.pin
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        seen = []
        for batch in loader:
            clips, _ = loader.to_device(batch, torch.device("cuda"))
            batch["clips"] = clips.cpu()  # what reached the GPU
            seen += clip_records([batch])  # every clip shows its planned frames
        assert collections.Counter(seen) == collections.Counter((c.video, c.frames) for c in loader.plan.clips)
    loader.close()
