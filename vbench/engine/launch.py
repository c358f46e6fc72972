"""Entry points and process launch: `vbench train`, `vbench test`, `tools/run_net.py`.

    python tools/run_net.py --cfg FILE [KEY VALUE ...]

One process per GPU on this node (torch.multiprocessing spawn, NCCL), NUM_CPU_PROCS processes
(gloo) with NUM_GPUS 0, one process per rank across NUM_SHARDS nodes rendezvousing at
INIT_METHOD (as in SlowFast; single-node runs pick a free local port instead), or, under torchrun,
exactly the processes torchrun started (RANK / WORLD_SIZE / LOCAL_RANK; nothing is spawned).
Every check that needs no data runs before any process starts or any work is done. When a
spawned process fails, the launcher says which rank and how, and how to resume (failures.py).
"""
import os
import signal
import sys
import tempfile
import time

import torch

from vbench.bench.results import RESULTS_FILE, mark_failed
from vbench.config import launcher_world, replace_values, world_corrections, world_size_of
from vbench.data.decoders.torchcodec import check_cuda_decoding, import_video_decoder
from vbench.data.resources import loader_workers, usable_cores
from vbench.data.synthetic import ensure_synthetic
from vbench.engine import distributed as du
from vbench.engine.defaults import run_test, run_train
from vbench.engine.failures import FailureNotes, WorkersFailed, join_workers, register_notes
from vbench.engine.log import setup_logging
from vbench.engine.lr_policy import LRSchedule
from vbench.engine.preemption import (
    REQUEUE_EXIT,
    Preempted,
    forwarding_signals,
    notices_kept,
    request_stop,
    signals_handled,
    stop_requested,
)
from vbench.engine.resources import resolve_resources
from vbench.errors import ConfigError


# ---------------------------------------------------------------------------- preflight
def check_devices(cfg):
    """NUM_GPUS must fit the GPUs this process can see; the backend must fit the device."""
    if cfg.NUM_GPUS > 0:
        if not torch.cuda.is_available():
            raise ConfigError(
                f"NUM_GPUS is {cfg.NUM_GPUS} but CUDA is not available here (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Set NUM_GPUS 0 "
                f"to train on the CPU, or install a CUDA build of torch on a GPU machine.")
        visible = torch.cuda.device_count()
        needed = int(os.environ.get("LOCAL_WORLD_SIZE", cfg.NUM_GPUS))
        if needed > visible:
            raise ConfigError(
                f"NUM_GPUS is {needed} but only {visible} GPU(s) are visible "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                f"set NUM_GPUS {visible} or less.")
    elif du.resolve_backend(cfg) == "nccl":
        raise ConfigError("DIST_BACKEND nccl needs GPUs; with NUM_GPUS 0 use gloo (or auto).")


def check_world(cfg, world_size):
    """Global batches must split evenly over the processes actually running."""
    for key, batch in (("TRAIN.BATCH_SIZE", cfg.TRAIN.BATCH_SIZE), ("TEST.BATCH_SIZE", cfg.TEST.BATCH_SIZE)):
        if batch % world_size:
            raise ConfigError(
                f"{key} = {batch} is the global batch and must divide evenly over the "
                f"{world_size} processes of this run; pick a multiple of {world_size}.")
    if (cfg.TRAIN.BATCH_SIZE // world_size) % cfg.TRAIN.ACCUM_STEPS:
        raise ConfigError(
            f"the per-process batch {cfg.TRAIN.BATCH_SIZE // world_size} must divide into "
            f"TRAIN.ACCUM_STEPS = {cfg.TRAIN.ACCUM_STEPS} micro-batches.")


def check_output_dir(cfg):
    path = cfg.OUTPUT_DIR
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test"):
            pass
    except OSError as err:
        raise ConfigError(
            f"OUTPUT_DIR '{path}' is not writable ({err.strerror or err}). Choose a folder you "
            f"can write to, e.g. OUTPUT_DIR ./output/my_run.") from None


def check_data_dir(cfg):
    path = cfg.DATA.PATH_TO_DATA_DIR
    if cfg.SYNTH.AUTO_GENERATE or os.path.isdir(path):
        return
    raise ConfigError(
        f"DATA.PATH_TO_DATA_DIR '{path}' does not exist. Download and prepare kinetics20 as "
        f"data/README.md explains, point DATA.PATH_TO_DATA_DIR at your dataset, or set "
        f"SYNTH.AUTO_GENERATE True to generate the synthetic dataset there.")


def check_decoder(cfg):
    """The torchcodec backend needs torchcodec and FFmpeg libraries it can load."""
    if cfg.DATA.DECODING_BACKEND != "torchcodec":
        return
    try:
        import_video_decoder()
    except RuntimeError as error:
        raise ConfigError(f"DATA.DECODING_BACKEND torchcodec: {error}") from None


def check_gpu_decoding(cfg, device):
    """DATA.DECODER_DEVICE cuda: decode a tiny clip on this process's GPU before any work, so a
    missing piece (torchcodec's CUDA build, NVDEC) is named here instead of failing every video.
    Runs in each training process, which holds a CUDA context anyway (the launcher does not)."""
    if cfg.DATA.DECODER_DEVICE != "cuda":
        return
    try:
        check_cuda_decoding(str(device))
    except RuntimeError as error:
        raise ConfigError(f"DATA.DECODER_DEVICE cuda: {error}") from None


def preflight(cfg, world_size=None):
    """Every impossible setting we can detect without touching data, before any work starts."""
    check_devices(cfg)
    check_decoder(cfg)
    check_world(cfg, world_size or world_size_of(cfg))
    check_output_dir(cfg)
    if cfg.TRAIN.ENABLE:
        LRSchedule(cfg, iters_per_epoch=1)  # raises ConfigError on an impossible schedule
    if cfg.TRAIN.ENABLE or cfg.TEST.ENABLE:
        check_data_dir(cfg)


# ---------------------------------------------------------------------------- processes
def cpu_compute_threads(cfg, procs_per_node):
    """Torch's CPU threads in a training process: its share of the cores minus its loader workers.

    More threads than free cores makes OpenMP spin-wait whenever a loader worker (or another
    process) takes a core; on a busy 2-core machine 2 threads were 7x slower than 1. On a GPU the
    process's CPU work (joining pieces into pinned batches) runs on these threads too, beside workers that
    hold the other cores. OMP_NUM_THREADS set by the user wins.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    return max(1, usable_cores() // procs_per_node - loader_workers(cfg))


def configure_torch(cfg, ctx, procs_per_node):
    """Threads, determinism and cuDNN autotuning for this process."""
    torch.set_num_threads(cpu_compute_threads(cfg, procs_per_node))
    if cfg.DETERMINISTIC:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not cfg.DETERMINISTIC


def _terminate(signum, frame):
    # SIGTERM outside training unwinds like an exception, so results.json says "failed" and files
    # are closed; during training the preemption hook saves first (preemption.py).
    sys.exit(128 + signum)


def _worker(local_rank, job, cfg, procs_per_node, init_method, job_args, notes=None):
    handlers = {signal.SIGTERM: _terminate, signal.SIGUSR1: request_stop}  # SIGUSR1: a notice, acted on in training
    register_notes(notes, local_rank)
    with signals_handled(handlers):
        try:
            ctx = du.init_process(cfg, local_rank, procs_per_node, init_method)
            configure_torch(cfg, ctx, procs_per_node)
            job(cfg, ctx, *job_args)
        except Preempted:
            if notes is None:
                raise
            sys.exit(REQUEUE_EXIT)  # a spawned process: the launcher reads its exit status
        except BaseException as error:
            if notes is not None:  # before shutdown() makes the other processes fail too
                notes.note(local_rank, error)
            raise
        finally:
            du.shutdown()


def launch_workers(cfg, job, *job_args):
    """Run `job(cfg, ctx, *job_args)` in every process of this node (see the module docstring).

    Raises WorkersFailed when a spawned process fails (the others are stopped), Preempted when
    they stopped on a scheduler's signal (preemption.py).
    """
    if du.launched_by_torchrun():
        _worker(int(os.environ["LOCAL_RANK"]), job, cfg, int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                "env://", job_args)
        return
    procs = cfg.NUM_GPUS if cfg.NUM_GPUS > 0 else cfg.NUM_CPU_PROCS
    init_method = cfg.INIT_METHOD if cfg.NUM_SHARDS > 1 else du.free_local_address()
    if procs == 1 and cfg.NUM_SHARDS == 1:
        _worker(0, job, cfg, 1, init_method, job_args)
        return
    if stop_requested():
        raise Preempted("a scheduler's signal came before training started; nothing to save")
    notes = FailureNotes(procs)
    with signals_handled({signal.SIGUSR1: signal.SIG_IGN}):  # the processes ignore it until _worker takes it
        context = torch.multiprocessing.start_processes(
            _worker, args=(job, cfg, procs, init_method, job_args, notes), nprocs=procs, join=False,
            start_method="spawn")
    with forwarding_signals(context.processes):  # a scheduler may signal only the launcher
        join_workers(context, notes, first_rank=cfg.SHARD_ID * procs, world_size=procs * cfg.NUM_SHARDS)


def run_job(cfg, ctx, run_info):
    """Per process: synthetic data if asked for, training (TRAIN.ENABLE), testing (TEST.ENABLE)."""
    logger = setup_logging(cfg.OUTPUT_DIR, ctx.is_main)
    logger.info(f"process {ctx.rank} of {ctx.world_size} on {ctx.device}"
                + (f", {torch.get_num_threads()} compute threads" if ctx.device.type == "cpu" else ""))
    check_gpu_decoding(cfg, ctx.device)
    if cfg.SYNTH.AUTO_GENERATE:
        if ctx.local_rank == 0:
            ensure_synthetic(cfg)
        du.barrier()
    if cfg.TRAIN.ENABLE:
        run_train(cfg, ctx, run_info)
    if cfg.TEST.ENABLE:
        run_test(cfg, ctx)


def follow_launcher(cfg, launched):
    """Under torchrun: (cfg with NUM_GPUS or NUM_CPU_PROCS, NUM_SHARDS and SHARD_ID as torchrun
    started the run, {key: (config value, launcher value)} of those that changed). Local rank 0
    of each node warns about the ones a user set (SHARD_ID left at 0 is torchrun's usual case)."""
    corrections = world_corrections(cfg, launched)
    if not corrections:
        return cfg, {}
    named = {key: pair for key, pair in corrections.items() if key != "SHARD_ID" or pair[0] != 0}
    if named and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        given = ", ".join(f"{key} {was}" for key, (was, _) in named.items())
        used = ", ".join(f"{key} {now}" for key, (_, now) in named.items())
        print(f"vbench: warning: torchrun started {launched['nodes']} node(s) x {launched['procs_per_node']} "
              f"process(es) (WORLD_SIZE {launched['world_size']}), but the config says {given}. This run "
              f"uses what torchrun started ({used}); results.json records the change under "
              f"world.config_corrected. Under torchrun, --nnodes and --nproc-per-node set the world.",
              file=sys.stderr)
    return replace_values(cfg, {key: now for key, (_, now) in corrections.items()},
                          "the processes torchrun started"), corrections


# ---------------------------------------------------------------------------- entry point
def launch(cfg, config_file=None, command=None, setup_started=None):
    """Check, then train and/or test as the config says. Raises on any failure.

    setup_started: time.monotonic() when the command started (the clock's set-up begins there).
    """
    with notices_kept():  # a scheduler's notice during set-up stops the run when training starts
        _launch(cfg, config_file, command, setup_started)


def _launch(cfg, config_file, command, setup_started):
    launched = launcher_world()
    cfg, corrections = follow_launcher(cfg, launched) if launched else (cfg, {})
    preflight(cfg, launched["world_size"] if launched else world_size_of(cfg))
    cfg, resolved = resolve_resources(cfg)
    # CLOCK_MONOTONIC is shared by every process of this machine: spawned workers can use it.
    run_info = {"config_file": config_file, "command": list(command or sys.argv),
                "setup_started": setup_started or time.monotonic(), "resolved": resolved,
                "world_corrections": corrections}
    try:
        launch_workers(cfg, run_job, run_info)
    except WorkersFailed:
        if cfg.TRAIN.ENABLE and cfg.SHARD_ID == 0:  # rank 0 ran here and, like every process, has ended
            mark_failed(os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE))
        raise
