"""Epoch plans: which clips of which videos an epoch visits, and how they are split over processes.

Everything here is a pure function of (video infos, settings, seed, epoch): every rank and every
loader worker can rebuild the same plan on its own and take its share, with no communication.

Timeline. With DATA.FRAME_RATE > 0 the video is resampled to that rate: resampled frame k shows
native frame ``floor(k * native_fps / FRAME_RATE + 1e-6)``, the frame on screen at time
k / FRAME_RATE (the 1e-6 absorbs float error so exact multiples land on their frame), and clip frame
j of a clip starting at resampled frame s is resampled frame s + j. With DATA.FRAME_RATE == 0 the
timeline is the native frames and clip frame j is native frame s + j * DATA.SAMPLING_RATE
(SlowFast). A timeline has ``timeline_length`` frames: those whose native index exists.

Short videos (timeline shorter than one clip) get one clip starting at 0 whose missing frames repeat
the last frame (indices clamped, as SlowFast does); plans count them in ``short_videos``. Videos the
index could not read (``info.error``), or with no frames or no frame rate, are left out of every
plan and listed in ``excluded``.
"""
import heapq
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

_EPS = 1e-6
TRAIN_MODES = ("windows", "random_clips", "random")
EVAL_MODES = ("windows", "uniform")


class ClipRef(NamedTuple):
    """One clip: a video (index into the split), its native frame indices (ascending, repeats
    allowed), the spatial crop (0/1/2; 1 = centre) and whether it is a real clip (False = a padding
    duplicate that evaluation never counts)."""
    video: int
    frames: tuple
    spatial_idx: int = 1
    valid: bool = True


@dataclass(frozen=True)
class ClipSettings:
    num_frames: int = 16
    frame_rate: float = 15.0  # 0 = native timeline with `sampling_rate`
    sampling_rate: int = 1
    frames_between_clips: int = 16

    @classmethod
    def from_cfg(cls, cfg):
        return cls(cfg.DATA.NUM_FRAMES, float(cfg.DATA.FRAME_RATE), cfg.DATA.SAMPLING_RATE,
                   cfg.DATA.FRAMES_BETWEEN_CLIPS)

    @property
    def step(self):
        """Timeline frames between consecutive clip frames."""
        return 1 if self.frame_rate > 0 else self.sampling_rate

    @property
    def span(self):
        """Timeline frames covered by one clip."""
        return (self.num_frames - 1) * self.step + 1


@dataclass
class EpochPlan:
    clips: list  # ClipRef, grouped by video in ascending video order
    excluded: list = field(default_factory=list)  # (video, reason): not planned
    short_videos: list = field(default_factory=list)  # videos padded by repeating the last frame

    def by_video(self):
        groups = {}
        for clip in self.clips:
            groups.setdefault(clip.video, []).append(clip)
        return groups


# ------------------------------------------------------------------------------------ timeline
def timeline_length(num_frames, fps, settings):
    """Frames on the (resampled) timeline of a video with `num_frames` native frames."""
    if settings.frame_rate <= 0:
        return num_frames
    native_per_step = fps / settings.frame_rate
    return max(0, math.ceil((num_frames - _EPS) / native_per_step))


def native_index(k, fps, num_frames, settings):
    """Native frame shown at timeline frame k (floor rule above), clamped to the last frame."""
    if settings.frame_rate > 0:
        k = math.floor(k * fps / settings.frame_rate + _EPS)
    return min(k, num_frames - 1)


def clip_frames(start, info, settings):
    """Native frame indices of the clip starting at timeline frame `start`; frames past the end of
    the timeline repeat its last frame."""
    last = timeline_length(info.num_frames, info.fps, settings) - 1
    return tuple(native_index(min(start + j * settings.step, last), info.fps, info.num_frames, settings)
                 for j in range(settings.num_frames))


def unusable_reason(info, settings):
    if getattr(info, "error", None):
        return str(info.error)
    if not info.num_frames or info.num_frames <= 0:
        return "the video has no decodable frames"
    if settings.frame_rate > 0 and (not info.fps or info.fps <= 0):
        return "the video has no frame rate (needed to resample to DATA.FRAME_RATE)"
    return None


def _last_start(info, settings):
    """Largest valid clip start, or -1 when the video is shorter than one clip."""
    return timeline_length(info.num_frames, info.fps, settings) - settings.span


# ------------------------------------------------------------------------------------ starts
def window_starts(info, settings):
    last = _last_start(info, settings)
    return list(range(0, last + 1, settings.frames_between_clips)) if last >= 0 else [0]


def uniform_starts(info, settings, num_views):
    """`num_views` starts evenly spaced from the first to the last possible start (one view:
    centred), rounded half up."""
    delta = max(_last_start(info, settings), 0)
    if num_views == 1:
        return [delta // 2]
    return [(2 * delta * i + num_views - 1) // (2 * (num_views - 1)) for i in range(num_views)]


def random_starts(info, settings, count, rng):
    """`count` distinct random starts (fewer when the video has fewer possible starts), ascending."""
    possible = max(_last_start(info, settings), 0) + 1
    picks = rng.choice(possible, size=min(count, possible), replace=False)
    return sorted(int(s) for s in picks)


# ------------------------------------------------------------------------------------ plans
def _plan(infos, settings, starts_of, crops=(1,)):
    plan = EpochPlan(clips=[])
    for video, info in enumerate(infos):
        reason = unusable_reason(info, settings)
        if reason:
            plan.excluded.append((video, reason))
            continue
        if _last_start(info, settings) < 0:
            plan.short_videos.append(video)
        for start in starts_of(video, info):
            frames = clip_frames(start, info, settings)
            plan.clips.extend(ClipRef(video, frames, crop) for crop in crops)
    return plan


def build_train_plan(infos, settings, mode="windows", seed=0, epoch=0, clips_per_video=1):
    """Training clips of one epoch. "windows": every window (the same each epoch; only the order and
    sharding change); "random_clips": `clips_per_video` distinct random starts per video (torchvision
    temporal jittering); "random": one random clip per video (SlowFast)."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"unknown training plan '{mode}' (TRAIN.SAMPLING); "
                         f"choose one of {list(TRAIN_MODES)}.")
    if mode == "windows":
        return _plan(infos, settings, lambda v, info: window_starts(info, settings))
    count = clips_per_video if mode == "random_clips" else 1

    def starts(video, info):
        rng = np.random.default_rng([seed, epoch, 0, video])  # per video: independent of the others
        return random_starts(info, settings, count, rng)
    return _plan(infos, settings, starts)


def build_eval_plan(infos, settings, mode="windows", num_views=10, num_crops=3):
    """Evaluation clips. "windows": every window, centre crop (the benchmark's clip metric);
    "uniform": `num_views` evenly spaced views x `num_crops` crops (spatial_idx 0/1/2, or 1)."""
    if mode not in EVAL_MODES:
        raise ValueError(f"unknown evaluation plan '{mode}' (TEST.SAMPLING); "
                         f"choose one of {list(EVAL_MODES)}.")
    if mode == "windows":
        return _plan(infos, settings, lambda v, info: window_starts(info, settings))
    crops = (0, 1, 2) if num_crops == 3 else (1,)
    return _plan(infos, settings, lambda v, info: uniform_starts(info, settings, num_views), crops)


def plan_from_cfg(infos, cfg, training, epoch=0, sampling=None):
    """The epoch plan the config asks for (`sampling` overrides TRAIN/TEST.SAMPLING)."""
    settings = ClipSettings.from_cfg(cfg)
    if training:
        return build_train_plan(infos, settings, sampling or cfg.TRAIN.SAMPLING, cfg.RNG_SEED, epoch,
                                cfg.TRAIN.CLIPS_PER_VIDEO)
    return build_eval_plan(infos, settings, sampling or cfg.TEST.SAMPLING, cfg.TEST.NUM_ENSEMBLE_VIEWS,
                           cfg.TEST.NUM_SPATIAL_CROPS)


# ------------------------------------------------------------------------------------ sharding
@dataclass
class ShardedPlan:
    """One epoch split over ranks and loader workers. ``slots[rank][worker]`` lists the clips one
    worker produces, video by video in decode order; every rank holds exactly
    ``batches_per_rank * batch_size`` clips (real ones plus ``valid=False`` padding duplicates)."""
    batch_size: int
    batches_per_rank: int
    slots: list

    def rank_clips(self, rank):
        return [clip for worker in self.slots[rank] for clip in worker]


def _greedy(groups, num_bins):
    """Each group, in the given order, goes to the bin holding the fewest clips (ties: lowest bin)."""
    heap = [(0, b) for b in range(num_bins)]
    bins = [[] for _ in range(num_bins)]
    for group in groups:
        count, b = heapq.heappop(heap)
        bins[b].append(group)
        heapq.heappush(heap, (count + len(group), b))
    return bins


def _pad(groups, target, rng):
    """Append valid=False duplicates of this rank's own clips (to their video's group, so no extra
    decode) until the rank holds `target` clips. Training picks them at random, evaluation in order."""
    groups = [list(g) for g in groups]
    refs = [(g, i) for g, group in enumerate(groups) for i in range(len(group))]
    need = target - len(refs)
    if need <= 0:
        return groups
    order = rng.permutation(len(refs)) if rng is not None else np.arange(len(refs))
    for n in range(need):
        g, i = refs[order[n % len(refs)]]
        groups[g].append(groups[g][i]._replace(valid=False))
    return groups


def shard_plan(plan, batch_size, world_size=1, num_workers=1, training=True, seed=0, epoch=0):
    """Split `plan` over `world_size` ranks x `num_workers` loader workers (0 = in-process = 1).

    - All clips of a video go to one worker of one rank, so each video is decoded once per epoch.
    - Videos go to ranks, then to workers, largest clip count first onto the least-loaded bin; ties
      in a seeded (seed, epoch) order for training, in video order for evaluation. The clip counts
      per rank do not depend on the tie order, so the batch count is the same every epoch.
    - Every rank gets B = ceil(max clips of a rank / batch_size) batches: ranks with fewer clips are
      padded with valid=False duplicates of their own clips (trained on, never counted in
      evaluation). Workers do not hold whole batches: the loader joins their pieces into batches
      (`piece_stream`).
    - A rank left without videos (more ranks than videos) pads from a copy of another rank's
      smallest video group, all valid=False.
    Every real clip of the plan appears exactly once over all ranks.
    """
    num_workers = max(1, num_workers)
    groups = list(plan.by_video().values())
    rng = np.random.default_rng([seed, epoch, 1]) if training else None
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    groups.sort(key=len, reverse=True)  # stable: ties keep the seeded or video order
    ranks = _greedy(groups, world_size)
    real = [sum(len(g) for g in rank) for rank in ranks]
    batches = math.ceil(max(real, default=0) / batch_size)
    target = batches * batch_size
    slots = []
    for rank_groups in ranks:
        if not rank_groups and batches:
            donor = ranks[int(np.argmax(real))][-1][:target]
            rank_groups = [[clip._replace(valid=False) for clip in donor]]
        workers = _greedy(sorted(_pad(rank_groups, target, rng), key=len, reverse=True), num_workers)
        for worker in workers:
            if rng is not None:
                worker[:] = [worker[i] for i in rng.permutation(len(worker))]
            else:
                worker.sort(key=lambda group: group[0].video)
        slots.append([[clip for group in worker for clip in group] for worker in workers])
    return ShardedPlan(batch_size, batches, slots)


def piece_stream(worker_clips, piece_size):
    """The order in which one rank's clips reach its training loop: each worker's clips (in the
    order the worker delivers them) cut into pieces of `piece_size`, the pieces taken in turns,
    worker 0 first; a worker whose clips are used up drops out of the turns. The loader joins this
    stream into batches of the rank's batch size (`vbench.data.join`)."""
    pieces = [[clips[i:i + piece_size] for i in range(0, len(clips), piece_size)] for clips in worker_clips]
    stream = []
    for turn in range(max((len(p) for p in pieces), default=0)):
        for worker_pieces in pieces:
            if turn < len(worker_pieces):
                stream.extend(worker_pieces[turn])
    return stream


# ------------------------------------------------------------------------------------ one epoch
@dataclass(frozen=True)
class PlanSpec:
    """Everything besides the videos and the epoch that fixes one rank's sharded epoch plan."""
    settings: ClipSettings
    training: bool
    sampling: str
    batch_size: int  # clips per batch on one rank
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0  # loader workers per rank (0 = in-process)
    seed: int = 0
    clips_per_video: int = 1
    num_views: int = 10
    num_crops: int = 3

    def plan(self, infos, epoch):
        if self.training:
            return build_train_plan(infos, self.settings, self.sampling, self.seed, epoch,
                                    self.clips_per_video)
        return build_eval_plan(infos, self.settings, self.sampling, self.num_views, self.num_crops)

    def shard(self, plan, epoch):
        return shard_plan(plan, self.batch_size, self.world_size, self.num_workers, self.training,
                          self.seed, epoch)
