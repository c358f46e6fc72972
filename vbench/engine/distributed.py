"""Process-group helpers: who am I, on which device, and the few collectives the engine uses.

One process per GPU (NCCL) or NUM_CPU_PROCS processes on the CPU (gloo). Every helper also works
without a process group (world size 1), so single-process runs need no special cases.
"""
import datetime
import hashlib
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vbench.bench.sysinfo import GIB, cpu_model, ram_gib
from vbench.config.launcher import TORCHRUN_ENV


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""
    init_method: str = ""  # where the process group met ("tcp://host:port" or "env://"); "" alone

    @property
    def is_main(self):
        return self.rank == 0


def launched_by_torchrun():
    """True when torchrun (or another env:// launcher) already started one process per rank."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def resolve_backend(cfg):
    """DIST_BACKEND "auto" means NCCL on GPUs and gloo on the CPU."""
    if cfg.DIST_BACKEND != "auto":
        return cfg.DIST_BACKEND
    return "nccl" if cfg.NUM_GPUS > 0 else "gloo"


def free_local_address():
    """A tcp:// address on this machine with a port nobody listens on (single-node runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def device_for(cfg, local_rank):
    if cfg.NUM_GPUS > 0:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_process(cfg, local_rank, procs_per_node, init_method):
    """Join the process group (when the run has more than one process) and return the context.

    `init_method` is "env://" under torchrun; otherwise a tcp:// address and the rank comes from
    SHARD_ID * procs_per_node + local_rank, as in SlowFast.
    """
    if init_method == "env://":
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
    else:
        rank = cfg.SHARD_ID * procs_per_node + local_rank
        world = procs_per_node * cfg.NUM_SHARDS
    device = device_for(cfg, local_rank)
    backend = ""
    if world > 1:
        backend = resolve_backend(cfg)
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, init_method=init_method, world_size=world,
                                rank=rank, timeout=datetime.timedelta(minutes=30), **kwargs)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device,
                       backend=backend, init_method=init_method if world > 1 else "")


def short_hash(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def device_description(device):
    """{"device", "device_model", "memory_gib", "device_id"} of the device a process trains on.

    device_id tells GPUs apart across nodes (a hash of the GPU's UUID: two processes on one GPU
    count it once); on the CPU it is the host (a run counts as one device there, see results.json).
    """
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        uuid = getattr(props, "uuid", None)
        gpu = str(uuid) if uuid is not None else f"{socket.gethostname()}:{device.index}"
        return {"device": "cuda", "device_model": props.name,
                "memory_gib": round(props.total_memory / GIB, 2), "device_id": short_hash(gpu)}
    return {"device": "cpu", "device_model": cpu_model(), "memory_gib": ram_gib(),
            "device_id": short_hash(socket.gethostname())}


def gather_ranks(ctx, node):
    """Every rank's {"rank", "node", "local_rank", "host", device...} in rank order: the world as it
    really ran, for results.json (a collective: every process must call it). Host names are hashed."""
    mine = {"rank": ctx.rank, "node": int(node), "local_rank": ctx.local_rank,
            "host": short_hash(socket.gethostname()), **device_description(ctx.device)}
    return all_gather_objects(mine)


def shutdown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank():
    return dist.get_rank() if is_distributed() else 0


def get_world_size():
    return dist.get_world_size() if is_distributed() else 1


def barrier():
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor):
    """Sum `tensor` over every process in place (no-op alone) and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor):
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_objects(obj):
    """A list with every process's `obj`, indexed by rank."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, src=0):
    """Rank `src`'s `obj` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_buffers(module, name_filter=lambda name: True):
    """Average floating-point buffers (e.g. BN running stats) so every process holds the same."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for name, buf in module.named_buffers():
        if name_filter(name) and buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)


def wrap_ddp(model, device):
    """`model` in DistributedDataParallel, its gradients living in DDP's all-reduce buckets.

    AccumulateGrad keeps a gradient whose strides differ from its parameter's only in dimensions
    of size 1, but DDP compares every stride: a channels_last_3d (C_out, C_in, 1, 1, 1) weight has
    strides (C_in, 1, C_in, C_in, C_in), and some conv backends (the CPU's reference conv, for
    one) return its gradient with (C_in, 1, 1, 1, 1). DDP then warns "Grad strides do not match
    bucket view strides" and copies each gradient into its bucket (and back, without
    `gradient_as_bucket_view`). Here each gradient is allocated once, with its parameter's strides,
    and DDP makes it a view of its bucket; zeroed in place every step (`zero_grad_in_place`),
    backward adds straight into the buckets, whatever strides a backend returns: no layout to
    match and no copy either way.
    """
    for param in model.parameters():
        if param.requires_grad and param.grad is None:
            param.grad = torch.zeros_like(param)  # (preserve_format: the parameter's strides)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)


def zero_grad_in_place(model):
    """Whether the optimizer must zero `model`'s gradients in place rather than drop them (set to
    None): True for a `wrap_ddp` model, whose gradients are views of DDP's buckets."""
    return bool(getattr(model, "gradient_as_bucket_view", False))
