"""Meters. Training statistics stay on the device and are read only every LOG_PERIOD iterations."""
import math
import time

import torch

from vbench.engine import distributed as du
from vbench.errors import TrainingDiverged


def topk_correct(logits, labels, ks=(1, 5)):
    """Number of samples whose label is among the top-k logits, for each k (device tensor)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hits = top.eq(labels.view(-1, 1))
    return torch.stack([hits[:, :min(k, k_max)].any(dim=1).sum() for k in ks])


class TrainMeter:
    """Loss and top-1/top-5 sums accumulated on the device without host syncs.

    `update` only queues device work; `read_window` / `read_epoch` are the syncs. A window covers
    the iterations since the last `read_window`; the epoch totals cover the whole epoch.
    """

    FIELDS = ("loss", "top1", "top5")

    def __init__(self, device):
        self.device = device
        self.window = torch.zeros(3, dtype=torch.float64, device=device)
        self.epoch = torch.zeros(3, dtype=torch.float64, device=device)
        self.window_samples = 0
        self.epoch_samples = 0

    def reset_epoch(self):
        self.window.zero_()
        self.epoch.zero_()
        self.window_samples = self.epoch_samples = 0

    def update(self, loss, logits, labels):
        n = labels.shape[0]
        correct = topk_correct(logits.detach(), labels).to(torch.float64)
        stats = torch.cat([(loss.detach().to(torch.float64) * n).view(1), correct])
        self.window += stats
        self.epoch += stats
        self.window_samples += n
        self.epoch_samples += n

    @staticmethod
    def _averages(sums, samples, all_ranks):
        sums = sums.clone()
        count = torch.tensor([float(samples)], dtype=torch.float64, device=sums.device)
        if all_ranks:
            du.all_reduce_sum(sums)
            du.all_reduce_sum(count)
        values = (sums / count.clamp(min=1)).tolist()
        return {"loss": values[0], "top1": 100.0 * values[1], "top5": 100.0 * values[2]}

    def read_window(self):
        """Averages since the last read over every process, then reset the window.

        A collective (every rank reads at the same iteration), so every rank sees the same loss
        and a NaN stops all of them together instead of leaving the others waiting.
        """
        stats = self._averages(self.window, self.window_samples, all_ranks=True)
        self.window.zero_()
        self.window_samples = 0
        return stats

    def read_epoch(self):
        """Averages over the epoch and over every process (a collective: call on every rank)."""
        return self._averages(self.epoch, self.epoch_samples, all_ranks=True)

    def state_dict(self):
        """This process's sums so far (for a checkpoint taken inside an epoch)."""
        return {"window": self.window.cpu(), "epoch": self.epoch.cpu(),
                "window_samples": self.window_samples, "epoch_samples": self.epoch_samples}

    def load_state_dict(self, state):
        self.window.copy_(state["window"])
        self.epoch.copy_(state["epoch"])
        self.window_samples, self.epoch_samples = state["window_samples"], state["epoch_samples"]


def check_finite(loss, where):
    """Raise `TrainingDiverged` when a loss read from the device is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"training loss became {loss} ({where}). The last good checkpoint is kept; lower "
            f"SOLVER.BASE_LR, enable SOLVER.CLIP_GRAD_L2NORM, or use TRAIN.PRECISION fp32, then rerun."
        )


class WaitTimer:
    """Host-side split of an epoch into time spent waiting for data and total time, with the
    epoch's first steps apart (`mark_first_steps`, called after them): an epoch's start, where the
    loader's workers begin from nothing, shows there and not in the rest."""

    def __init__(self, time_fn=time.perf_counter):
        self.time_fn = time_fn
        self.reset()

    def reset(self):
        self.start = self.time_fn()
        self.wait_s = 0.0
        self._wait_start = None
        self.first = None  # (wait_s, total_s) when the first steps ended

    def begin_wait(self):
        self._wait_start = self.time_fn()

    def end_wait(self):
        self.wait_s += self.time_fn() - self._wait_start

    def mark_first_steps(self):
        self.first = (self.wait_s, self.total_s)

    @property
    def total_s(self):
        return self.time_fn() - self.start

    def state_dict(self):
        return {"total_s": self.total_s, "wait_s": self.wait_s}

    def load_state_dict(self, state):
        """Continue an epoch's split: the saved seconds count as already elapsed."""
        self.start = self.time_fn() - state["total_s"]
        self.wait_s = state["wait_s"]

    @property
    def wait_fraction(self):
        total = self.total_s
        return min(1.0, self.wait_s / total) if total > 0 else 0.0

    @property
    def first_steps_fraction(self):
        """Wait share of the first steps (of the whole epoch if it ended before they did)."""
        if self.first is None:
            return self.wait_fraction
        wait, total = self.first
        return min(1.0, wait / total) if total > 0 else 0.0

    @property
    def rest_fraction(self):
        """Wait share of the steps after the first ones, None when there were none."""
        if self.first is None:
            return None
        total = self.total_s - self.first[1]
        return min(1.0, (self.wait_s - self.first[0]) / total) if total > 0 else None
