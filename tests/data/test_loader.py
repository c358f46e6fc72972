"""ClipDataset + ClipLoader end to end on tiny numbered videos (each frame shows its own index)."""
import collections
import os

import pytest
import torch

from vbench.data import build_loader, check_bad_fraction
from vbench.data.dataset import RawClip, TooManyBadVideos, repeats_a_video, shuffled
from vbench.data.index import build_index
from vbench.data.layouts import read_split
from vbench.data.loader import loader_from_index

from scaffold import loader_cfg
from videos import read_frame_number  # noqa: E402


def epoch_of(loader, epoch=0):
    loader.set_epoch(epoch)
    batches = list(loader)
    assert len(batches) == len(loader)
    return batches


def clip_records(batches, check_pixels=True):
    """(video, frames) of every valid clip; checks that each clip shows its planned frames."""
    records = []
    for batch in batches:
        assert batch["clips"].dtype == torch.uint8 and batch["clips"].shape[1:] == (4, 48, 64, 3)
        for clip, frames, video, ok in zip(batch["clips"], batch["frame_indices"], batch["video_ids"],
                                           batch["valid"]):
            if check_pixels:
                assert [read_frame_number(f) for f in clip] == frames.tolist()
            if ok:
                records.append((int(video), tuple(frames.tolist())))
    return records


@pytest.mark.parametrize("workers", [0, 2])
def test_training_epoch_delivers_every_planned_clip_once(data_root, workers):
    loader = build_loader(loader_cfg(data_root, workers), "train", training=True, transform=RawClip())
    assert loader.class_names == ["a", "b"] and loader.num_videos == 6
    assert loader.num_clips == 20 and loader.short_videos == 1
    batches = epoch_of(loader, epoch=1)
    records = clip_records(batches)
    assert collections.Counter(records) == collections.Counter((c.video, c.frames) for c in loader.plan.clips)
    assert records != [(c.video, c.frames) for c in loader.plan.clips]  # shuffled, not plan order
    for batch in batches:
        for video, label in zip(batch["video_ids"].tolist(), batch["labels"].tolist()):
            assert label == "ab".index(loader.infos[video].rel_path.split(os.sep)[1])
    assert loader.mixing_stats()["mean_distinct_videos"] > 1.0
    short = [r for r in records if r[0] == 5]
    assert short == [(5, (0, 2, 4, 4))]  # 6 frames at 30 fps: 3 at 15 fps, the last one repeated


def test_one_clip_per_video_comes_in_the_seeded_plan_order_without_a_buffer(data_root):
    cfg = loader_cfg(data_root, batch=3, TRAIN__SAMPLING="random_clips", TRAIN__CLIPS_PER_VIDEO=1)
    loader = build_loader(cfg, "train", training=True, transform=RawClip())
    batches = epoch_of(loader, epoch=1)
    worker_clips = loader.spec.shard(loader.spec.plan(loader.infos, 1), 1).slots[0][0]
    assert not repeats_a_video(worker_clips)
    delivered = [int(v) for batch in batches for v, ok in zip(batch["video_ids"], batch["valid"]) if ok]
    assert delivered == [c.video for c in worker_clips if c.valid]
    several = build_loader(loader_cfg(data_root), "train", training=True, transform=RawClip())
    assert repeats_a_video(several.spec.shard(several.spec.plan(several.infos, 1), 1).slots[0][0])


class CountingDecoder:
    """A PyAV decoder that counts its decode calls (picklable: made in-process, workers 0)."""

    def __init__(self):
        from vbench.data.decoders import get_decoder
        self.inner, self.calls = get_decoder("pyav"), 0

    def decode(self, *args):
        self.calls += 1
        return self.inner.decode(*args)


@pytest.mark.parametrize("per_clip", [False, True])
def test_decode_per_clip_gives_the_same_clips_with_one_decode_each(data_root, per_clip):
    cfg = loader_cfg(data_root, DATA__DECODE_PER_CLIP=per_clip)
    entries, classes = read_split(data_root, "val", layout="folder")
    infos = build_index(entries, cache_dir=str(data_root / "index"), num_workers=1, progress=False)
    decoder = CountingDecoder()
    loader = loader_from_index(cfg, infos, classes, training=False, transform=RawClip(),
                               decoder_factory=lambda: decoder)
    records = clip_records(epoch_of(loader))  # checks every clip's pixels against its frames
    planned = [(c.video, c.frames) for c in loader.plan.clips]
    assert collections.Counter(records) == collections.Counter(planned)
    assert decoder.calls == (len(planned) if per_clip else len({video for video, _ in planned}))


def test_resampled_frames_match_the_plan_formula(data_root):
    loader = build_loader(loader_cfg(data_root, DATA__FRAME_RATE=10.0), "val", training=False,
                          transform=RawClip())
    records = clip_records(epoch_of(loader))
    v0 = sorted(frames for video, frames in records if video == 0)
    # 40 frames at 30 fps -> 14 frames at 10 fps (native 3k); windows of 4, stride 4: 3 clips
    assert v0 == [(0, 3, 6, 9), (12, 15, 18, 21), (24, 27, 30, 33)]


def test_eval_over_three_ranks_covers_each_clip_exactly_once(data_root):
    cfg = loader_cfg(data_root, workers=0, batch=6)
    loaders = [build_loader(cfg, "val", training=False, rank=r, world_size=3, transform=RawClip())
               for r in range(3)]
    assert len({len(loader) for loader in loaders}) == 1
    records = [r for loader in loaders for r in clip_records(epoch_of(loader))]
    plan = loaders[0].plan
    assert collections.Counter(records) == collections.Counter((c.video, c.frames) for c in plan.clips)


def test_training_videos_stay_in_one_worker(data_root):
    cfg = loader_cfg(data_root, workers=2)
    loader = build_loader(cfg, "train", training=True, transform=RawClip())
    sharded = loader.spec.shard(loader.plan, 0)
    owners = collections.defaultdict(set)
    for worker, clips in enumerate(sharded.slots[0]):
        for clip in clips:
            owners[clip.video].add(worker)
    assert all(len(w) == 1 for w in owners.values()) and len(owners) == 6


def _loader_with_corrupt_video(data_root, tmp_path, training, workers=0):
    """Index the split, then point v1 (4 clips) at a file of garbage bytes: decoding fails."""
    cfg = loader_cfg(data_root, workers, DATA__MAX_SUBSTITUTE_TRIES=3)
    entries, classes = read_split(data_root, "train" if training else "val", layout="folder")
    infos = build_index(entries, cache_dir=str(data_root / "index"), num_workers=1, progress=False)
    bad = tmp_path / "v1.mp4"
    bad.write_bytes(os.urandom(4000))
    infos[1].path = str(bad)
    return loader_from_index(cfg, infos, classes, training, transform=RawClip())


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_training_video_is_substituted_and_reported_once(data_root, tmp_path, workers):
    loader = _loader_with_corrupt_video(data_root, tmp_path, training=True, workers=workers)
    for epoch in (0, 1):
        batches = epoch_of(loader, epoch)
        reports = [item for batch in batches for item in batch["bad_videos"]]
        assert [path for path, _ in reports] == [os.path.join("train", "a", "v1.mp4")] and reports[0][1]
        records = clip_records(batches)
        assert len(records) == loader.num_clips  # the 4 lost clips were replaced
        assert not any(video == 1 for video, _ in records)
        assert loader.bad_videos == reports
    check_bad_fraction(dict(loader.bad_videos), loader.num_videos, max_fraction=0.5)


def test_bad_eval_video_is_excluded_not_substituted(data_root, tmp_path):
    loader = _loader_with_corrupt_video(data_root, tmp_path, training=False)
    batches = epoch_of(loader)
    records = clip_records(batches)
    planned = [(c.video, c.frames) for c in loader.plan.clips]
    assert collections.Counter(records) == collections.Counter(r for r in planned if r[0] != 1)
    assert sum(int((~b["valid"]).sum()) for b in batches) == len(loader) * 4 - len(records)
    assert [path for path, _ in loader.excluded] == [os.path.join("val", "a", "v1.mp4")]


def test_check_bad_fraction_names_the_files():
    check_bad_fraction({"x.mp4": "empty"}, 200, 0.01)  # 0.5 % is allowed
    with pytest.raises(TooManyBadVideos) as error:
        check_bad_fraction({"cls/b.mp4": "moov atom not found", "cls/a.mp4": "empty"}, 100, 0.01)
    assert "cls/a.mp4: empty\n  cls/b.mp4: moov atom not found" in str(error.value)
    assert "DATA.MAX_BAD_FRACTION" in str(error.value)


def test_transformed_batches_have_model_layout(data_root):
    pytest.importorskip("vbench.data.transforms")
    train = build_loader(loader_cfg(data_root), "train", training=True)
    batch = next(iter(train))
    clips, labels = train.to_device(batch, torch.device("cpu"))
    assert clips.dtype == torch.float32 and clips.shape == (4, 3, 4, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (4,)
    gpu_cfg = loader_cfg(data_root, DATA__GPU_TRANSFORMS=True)
    evaluation = build_loader(gpu_cfg, "val", training=False)
    batch = next(iter(evaluation))
    assert batch["clips"].dtype == torch.uint8 and batch["clips"].shape == (4, 4, 48, 64, 3)
    clips, _ = evaluation.to_device(batch, torch.device("cpu"))
    assert clips.dtype == torch.float32 and clips.shape == (4, 3, 4, 32, 32)


def test_rank_with_only_unreadable_videos(data_root, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(3000))
    for training in (False, True):
        entries, classes = read_split(data_root, "val", layout="folder")
        infos = build_index(entries[:2], cache_dir=str(data_root / "index"), num_workers=1, progress=False)
        for info in infos:
            info.path = str(garbage)
        loader = loader_from_index(loader_cfg(data_root), infos, classes, training, transform=RawClip())
        if training:  # nothing to train on: a clear error, not batches of zeros
            with pytest.raises(RuntimeError, match="could not decode any"):
                list(loader)
        else:  # evaluation keeps the batch count (DDP) with all-invalid slots
            batches = epoch_of(loader)
            assert not any(b["valid"].any() for b in batches)
            assert len(loader.excluded) == 2


def test_batch_slots_are_reused_once_released_and_never_while_held(data_root):
    loader = build_loader(loader_cfg(data_root, workers=2, batch=1), "train", training=True, transform=RawClip())
    ledger, slots = loader._ledger, loader.dataset.busy_marks.shape[1]
    received = []
    original = ledger.received
    ledger.received = lambda clips, worker, slot: (received.append((worker, slot)), original(clips, worker, slot))
    for epoch in (0, 1):  # batches dropped as they go: every one comes in a reused slot
        loader.set_epoch(epoch)
        for batch in loader:
            clip_records([batch])  # each clip shows its planned frames
    assert ledger.fresh == 0 and len(received) == 2 * loader.num_clips
    assert None not in {slot for _, slot in received} and len(set(received)) <= 2 * slots
    kept = epoch_of(loader, 2)  # a consumer holding every batch: slots run out, nothing is overwritten
    assert ledger.fresh > 0
    planned = collections.Counter((c.video, c.frames) for c in loader.plan.clips)
    assert collections.Counter(clip_records(kept)) == planned


def test_close_stops_the_workers_and_a_new_epoch_starts_new_ones(data_root):
    loader = build_loader(loader_cfg(data_root, workers=2), "train", training=True, transform=RawClip())
    epoch_of(loader, 0)
    workers = list(loader.data_loader._iterator._workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    loader.close()
    assert not any(w.is_alive() for w in workers) and loader.data_loader._iterator is None
    records = clip_records(epoch_of(loader, 1))  # new workers deliver the whole epoch
    assert collections.Counter(records) == collections.Counter((c.video, c.frames) for c in loader.plan.clips)
    loader.close()


def test_shuffle_buffer_starts_at_a_quarter_and_never_holds_more_than_its_size():
    import numpy as np
    taken = []

    def source():
        for item in range(200):
            taken.append(item)
            yield item

    out, held = [], []
    for item in shuffled(source(), 64, np.random.default_rng(0)):
        if not out:
            assert len(taken) == 16  # a quarter of the buffer decoded before the first output
        out.append(item)
        held.append(len(taken) - len(out))
    assert sorted(out) == list(range(200)) and out != list(range(200))
    assert max(held) == 63  # one slot is always the item just taken in
    assert out == list(shuffled(iter(range(200)), 64, np.random.default_rng(0)))  # seeded
