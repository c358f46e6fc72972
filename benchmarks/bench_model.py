"""Training-step throughput of vbench's benchmark models vs PyTorchVideo's, side by side.

For each model in --models, one process builds
  vbench:    the model of the benchmark track config (configs/Kinetics/X3D_M.yaml or
             MVIT_B_16x4.yaml) for a --frames x --crop^2 clip;
  reference: PyTorchVideo's `create_x3d` with the hub's X3D-M settings, or
             `create_multiscale_vision_transformers` with the hub's MViT-B 16x4 settings (stochastic
             depth 0.2 as in the vbench config), for the same clip and class count;
and times full training steps (forward, cross-entropy, backward, SGD step) on the same random batch,
device and precision. After --warmup steps each, the two models run ALTERNATELY (A B, then B A, ...)
for --rounds rounds of --steps steps, so machine noise hits both alike; each figure is the median
over rounds, in clips per second. Ratios vbench / reference (> 1: vbench is faster): of the
medians, and "paired", the median over rounds of the ratio within a round (robust to load that
drifts between rounds), with its quartiles. On CPU each step is also timed in process CPU time,
which leaves out the time the process waits for a core that other jobs hold: with --threads 1 the
"cpu-time paired" ratio is the figure to trust on a shared machine. The load average is printed
before and after; a load above the core count means the wall-clock figures are noisy.

The PyTorchVideo X3D head ends with a softmax even in training; the reference is built without it
(head_activation=None) so that both train on logits.

    python benchmarks/bench_model.py --device cuda --batch 16 --precision bf16 --channels-last
    python benchmarks/bench_model.py --matrix --device cuda --batch 16,recipe --json matrix.json
    python benchmarks/bench_model.py --device cpu --batch 2 --crop 112 --steps 1 --rounds 3
"""
import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from vbench.bench.sysinfo import cpu_model
from vbench.config import load_config
from vbench.models import build_model

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "x3d_m": REPO / "configs" / "Kinetics" / "X3D_M.yaml",
    "mvit_b_16x4": REPO / "configs" / "Kinetics" / "MVIT_B_16x4.yaml",
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", default="8",
                        help="clips per step; the matrix takes a comma-separated list, where "
                             "'recipe' is the config's TRAIN.BATCH_SIZE on one GPU (X3D-M 64, MViT-B 48)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model per round")
    parser.add_argument("--rounds", type=int, default=9, help="alternating timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="fp16 trains with a GradScaler, as the trainer")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d memory format")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both models (matrix: the fastest vbench cell, regional)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--models", default="x3d_m,mvit_b_16x4",
                        help=f"comma-separated, from {', '.join(CONFIGS)}")
    matrix = parser.add_argument_group("matrix mode (benchmarks/model_matrix.py)")
    matrix.add_argument("--matrix", action="store_true",
                        help="the precision / layout / kernel / attention cells, vbench and the PyTorchVideo "
                             "baseline, at each --batch")
    matrix.add_argument("--json", default="", help="write the cells to this JSON file as they finish")
    matrix.add_argument("--profile", action="store_true", help="top ops of each cell, forward and backward")
    matrix.add_argument("--budget", type=float, default=230, help="no cell starts after this many seconds")
    matrix.add_argument("--cell-seconds", type=float, default=5, help="timed seconds per cell (>= 2 rounds)")
    matrix.add_argument("--cell-timeout", type=float, default=60, help="seconds before a cell is given up")
    matrix.add_argument("--compile-timeout", type=float, default=120, help="the same for compiled cells")
    matrix.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for the MFU (default: bench_train.PEAK_TFLOPS by GPU name)")
    return parser.parse_args(argv)


def clip_opts(args):
    """Config overrides for --frames x --crop^2 clips."""
    crop = args.crop
    return ["DATA.NUM_FRAMES", args.frames, "DATA.TRAIN_CROP_SIZE", crop, "DATA.TEST_CROP_SIZE", crop,
            "DATA.TRAIN_MIN_MAX_SCALE", [max(256, crop), max(320, crop)]]


def vbench_model(name, args, opts=()):
    cfg = load_config(str(CONFIGS[name]), clip_opts(args) + list(opts))
    return build_model(cfg), cfg.MODEL.NUM_CLASSES


def reference_model(name, args, num_classes):
    if name == "x3d_m":
        from pytorchvideo.models.x3d import create_x3d

        return create_x3d(input_clip_length=args.frames, input_crop_size=args.crop, depth_factor=2.2,
                          model_num_class=num_classes, dropout_rate=0.5, head_activation=None)
    from pytorchvideo.models.hub.vision_transformers import mvit_video_base_config
    from pytorchvideo.models.vision_transformers import create_multiscale_vision_transformers

    settings = dict(mvit_video_base_config, spatial_size=args.crop, temporal_size=args.frames)
    return create_multiscale_vision_transformers(**settings, droppath_rate_block=0.2,
                                                 head_dropout_rate=0.5, head_num_classes=num_classes)


class Runner:
    """One model with its optimizer; `time_steps(n)` returns the seconds n training steps take.

    `compile_model(model)` returns what the forward pass calls (torch.compile, or vbench's
    regional compilation in the matrix). fp16 scales the loss with a GradScaler, as the trainer;
    `sdpa`, a torch.nn.attention.SDPBackend, restricts scaled_dot_product_attention to it (an
    input it cannot take raises)."""

    def __init__(self, model, device, clips, labels, precision="fp32", channels_last=False,
                 compile_model=None, sdpa=None):
        device = torch.device(device)
        memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=memory_format).train()
        self.params = sum(p.numel() for p in self.model.parameters())
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.94,
                                         nesterov=True, weight_decay=5e-4)
        self.forward = compile_model(self.model) if compile_model else self.model
        self.clips = clips.to(device).contiguous(memory_format=memory_format)
        self.labels, self.device = labels.to(device), device
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.sdpa = sdpa
        self.clip_rates, self.cpu_clip_rates = [], []

    def attention(self):
        from torch.nn.attention import sdpa_kernel

        return sdpa_kernel([self.sdpa]) if self.sdpa is not None else nullcontext()

    def step(self):
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast, self.attention():
            loss = F.cross_entropy(self.forward(self.clips), self.labels)
        with self.attention():
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_steps(self, count):
        """(wall seconds, process CPU seconds) of `count` training steps."""
        self.sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            self.step()
        self.sync()
        return time.perf_counter() - start, time.process_time() - start_cpu


def random_batch(args, num_classes, batch=None):
    batch = batch or first_batch(args)
    clips = torch.randn(batch, 3, args.frames, args.crop, args.crop)
    return clips, torch.randint(num_classes, (batch,))


def first_batch(args):
    """The A/B mode's batch: the first of --batch."""
    if isinstance(args.batch, int):  # (bench_compile.py's --batch)
        return args.batch
    first = args.batch.split(",")[0].strip()
    if not first.isdigit():
        sys.exit(f"--batch {args.batch!r}: the A/B mode takes a number of clips")
    return int(first)


def benchmark(name, args):
    torch.manual_seed(0)
    vbench, num_classes = vbench_model(name, args)
    reference = reference_model(name, args, num_classes)
    clips, labels = random_batch(args, num_classes)
    setting = dict(precision=args.precision, channels_last=args.channels_last,
                   compile_model=torch.compile if args.compile else None)
    runners = {"vbench": Runner(vbench, args.device, clips, labels, **setting),
               "reference": Runner(reference, args.device, clips, labels, **setting)}
    for runner in runners.values():
        runner.time_steps(args.warmup)
    order = list(runners.values())
    clips_per_round = args.steps * first_batch(args)
    for _ in range(args.rounds):
        for runner in order:
            wall, cpu = runner.time_steps(args.steps)
            runner.clip_rates.append(clips_per_round / wall)
            runner.cpu_clip_rates.append(clips_per_round / cpu)
        order.reverse()  # A B, B A, ...: neither model always runs first
    return runners


def paired(ours, theirs):
    """Median and quartiles over rounds of the within-round ratio ours / theirs."""
    ratios = [a / b for a, b in zip(ours, theirs)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    low, mid, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return mid, low, high


def report(name, runners, device):
    for label, runner in runners.items():
        print(f"{name:<12} {label:<15} {runner.params / 1e6:>10.2f} "
              f"{statistics.median(runner.clip_rates):>17.3f}  "
              + " ".join(f"{r:.3f}" for r in runner.clip_rates))
    ours, ref = runners["vbench"], runners["reference"]
    ratio = statistics.median(ours.clip_rates) / statistics.median(ref.clip_rates)
    mid, low, high = paired(ours.clip_rates, ref.clip_rates)
    line = (f"{name:<12} {'vbench/ref':<15} {'':>10} {ratio:>17.2f}x  "
            f"paired {mid:.2f}x (quartiles {low:.2f}-{high:.2f})")
    if device == "cpu":
        mid, low, high = paired(ours.cpu_clip_rates, ref.cpu_clip_rates)
        line += f"; cpu-time paired {mid:.2f}x (quartiles {low:.2f}-{high:.2f})"
    print(line)


def machine():
    """CPU model, core count and torch version, for the record."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"


def load_average():
    return "load average " + (" ".join(f"{v:.2f}" for v in os.getloadavg())
                              if hasattr(os, "getloadavg") else "n/a")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown --models {unknown}; choose from {list(CONFIGS)}")
    torch.backends.cudnn.benchmark = True  # as the trainer (vbench/engine/launch.py configure_torch)
    if args.matrix:
        from model_matrix import run_matrix

        return run_matrix(args, names)
    print(f"device {args.device} ({machine()}), batch {first_batch(args)}, clip {args.frames} x "
          f"{args.crop}^2, {args.precision}, channels_last {args.channels_last}, compile "
          f"{args.compile}, threads {torch.get_num_threads()}; {args.warmup} warm-up steps, "
          f"{args.rounds} alternating rounds of {args.steps} steps; {load_average()}")
    print(f"{'model':<12} {'implementation':<15} {'params (M)':>10} {'clips/s (median)':>17}  rounds")
    for name in names:
        report(name, benchmark(name, args), torch.device(args.device).type)
        sys.stdout.flush()
    print(load_average())


if __name__ == "__main__":
    main()
