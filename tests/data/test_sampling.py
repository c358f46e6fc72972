"""Epoch plans and their sharding over ranks and loader workers (pure logic, no video files)."""
import collections
import math
from fractions import Fraction
from types import SimpleNamespace

import pytest

from vbench.data.sampling import (
    ClipSettings,
    build_eval_plan,
    build_train_plan,
    clip_frames,
    shard_plan,
    timeline_length,
)

RECIPE = ClipSettings(num_frames=16, frame_rate=15.0, sampling_rate=1, frames_between_clips=16)


def video(num_frames, fps=30.0, error=None):
    return SimpleNamespace(num_frames=num_frames, fps=fps, error=error)


def test_windows_of_a_10s_30fps_video_at_15fps():
    plan = build_eval_plan([video(300)], RECIPE, "windows")
    assert timeline_length(300, 30.0, RECIPE) == 150
    assert len(plan.clips) == 9  # floor((150 - 16) / 16) + 1
    for k, clip in enumerate(plan.clips):
        assert clip.frames == tuple(2 * (16 * k + j) for j in range(16))
        assert clip.spatial_idx == 1 and clip.valid
    assert plan.short_videos == [] and plan.excluded == []


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), Fraction(25), Fraction(24), Fraction(10),
                                 Fraction(60)])
def test_resampled_indices_follow_the_floor_rule(fps):
    info = video(200, float(fps))
    length = timeline_length(200, float(fps), RECIPE)
    # exact: resampled frame k shows native floor(k * fps / 15); the timeline ends at the last frame
    assert length == sum(1 for k in range(1000) if math.floor(k * fps / 15) < 200)
    for start in (0, 7, length - 16):
        expected = tuple(math.floor((start + j) * fps / 15) for j in range(16))
        assert clip_frames(start, info, RECIPE) == expected
        assert all(a <= b for a, b in zip(expected, expected[1:]))


def test_native_timeline_uses_sampling_rate():
    settings = ClipSettings(num_frames=8, frame_rate=0.0, sampling_rate=4, frames_between_clips=30)
    plan = build_eval_plan([video(100)], settings, "windows")
    # a clip spans 29 native frames; starts 0, 30, 60 fit (60 + 28 = 88 < 100), 90 does not
    assert [c.frames[0] for c in plan.clips] == [0, 30, 60]
    assert plan.clips[1].frames == tuple(30 + 4 * j for j in range(8))


def test_short_video_repeats_its_last_frame_and_is_counted():
    plan = build_train_plan([video(300), video(20)], RECIPE, "windows")
    short = [c for c in plan.clips if c.video == 1]
    assert len(short) == 1
    assert short[0].frames == (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 18, 18, 18, 18, 18, 18)
    assert plan.short_videos == [1]
    uniform = build_eval_plan([video(20)], RECIPE, "uniform", num_views=4, num_crops=1)
    assert len(uniform.clips) == 4 and len({c.frames for c in uniform.clips}) == 1


def test_unreadable_videos_are_excluded_and_reported():
    infos = [video(300), video(0, error="moov atom not found"), video(50, fps=0.0), video(0)]
    plan = build_eval_plan(infos, RECIPE, "windows")
    assert {c.video for c in plan.clips} == {0}
    assert [v for v, _ in plan.excluded] == [1, 2, 3]
    assert plan.excluded[0][1] == "moov atom not found"


def test_random_plans_are_deterministic_per_seed_and_epoch():
    infos = [video(300 + 10 * i) for i in range(6)]
    a = build_train_plan(infos, RECIPE, "random", seed=3, epoch=1)
    assert a.clips == build_train_plan(infos, RECIPE, "random", seed=3, epoch=1).clips
    assert a.clips != build_train_plan(infos, RECIPE, "random", seed=3, epoch=2).clips
    assert a.clips != build_train_plan(infos, RECIPE, "random", seed=4, epoch=1).clips
    assert [c.video for c in a.clips] == list(range(6))


def test_random_clips_are_distinct_and_capped_by_the_possible_starts():
    plan = build_train_plan([video(300), video(34)], RECIPE, "random_clips", seed=0, epoch=0,
                            clips_per_video=5)
    groups = plan.by_video()
    assert len(groups[0]) == 5 and len({c.frames[0] for c in groups[0]}) == 5
    assert len(groups[1]) == 2  # 17 resampled frames: starts 0 and 1 only


def test_uniform_views_span_the_video_with_three_crops():
    plan = build_eval_plan([video(300)], RECIPE, "uniform", num_views=10, num_crops=3)
    assert len(plan.clips) == 30
    starts = sorted({c.frames[0] // 2 for c in plan.clips})
    assert starts[0] == 0 and starts[-1] == 150 - 16 and len(starts) == 10
    assert collections.Counter(c.spatial_idx for c in plan.clips) == {0: 10, 1: 10, 2: 10}
    single = build_eval_plan([video(300)], RECIPE, "uniform", num_views=1, num_crops=1)
    assert [c.frames[0] // 2 for c in single.clips] == [67] and single.clips[0].spatial_idx == 1


def _uneven_infos(n):
    return [video(300 - 37 * i) for i in range(n)]  # 9, 7, 6, 4, 2, 1, 1 windows...


@pytest.mark.parametrize("world_size,num_videos,batch", [(3, 7, 4), (4, 2, 2), (2, 5, 3)])
def test_eval_sharding_covers_every_clip_once_with_equal_batches(world_size, num_videos, batch):
    plan = build_eval_plan(_uneven_infos(num_videos), RECIPE, "windows")
    sharded = shard_plan(plan, batch, world_size, num_workers=2, training=False)
    per_rank = [sharded.rank_clips(r) for r in range(world_size)]
    assert all(len(c) == sharded.batches_per_rank * batch for c in per_rank)
    real = [clip for clips in per_rank for clip in clips if clip.valid]
    assert collections.Counter(real) == collections.Counter(plan.clips)
    padding = [clip for clips in per_rank for clip in clips if not clip.valid]
    assert {c._replace(valid=True) for c in padding} <= set(plan.clips)


def test_rank_batches_are_balanced_greedily():
    plan = build_eval_plan([video(300)] * 12, RECIPE, "windows")  # 108 clips
    sharded = shard_plan(plan, 4, 3, num_workers=1, training=False)
    assert sharded.batches_per_rank == 9  # 36 clips per rank, no padding
    assert all(c.valid for r in range(3) for c in sharded.rank_clips(r))


def test_training_sharding_keeps_each_video_in_one_worker():
    infos = _uneven_infos(7) + [video(300)] * 5
    plan = build_train_plan(infos, RECIPE, "windows")
    sharded = shard_plan(plan, 4, world_size=3, num_workers=2, training=True, seed=0, epoch=5)
    owner = {}
    for rank, workers in enumerate(sharded.slots):
        assert sum(len(w) for w in workers) == sharded.batches_per_rank * 4
        for worker, clips in enumerate(workers):
            for clip in clips:  # padding duplicates stay with their video, too
                assert owner.setdefault(clip.video, (rank, worker)) == (rank, worker)
    real = [c for r in range(3) for c in sharded.rank_clips(r) if c.valid]
    assert collections.Counter(real) == collections.Counter(plan.clips)


def test_training_sharding_changes_per_epoch_but_not_its_length():
    plan = build_train_plan([video(300)] * 10, RECIPE, "windows")
    shards = [shard_plan(plan, 8, 2, 2, training=True, seed=0, epoch=e) for e in range(3)]
    assert shards[0].slots == shard_plan(plan, 8, 2, 2, training=True, seed=0, epoch=0).slots
    assert shards[0].slots != shards[1].slots != shards[2].slots
    assert len({s.batches_per_rank for s in shards}) == 1
