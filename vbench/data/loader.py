"""`build_loader`: split -> index -> epoch plan -> `ClipDataset` in a torch DataLoader -> `ClipLoader`.

Batches are dicts: "clips" (float B C T H W, or uint8 B T H W C with DATA.GPU_TRANSFORMS),
"spatial_idx", "labels", "video_ids" (index into the split), "valid" (False = padding duplicate),
"frame_indices" (int64 B x T: the native frames of each clip, for checks) and "bad_videos"
((rel_path, reason) found while making the batch, each reported once per epoch).

Workers yield pieces of DATA_LOADER.PIECE_SIZE clips (fewer than a batch), collated in the
worker into reused shared memory (`buffers.py`); the main process joins them into batches in the
order of `sampling.piece_stream` (`join.PieceJoiner`), in reused blocks that are pinned when the
batches go to a GPU, and pads the rank's last batch with valid=False duplicates when unreadable
evaluation videos were dropped, so every rank yields exactly `len(loader)` batches (DDP needs the
same count on every rank). A batch spans several workers, so the epoch's first batch waits for a
piece from each of them, not for one worker to decode a whole batch. Workers are persistent: they
read the epoch from a shared counter that `set_epoch` writes, and rebuild the plan themselves; a
worker done with its epoch makes the next one's first pieces while the others finish
(DATA_LOADER.START_AHEAD, `ahead.py`), so the next epoch (or evaluation) starts with them ready.
A worker that dies is replaced and the epoch goes on with the same pieces (`restart.py`, at most
DATA_LOADER.MAX_WORKER_RESTARTS times).
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

from vbench.config import AUTO, config_value
from vbench.errors import ConfigError

from .buffers import BlockPool, BufferLedger, busy_marks
from .clip_list import index_files, restrict_to_clip_list
from .dataset import ClipDataset, EvalClip, RawClip, TrainClip
from .decoders import get_decoder
from .decoders.torchcodec import check_cuda_decoding
from .fingerprint import split_fingerprint
from .join import BackgroundJoin, PieceJoiner
from .registry import get_dataset
from .resources import decoder_device_choice, decoder_threads, gpu_transforms, keep_freed_memory, loader_workers
from .restart import WorkerRestarts
from .sampling import ClipSettings, PlanSpec
from .transforms import EvalTransform, GpuTransform, TrainTransform

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ loader
class ClipLoader:  # follows protocol.BatchLoader, what the engine uses
    """One rank's batches for an epoch; see `build_loader`."""

    def __init__(self, dataset, data_loader, class_names, num_videos, gpu_transform=None, pin=False,
                 max_restarts=0, memory_settings=None):
        self.dataset, self.data_loader = dataset, data_loader
        self._ledger = BufferLedger(dataset.busy_marks) if dataset.busy_marks is not None else None
        self.restarts = WorkerRestarts(data_loader, dataset.resume, self._ledger, max_restarts,
                                       "train" if dataset.spec.training else "eval", dataset.spec.rank,
                                       dataset.spec.batch_size, memory_settings or {})
        self.batches_yielded = 0  # over the loader's life: progress, for the engine's watchdog
        self._made = dataset.made.numpy()  # read without torch: the watchdog reads it from its thread
        self._blocks = BlockPool(pin=pin)  # the joined batches' memory, kept across epochs
        self._background = None  # the BackgroundJoin of the epoch being iterated
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
        iterator = self.restarts.begin()  # in this thread: torch sets up its signal handling here
        pieces = self.restarts.pieces(iterator, self.epoch, self.batches_per_rank)
        if self.spec.num_workers <= 0:  # everything in this process, in this thread
            yield from self._batches(pieces)
            return
        device = torch.cuda.current_device() if self._blocks.pin else None
        self._background = BackgroundJoin(self._batches(pieces), cuda_device=device)
        try:
            yield from self._background
        finally:
            self._background.close()
            self._background = None

    def _batches(self, pieces):
        """The epoch's batches, joined from the workers' pieces (in the background join thread when
        there are workers; it is the only thread using the joiner, the ledger and the counts)."""
        seen = set()
        joiner = PieceJoiner(self.spec.num_workers, self.batch_size, self.batches_per_rank,
                             self._blank_clip, self._blocks, pass_through=not self._blocks.pin)
        held = None
        for piece in pieces:
            process, slot = piece.pop("buffer")
            if self._ledger is not None:
                self._ledger.received(piece["clips"], process, slot)
            work = self._work.setdefault(piece["piece"][0], [0, 0.0])  # per plan worker
            work[0] += len(piece["labels"])
            work[1] += piece.pop("load_s")
            piece["bad_videos"] = self._first_reports(piece["bad_videos"], seen)
            for out in joiner.push(piece):
                if held is not None:
                    yield self._emit(held)
                held = out
        tail, reports = joiner.finish()
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
        """A count that grows while this loader works: batches yielded, and pieces its workers made
        (replays after a restart included). The engine's watchdog reads it."""
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
        if self._background is not None:  # an epoch left unfinished: stop joining it first
            self._background.close()
            self._background = None
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
        if clips.device != batch["clips"].device:  # the block may be reused once this copy is done
            self._blocks.copied(batch["clips"])
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


def batching(cfg, world_size):
    """What decides which clips share a training batch and in what order, besides the seed and the
    data: processes, loader workers per process and clips per piece (docs/PROTOCOL.md, section 5)."""
    batch = per_rank_batch_size(cfg, True, world_size)
    return {"processes": int(world_size), "DATA_LOADER.NUM_WORKERS": loader_workers(cfg),
            "DATA_LOADER.PIECE_SIZE": piece_size(cfg, batch)}


def modal_frame_size(infos):
    """The most common (height, width) among readable videos."""
    sizes = collections.Counter((i.height, i.width) for i in infos if not getattr(i, "error", None))
    return sizes.most_common(1)[0][0]


def piece_size(cfg, batch_size):
    """Clips per piece a worker sends: DATA_LOADER.PIECE_SIZE (0: a whole batch), at most a batch."""
    size = cfg.DATA_LOADER.PIECE_SIZE
    return batch_size if size <= 0 else min(int(size), batch_size)


def pieces_ahead(cfg, batch_size, pieces, num_workers):
    """Pieces each worker may have ready ahead of the training loop (torch's prefetch factor): the
    rank's workers together DATA_LOADER.PREFETCH_FACTOR batches ahead, each at least 2 pieces."""
    per_batch = -(-batch_size // pieces)
    return max(2, -(-cfg.DATA_LOADER.PREFETCH_FACTOR * per_batch // max(1, num_workers)))


def decoder_device(cfg, infos=None):
    """Where clips are decoded: "cpu", or for DATA.DECODER_DEVICE cuda (or "auto" where the rule of
    `resources.decoder_device_choice` picks NVDEC for the split's frame size, with GPU transforms)
    this process's GPU, named with its index so that spawned workers (whose current device is GPU 0)
    decode on it too."""
    choice = cfg.DATA.DECODER_DEVICE
    if choice == AUTO:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
        frame_size = modal_frame_size(infos) if infos else (0, 0)
        choice = decoder_device_choice(cfg, frame_size, gpu) if gpu_transforms(cfg) else "cpu"
        if choice == "cuda":
            try:  # the rule's pick needs torchcodec's CUDA build and NVDEC here
                check_cuda_decoding(f"cuda:{torch.cuda.current_device()}")
            except RuntimeError as error:
                logger.warning("DATA.DECODER_DEVICE auto: NVDEC measured faster here, but %s; decoding "
                               "on the CPU", error)
                choice = "cpu"
    if choice == "cuda":
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
    device = decoder_device(cfg, infos)
    if decoder_factory is None:  # NVDEC decodes through torchcodec
        backend = "torchcodec" if device != "cpu" else cfg.DATA.DECODING_BACKEND
        decoder_factory = functools.partial(get_decoder, backend=backend, threads=threads, device=device)
    gpu = gpu_transforms(cfg)
    batch_size = spec.batch_size
    pieces = piece_size(cfg, batch_size)
    prefetch = pieces_ahead(cfg, batch_size, pieces, num_workers)
    # the next epoch's first pieces, made by each worker once its epoch is done (CPU decoding only)
    ahead = prefetch if cfg.DATA_LOADER.START_AHEAD and num_workers > 0 and device == "cpu" else 0
    dataset = ClipDataset(infos, spec, transform or _clip_transform(cfg, training), decoder_factory,
                          shuffle_buffer=cfg.DATA_LOADER.SHUFFLE_BUFFER,
                          max_substitute_tries=cfg.DATA.MAX_SUBSTITUTE_TRIES,
                          frame_size=modal_frame_size(infos) if gpu else None,
                          decode_per_clip=cfg.DATA.DECODE_PER_CLIP,
                          busy_marks=busy_marks(num_workers, prefetch + ahead), piece_size=pieces,
                          ahead_pieces=ahead, epochs=cfg.SOLVER.MAX_EPOCH if training else None)
    extra = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch, "persistent_workers": True,
                 "generator": torch.Generator(),  # torch's base seed: never from the trainer's stream
                 "worker_init_fn": WorkerInit(cfg.RNG_SEED, rank, dataset.epoch)}
        if device != "cpu":
            extra["multiprocessing_context"] = "spawn"  # CUDA decoding cannot run in forked workers
    data_loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, **extra)
    # the main process joins the pieces into pinned blocks itself (clips decoded on the GPU are there already)
    pin = cfg.DATA_LOADER.PIN_MEMORY and cfg.NUM_GPUS > 0 and torch.cuda.is_available() and device == "cpu"
    gpu_transform = None
    if gpu:
        gpu_transform = GpuTransform(cfg, train=training)
    memory = {"DATA_LOADER.NUM_WORKERS": num_workers, "DATA_LOADER.PREFETCH_FACTOR": cfg.DATA_LOADER.PREFETCH_FACTOR}
    if training:
        memory["DATA_LOADER.SHUFFLE_BUFFER"] = cfg.DATA_LOADER.SHUFFLE_BUFFER
    loader = ClipLoader(dataset, data_loader, class_names, len(infos), gpu_transform, pin,
                        cfg.DATA_LOADER.MAX_WORKER_RESTARTS, memory)
    loader.num_workers, loader.decoder_threads, loader.piece_size = num_workers, threads, pieces
    loader.decoder_device = device
    logger.info("%s loader on %s: %d videos, %d clips per epoch (%d short videos padded, %d "
                "unreadable), %d batches of %d per rank on %d ranks", "train" if training else "eval",
                name, len(infos), loader.num_clips, loader.short_videos, len(loader.index_excluded),
                len(loader), spec.batch_size, world_size)
    return loader
