#!/usr/bin/env python3
"""Training throughput of the benchmark tracks on kinetics-like synthetic videos, with the
data-wait share and the model FLOP utilisation (MFU).

    python benchmarks/bench_train.py NUM_GPUS 1 DATA_LOADER.NUM_WORKERS 16
    python benchmarks/bench_train.py --tracks cnn --epochs 3 NUM_GPUS 4 DATA_LOADER.NUM_WORKERS 32

For each track config (X3D-M, MViT-B 16x4) it runs the real trainer (`tools/run_net.py`) for
--epochs epochs on a generated kinetics-like dataset (340x256, 30 fps, 10 s H.264 clips; made
first, outside every timing), without early stop, and reads results.json. Reported per track:
clips/s over all processes and per device, the data-wait share (rank 0), both as the median over
the epochs after the first (the first pays for cuDNN autotuning, compilation and cold caches),
and the MFU:

    MFU = clips/s per device x training FLOPs per clip / peak FLOPs of the device

Training FLOPs per clip = 3 (forward + backward) x 2 (multiply + add) x the fvcore count of one
training view (fvcore counts a fused multiply-add as one flop; `vbench models`). Peak FLOPs: dense
bf16/fp16 tensor-core figures of the datasheets for the GPUs in PEAK_TFLOPS, or --peak-tflops;
otherwise MFU is not reported. KEY VALUE overrides go to every run (resources: NUM_GPUS, workers,
TRAIN.PRECISION, MODEL.COMPILE, ...; or a smaller clip for a CPU smoke test).
"""
import argparse
import os
import statistics
import sys

from training_runs import ROOT, machine_line, prepare_data, run_net

TRACK_CONFIGS = {"cnn": "configs/Kinetics/X3D_M.yaml", "transformer": "configs/Kinetics/MVIT_B_16x4.yaml"}
# Dense bf16/fp16 tensor-core peak, TFLOPS per GPU (NVIDIA datasheets), matched in this order.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", nargs="+", default=list(TRACK_CONFIGS), choices=list(TRACK_CONFIGS))
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is warm-up)")
    parser.add_argument("--videos-per-class", type=int, default=64,
                        help="training videos per class (10 classes)")
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "synthetic_kinetics_like"))
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_train"))
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak FLOPS of one device for the MFU (default: PEAK_TFLOPS by GPU name)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")
    return args


def data_opts(args):
    """Overrides that point a track config at the synthetic kinetics-like dataset."""
    return ["DATA.PATH_TO_DATA_DIR", args.data, "DATA.LAYOUT", "folder", "DATA.CLIP_LIST", "",
            "SYNTH.AUTO_GENERATE", "True",
            "SYNTH.PRESET", "kinetics-like", "SYNTH.NUM_CLASSES", "10",
            "SYNTH.TRAIN_PER_CLASS", str(args.videos_per_class), "SYNTH.VAL_PER_CLASS", "2"]


def run_opts(args):
    return [*data_opts(args), "SOLVER.MAX_EPOCH", str(args.epochs),
            "BENCHMARK.STOP_AT_TARGET", "False", "TRAIN.AUTO_RESUME", "False",
            "TRAIN.CHECKPOINT_PERIOD", str(args.epochs), "TRAIN.EVAL_PERIOD", str(args.epochs)]


def train_gflops_per_clip(cfg_file, opts):
    """3 x 2 x fvcore's count of one training view."""
    from vbench.config import load_config
    from vbench.models.summary import count_model

    cfg = load_config(cfg_file, opts)
    size = (cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE)
    row = count_model(cfg.MODEL.MODEL_NAME, cfg, size)
    return None if row.gflops_per_view is None else 6 * row.gflops_per_view


def gpu_peak_tflops(gpu_model):
    """Dense bf16/fp16 peak of the GPU named `gpu_model` (PEAK_TFLOPS), or None."""
    return next((peak for name, peak in PEAK_TFLOPS if name in gpu_model), None)


def peak_tflops(results, given):
    if given:
        return given
    gpu = results["hardware"].get("gpu")
    if not gpu or results["world"]["precision"] not in ("bf16", "fp16"):
        return None
    return gpu_peak_tflops(gpu["model"])


def measure(track, args, opts):
    cfg_file = os.path.join(ROOT, TRACK_CONFIGS[track])
    _, results = run_net(track, cfg_file, os.path.join(args.out, track), [*run_opts(args), *opts])
    steady = results["epochs"][1:]
    devices = results["world"]["num_devices"]
    clips_per_s = statistics.median(e["clips_per_s"] for e in steady)
    gflops = train_gflops_per_clip(cfg_file, [*data_opts(args), *opts])
    peak = peak_tflops(results, args.peak_tflops)
    achieved = clips_per_s / devices * gflops / 1e3 if gflops else None
    return {"track": track, "model": results["config"]["MODEL"]["MODEL_NAME"],
            "device": results["world"]["device"], "precision": results["world"]["precision"],
            "devices": devices, "clips_per_s": clips_per_s, "per_device": clips_per_s / devices,
            "data_wait": statistics.median(e["data_wait_fraction"] for e in steady),
            "gflops": gflops, "tflops": achieved, "mfu": achieved / peak if achieved and peak else None,
            "results": results, "peak": peak}


def cell(value, fmt):
    return "n/a" if value is None else format(value, fmt)


def main(argv=None):
    args = parse_args(argv)
    opts = [word for word in args.opts if word != "--opts"]
    prepare_data(os.path.join(ROOT, TRACK_CONFIGS[args.tracks[0]]), [*data_opts(args), *opts])
    rows = [measure(track, args, opts) for track in args.tracks]
    print("\n| track | model | device x count | precision | clips/s | clips/s per device | data wait "
          "| train GFLOPs/clip | TFLOPS per device | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['track']} | {r['model']} | {r['device']} x {r['devices']} | {r['precision']} | "
              f"{r['clips_per_s']:.1f} | {r['per_device']:.1f} | {r['data_wait']:.1%} | "
              f"{cell(r['gflops'], '.1f')} | {cell(r['tflops'], '.2f')} | {cell(r['mfu'], '.1%')} |")
    print(f"\nmedian over epochs 2-{args.epochs}; peak used for MFU: {cell(rows[0]['peak'], '.1f')} "
          f"TFLOPS; {machine_line(rows[0]['results'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
