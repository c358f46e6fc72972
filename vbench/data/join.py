"""Joining the loader workers' pieces into the rank's batches, in the training process.

Workers send pieces of DATA_LOADER.PIECE_SIZE clips, numbered per worker and epoch, the last one
marked (`dataset.ClipDataset`). `PieceJoiner` takes them in the order `sampling.piece_stream`
defines: in turns, worker 0 first, a worker leaving the turns after its last piece. Pieces that
arrive before their turn wait for it, so the batches hold the clips the plan gives them, in its
order, however the workers' speeds vary, and a run resumed at an epoch boundary sees the same
batches. Each piece's clips are copied into the rows of the batch being filled, a block of
`buffers.BlockPool` (pinned when batches go to a GPU), and the piece is dropped at once, which
frees its worker's shared-memory slot. A piece that is a whole batch by itself is passed on as it
is when nothing is pinned (no copy).

At the end of the epoch (`finish`) a partly filled batch is padded with valid=False duplicates of
its own clips, then batches of padding follow until the rank has its planned number: evaluation
drops the clips of unreadable videos, and DDP needs the same number of batches on every rank.

With loader workers the joining runs in a background thread of the training process
(`BackgroundJoin`, one batch ahead, as torch's pin-memory thread did), so the training loop does not
wait for the copies: a batch of 64 kinetics-like clips is 268 MB to copy.
"""
import queue
import threading

import torch

from .buffers import BlockPool

TENSOR_KEYS = ("clips", "spatial_idx", "labels", "video_ids", "valid", "frame_indices")
SMALL_KEYS = TENSOR_KEYS[1:]


def select(batch, index, valid=None):
    """The rows `index` of a batch (views for a slice), optionally with `valid` overwritten."""
    out = {key: batch[key][index] for key in TENSOR_KEYS}
    if valid is not None:
        out["valid"] = torch.full_like(out["valid"], valid)
    out["bad_videos"] = []
    return out


class PieceJoiner:
    """One epoch of one rank: `push` every piece as it arrives (returns the batches it completed),
    then `finish` (the padded rest, and reports left with no batch to carry them)."""

    def __init__(self, num_workers, batch_size, num_batches, blank_clip, blocks=None, pass_through=True):
        self.batch_size, self.num_batches, self.blank_clip = batch_size, num_batches, blank_clip
        self.blocks = blocks or BlockPool()
        self.pass_through = pass_through
        self.turns = list(range(max(1, num_workers)))  # workers still sending, in turn order
        self.turn = 0
        self.next_number = [0] * len(self.turns)
        self.waiting = {}  # (worker, number) -> piece that came before its turn
        self.clips, self.small, self.filled = None, {key: [] for key in SMALL_KEYS}, 0
        self.reports, self.emitted, self.last = [], 0, None

    def push(self, piece):
        worker, number, last = piece.pop("piece")
        self.waiting[(worker, number)] = (piece, last)
        out = []
        while self.turns:
            worker = self.turns[self.turn]
            key = (worker, self.next_number[worker])
            if key not in self.waiting:
                break
            piece, last = self.waiting.pop(key)
            self.next_number[worker] += 1
            if last:
                del self.turns[self.turn]
                self.turn = self.turn if self.turn < len(self.turns) else 0
            else:
                self.turn = (self.turn + 1) % len(self.turns)
            out.extend(self._add(piece))
        return out

    def _add(self, piece):
        self.reports.extend(piece["bad_videos"])
        count = len(piece["labels"])
        if count == self.batch_size and not self.filled and self.pass_through:
            return [self._emit(piece)]
        out, start = [], 0
        while start < count:
            if not self.filled:
                shape = (self.batch_size, *piece["clips"].shape[1:])
                self.clips = self.blocks.empty(shape, piece["clips"].dtype, piece["clips"].device)
            take = min(count - start, self.batch_size - self.filled)
            self.clips[self.filled:self.filled + take].copy_(piece["clips"][start:start + take])
            for key in SMALL_KEYS:
                self.small[key].append(piece[key][start:start + take])
            self.filled += take
            start += take
            if self.filled == self.batch_size:
                out.append(self._emit(self._take_filled()))
        return out

    def _take_filled(self):
        batch = {key: torch.cat(parts) for key, parts in self.small.items()}
        batch["clips"] = self.clips[:self.filled]
        self.clips, self.small, self.filled = None, {key: [] for key in SMALL_KEYS}, 0
        return batch

    def _emit(self, batch):
        self.emitted += 1
        if self.emitted > self.num_batches:
            raise RuntimeError(f"the loader produced more than the {self.num_batches} planned batches")
        batch = {key: batch[key] for key in TENSOR_KEYS}
        batch["bad_videos"], self.reports = self.reports, []
        self.last = batch
        return batch

    def finish(self):
        """The remaining batches (padded) and any reports left with no batch to carry them."""
        if self.turns or self.waiting:
            raise RuntimeError(f"the loader's epoch ended without the last pieces of workers {self.turns}")
        out = []
        if self.filled:
            if self.emitted >= self.num_batches:
                raise RuntimeError(f"the loader produced more clips than its {self.num_batches} planned batches")
            size = self.filled
            rows = torch.arange(self.batch_size - size) % size
            self.clips[size:] = self.clips[rows]
            for key in SMALL_KEYS:
                own = torch.cat(self.small[key])
                self.small[key].append(own[rows] if key != "valid" else torch.zeros_like(own[rows]))
            self.filled = self.batch_size
            out.append(self._emit(self._take_filled()))
        while self.emitted < self.num_batches:
            out.append(self._emit(self._padding_batch()))
        reports, self.reports = self.reports, []
        if out:
            out[0]["bad_videos"] = reports + out[0]["bad_videos"]
            reports = []
        return out, reports

    def _padding_batch(self):
        if self.last is not None:
            return select(self.last, slice(None), valid=False)
        clip = self.blank_clip()
        n = self.batch_size
        return {"clips": clip.unsqueeze(0).expand(n, *clip.shape).clone(),
                "spatial_idx": torch.ones(n, dtype=torch.int64),
                "labels": torch.zeros(n, dtype=torch.int64), "video_ids": torch.zeros(n, dtype=torch.int64),
                "valid": torch.zeros(n, dtype=torch.bool), "frame_indices": torch.zeros(n, 0, dtype=torch.int64)}


class BackgroundJoin:
    """Runs `batches` (a generator) in a daemon thread, up to `depth` batches ahead of the consumer.
    Iterating yields them, and raises the thread's exception where it would have been raised;
    `close()` (also when the consumer stops early) stops the thread and waits for it. `cuda_device`:
    the GPU whose context the thread uses (the caller's current one), so that pinning memory there
    does not open a context on GPU 0."""

    END = object()

    def __init__(self, batches, depth=1, cuda_device=None):
        self.batches, self.cuda_device = batches, cuda_device
        self.queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="vbench-join")
        self.thread.start()

    def _run(self):
        try:
            if self.cuda_device is not None:  # pinned memory from this process's GPU, not GPU 0's
                torch.cuda.set_device(self.cuda_device)
            for batch in self.batches:
                if not self._put((batch, None)):
                    return
            self._put((self.END, None))
        except BaseException as error:  # noqa: BLE001 -- raised again in the consumer
            self._put((None, error))

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            batch, error = self.queue.get()
            if error is not None:
                raise error
            if batch is self.END:
                return
            yield batch

    def close(self):
        self.stop.set()
        self.thread.join()
        self.batches.close()
