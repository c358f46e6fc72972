"""Evaluation: clip-level and video-level top-1/top-5, exact over any number of processes.

Each process adds its clips to per-video sums kept on the device (softmax sum, clip count, label);
one all_reduce merges them. Clips marked `valid == False` (padding duplicates that even out the
shards) are never counted, so the result equals a single-process evaluation of the same clips.
Video accuracy averages the softmax over a video's clips (windows, or views x crops when testing).
"""
import time
from contextlib import nullcontext

import torch

from vbench.engine import distributed as du
from vbench.engine.log import progress_bar
from vbench.engine.meters import topk_correct


class VideoAccumulator:
    """Device-side sums for clip and video accuracy."""

    def __init__(self, num_videos, num_classes, device):
        self.num_classes = num_classes
        self.prob_sums = torch.zeros(num_videos, num_classes, dtype=torch.float64, device=device)
        self.clip_counts = torch.zeros(num_videos, dtype=torch.float64, device=device)
        self.labels = torch.full((num_videos,), -1, dtype=torch.int64, device=device)
        self.clip_correct = torch.zeros(3, dtype=torch.float64, device=device)  # top1, top5, clips

    def add(self, logits, labels, video_ids, valid):
        """Add one batch; rows with `valid` False are ignored."""
        logits, labels, video_ids = logits[valid].float(), labels[valid], video_ids[valid]
        correct = topk_correct(logits, labels).to(torch.float64)
        self.clip_correct += torch.cat([correct, correct.new_tensor([labels.shape[0]])])
        self.prob_sums.index_add_(0, video_ids, logits.softmax(dim=1).to(torch.float64))
        self.clip_counts.index_add_(0, video_ids, torch.ones_like(video_ids, dtype=torch.float64))
        self.labels.index_copy_(0, video_ids, labels)

    def summarize(self):
        """Merged metrics (a collective: every process must call it)."""
        du.all_reduce_sum(self.clip_correct)
        du.all_reduce_sum(self.prob_sums)
        du.all_reduce_sum(self.clip_counts)
        du.all_reduce_max(self.labels)  # -1 where a process saw no clip of the video
        seen = self.clip_counts > 0
        video_correct = topk_correct(self.prob_sums[seen], self.labels[seen]).to(torch.float64)
        num_clips = self.clip_correct[2].item()
        num_videos = int(seen.sum().item())
        clip_acc = (100.0 * self.clip_correct[:2] / max(num_clips, 1.0)).tolist()
        video_acc = (100.0 * video_correct / max(num_videos, 1)).tolist()
        return {"clip_top1": clip_acc[0], "clip_top5": clip_acc[1], "video_top1": video_acc[0],
                "video_top5": video_acc[1], "num_clips": int(num_clips), "num_videos": num_videos}


class Evaluator:
    """Runs a model over an evaluation loader and returns clip and video accuracy."""

    def __init__(self, loader, device, num_classes, autocast=nullcontext, show_progress=True):
        self.loader = loader
        self.device = device
        self.num_classes = num_classes
        self.autocast = autocast
        self.show_progress = show_progress

    @torch.no_grad()
    def run(self, model, desc="eval"):
        """Metrics dict: clip/video top-1/top-5 (percent), counts, excluded videos and seconds."""
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        acc = VideoAccumulator(self.loader.num_videos, self.num_classes, self.device)
        bad = []
        bar = progress_bar(len(self.loader), desc, enabled=self.show_progress)
        for batch in self.loader:
            clips, labels = self.loader.to_device(batch, self.device)
            video_ids = batch["video_ids"].to(self.device, non_blocking=True)
            valid = batch["valid"].to(self.device, non_blocking=True)
            with self.autocast():
                logits = model(clips)
            acc.add(logits, labels, video_ids, valid)
            bad.extend(batch.get("bad_videos", []))
            bar.update(1)
        bar.close()
        model.train(was_training)
        result = acc.summarize()
        bad.extend(self.loader.excluded)  # this rank's view: index + decode failures
        excluded = {path: reason for items in du.all_gather_objects(bad) for path, reason in items}
        result["excluded"] = [{"path": path, "reason": excluded[path]} for path in sorted(excluded)]
        result["eval_s"] = time.perf_counter() - start
        return result
