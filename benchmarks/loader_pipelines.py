"""The pipelines `bench_loader.py` measures, each as an object with `epoch(n)` (yields the valid
clips of each batch it delivers, consumed as a training loop would) and `worker_pids()`. vbench is
imported inside the functions: `bench_loader.py --code DIR` chooses which checkout provides it."""
import av
import numpy as np
import torch
from torch.utils.data import DataLoader


def touch(tensor):
    """Read one byte of every 4 KiB page (what a model's first layer or a pinned copy would fault in)."""
    flat = tensor.reshape(-1).view(torch.uint8) if tensor.is_contiguous() else tensor.reshape(-1)
    return int(flat[::4096].sum()) if flat.numel() else 0


class VbenchPipeline:
    def __init__(self, cfg, infos, class_names, device):
        from vbench.data.loader import loader_from_index
        self.loader = loader_from_index(cfg, infos, class_names, training=True)
        self.device = device

    def epoch(self, epoch):
        """Valid clips of each batch of epoch `epoch`, consumed as the trainer would."""
        self.loader.set_epoch(epoch)
        for batch in self.loader:
            if self.device.type == "cuda":
                self.loader.to_device(batch, self.device)
            else:
                touch(batch["clips"])
            yield int(batch["valid"].sum())
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def worker_pids(self):
        iterator = self.loader.data_loader._iterator  # private, but the only map to the pids
        return [w.pid for w in iterator._workers] if iterator is not None else []


class TorchPipeline:
    """A plain shuffled torch DataLoader over one of the datasets below (persistent workers)."""

    def __init__(self, dataset, workers, batch_size, device, clips_of=None):
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                 persistent_workers=True, pin_memory=device.type == "cuda",
                                 generator=torch.Generator().manual_seed(0))
        self.device, self.clips_of = device, clips_of

    def epoch(self, epoch):
        for batch in self.loader:
            if self.clips_of is not None:  # decode-only: a video's worth of the plan's clips
                yield sum(self.clips_of[int(v)] for v in batch)
                continue
            clips, labels = batch
            if self.device.type == "cuda":
                clips.to(self.device, non_blocking=True)
            else:
                touch(clips)
            yield len(labels)

    def worker_pids(self):
        iterator = self.loader._iterator
        return [w.pid for w in iterator._workers] if iterator is not None else []


def rgb_converter():
    """vbench's frame -> RGB conversion (`to_rgb24`), or PyAV's default in a checkout older than it."""
    try:
        from vbench.data.decoders.pyav import to_rgb24
    except ImportError:
        return lambda frame: frame.to_ndarray(format="rgb24")
    return to_rgb24


def decode_with_seek(info, frames):
    """The clip's native frames: seek to the keyframe at or before its first frame, decode to its
    last, convert every frame of that range to RGB, keep the requested ones. The conversion is
    vbench's (`to_rgb24`), so the ratio to the vbench loader measures the decoding strategy."""
    first, last = frames[0], frames[-1]
    to_rgb24 = rgb_converter()
    with av.open(info.path) as container:
        stream = container.streams.video[0]
        ticks_per_frame = 1 / (info.fps * stream.time_base)
        start_pts = info.start_pts or 0
        container.seek(int(start_pts + first * ticks_per_frame), backward=True, any_frame=False,
                       stream=stream)
        decoded = {}
        for frame in container.decode(stream):
            index = round((frame.pts - start_pts) / ticks_per_frame)
            if index > last:
                break
            if index >= first:
                decoded[index] = to_rgb24(frame)
    return torch.from_numpy(np.stack([decoded[i] for i in frames]))


class PerClipDataset:
    def __init__(self, infos, clips, transform, seed=0):
        self.infos, self.clips, self.transform, self.seed = infos, clips, transform, seed

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        ref = self.clips[i]
        info = self.infos[ref.video]
        frames = decode_with_seek(info, ref.frames)
        return self.transform(frames, torch.Generator().manual_seed(self.seed + i)), info.label


class DecodeAll:
    def __init__(self, infos):
        self.infos = infos

    def __len__(self):
        return len(self.infos)

    def __getitem__(self, i):
        to_rgb24 = rgb_converter()
        with av.open(self.infos[i].path) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                to_rgb24(frame)
        return i


def build_pipeline(name, cfg, infos, class_names, workers, device):
    if name.startswith("vbench"):
        return VbenchPipeline(cfg, infos, class_names, device)
    from vbench.data.sampling import plan_from_cfg
    plan = plan_from_cfg(infos, cfg, training=True)
    if name == "per_clip":
        from vbench.data.transforms import TrainTransform
        dataset = PerClipDataset(infos, plan.clips, TrainTransform(cfg))
        return TorchPipeline(dataset, workers, cfg.TRAIN.BATCH_SIZE, device)
    clips_of = {video: len(group) for video, group in plan.by_video().items()}
    return TorchPipeline(DecodeAll(infos), workers, 1, device, clips_of)


def skip_reason(name, device):
    if name != "vbench_nvdec":
        return None
    if device.type != "cuda":
        return "no CUDA device"
    try:  # a tiny clip decoded on the GPU: names what is missing (torchcodec, its CUDA build, NVDEC)
        from vbench.data.decoders.torchcodec import check_cuda_decoding
        check_cuda_decoding("cuda:0")
    except (ImportError, RuntimeError) as error:
        return str(error).splitlines()[0]
    return None
