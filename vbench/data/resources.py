"""What the input pipeline takes from the machine: the rules behind the loader keys left to it
("auto"), and how its worker processes keep memory (`keep_freed_memory`).

`vbench.engine.resources` decides them once at launch (recorded under results.json "resolved");
the loader applies the same rules to a config nobody resolved (tests, benchmark scripts), so both
paths load the same way.

- DATA_LOADER.NUM_WORKERS "auto": with GPUs, the cores of this process's share of the node minus
  one (that one feeds the GPU: the training loop, joining pieces into pinned batches, the GPU
  transforms); on the CPU half of the share, at least one (the other half computes, `engine.launch`).
- DATA.DECODER_THREADS 0: the share's cores divided among the workers, at least one. FFmpeg's own
  default opens cores + 1 threads per open file in every worker: 15 workers on 16 cores ran 17
  threads each.
- DATA.DECODER_DEVICE "auto": "cuda" (NVDEC) only where a record in NVDEC_FASTER measured it faster
  than the CPU workers for this GPU and frame size; nowhere yet, so "cpu". Decided by the loader,
  which knows the videos' frame size (the split's most common).
- DATA.GPU_TRANSFORMS "auto": on when training on GPUs. Workers then send uint8 clips, 2.3x fewer
  bytes than float crops (the whole 256 x 340 frames against 224 x 224 crops in float32), and skip
  the CPU transform; the GPU resizes, crops, flips and normalises whole batches.
"""
import ctypes
import os

from vbench.config import AUTO

# Where NVDEC (DATA.DECODER_DEVICE cuda) measured faster than the CPU workers on the same machine:
# (substring of the GPU's name, fewest pixels per frame, the record in benchmarks/results/). Empty:
# never measured yet (benchmarks/gpu_suite.sh's nvdec step measures 340x256 and 1080p clips).
NVDEC_FASTER = ()


def nvdec_measured_faster(gpu_name, frame_size):
    """True when a record of NVDEC_FASTER covers this GPU and (height, width)."""
    pixels = frame_size[0] * frame_size[1]
    return any(name in gpu_name and pixels >= fewest for name, fewest, _ in NVDEC_FASTER)


def decoder_device_choice(cfg, frame_size, gpu_name=""):
    """DATA.DECODER_DEVICE, "auto" decided: "cuda" on a GPU run where NVDEC_FASTER says so."""
    value = cfg.DATA.DECODER_DEVICE
    if value != AUTO:
        return value
    return "cuda" if cfg.NUM_GPUS > 0 and nvdec_measured_faster(gpu_name, frame_size) else "cpu"


def usable_cores():
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def processes_per_node(cfg):
    """Training processes sharing this machine: torchrun's local world, else one per GPU (or
    NUM_CPU_PROCS on the CPU)."""
    if os.environ.get("LOCAL_WORLD_SIZE"):
        return int(os.environ["LOCAL_WORLD_SIZE"])
    return cfg.NUM_GPUS if cfg.NUM_GPUS > 0 else cfg.NUM_CPU_PROCS


def cores_per_process(cfg, cores=None):
    return max(1, (cores or usable_cores()) // max(1, processes_per_node(cfg)))


def loader_workers(cfg, cores=None):
    """DATA_LOADER.NUM_WORKERS, "auto" decided (see the module docstring)."""
    value = cfg.DATA_LOADER.NUM_WORKERS
    if value != AUTO:
        return int(value)
    share = cores_per_process(cfg, cores)
    return max(1, share - 1) if cfg.NUM_GPUS > 0 else max(1, share // 2)


def decoder_threads(cfg, cores=None):
    """DATA.DECODER_THREADS, 0 decided: the process's cores over its loader workers, at least 1."""
    if cfg.DATA.DECODER_THREADS > 0:
        return int(cfg.DATA.DECODER_THREADS)
    return max(1, cores_per_process(cfg, cores) // max(1, loader_workers(cfg, cores)))


def gpu_transforms(cfg):
    """DATA.GPU_TRANSFORMS, "auto" decided: on when training on GPUs."""
    value = cfg.DATA.GPU_TRANSFORMS
    return cfg.NUM_GPUS > 0 if value == AUTO else bool(value)


def loader_decisions(cfg, cores=None):
    """{key: value} for each loader key of `cfg` left to the machine ("auto", or 0 threads)."""
    decisions = {}
    if cfg.DATA_LOADER.NUM_WORKERS == AUTO:
        decisions["DATA_LOADER.NUM_WORKERS"] = loader_workers(cfg, cores)
    if cfg.DATA.DECODER_THREADS == 0:
        decisions["DATA.DECODER_THREADS"] = decoder_threads(cfg, cores)
    if cfg.DATA.GPU_TRANSFORMS == AUTO:
        decisions["DATA.GPU_TRANSFORMS"] = gpu_transforms(cfg)
    return decisions


def keep_freed_memory(limit=32 << 20):
    """In a worker process (loader or synthetic-data generator), glibc only, best effort: serve
    every allocation from the heap and keep up to 4 x `limit` bytes of freed memory instead of
    mmap/munmap per call. The transforms allocate ~10-20 MB per clip and a decoded video's frames
    are ~38 MB (past glibc's largest mmap threshold, 32 MB); without this every clip page-faults
    its buffers anew (measured: a third of a loader worker's CPU time in the kernel)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, limit)  # M_MMAP_THRESHOLD
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap at all, so blocks past the threshold reuse the heap too
        libc.mallopt(-1, 4 * limit)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
