"""Forward + backward of vbench's Triton depthwise Conv3d against PyTorch's, per depthwise conv
shape of X3D-M and MViT-B 16x4, against the memory floor.

The shapes come from the models themselves (forward hooks on their depthwise convs, one forward on
the meta device) for a --batch x --frames x --crop^2 clip, with how often each occurs in one
forward. For each shape and dtype (--dtypes, the tensors in that dtype, as autocast gives them),
one timed call is forward + input gradient + weight gradient of:

    triton        MODEL.DEPTHWISE_CONV triton on a channels_last_3d input (autotuned on a GPU)
    native        F.conv3d on contiguous input and weight (CUDA: PyTorch's conv_depthwise3d)
    channels_last F.conv3d on channels_last_3d input and weight (CUDA: cuDNN)

Floor: the fewest bytes a forward + backward must move, each tensor read or written once: x and y
by the forward, dy and dx by the input gradient, x and dy by the weight gradient, i.e. 3 (|x| +
|y|) elements (weights negligible; where a stride exceeds the kernel, as MViT's 1x8x8 key/value
pooling, forward and weight gradient read only the part of x the taps reach), over the device's
copy bandwidth, measured first (a large device-to-device copy, bytes read + written). "x floor"
is time / floor time. The totals weight each shape by its count: the depthwise convs of one
training step.

On a GPU times are medians of triton.testing.do_bench (CUDA events; inputs rotated among 3 sets
where they would fit in the L2 cache). On the CPU (a rehearsal: the Triton kernels run in
Triton's interpreter, TRITON_INTERPRET=1, set by this script) times are medians of --reps calls
and say nothing about the kernels. Each triton result is checked against F.conv3d in float32
(relative error of output and both gradients).

    python benchmarks/bench_depthwise.py --device cuda --json $OUT/depthwise.json
    python benchmarks/bench_depthwise.py --device cpu --batch 1 --frames 2 --crop 32 --reps 1 --limit 2
"""
import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from vbench.models.layers.depthwise import depthwise_conv

from bench_model import CONFIGS, machine, vbench_model

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
IMPLS = ("triton", "native", "channels_last")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--dtypes", default="bf16,fp32", help=f"comma-separated, from {list(DTYPES)}")
    parser.add_argument("--models", default="x3d_m,mvit_b_16x4", help=f"from {', '.join(CONFIGS)}")
    parser.add_argument("--reps", type=int, default=3, help="CPU: timed calls per shape")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N shapes of each model (0: all; for a quick rehearsal)")
    parser.add_argument("--json", default="", help="write every row to this file")
    return parser.parse_args(argv)


def conv_shapes(name, args):
    """Counter of (input shape, kernel, stride, padding) over one forward of the model."""
    model = vbench_model(name, args)[0].to("meta").eval()
    shapes = Counter()

    def record(module, inputs, output):
        shapes[(tuple(inputs[0].shape), module.kernel_size, module.stride, module.padding)] += 1

    for module in model.modules():
        if isinstance(module, nn.Conv3d) and module.groups > 1:
            module.register_forward_hook(record)
    with torch.no_grad():
        model(torch.empty(args.batch, 3, args.frames, args.crop, args.crop, device="meta"))
    return shapes


def copy_bandwidth(device):
    """Device-to-device copy, bytes read + written per second (the floor's bandwidth)."""
    src = torch.empty(2**28, dtype=torch.uint8, device=device).random_()  # 256 MiB
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device, reps=5)
    return 2 * src.numel() / seconds


def median_time(fn, device, reps):
    """Seconds per call: CUDA events via triton's do_bench, else wall clock."""
    if device.type == "cuda":
        from triton.testing import do_bench  # (Triton comes with PyTorch's CUDA builds)

        return do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Case:
    """Inputs of one conv shape (3 rotating sets where they are small) and the step of each impl."""

    def __init__(self, shape, kernel, stride, padding, dtype, device):
        channels = shape[1]
        self.conv = nn.Conv3d(channels, channels, kernel, stride, padding, groups=channels,
                              bias=False).to(device, dtype)
        self.elements = math.prod(shape)
        small = self.elements * self.conv.weight.element_size() < 64 * 2**20
        self.inputs = [torch.randn(shape, device=device, dtype=dtype) for _ in range(3 if small else 1)]
        with torch.no_grad():
            self.out_shape = self.conv(self.inputs[0]).shape
        self.grad = torch.randn(self.out_shape, device=device, dtype=dtype)
        self.calls = 0

    def floor_bytes(self):
        reach = [min(1.0, k / s) for k, s in zip(self.conv.kernel_size, self.conv.stride)]
        reached = self.elements * math.prod(reach)
        return (self.elements + 2 * reached + 3 * math.prod(self.out_shape)) * self.conv.weight.element_size()

    def prepared(self, impl):
        """Inputs (requiring grad) and weight in the layout `impl` takes."""
        layout = torch.contiguous_format if impl == "native" else torch.channels_last_3d
        conv = copy.deepcopy(self.conv).to(memory_format=layout)
        xs = [x.detach().contiguous(memory_format=layout).requires_grad_() for x in self.inputs]
        grad = self.grad.contiguous(memory_format=layout)
        return conv, xs, grad

    def step_fn(self, impl):
        conv, xs, grad = self.prepared(impl)

        def step():
            x = xs[self.calls % len(xs)]
            self.calls += 1
            y = depthwise_conv(conv, x, "triton") if impl == "triton" else conv(x)
            x.grad = conv.weight.grad = None
            y.backward(grad)

        return step

    def check_triton(self):
        """Relative errors (output, input grad, weight grad) of triton against F.conv3d in fp32."""
        conv, xs, grad = self.prepared("triton")
        x = xs[0]
        results = []
        for impl in ("triton", "reference"):
            x.grad = conv.weight.grad = None
            if impl == "triton":
                y = depthwise_conv(conv, x, "triton")
                y.backward(grad)
                results.append((y.float(), x.grad.float(), conv.weight.grad.float()))
            else:
                xf, wf = x.detach().float().requires_grad_(), conv.weight.detach().float().requires_grad_()
                y = F.conv3d(xf, wf, None, conv.stride, conv.padding, groups=conv.groups)
                y.backward(grad.float())
                results.append((y, xf.grad, wf.grad))
        return [((a - b).norm() / b.norm()).item() for a, b in zip(*results)]


def run(args):
    device = torch.device(args.device)
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before vbench's kernels are imported
    bandwidth = copy_bandwidth(device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine()
    print(f"device {args.device} ({device_name}), torch {torch.__version__}; batch {args.batch}, "
          f"clip {args.frames} x {args.crop}^2; copy bandwidth {bandwidth / 1e9:.0f} GB/s (read + write)",
          flush=True)
    rows = []
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        shapes = conv_shapes(name, args)
        for dtype_name in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
            print(f"\n{name} {dtype_name}: {sum(shapes.values())} depthwise convs, {len(shapes)} shapes")
            print(f"{'input (N, C, T, H, W)':<28} {'kernel':<10} {'stride':<10} {'n':>3} {'floor ms':>9} "
                  + " ".join(f"{impl + ' ms':>16}" for impl in IMPLS)
                  + f" {'triton x floor':>15} {'rel err':>8}")
            for (shape, kernel, stride, padding), count in list(shapes.items())[:args.limit or None]:
                rows.append(measure(name, dtype_name, shape, kernel, stride, padding, count, device,
                                    bandwidth, args))
                print_row(rows[-1])
            print_totals([r for r in rows if r["model"] == name and r["dtype"] == dtype_name],
                         "per training step" if len(shapes) <= (args.limit or len(shapes)) else
                         f"over the first {args.limit} shapes only")
            if args.json:
                save(args, bandwidth, rows)
    return rows


def measure(name, dtype_name, shape, kernel, stride, padding, count, device, bandwidth, args):
    case = Case(shape, kernel, stride, padding, DTYPES[dtype_name], device)
    row = dict(model=name, dtype=dtype_name, shape=list(shape), kernel=list(kernel), stride=list(stride),
               padding=list(padding), count=count, floor_bytes=case.floor_bytes(),
               floor_ms=case.floor_bytes() / bandwidth * 1e3)
    for impl in IMPLS:
        try:
            row[f"{impl}_ms"] = median_time(case.step_fn(impl), device, args.reps) * 1e3
        except Exception as err:  # noqa: BLE001 - one failing implementation must not end the run
            row[f"{impl}_ms"], row[f"{impl}_error"] = None, f"{type(err).__name__}: {str(err)[:160]}"
    row["triton_rel_errors"] = case.check_triton() if row["triton_ms"] is not None else None
    return row


def print_row(r):
    times = " ".join(f"{r[f'{impl}_ms']:>16.3f}" if r[f"{impl}_ms"] is not None else f"{'failed':>16}"
                     for impl in IMPLS)
    ratio = f"{r['triton_ms'] / r['floor_ms']:>15.1f}" if r["triton_ms"] else f"{'':>15}"
    error = f"{max(r['triton_rel_errors']):>8.1e}" if r["triton_rel_errors"] else ""
    print(f"{str(tuple(r['shape'])):<28} {'x'.join(map(str, r['kernel'])):<10} "
          f"{'x'.join(map(str, r['stride'])):<10} {r['count']:>3} {r['floor_ms']:>9.3f} {times}{ratio} "
          f"{error}", flush=True)
    for impl in IMPLS:
        if f"{impl}_error" in r:
            print(f"    {impl} failed: {r[f'{impl}_error']}")


def print_totals(rows, scope):
    def total(key):
        values = [r[key] * r["count"] for r in rows if r[key] is not None]
        return sum(values) if len(values) == len(rows) else None

    floor = total("floor_ms")
    parts = []
    for impl in IMPLS:
        value = total(f"{impl}_ms")
        parts.append(f"{impl} {value:.2f} ms ({value / floor:.1f}x floor)" if value else f"{impl} n/a")
    print(f"{scope} (forward + backward of the depthwise convs, by count): floor {floor:.2f} ms; "
          + "; ".join(parts), flush=True)


def save(args, bandwidth, rows):
    record = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else machine(),
              "torch": torch.__version__, "batch": args.batch, "clip": [args.frames, args.crop, args.crop],
              "copy_bandwidth_gb_s": bandwidth / 1e9, "rows": rows}
    with open(args.json + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(args.json + ".tmp", args.json)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True  # as the trainer
    run(args)


if __name__ == "__main__":
    main()
