"""`build_loader`: split -> index -> epoch plan -> `ClipDataset` in a torch DataLoader -> `ClipLoader`.

Batches are dicts: "clips" (float B C T H W, or uint8 B T H W C with DATA.GPU_TRANSFORMS),
"spatial_idx", "labels", "video_ids" (index into the split), "valid" (False = padding duplicate),
"frame_indices" (int64 B x T: the native frames of each clip, for checks) and "bad_videos"
((rel_path, reason) found while making the batch, each reported once per epoch).

Workers yield whole batches collated in the worker (into reused shared memory, `buffers.py`);
only each worker's last, partial batch per epoch is merged in the main process (`Rebatcher`),
which also pads the rank's last batch with valid=False duplicates when unreadable evaluation
videos were dropped, so every rank yields exactly `len(loader)` batches (DDP needs the same count
on every rank). Workers are persistent: they read the epoch from a shared counter that
`set_epoch` writes, and rebuild the plan themselves. A worker that dies is replaced and the epoch
goes on with its next batch (`restart.py`, at most DATA_LOADER.MAX_WORKER_RESTARTS times).
`loader_clips_per_s` adds up what the workers produced per second of their own work this epoch
(the trainer reports it per rank).

GPU decoding (DATA.DECODER_DEVICE cuda, torchcodec on NVDEC): workers are spawned (CUDA cannot
run in forked processes), each decodes on this process's GPU and hands its batches over through
CUDA IPC, so clips never visit host memory and nothing is pinned; the GPU transforms take them.
Each worker holds its own CUDA context (several hundred MB of GPU memory): a few workers suffice.

GPU transforms: clips of different videos must stack, so the CPU resizes frames whose size differs
from the split's most common (height, width) to that size (videos already at that size, e.g. all
340x256 Kinetics clips, are untouched); the GPU does the recipe's scale, crop, flip and normalise.
"""
import collections
import functools
import logging
import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader

from vbench.config import config_value
from vbench.errors import ConfigError

from .buffers import BufferLedger, ReusedTensors, busy_marks
from .clip_list import index_files, restrict_to_clip_list
from .dataset import ClipDataset, EvalClip, RawClip, TrainClip
from .decoders import get_decoder
from .fingerprint import split_fingerprint
from .registry import get_dataset
from .resources import decoder_threads, gpu_transforms, keep_freed_memory, loader_workers
from .restart import WorkerRestarts
from .sampling import ClipSettings, PlanSpec
from .transforms import EvalTransform, GpuTransform, TrainTransform

logger = logging.getLogger(__name__)
TENSOR_KEYS = ("clips", "spatial_idx", "labels", "video_ids", "valid", "frame_indices")


# ------------------------------------------------------------------------------------ re-batching
def _concat(batches, cat=torch.cat):
    if len(batches) == 1:
        return batches[0]
    full = [b for b in batches if len(b["labels"])] or batches[:1]
    out = {key: (cat if key == "clips" else torch.cat)([b[key] for b in full]) for key in TENSOR_KEYS}
    out["bad_videos"] = [item for b in batches for item in b["bad_videos"]]
    return out


def _select(batch, index, valid=None):
    out = {key: batch[key][index] for key in TENSOR_KEYS}
    if valid is not None:
        out["valid"] = torch.full_like(out["valid"], valid)
    out["bad_videos"] = []
    return out


class Rebatcher:
    """Turns the workers' batches (full ones and one partial per worker) into exactly
    `num_batches` batches of `batch_size`; missing clips become valid=False duplicates."""

    def __init__(self, batch_size, num_batches, blank_clip, merges=None):
        self.batch_size, self.num_batches, self.blank_clip = batch_size, num_batches, blank_clip
        self.pending, self.emitted, self.last = [], 0, None
        self.merges = merges or ReusedTensors()  # memory for merged batches, kept across epochs

    def push(self, batch):
        self.pending.append(batch)
        out = []
        while sum(len(b["labels"]) for b in self.pending) >= self.batch_size:
            merged = _concat(self.pending, self.merges.cat)
            head = {k: merged[k][:self.batch_size] for k in TENSOR_KEYS}
            head["bad_videos"] = merged["bad_videos"]
            rest = _select(merged, slice(self.batch_size, None))
            self.pending = [rest] if len(rest["labels"]) else []
            out.append(self._count(head))
        return out

    def finish(self):
        """The remaining batches (padded) and any reports left with no batch to carry them."""
        reports = [item for b in self.pending for item in b["bad_videos"]]
        clips = [b for b in self.pending if len(b["labels"])]
        out = []
        if clips and self.emitted >= self.num_batches:
            raise RuntimeError(f"the loader produced more clips than its {self.num_batches} planned batches")
        if clips:
            merged = _concat(clips, self.merges.cat)
            size = len(merged["labels"])
            pad = _select(merged, torch.arange(self.batch_size - size) % size, valid=False)
            out.append(self._count(_concat([merged, pad], self.merges.cat)))
        while self.emitted < self.num_batches:
            out.append(self._count(self._padding_batch()))
        if out:
            out[0]["bad_videos"] = reports + out[0]["bad_videos"]
            reports = []
        return out, reports

    def _padding_batch(self):
        if self.last is not None:
            return _select(self.last, slice(None), valid=False)
        clip = self.blank_clip()
        n = self.batch_size
        batch = {"clips": clip.unsqueeze(0).expand(n, *clip.shape).clone(),
                 "spatial_idx": torch.ones(n, dtype=torch.int64),
                 "labels": torch.zeros(n, dtype=torch.int64), "video_ids": torch.zeros(n, dtype=torch.int64),
                 "valid": torch.zeros(n, dtype=torch.bool),
                 "frame_indices": torch.zeros(n, 0, dtype=torch.int64), "bad_videos": []}
        return batch

    def _count(self, batch):
        self.emitted += 1
        if self.emitted > self.num_batches:
            raise RuntimeError(f"the loader produced more than the {self.num_batches} planned batches")
        self.last = batch
        return batch


# ------------------------------------------------------------------------------------ loader
class ClipLoader:  # follows protocol.BatchLoader, what the engine uses
    """One rank's batches for an epoch; see `build_loader`."""

    def __init__(self, dataset, data_loader, class_names, num_videos, gpu_transform=None,
                 max_restarts=0, memory_settings=None):
        self.dataset, self.data_loader = dataset, data_loader
        self._ledger = BufferLedger(dataset.busy_marks) if dataset.busy_marks is not None else None
        self.restarts = WorkerRestarts(data_loader, dataset.resume, self._ledger, max_restarts,
                                       "train" if dataset.spec.training else "eval", dataset.spec.rank,
                                       memory_settings or {})
        self.batches_yielded = 0  # over the loader's life: progress, for the engine's watchdog
        self._made = dataset.made.numpy()  # read without torch: the watchdog reads it from its thread
        self._merges = ReusedTensors()
        self.class_names, self.num_videos = list(class_names), num_videos
        self.infos, self.spec = dataset.infos, dataset.spec
        self.batch_size = self.spec.batch_size
        self.gpu_transform = gpu_transform
        self.epoch = 0
        self._bad_found = []  # (rel_path, reason) found while decoding this epoch
        self._distinct = []  # distinct valid videos per batch, this epoch
        self._work = {}  # worker -> [clips, seconds worked], this epoch
        self._update_plan()
        self._seed_gpu_generator()

    def _update_plan(self):
        self.plan = self.spec.plan(self.infos, self.epoch)
        sharded = self.spec.shard(self.plan, self.epoch)
        self.batches_per_rank = sharded.batches_per_rank
        self.num_clips = len(self.plan.clips)
        self.short_videos = len(self.plan.short_videos)
        self.index_excluded = [(self.infos[v].rel_path, reason) for v, reason in self.plan.excluded]

    @property
    def excluded(self):
        """(rel_path, reason) of videos left out: unreadable in the index, and for evaluation also
        those this rank failed to decode so far this epoch."""
        found = [] if self.spec.training else self._bad_found
        return self.index_excluded + found

    @property
    def bad_videos(self):
        """(rel_path, reason) of videos this rank failed to decode this epoch."""
        return list(self._bad_found)

    def fingerprint(self):
        """The split's dataset fingerprint (`vbench.data.fingerprint`), as results.json records it."""
        return split_fingerprint(self.infos, self.index_excluded, len(self.class_names), self.num_clips)

    def file_paths(self):
        """The video files this loader reads (the split's readable videos)."""
        return [info.path for info in self.infos if info.ok]

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        self.dataset.set_epoch(self.epoch)
        self._update_plan()
        self._seed_gpu_generator()

    def _seed_gpu_generator(self):
        seed = np.random.SeedSequence([self.spec.seed, self.epoch, 4, self.spec.rank]).generate_state(1)[0]
        self._gpu_generator = torch.Generator().manual_seed(int(seed))  # GPU transforms' CPU draws

    def __len__(self):
        return self.batches_per_rank

    def __iter__(self):
        self._bad_found, self._distinct, self._work = [], [], {}
        seen = set()
        rebatcher = Rebatcher(self.batch_size, self.batches_per_rank, self._blank_clip, self._merges)
        held = None
        for worker, batch in self.restarts.batches(self.epoch, self.batches_per_rank):
            process, slot = batch.pop("buffer")
            if self._ledger is not None:
                self._ledger.received(batch["clips"], process, slot)
            work = self._work.setdefault(worker, [0, 0.0])
            work[0] += len(batch["labels"])
            work[1] += batch.pop("load_s")
            batch["bad_videos"] = self._first_reports(batch["bad_videos"], seen)
            for out in rebatcher.push(batch):
                if held is not None:
                    yield self._emit(held)
                held = out
        tail, reports = rebatcher.finish()
        for out in tail:
            if held is not None:
                yield self._emit(held)
            held = out
        if held is not None:
            held["bad_videos"] = held["bad_videos"] + reports
            yield self._emit(held)

    def _first_reports(self, reports, seen):
        new = []
        for path, reason in reports:
            if path not in seen:
                seen.add(path)
                new.append((path, reason))
        self._bad_found.extend(new)
        return new

    def _blank_clip(self):
        if self.spec.training:
            bad = "; ".join(f"{path}: {reason}" for path, reason in self._bad_found)
            raise RuntimeError(f"rank {self.spec.rank} could not decode any of its training videos this "
                               f"epoch ({bad}). Check the files with `vbench data check`.")
        return self.dataset.blank_clip()

    def _emit(self, batch):
        self.batches_yielded += 1
        self._distinct.append(len(set(batch["video_ids"][batch["valid"]].tolist())))
        return batch

    def progress(self):
        """A count that grows while this loader works: batches yielded, and batches its workers
        made (replays after a restart included). The engine's watchdog reads it."""
        return self.batches_yielded + int(self._made.sum())

    def loader_clips_per_s(self):
        """Clips per second this rank's workers produced this epoch while working, summed over
        the workers (the time a worker waited to be asked for a batch is left out): what the loader
        could deliver if the training loop never made it wait. None before any batch."""
        rates = [clips / seconds for clips, seconds in self._work.values() if seconds > 0]
        return sum(rates) if rates else None

    def mixing_stats(self):
        """Batches seen so far this epoch and their mean number of distinct (valid) videos."""
        n = len(self._distinct)
        return {"batches": n, "mean_distinct_videos": sum(self._distinct) / n if n else 0.0}

    def close(self):
        """Stop the persistent worker processes now; iterating again starts new ones.

        Call it when a run is done with the loader. Left to interpreter exit, torch's clean-up of
        persistent workers with pinned memory waits up to 5 s for each worker before stopping it
        (pytorch/pytorch#81794): two loaders of 15 workers, 150 s after a run on a 16-core GPU
        machine, where a finished X3D-M run did not exit within 100 s."""
        iterator = self.data_loader._iterator  # private, but the only handle on the workers
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            for worker in iterator._workers:
                if worker.is_alive():  # did not stop when asked and ignores SIGTERM (WorkerInit)
                    worker.kill()
        self.data_loader._iterator = None

    def to_device(self, batch, device):
        """(clips float B C T H W, labels) on `device`; runs the GPU transforms when they are on."""
        clips = batch["clips"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        if self.gpu_transform is not None:  # spatial_idx stays on the CPU: reading it never syncs
            clips = self.gpu_transform(clips, batch["spatial_idx"], self._gpu_generator)
        return clips, labels


class WorkerInit:
    """Seeds Python, NumPy and torch in a loader worker from (seed, epoch, rank, worker), and makes
    it ignore a scheduler's SIGUSR1 and SIGTERM (Slurm signals every process of a job): the training
    process saves at its next step and then closes the loader; a worker killed first would fail that
    step. Workers also end by themselves when the training process is gone (torch's watchdog)."""

    def __init__(self, seed, rank, epoch_counter):
        self.seed, self.rank, self.epoch_counter = seed, rank, epoch_counter

    def __call__(self, worker_id):
        seed_seq = np.random.SeedSequence([self.seed, int(self.epoch_counter[0]), self.rank, worker_id])
        seed = int(seed_seq.generate_state(1)[0])
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        keep_freed_memory()
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def per_rank_batch_size(cfg, training, world_size):
    key = "TRAIN.BATCH_SIZE" if training else "TEST.BATCH_SIZE"
    total = cfg.TRAIN.BATCH_SIZE if training else cfg.TEST.BATCH_SIZE
    parts = world_size * (cfg.TRAIN.ACCUM_STEPS if training else 1)
    if total % parts:
        raise ConfigError(f"{key} = {total} must divide evenly into {world_size} processes"
                          + (f" x TRAIN.ACCUM_STEPS = {cfg.TRAIN.ACCUM_STEPS}" if training else "") + ".")
    return total // parts


def modal_frame_size(infos):
    """The most common (height, width) among readable videos."""
    sizes = collections.Counter((i.height, i.width) for i in infos if not getattr(i, "error", None))
    return sizes.most_common(1)[0][0]


def decoder_device(cfg):
    """Where clips are decoded: "cpu", or for DATA.DECODER_DEVICE cuda this process's GPU, named
    with its index so that spawned workers (whose current device is GPU 0) decode on it too."""
    if cfg.DATA.DECODER_DEVICE == "cuda":
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def _clip_transform(cfg, training):
    if gpu_transforms(cfg):
        return RawClip()
    return TrainClip(TrainTransform(cfg)) if training else EvalClip(EvalTransform(cfg))


def build_loader(cfg, split, training, rank=0, world_size=1, transform=None):
    """A `ClipLoader` over split `split` of DATA.PATH_TO_DATA_DIR for process `rank` of `world_size`.

    transform: override the per-clip transform (`TrainClip`, `EvalClip` or `RawClip`; RawClip gives
    the decoded uint8 clips); None follows the config.
    """
    key = "TRAIN.DATASET" if training else "TEST.DATASET"
    entries, class_names = get_dataset(config_value(cfg, key), key)(cfg, split)
    files = restrict_to_clip_list(entries, class_names, cfg.DATA.PATH_TO_DATA_DIR, split, cfg.DATA.CLIP_LIST)
    infos = index_files(files, cache_dir=cfg.DATA.INDEX_CACHE_DIR,
                        num_workers=cfg.DATA_LOADER.INDEX_WORKERS, progress=rank == 0)
    if not infos:
        raise ValueError(f"split '{split}' of {cfg.DATA.PATH_TO_DATA_DIR} lists no videos.")
    return loader_from_index(cfg, infos, files.class_names, training, rank, world_size, transform,
                             name=f"split '{split}' of {cfg.DATA.PATH_TO_DATA_DIR}")


def loader_from_index(cfg, infos, class_names, training, rank=0, world_size=1, transform=None,
                      decoder_factory=None, name="the split"):
    """`build_loader` from an index already built (`infos`, index = video id)."""
    num_workers = loader_workers(cfg)
    threads = decoder_threads(cfg)
    spec = PlanSpec(ClipSettings.from_cfg(cfg), training,
                    cfg.TRAIN.SAMPLING if training else cfg.TEST.SAMPLING,
                    per_rank_batch_size(cfg, training, world_size), rank, world_size, num_workers,
                    cfg.RNG_SEED, cfg.TRAIN.CLIPS_PER_VIDEO, cfg.TEST.NUM_ENSEMBLE_VIEWS,
                    cfg.TEST.NUM_SPATIAL_CROPS)
    plan = spec.plan(infos, 0)
    if not plan.clips:
        reasons = "; ".join(f"{infos[v].rel_path}: {r}" for v, r in plan.excluded[:5])
        raise ValueError(f"{name} has no readable video ({len(infos)} listed, {len(plan.excluded)} "
                         f"unreadable: {reasons}). Check the files with `vbench data check`.")
    device = decoder_device(cfg)
    if decoder_factory is None:
        decoder_factory = functools.partial(get_decoder, backend=cfg.DATA.DECODING_BACKEND,
                                            threads=threads, device=device)
    gpu = gpu_transforms(cfg)
    dataset = ClipDataset(infos, spec, transform or _clip_transform(cfg, training), decoder_factory,
                          shuffle_buffer=cfg.DATA_LOADER.SHUFFLE_BUFFER,
                          max_substitute_tries=cfg.DATA.MAX_SUBSTITUTE_TRIES,
                          frame_size=modal_frame_size(infos) if gpu else None,
                          decode_per_clip=cfg.DATA.DECODE_PER_CLIP,
                          busy_marks=busy_marks(num_workers, cfg.DATA_LOADER.PREFETCH_FACTOR))
    extra = {}
    if num_workers > 0:
        extra = {"prefetch_factor": cfg.DATA_LOADER.PREFETCH_FACTOR, "persistent_workers": True,
                 "worker_init_fn": WorkerInit(cfg.RNG_SEED, rank, dataset.epoch)}
        if device != "cpu":
            extra["multiprocessing_context"] = "spawn"  # CUDA decoding cannot run in forked workers
    # clips decoded on the GPU are there already (and pinning a CUDA tensor raises)
    pin_memory = cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available() and device == "cpu"
    data_loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                             **extra)
    gpu_transform = None
    if gpu:
        gpu_transform = GpuTransform(cfg, train=training)
    memory = {"DATA_LOADER.NUM_WORKERS": num_workers, "DATA_LOADER.PREFETCH_FACTOR": cfg.DATA_LOADER.PREFETCH_FACTOR}
    if training:
        memory["DATA_LOADER.SHUFFLE_BUFFER"] = cfg.DATA_LOADER.SHUFFLE_BUFFER
    loader = ClipLoader(dataset, data_loader, class_names, len(infos), gpu_transform,
                        cfg.DATA_LOADER.MAX_WORKER_RESTARTS, memory)
    loader.num_workers, loader.decoder_threads = num_workers, threads
    logger.info("%s loader on %s: %d videos, %d clips per epoch (%d short videos padded, %d "
                "unreadable), %d batches of %d per rank on %d ranks", "train" if training else "eval",
                name, len(infos), loader.num_clips, loader.short_videos, len(loader.index_excluded),
                len(loader), spec.batch_size, world_size)
    return loader
