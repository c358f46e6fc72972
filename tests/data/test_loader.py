"""ClipDataset + ClipLoader end to end on tiny numbered videos (each frame shows its own index)."""
import collections
import os

import pytest
import torch

from vbench.data import build_loader, check_bad_fraction
from vbench.data.buffers import SENT
from vbench.data.dataset import RawClip, TooManyBadVideos, delivery_order, repeats_a_video, shuffle_rng, shuffled
from vbench.data.index import build_index
from vbench.data.join import BackgroundJoin, PieceJoiner
from vbench.data.layouts import read_split
from vbench.data.loader import loader_from_index
from vbench.data.sampling import piece_stream

from scaffold import clip_records, loader_cfg


def epoch_of(loader, epoch=0):
    loader.set_epoch(epoch)
    batches = list(loader)
    assert len(batches) == len(loader)
    return batches


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
    ledger.received = lambda clips, worker, slot: (clips.numel() and received.append((worker, slot)),
                                                   original(clips, worker, slot))
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


@pytest.mark.parametrize("workers,batch,piece", [(2, 4, 3), (3, 5, 2), (0, 4, 3), (2, 4, 0)])
def test_joined_batches_hold_the_clips_the_plan_gives_them_in_order(data_root, workers, batch, piece):
    loader = build_loader(loader_cfg(data_root, workers, batch=batch, DATA_LOADER__PIECE_SIZE=piece), "train",
                          training=True, transform=RawClip())
    for epoch in (0, 1):
        batches = epoch_of(loader, epoch)
        clip_records(batches)  # every clip shows its planned frames
        spec = loader.spec
        shares = spec.shard(spec.plan(loader.infos, epoch), epoch).slots[0]
        orders = [list(delivery_order(clips, clips, loader.dataset.shuffle_buffer, shuffle_rng(spec, epoch, worker)))
                  for worker, clips in enumerate(shares)]
        stream = piece_stream(orders, loader.piece_size)
        assert len(stream) == len(batches) * batch  # the plan pads the rank to whole batches
        for index, joined in enumerate(batches):
            planned = stream[index * batch:(index + 1) * batch]
            assert joined["video_ids"].tolist() == [c.video for c in planned]
            assert [tuple(f) for f in joined["frame_indices"].tolist()] == [c.frames for c in planned]
            assert joined["valid"].tolist() == [c.valid for c in planned]
    if workers and piece and piece < batch:  # a batch spans workers: the first waits for one piece of each
        assert {c.video for c in stream[:batch]} & {c.video for c in orders[1]}


def test_pieces_arriving_out_of_turn_are_joined_in_the_plan_order():
    def piece(worker, number, values, last=False):
        n = len(values)
        return {"piece": (worker, number, last), "clips": torch.tensor(values, dtype=torch.uint8).view(n, 1),
                "spatial_idx": torch.ones(n, dtype=torch.int64), "labels": torch.zeros(n, dtype=torch.int64),
                "video_ids": torch.tensor(values, dtype=torch.int64), "valid": torch.ones(n, dtype=torch.bool),
                "frame_indices": torch.zeros(n, 1, dtype=torch.int64), "bad_videos": [("w%d" % worker, "x")] * (n == 1)}
    # worker 0: [1, 2] [3] (last); worker 1: [10, 11] [] (last, empty)
    arrivals = [piece(1, 0, [10, 11]), piece(1, 1, [], last=True), piece(0, 1, [3], last=True), piece(0, 0, [1, 2])]
    joiner = PieceJoiner(2, batch_size=3, num_batches=2, blank_clip=None)
    out = []
    for p in arrivals[:3]:
        out += joiner.push(p)
    assert out == [] and len(joiner.waiting) == 3  # nothing before worker 0's first piece
    out += joiner.push(arrivals[3])
    tail, reports = joiner.finish()
    batches = out + tail
    assert [b["video_ids"].tolist() for b in batches] == [[1, 2, 10], [11, 3, 11]]
    assert batches[1]["valid"].tolist() == [True, True, False]  # padded with its own clips
    assert [b["bad_videos"] for b in batches] == [[], [("w0", "x")]] and reports == []
    assert torch.equal(batches[1]["clips"].view(-1), torch.tensor([11, 3, 11], dtype=torch.uint8))


def test_an_epoch_left_early_leaves_no_slot_behind(data_root):
    cfg = loader_cfg(data_root, workers=2, batch=2, DATA_LOADER__PIECE_SIZE=1, SOLVER__MAX_EPOCH=4)
    loader = build_loader(cfg, "train", training=True, transform=RawClip())  # nothing made ahead after epoch 3
    busy = loader.dataset.busy_marks
    for epoch in range(3):  # take one batch and leave: torch drops the pieces in flight
        loader.set_epoch(epoch)
        next(iter(loader))
    records = clip_records(epoch_of(loader, 3))
    assert collections.Counter(records) == collections.Counter((c.video, c.frames) for c in loader.plan.clips)
    loader._ledger.collect()
    assert int((busy == SENT).sum()) == 0  # the dropped pieces' slots were taken back
    assert loader._ledger.fresh == 0
    loader.close()


def _contents(batches):
    return [(b["video_ids"].tolist(), b["frame_indices"].tolist(), b["valid"].tolist(), b["clips"].clone())
            for b in batches]


def _same(a, b):
    return len(a) == len(b) and all(x[:3] == y[:3] and torch.equal(x[3], y[3]) for x, y in zip(a, b))


@pytest.mark.parametrize("training", [True, False])
def test_pieces_made_ahead_are_those_the_epoch_would_have_made(data_root, training):
    import time

    split = "train" if training else "val"
    loaders = [build_loader(loader_cfg(data_root, workers=2, batch=3, DATA_LOADER__PIECE_SIZE=2,
                                     DATA_LOADER__START_AHEAD=ahead), split, training=training)
               for ahead in (False, True)]
    plain, ahead = loaders
    assert plain.dataset.ahead_pieces == 0 and ahead.dataset.ahead_pieces > 0
    reference = {epoch: _contents(epoch_of(plain, epoch)) for epoch in (0, 1)}
    assert _same(_contents(epoch_of(ahead, 0)), reference[0])
    busy = ahead.dataset.busy_marks
    deadline = time.monotonic() + 60
    while int((busy == SENT).sum()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # both workers make their next epoch's first pieces without being asked
    assert int((busy == SENT).sum()) >= 2
    if training:  # the same epoch again (as precise BN does): the pieces made ahead are dropped
        assert _same(_contents(epoch_of(ahead, 0)), reference[0])
        assert _same(_contents(epoch_of(ahead, 0)), reference[0])
    assert _same(_contents(epoch_of(ahead, 1 if training else 0)), reference[1 if training else 0])
    assert ahead._ledger.fresh == 0  # the pieces made ahead had slots of their own
    for loader in loaders:
        loader.close()


def test_the_background_join_passes_errors_on_and_stops_when_left():
    closed = []

    def batches(fail_at):
        try:
            for index in range(100):
                if index == fail_at:
                    raise ValueError("a worker failed")
                yield index
        finally:
            closed.append(fail_at)

    joined = BackgroundJoin(batches(fail_at=3))
    with pytest.raises(ValueError, match="a worker failed"):
        assert list(joined) == [0, 1, 2]
    joined.close()
    left = BackgroundJoin(batches(fail_at=None))
    assert next(iter(left)) == 0
    left.close()  # the consumer stops early: the thread ends and the generator is closed
    assert not left.thread.is_alive() and closed == [3, None]
