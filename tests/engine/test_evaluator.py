"""Evaluator: clip/video accuracy, padding never counted, exact over uneven process shards."""
import json

import pytest
import torch

from vbench.config import load_config
from vbench.engine.evaluator import Evaluator, VideoAccumulator
from vbench.engine.launch import launch_workers

NUM_CLASSES = 4


def _clip_logits():
    """(logits, labels, video_ids) of 23 clips from 10 videos (1 to 4 clips each, uneven)."""
    g = torch.Generator().manual_seed(3)
    clips_per_video = [1, 2, 3, 4, 1, 2, 3, 4, 2, 1]
    video_ids = torch.repeat_interleave(torch.arange(10), torch.tensor(clips_per_video))
    labels = video_ids % NUM_CLASSES
    logits = torch.randn(len(video_ids), NUM_CLASSES, generator=g)
    logits[::3, :] += 3 * torch.nn.functional.one_hot(labels[::3], NUM_CLASSES)  # some right
    return logits, labels, video_ids


def _reference_metrics(logits, labels, video_ids):
    """Plain single-process computation the evaluator must reproduce."""
    clip_top1 = (logits.argmax(1) == labels).float().mean().item() * 100
    clip_top5 = 100.0  # 4 classes: the label is always in the top 5
    probs = logits.softmax(1)
    video_hits = []
    for v in video_ids.unique():
        mask = video_ids == v
        video_hits.append(probs[mask].mean(0).argmax().item() == labels[mask][0].item())
    return {"clip_top1": clip_top1, "clip_top5": clip_top5,
            "video_top1": 100.0 * sum(video_hits) / len(video_hits),
            "num_clips": len(labels), "num_videos": len(video_hits)}


class ShardLoader:
    """Rank `rank`'s round-robin share of the clips in batches of 2, padded with valid=False
    duplicates so that every rank yields the same number of batches."""

    def __init__(self, rank, world, excluded=()):
        logits, labels, video_ids = _clip_logits()
        mine = torch.arange(rank, len(labels), world)
        batches = -(-len(labels) // world // 2) + 1  # enough batches for the largest share
        pad = batches * 2 - len(mine)
        index = torch.cat([mine, mine[:1].repeat(pad)])
        self.valid = torch.cat([torch.ones(len(mine), dtype=torch.bool), torch.zeros(pad, dtype=torch.bool)])
        self.clips, self.labels, self.video_ids = logits[index], labels[index], video_ids[index]
        self.num_batches = batches
        self.num_videos = 10
        self.excluded = list(excluded)

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        for i in range(self.num_batches):
            s = slice(2 * i, 2 * i + 2)
            yield {"clips": self.clips[s], "labels": self.labels[s], "video_ids": self.video_ids[s],
                   "valid": self.valid[s], "bad_videos": []}

    def to_device(self, batch, device):
        return batch["clips"].to(device), batch["labels"].to(device)


class Identity(torch.nn.Module):
    def forward(self, x):
        return x  # the "clips" are the logits


def _evaluate_job(cfg, ctx, out_path):
    loader = ShardLoader(ctx.rank, ctx.world_size, excluded=[(f"bad_{ctx.rank}.mp4", "moov atom not found")])
    result = Evaluator(loader, ctx.device, NUM_CLASSES, show_progress=False).run(Identity())
    if ctx.is_main:
        with open(out_path, "w") as f:
            json.dump(result, f)


def test_accumulator_ignores_padding_and_averages_softmax_per_video():
    acc = VideoAccumulator(num_videos=2, num_classes=3, device=torch.device("cpu"))
    # video 0: clip a says class 0 weakly, clip b says class 1 strongly -> video predicts 1
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 5.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([1, 1, 1, 2])
    video_ids = torch.tensor([0, 0, 0, 1])
    valid = torch.tensor([True, True, False, True])  # the strong class-0 duplicate is padding
    acc.add(logits, labels, video_ids, valid)
    result = acc.summarize()
    assert result["num_clips"] == 3 and result["num_videos"] == 2
    assert result["clip_top1"] == pytest.approx(200 / 3)
    assert result["video_top1"] == 100.0


def test_three_processes_with_uneven_shards_match_one_process(tmp_path):
    expected = _reference_metrics(*_clip_logits())
    results = {}
    for procs in (1, 3):
        cfg = load_config(None, ["NUM_GPUS", "0", "NUM_CPU_PROCS", str(procs), "TRAIN.BATCH_SIZE", "6",
                                 "TEST.BATCH_SIZE", "6", "OUTPUT_DIR", str(tmp_path)])
        out = tmp_path / f"eval_{procs}.json"
        launch_workers(cfg, _evaluate_job, str(out))
        results[procs] = json.loads(out.read_text())
    for procs, result in results.items():
        for key, value in expected.items():
            assert result[key] == pytest.approx(value), (procs, key)
    # every rank's excluded videos are reported, once each
    assert [e["path"] for e in results[3]["excluded"]] == ["bad_0.mp4", "bad_1.mp4", "bad_2.mp4"]
    assert [e["path"] for e in results[1]["excluded"]] == ["bad_0.mp4"]
