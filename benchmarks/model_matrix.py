"""The training-step matrix of bench_model.py (`--matrix`): the precision, memory-format, depthwise
kernel and attention-kernel paths of both benchmark models, at each --batch, in one run.

Per model, at the first --batch: PyTorchVideo in fp32, contiguous (the baseline of every ratio),
vbench in fp32 contiguous, then (cells_of) X3D-M channels_last_3d with MODEL.DEPTHWISE_CONV triton
in bf16 and fp16 (with a GradScaler, as the trainer) and bf16 contiguous (PyTorch's depthwise
kernel); MViT-B in bf16 with its conv pooling through PyTorch's kernels or triton, and with
scaled_dot_product_attention held to one backend (flash, efficient, cudnn, math; a backend that
cannot take the inputs makes the cell fail, so the cells say which ran). At each later --batch
("recipe": the config's TRAIN.BATCH_SIZE on one GPU, X3D-M 64 and MViT-B 48): the baseline, the
auto cell and the fastest other vbench cell of the first batch. With --compile, last, the fastest
vbench cell of the first batch again under MODEL.COMPILE's regional compilation. On a CPU the
triton cells are skipped: there the kernels run in Triton's interpreter (for tests).

cuDNN autotuning is on, as in the trainer (vbench/engine/launch.py). Each cell builds its model
afresh, times its first step (autotuning or compilation included), runs the rest of --warmup,
then rounds of --steps steps until --rounds rounds or --cell-seconds of timed steps (at least 2
rounds); its figure is the median over rounds, with the peak GPU memory of the cell. MFU = clips/s
x 6 x fvcore GFLOPs per clip / the GPU's dense bf16 peak (benchmarks/bench_train.py), for every
cell whatever its precision. --profile prints the top ten ops of one more step, forward and
backward apart, by device time (CPU time on a CPU).

A cell that runs past --cell-timeout (--compile-timeout) seconds or fails is recorded as skipped
and the matrix goes on; no cell starts after --budget seconds. Every finished cell is printed at
once and written to --json at once, so a run killed from outside keeps what it measured.
"""
import gc
import json
import os
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend
from torch.profiler import ProfilerActivity, profile

from vbench.bench.sysinfo import cpu_model
from vbench.config import load_config
from vbench.engine.precision import device_class, fastest_depthwise, fastest_path
from vbench.models import mvit_blocks
from vbench.models.compile import compile_blocks
from vbench.models.layers.depthwise import DEPTHWISE_IMPLS

from bench_model import CONFIGS, Runner, clip_opts, load_average, machine, random_batch, reference_model, vbench_model
from bench_train import gpu_peak_tflops, train_gflops_per_clip

FAMILIES = {"x3d_m": "x3d", "mvit_b_16x4": "mvit"}
SDPA = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
TABLE_HEADER = ("\n| model | batch | cell | clips/s | x PyTorchVideo fp32 | MFU (of dense bf16 peak) | "
                "first step s | peak GiB |\n| --- | --- | --- | --- | --- | --- | --- | --- |")


@dataclass(frozen=True)
class Cell:
    model: str
    impl: str = "vbench"
    precision: str = "fp32"
    channels_last: bool = False
    variant: str = "default"  # MODEL.DEPTHWISE_CONV (X3D convs, MViT conv pooling); MViT's pooling layout
    compile: bool = False
    batch: int = 16
    sdpa: str = "default"  # "default": PyTorch's choice; else the one SDPA backend allowed (SDPA)

    def label(self):
        words = [self.impl, self.precision, "channels_last" if self.channels_last else "contiguous"]
        return " ".join(words + ([self.variant] if self.variant != "default" else [])
                        + ([f"sdpa {self.sdpa}"] if self.sdpa != "default" else [])
                        + (["compiled"] if self.compile else []))


def cells_of(model, batch=16):
    """Cells of one model at the first batch, the most telling first (a run cut short keeps those).
    Paths measured on 2026-11-27 and slower than these (fp32 or bf16 channels_last on cuDNN, the
    contiguous depthwise variants, MViT in fp32 or channels-last) are left out: they cost minutes."""
    base = [Cell(model, "pytorchvideo", batch=batch), Cell(model, batch=batch)]
    if model == "x3d_m":
        triton = Cell(model, precision="bf16", channels_last=True, variant="triton", batch=batch)
        return base + [triton, replace(triton, precision="fp16"), Cell(model, precision="bf16", batch=batch)]
    bf16 = Cell(model, precision="bf16", batch=batch)
    return base + [bf16, replace(bf16, variant="triton")] + [replace(bf16, sdpa=backend) for backend in SDPA]


def later_cells(model, batch, first, device):
    """Cells at a later batch: the baseline, the auto cell and the fastest other vbench cell of
    the `first` batch's results."""
    cells = [Cell(model, "pytorchvideo", batch=batch), replace(auto_cell(model, device), batch=batch)]
    ranked = sorted((r for r in first if r["impl"] == "vbench" and not r["compile"]),
                    key=lambda r: -r["clips_per_s"])
    for result in ranked:
        cell = replace(cell_of(result), batch=batch)
        if cell not in cells:
            return cells + [cell]
    return cells


def cell_of(result):
    return Cell(**{key: result[key] for key in Cell.__dataclass_fields__})


def auto_cell(model, device):
    """The cell TRAIN.PRECISION / MODEL.CHANNELS_LAST / MODEL.DEPTHWISE_CONV "auto" runs here."""
    device = torch.device(device)
    path = fastest_path(FAMILIES[model], device)
    variant = fastest_depthwise(FAMILIES[model], device, path.channels_last)
    return Cell(model, precision=path.precision, channels_last=path.channels_last, variant=variant)


class CellTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds):
    """Raise CellTimeout in this (main) thread after `seconds`."""
    def expire(signum, frame):
        raise CellTimeout(f"still running after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def variant_switch(cell):
    """MViT's "pool_channels_last": q/k/v pooling channels-last on every device (cuDNN on CUDA)."""
    saved = mvit_blocks.CHANNELS_LAST_POOL_DEVICES
    if cell.variant == "pool_channels_last":
        mvit_blocks.CHANNELS_LAST_POOL_DEVICES = ("cpu", "cuda")
    try:
        yield
    finally:
        mvit_blocks.CHANNELS_LAST_POOL_DEVICES = saved


def build_runner(cell, args, batch, num_classes):
    if cell.impl == "pytorchvideo":
        model = reference_model(cell.model, args, num_classes)
    else:
        opts = ["MODEL.DEPTHWISE_CONV", cell.variant] if cell.variant in DEPTHWISE_IMPLS else []
        model = vbench_model(cell.model, args, opts)[0]
    return Runner(model, args.device, *batch, precision=cell.precision, channels_last=cell.channels_last,
                  compile_model=compile_blocks if cell.compile else None, sdpa=SDPA.get(cell.sdpa))


def top_ops(runner, count=10):
    """What one more training step spends its time on, forward and backward apart.

    {"forward": {"ops": [(aten op, share), ...], "kernels": [...]}, "backward": ...}: aten ops by
    the device time of the kernels they launch (CPU: by their own CPU time) and, on CUDA, the
    kernels themselves; shares of the phase's total kernel (CPU: aten op) time.
    """
    cuda = runner.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    runner.optimizer.zero_grad(set_to_none=True)
    with profile(activities=activities) as forward:
        with runner.autocast, runner.attention():
            loss = torch.nn.functional.cross_entropy(runner.forward(runner.clips), runner.labels)
        runner.sync()
    with profile(activities=activities) as backward:
        with runner.attention():
            runner.scaler.scale(loss).backward()
        runner.scaler.step(runner.optimizer)
        runner.scaler.update()
        runner.sync()
    phases = {}
    for phase, prof in (("forward", forward), ("backward", backward)):
        events = prof.key_averages()
        ops = {e.key: e.self_device_time_total if cuda else e.self_cpu_time_total
               for e in events if e.key.startswith(("aten::", "vbench::"))}
        kernels = {e.key: e.self_device_time_total for e in events
                   if cuda and getattr(e, "device_type", None) == DeviceType.CUDA}
        total = sum(kernels.values() if cuda else ops.values()) or 1.0
        phases[phase] = {kind: [(name[:100], round(t / total, 3))
                                for name, t in sorted(times.items(), key=lambda item: -item[1])[:count]]
                         for kind, times in (("ops", ops), ("kernels", kernels)) if times}
    return phases


def measure(cell, args, batch, num_classes):
    """The cell's result dict (JSON keys of the matrix); raises on failure or timeout."""
    cuda = args.device.startswith("cuda")
    if cell.variant == "triton" and not cuda:
        raise RuntimeError("on a CPU the Triton kernels run in Triton's interpreter (for tests), "
                           "seconds per conv: no figure")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with variant_switch(cell):
        runner = build_runner(cell, args, batch, num_classes)
        first_step_s = runner.time_steps(1)[0]
        runner.time_steps(max(args.warmup - 1, 0))
        rates, timed = [], 0.0
        while len(rates) < args.rounds and (len(rates) < 2 or timed < args.cell_seconds):
            wall = runner.time_steps(args.steps)[0]
            timed += wall
            rates.append(args.steps * cell.batch / wall)
        result = dict(asdict(cell), clips_per_s=statistics.median(rates), rounds=len(rates),
                      first_step_s=round(first_step_s, 2))
        if cuda:
            result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if args.profile:
            result["top_ops"] = top_ops(runner)
    return result


def batch_sizes(args, model):
    """--batch as numbers for `model`: "recipe" is its config's TRAIN.BATCH_SIZE on one GPU."""
    sizes = []
    for word in (w.strip() for w in str(args.batch).split(",") if w.strip()):
        size = load_config(str(CONFIGS[model])).TRAIN.BATCH_SIZE if word == "recipe" else int(word)
        if size not in sizes:
            sizes.append(size)
    return sizes


class Matrix:
    """Runs the cells, prints each result and keeps --json up to date."""

    def __init__(self, args):
        self.args, self.start = args, time.monotonic()
        self.device = torch.device(args.device)
        cuda = self.device.type == "cuda"
        self.record = {
            "device": torch.cuda.get_device_name(self.device) if cuda else cpu_model(),
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "batch": str(args.batch), "clip": [args.frames, args.crop, args.crop],
            "budget_s": args.budget, "cells": [], "skipped": []}
        self.peak = args.peak_tflops or (gpu_peak_tflops(self.record["device"]) if cuda else None)
        self.inputs = {}  # (model, batch) -> (clips, labels): one random batch per size

    def left(self):
        return self.args.budget - (time.monotonic() - self.start)

    def save(self):
        self.record["elapsed_s"] = round(time.monotonic() - self.start, 1)
        if self.args.json:
            tmp = self.args.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.record, f, indent=1)
            os.replace(tmp, self.args.json)

    def batch_of(self, cell):
        key = (cell.model, cell.batch)
        if key not in self.inputs:
            torch.manual_seed(0)
            num_classes = load_config(str(CONFIGS[cell.model])).MODEL.NUM_CLASSES
            self.inputs = {key: (random_batch(self.args, num_classes, cell.batch), num_classes)}
        return self.inputs[key]

    def run_cell(self, cell, gflops):
        limit = min(self.args.compile_timeout if cell.compile else self.args.cell_timeout, self.left())
        if limit < 5:
            return self.skip(cell, "time budget spent")
        result = None
        try:
            with time_limit(limit):
                result = measure(cell, self.args, *self.batch_of(cell))
        except Exception as err:  # noqa: BLE001 - one failing cell must not end the matrix
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}"
        gc.collect()  # the failed cell's model, activations and traceback are gone by now
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if result is None:
            return self.skip(cell, reason)
        tflops = result["clips_per_s"] * gflops / 1e3 if gflops else None
        result["mfu"] = tflops / self.peak if tflops and self.peak else None
        result["auto"] = cell == replace(auto_cell(cell.model, self.device), batch=cell.batch)
        self.record["cells"].append(result)
        self.save()
        print(self.row(result), flush=True)
        for phase, kinds in result.get("top_ops", {}).items():
            for kind, ops in kinds.items():
                print(f"    {phase} {kind}: " + "; ".join(f"{share:.0%} {name}" for name, share in ops))
        sys.stdout.flush()
        return result

    def skip(self, cell, reason):
        self.record["skipped"].append(dict(asdict(cell), reason=reason))
        self.save()
        print(f"| {cell.model} | {cell.batch} | {cell.label()} | skipped: {reason} |", flush=True)
        return None

    def results(self, model, batch, impl=None):
        return [c for c in self.record["cells"] if c["model"] == model and c["batch"] == batch
                and (impl is None or c["impl"] == impl)]

    def row(self, c):
        base = next((r["clips_per_s"] for r in self.results(c["model"], c["batch"], "pytorchvideo")), None)
        ratio = f"{c['clips_per_s'] / base:.2f}x" if base else "n/a"
        mfu = "n/a" if c["mfu"] is None else f"{c['mfu']:.1%}"
        auto = " (auto)" if c["auto"] else ""
        peak = c.get("peak_memory_gib")
        return (f"| {c['model']} | {c['batch']} | {cell_of(c).label()}{auto} | {c['clips_per_s']:.1f} | "
                f"{ratio} | {mfu} | {c['first_step_s']:.1f} | {'n/a' if peak is None else peak} |")

    def run_model(self, model, gflops):
        """The model's cells at each batch (after the first: `later_cells`)."""
        sizes = batch_sizes(self.args, model)
        for cell in cells_of(model, sizes[0]):
            self.run_cell(cell, gflops)
        for size in sizes[1:]:
            for cell in later_cells(model, size, self.results(model, sizes[0]), self.device):
                self.run_cell(cell, gflops)

    def compile_fastest(self, model, gflops):
        size = batch_sizes(self.args, model)[0]
        cells = self.results(model, size, "vbench")
        if cells:
            best = cell_of(max(cells, key=lambda c: c["clips_per_s"]))
            self.run_cell(replace(best, compile=True), gflops)
            torch._dynamo.reset()

    def summary(self, model):
        """Per batch: auto against the best vbench cell, and the rule entry that would pick it."""
        for size in batch_sizes(self.args, model):
            cells = self.results(model, size, "vbench")
            if not cells:
                continue
            best = max(cells, key=lambda c: c["clips_per_s"])
            auto = next((c for c in cells if c["auto"]), None)
            share = f"{auto['clips_per_s'] / best['clips_per_s']:.2f} of it" if auto else "not measured"
            print(f"{model} at batch {size}: best vbench cell: {cell_of(best).label()}, "
                  f"{best['clips_per_s']:.1f} clips/s; the auto cell: {share}")
            family, cls = FAMILIES[model], device_class(self.device)
            entry = (f"FASTEST_PATHS[{(family, cls)}] = TrainingPath({best['precision']!r}, "
                     f"{best['channels_last']}); DEPTHWISE_PATHS[{(family, cls, best['channels_last'])}] = "
                     f"{best['variant'] if best['variant'] in DEPTHWISE_IMPLS else 'default'!r}")
            if best["variant"] == "pool_channels_last":
                entry += (f"; and {self.device.type!r} in mvit_blocks.CHANNELS_LAST_POOL_DEVICES "
                          f"(not a rule entry yet)")
            if best["sdpa"] != "default":
                entry += f"; and SDPA held to {best['sdpa']} (not a rule entry yet)"
            if best["compile"]:
                entry += "; and MODEL.COMPILE True"
            print(f"  the rule that picks it (vbench/engine/precision.py): {entry}")


def run_matrix(args, names):
    torch.backends.cudnn.benchmark = True  # as the trainer (vbench/engine/launch.py configure_torch)
    matrix = Matrix(args)
    print(f"matrix on {args.device} ({machine()}), batch {args.batch}, clip {args.frames} x "
          f"{args.crop}^2, {args.warmup} warm-up steps, rounds of {args.steps} steps (at most "
          f"{args.rounds}, {args.cell_seconds} s), budget {args.budget} s; {load_average()}")
    print(TABLE_HEADER, flush=True)
    gflops = {name: train_gflops_per_clip(str(CONFIGS[name]), clip_opts(args)) for name in names}
    for name in names:
        matrix.run_model(name, gflops[name])
    if args.compile:
        for name in names:
            matrix.compile_fastest(name, gflops[name])
    print(f"\nAll cells ({args.frames} x {args.crop}^2, {matrix.record['device']}):")
    print(TABLE_HEADER)
    for result in matrix.record["cells"]:
        print(matrix.row(result))
    print()
    for name in names:
        matrix.summary(name)
    matrix.save()
    print(f"{len(matrix.record['cells'])} cells in {matrix.record['elapsed_s']} s, "
          f"{len(matrix.record['skipped'])} skipped; {load_average()}")
