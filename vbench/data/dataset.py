"""`ClipDataset`: one loader worker's share of an epoch plan, each video decoded once.

A worker rebuilds the epoch's plan (a pure function of the videos, the spec and the epoch, read from
a shared counter so persistent workers follow `set_epoch`), takes its slot, and for each of its
videos decodes the union of the native frames all its clips need in ONE decoder call, then slices
the clips out. When a video gives several training clips, they pass through a seeded shuffle
buffer (raw uint8 clips; the transform runs when a clip leaves the buffer) so a batch mixes
videos. The worker collates pieces of `piece_size` clips (fewer than a batch, so that an epoch's
first batch does not wait for one worker to decode a whole batch) into shared-memory slots it
reuses (`vbench.data.buffers`), numbers them, stamps each with "load_s", the seconds it worked on
it, and ends its epoch with a piece marked "last" (empty when its clips filled whole pieces); the
training process joins the pieces of all workers into batches (`vbench.data.join`).

After a worker died (`vbench.data.restart`), new workers replay the epoch from its start: process
j plays the plan's worker `j + rotation` and makes the pieces that worker had already delivered
without sending them (`resume`, shared memory written before the workers start), taking the
transform's random draws for their clips without computing them (`skip`), so every piece after
those is the one the dead worker would have made.

Unreadable videos (the decoder raises `VideoDecodeError`): training reports each one in the next
batch's "bad_videos" and substitutes the same number of clips from other videos, tried in a seeded
order, at most `max_substitute_tries` candidates; evaluation never substitutes, it drops the
video's clips (the loader pads the batch with valid=False slots) and reports it.
"""
import logging
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from vbench.errors import TooManyBadVideos, VideoDecodeError

from .ahead import EpochAhead
from .buffers import BatchBuffers
from .sampling import ClipRef

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ transforms
class TrainClip:
    """Adapts `TrainTransform(clip, generator)` to the dataset's (clip, ref, generator) call."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, clip, ref, generator):
        return self.transform(clip, generator)

    def skip(self, clip, ref, generator):
        """The random draws of `__call__`, no pixels: a replayed clip (see the module docstring)."""
        self.transform.draw_only(clip, generator)


class EvalClip:
    """Adapts `EvalTransform(clip, spatial_idx)`."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, clip, ref, generator):
        return self.transform(clip, ref.spatial_idx)

    def skip(self, clip, ref, generator):  # evaluation draws nothing
        pass


class RawClip:
    """No CPU transform: the uint8 T x H x W x C clip as decoded (GPU transforms, tests)."""

    def __call__(self, clip, ref, generator):
        return clip

    def skip(self, clip, ref, generator):
        pass


def resize_frames(frames, size):
    """uint8 N x H x W x C frames resized to `size` = (H, W) (bilinear, antialiased)."""
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# ------------------------------------------------------------------------------------ helpers
def worker_identity():
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def shuffled(items, size, rng):
    """Yield `items` through a buffer of up to `size`: each output is a random buffered item.

    Outputs start once a quarter of the buffer is filled, one per two items taken in until it is
    full (then one per item): the first batch of an epoch waits for a quarter of the decodes (with
    64 clips and batches of 8: 30 clips instead of 72, in a simulation of 9-clip videos) and the
    batches after the first few mix as many videos as a full buffer gives."""
    buffer, taken, start = [], 0, max(1, size // 4)
    for item in items:
        buffer.append(item)
        taken += 1
        if len(buffer) < start or (len(buffer) < size and taken % 2):
            continue
        i = int(rng.integers(len(buffer)))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        yield buffer.pop()
    for i in rng.permutation(len(buffer)):
        yield buffer[i]


def repeats_a_video(clips):
    """True if some video gives two clips in a row. Only then is the shuffle buffer needed: the
    worker's plan is already a seeded permutation of videos, and filling the buffer delays every
    epoch's first batch by `size` decodes."""
    return any(a.video == b.video for a, b in zip(clips, clips[1:]))


def _rows(frames, rows):
    """frames[rows]: a view when the rows are consecutive (windows plans), else a copy."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return frames[rows[0]:rows[0] + len(rows)]
    return frames[rows]


def shuffle_rng(spec, epoch, worker):
    """The random stream of one worker's shuffle buffer in `epoch` (its own, so that the order a
    worker delivers its clips in is `shuffled(clips, size, shuffle_rng(...))` whatever else draws)."""
    return np.random.default_rng([spec.seed, epoch, 5, spec.rank, worker])


def delivery_order(items, clips, shuffle_buffer, rng):
    """`items` (one per clip of `clips`, a worker's share of the plan) in the order the worker
    delivers them: through the shuffle buffer when a video gives several clips in a row, else as
    planned. Lazy, so that decoding runs as the items are taken."""
    if shuffle_buffer > 1 and repeats_a_video(clips):
        return shuffled(items, shuffle_buffer, rng)
    return items


def collate(samples, labels, bad_videos, buffers=None):
    """Samples (ClipRef, clip tensor) -> the batch dict of the loader contract, plus "buffer":
    (worker, slot) naming the reused shared-memory slot holding the clips (slot None: not one)."""
    refs = [ref for ref, _ in samples]
    clips, slot = torch.empty(0), None
    if samples and buffers is not None:
        clips, slot = buffers.stack([clip for _, clip in samples])
    elif samples:  # in the loading process itself: a plain tensor
        clips = default_collate([clip for _, clip in samples])
    return {
        "clips": clips, "buffer": (worker_identity()[0], slot),
        "spatial_idx": torch.tensor([r.spatial_idx for r in refs], dtype=torch.int64),
        "labels": torch.tensor([labels[r.video] for r in refs], dtype=torch.int64),
        "video_ids": torch.tensor([r.video for r in refs], dtype=torch.int64),
        "valid": torch.tensor([r.valid for r in refs], dtype=torch.bool),
        "frame_indices": (torch.tensor([r.frames for r in refs], dtype=torch.int64) if refs
                          else torch.empty(0, 0, dtype=torch.int64)),
        "bad_videos": list(bad_videos),
    }


class ClipDataset(IterableDataset):
    """Batches of one rank's clips for the current epoch (see the module docstring).

    infos: the split's `VideoInfo`s (index = video id); spec: `vbench.data.sampling.PlanSpec`;
    transform: `TrainClip`, `EvalClip` or `RawClip`; decoder_factory: picklable callable returning a
    decoder (e.g. `functools.partial(get_decoder, backend="pyav")`), called once per process;
    frame_size: (H, W) every decoded frame is resized to unless already that size (used with GPU
    transforms so clips of different videos stack; None keeps the decoded size); busy_marks: the
    shared slot marks of `vbench.data.buffers` (None: every piece in fresh memory); piece_size:
    clips per piece (None: the spec's batch size); ahead_pieces: pieces of the next epoch a worker
    makes once its epoch is done (`vbench.data.ahead`; 0: none); epochs: training's epoch count (no
    next epoch after the last; None: unknown).
    """

    def __init__(self, infos, spec, transform, decoder_factory, shuffle_buffer=0,
                 max_substitute_tries=10, frame_size=None, decode_per_clip=False, busy_marks=None,
                 piece_size=None, ahead_pieces=0, epochs=None):
        self.piece_size = int(piece_size or spec.batch_size)
        self.ahead_pieces, self.epochs = int(ahead_pieces), epochs
        self.infos = list(infos)
        self.labels = [int(info.label) for info in self.infos]
        self.spec = spec
        self.transform = transform
        self.decoder_factory = decoder_factory
        self.shuffle_buffer = int(shuffle_buffer) if spec.training else 0
        self.max_substitute_tries = int(max_substitute_tries)
        self.frame_size = tuple(frame_size) if frame_size else None
        self.decode_per_clip = bool(decode_per_clip)
        self.epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # read by persistent workers
        # [rotation, pieces each plan worker delivered (-1: all)]: where restarted workers resume (restart.py)
        self.resume = torch.zeros(1 + max(1, spec.num_workers), dtype=torch.int64).share_memory_()
        self.made = torch.zeros(max(1, spec.num_workers), dtype=torch.int64).share_memory_()  # pieces, per process
        self.busy_marks = busy_marks
        self._decoder = None
        self._buffers = None  # this worker's BatchBuffers
        self._ahead = None  # this worker's EpochAhead: the next epoch's first pieces
        self._known_bad = {}  # video -> reason, remembered by this process across epochs
        self._reported = set()  # videos reported this epoch

    def set_epoch(self, epoch):
        self.epoch[0] = int(epoch)

    # -------------------------------------------------------------------------------- iteration
    def __iter__(self):
        epoch = int(self.epoch[0])
        process, num_workers = worker_identity()
        if num_workers != max(1, self.spec.num_workers):
            raise RuntimeError(f"ClipDataset was planned for {self.spec.num_workers} workers but runs in "
                               f"{num_workers}; build it through vbench.data.build_loader.")
        worker = (process + int(self.resume[0])) % num_workers  # the plan's worker this process plays
        skip = int(self.resume[1 + worker])  # its pieces the loader already has (-1: all of them)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.epoch == epoch and skip == 0:
            ready, pieces = ahead.take()
        else:
            if ahead is not None:
                ahead.drop(self.busy_marks)
            ready, pieces = [], self._pieces(epoch, worker, skip) if skip >= 0 else iter(())
        buffers = self._worker_buffers(process)
        if buffers is not None:  # nothing of the last epoch is in flight any more
            buffers.reclaim(keep=[piece["buffer"][1] for piece in ready])
        yield from ready
        yield from pieces
        self._start_ahead(epoch, worker)

    def _start_ahead(self, epoch, worker):
        """In a worker process, once its epoch is done: make the next epoch's first pieces
        (`vbench.data.ahead`). Training's next epoch is the next one, up to `epochs`; evaluation
        runs the same plan every time."""
        following = epoch + 1 if self.spec.training else epoch
        if self.ahead_pieces <= 0 or get_worker_info() is None or (self.epochs and following >= self.epochs):
            return
        self._ahead = EpochAhead(following, self._pieces(following, worker, 0), self.ahead_pieces)

    def _pieces(self, epoch, worker, skip):
        """Plan worker `worker`'s pieces of `epoch`: decoded, shuffled, transformed and collated;
        the first `skip` are made without pixels and not sent (a replay, see the module docstring)."""
        started = time.perf_counter()
        spec = self.spec
        process = worker_identity()[0]
        skip_clip = getattr(self.transform, "skip", self.transform)
        plan = spec.plan(self.infos, epoch)
        my_clips = spec.shard(plan, epoch).slots[spec.rank][worker]
        rng = np.random.default_rng([spec.seed, epoch, 2, spec.rank, worker])
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        if get_worker_info() is not None:  # never reseed the trainer's own process
            seed = int(rng.integers(2 ** 31))
            random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        reports, self._reported = [], set()
        samples = delivery_order(self._decoded(my_clips, plan, epoch, reports), my_clips,
                                 self.shuffle_buffer, shuffle_rng(spec, epoch, worker))
        buffers = self._worker_buffers(process)
        piece, number = [], 0
        for ref, clip in samples:
            if number < skip:
                piece.append((ref, skip_clip(clip, ref, generator)))
            else:
                piece.append((ref, self.transform(clip, ref, generator)))
            if len(piece) == self.piece_size:
                self.made[process] += 1  # progress, replays included (the engine's watchdog)
                if number >= skip:
                    yield self._collate(piece, reports, buffers, started, (worker, number, False))
                piece, reports[:], number = [], [], number + 1
                started = time.perf_counter()
        self.made[process] += 1
        yield self._collate(piece, reports, buffers, started, (worker, number, True))

    def _collate(self, samples, reports, buffers, started, position):
        """The piece, with "piece": (worker, number in the epoch, last of the epoch) and "load_s":
        the seconds this process worked on it (not those it waited for the loader to ask for it)."""
        batch = collate(samples, self.labels, reports, buffers)
        batch["piece"] = position
        batch["load_s"] = time.perf_counter() - started
        return batch

    def _worker_buffers(self, process):
        if self._buffers is None and self.busy_marks is not None and get_worker_info() is not None:
            self._buffers = BatchBuffers(self.busy_marks, process, self.piece_size)
        return self._buffers

    def _decoded(self, clips, plan, epoch, reports):
        """(ClipRef, uint8 T H W C) for every clip, video by video (clip by clip if
        `decode_per_clip`); failures go to `reports`."""
        start = 0
        while start < len(clips):
            video = clips[start].video
            end = start + 1
            while end < len(clips) and clips[end].video == video and not self.decode_per_clip:
                end += 1
            refs = clips[start:end]
            start = end
            try:
                yield from self.decode_clips(video, refs)
            except VideoDecodeError as error:
                self._report(video, error.reason, reports)
                if self.spec.training:
                    yield from self._substitute(video, refs, plan, epoch, reports)

    def decode_clips(self, video, refs):
        """Decode every frame `refs` need in one call and slice the clips out of it."""
        info = self.infos[video]
        if video in self._known_bad:
            raise VideoDecodeError(info.path, self._known_bad[video])
        needed = sorted({f for ref in refs for f in ref.frames})
        frames = self.decoder().decode(info.path, needed, info)
        if frames.shape[0] != len(needed):
            raise VideoDecodeError(info.path, f"the decoder returned {frames.shape[0]} frames for "
                                              f"{len(needed)} requested")
        if self.frame_size and tuple(frames.shape[1:3]) != self.frame_size:
            frames = resize_frames(frames, self.frame_size)
        position = {f: i for i, f in enumerate(needed)}
        return [(ref, _rows(frames, [position[f] for f in ref.frames])) for ref in refs]

    def _substitute(self, bad_video, refs, plan, epoch, reports):
        """As many clips as `refs` from another video, candidates in a seeded order."""
        groups = plan.by_video()
        order = np.random.default_rng([self.spec.seed, epoch, 3, bad_video]).permutation(sorted(groups))
        candidates = [int(v) for v in order if v != bad_video and v not in self._known_bad]
        candidates = candidates[:self.max_substitute_tries]
        for video in candidates:
            group = groups[video]
            subs = [group[i % len(group)]._replace(spatial_idx=ref.spatial_idx, valid=ref.valid)
                    for i, ref in enumerate(refs)]
            try:
                return self.decode_clips(video, subs)
            except VideoDecodeError as error:
                self._report(video, error.reason, reports)
        logger.warning("no readable substitute for %s after %d tries; its %d clips are padded",
                       self.infos[bad_video].rel_path, len(candidates), len(refs))
        return []

    def _report(self, video, reason, reports):
        """Remember a bad video and report it, once per epoch."""
        self._known_bad[video] = reason
        if video not in self._reported:
            self._reported.add(video)
            reports.append((self.infos[video].rel_path, reason))

    def decoder(self):
        if self._decoder is None:
            self._decoder = self.decoder_factory()
        return self._decoder

    def blank_clip(self):
        """An all-zero transformed clip, for padding a rank that decoded nothing."""
        info = next(i for i in self.infos if not getattr(i, "error", None))
        height, width = self.frame_size or (info.height, info.width)
        raw = torch.zeros(self.spec.settings.num_frames, height, width, 3, dtype=torch.uint8)
        ref = ClipRef(0, (0,) * self.spec.settings.num_frames, 1, False)
        return self.transform(raw, ref, torch.Generator().manual_seed(0)).zero_()

    def __getstate__(self):  # the decoder holds open resources: each process makes its own
        state = dict(self.__dict__)
        state["_decoder"] = state["_buffers"] = state["_ahead"] = None
        return state


def check_bad_fraction(left_out, num_videos, max_fraction, key="DATA.MAX_BAD_FRACTION",
                       what="training videos", check_command="vbench data check"):
    """Raise TooManyBadVideos when more than `max_fraction` of `num_videos` videos are left out
    (`left_out`: {path: reason}; missing, unreadable at index time or failing to decode). The message
    lists the files and ends with a one-line summary and the command that checks the data."""
    if num_videos and len(left_out) / num_videos > max_fraction:
        listing = "\n  ".join(f"{path}: {left_out[path]}" for path in sorted(left_out))
        raise TooManyBadVideos(
            f"{what} left out:\n  {listing}\n{len(left_out)} of {num_videos} {what} "
            f"({100 * len(left_out) / num_videos:.1f}%) are missing or unreadable, more than {key} = "
            f"{max_fraction}. Restore, re-encode or remove these files; `{check_command}` lists every "
            f"problem of the data folder.")
