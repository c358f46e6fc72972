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

Also per track: the data-wait share of each epoch's first 10 steps and of the rest (median over the
epochs after the first; the first epoch's start, where the workers begin, is given apart), the
loader's clips/s while working, peak GPU memory, evaluation seconds and the seconds from the run's
closing summary line to the end of its process. `--compare-with DIR` runs another checkout (e.g.
`git archive REV | tar -x -C DIR`) on the same data right after each track, `--json FILE` writes
the rows.
"""
import argparse
import json
import os
import statistics
import sys

from training_runs import ROOT, machine_line, prepare_data, run_net

TRACK_CONFIGS = {"cnn": "configs/Kinetics/X3D_M.yaml", "transformer": "configs/Kinetics/MVIT_B_16x4.yaml"}
# Dense bf16/fp16 tensor-core peak, TFLOPS per GPU (NVIDIA datasheets), matched in this order.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", nargs="+", default=list(TRACK_CONFIGS),
                        help=f"from {', '.join(TRACK_CONFIGS)} (spaces or commas between them)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is warm-up)")
    parser.add_argument("--videos-per-class", type=int, default=64,
                        help="training videos per class (10 classes)")
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "synthetic_kinetics_like"))
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_train"))
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak FLOPS of one device for the MFU (default: PEAK_TFLOPS by GPU name)")
    parser.add_argument("--compare-with", default="", help="another vbench checkout, run the same way")
    parser.add_argument("--json", default="", help="write the rows to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = parser.parse_args(argv)
    args.tracks = [track for word in args.tracks for track in word.split(",") if track]
    unknown = sorted(set(args.tracks) - set(TRACK_CONFIGS))
    if unknown:
        parser.error(f"unknown tracks {unknown}; choose from {list(TRACK_CONFIGS)}")
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
    return [*data_opts(args), "SOLVER.MAX_EPOCH", str(args.epochs), "LOG_PERIOD", "10",
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


def start_waits(run_dir, row):
    """(data-wait share of the epoch's first 10 steps, of the rest): results.json's fields, or for a
    checkout without them from the json_stats line logged at step 10 (LOG_PERIOD 10)."""
    if "data_wait_first10" in row:
        return row["data_wait_first10"], row["data_wait_rest"]
    with open(os.path.join(run_dir, "json_stats.log")) as f:
        stats = [json.loads(line.split("json_stats: ", 1)[1]) for line in f if "json_stats: " in line]
    at10 = [s for s in stats if s["_type"] == "train_iter" and s["epoch"].split("/")[0] == str(row["epoch"])
            and s["iter"].split("/")[0] == "10"]
    if not at10:
        return row["data_wait_fraction"], None
    first, step_s = at10[0]["data_wait"], at10[0]["time_diff"]
    total, first_s = row["train_s"], 10 * step_s
    rest = (row["data_wait_fraction"] * total - first * first_s) / (total - first_s) if total > first_s else None
    return first, rest


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def measure(track, args, opts, root=ROOT, code="this"):
    cfg_file = os.path.join(root, TRACK_CONFIGS[track])
    run_dir = os.path.join(args.out, track if code == "this" else f"{track}_{code}")
    timings = {}
    _, results = run_net(f"{track}, {code}", cfg_file, run_dir, [*run_opts(args), *opts], root, timings)
    steady = results["epochs"][1:]
    devices = results["world"]["num_devices"]
    clips_per_s = statistics.median(e["clips_per_s"] for e in steady)
    gflops = train_gflops_per_clip(cfg_file, [*data_opts(args), *opts])
    peak = peak_tflops(results, args.peak_tflops)
    achieved = clips_per_s / devices * gflops / 1e3 if gflops else None
    waits = [start_waits(run_dir, e) for e in results["epochs"]]
    loader = [sum(r for r in e.get("loader_clips_per_s_by_rank") or [] if r) or None for e in steady]
    return {"track": track, "code": code, "model": results["config"]["MODEL"]["MODEL_NAME"],
            "device": results["world"]["device"], "precision": results["world"]["precision"],
            "devices": devices, "clips_per_s": clips_per_s, "per_device": clips_per_s / devices,
            "data_wait": statistics.median(e["data_wait_fraction"] for e in steady),
            "data_wait_first10_epoch1": waits[0][0], "data_wait_first10": median(w[0] for w in waits[1:]),
            "data_wait_rest": median(w[1] for w in waits[1:]), "loader_clips_per_s": median(loader),
            "peak_gpu_memory_gib": results.get("peak_gpu_memory_gib"),
            "eval_s": median(e.get("eval_s") for e in results["epochs"]),
            "exit_after_summary_s": timings.get("exit_after_summary_s"),
            "gflops": gflops, "tflops": achieved, "mfu": achieved / peak if achieved and peak else None,
            "results": results, "peak": peak}


def cell(value, fmt):
    return "n/a" if value is None else format(value, fmt)


def percent(value):
    return cell(None if value is None else 100 * value, ".1f") + ("%" if value is not None else "")


def print_table(rows, args):
    print("\n| track | code | model | device x count | precision | clips/s | clips/s per device | data wait "
          "| first 10 steps (epoch 1) | first 10 steps | rest | loader clips/s | peak GPU GiB | eval s "
          "| exit after summary s | train GFLOPs/clip | TFLOPS per device | MFU |")
    print("| --- " * 18 + "|")
    for r in rows:
        print(f"| {r['track']} | {r['code']} | {r['model']} | {r['device']} x {r['devices']} | {r['precision']} | "
              f"{r['clips_per_s']:.1f} | {r['per_device']:.1f} | {percent(r['data_wait'])} | "
              f"{percent(r['data_wait_first10_epoch1'])} | {percent(r['data_wait_first10'])} | "
              f"{percent(r['data_wait_rest'])} | {cell(r['loader_clips_per_s'], '.0f')} | "
              f"{cell(r['peak_gpu_memory_gib'], '.1f')} | {cell(r['eval_s'], '.1f')} | "
              f"{cell(r['exit_after_summary_s'], '.1f')} | {cell(r['gflops'], '.1f')} | "
              f"{cell(r['tflops'], '.2f')} | {cell(r['mfu'], '.1%')} |")
    print(f"\nmedian over epochs 2-{args.epochs} (first 10 steps (epoch 1): the first epoch's start); "
          f"peak used for MFU: {cell(rows[0]['peak'], '.1f')} TFLOPS; {machine_line(rows[0]['results'])}; "
          f"load average {os.getloadavg()[0]:.1f}")


def main(argv=None):
    args = parse_args(argv)
    opts = [word for word in args.opts if word != "--opts"]
    prepare_data(os.path.join(ROOT, TRACK_CONFIGS[args.tracks[0]]), [*data_opts(args), *opts])
    rows = []
    for track in args.tracks:
        rows.append(measure(track, args, opts))
        if args.compare_with:
            other = os.path.abspath(args.compare_with)
            rows.append(measure(track, args, opts, other, os.path.basename(os.path.normpath(other))))
    print_table(rows, args)
    if args.json:
        record = {"machine": machine_line(rows[0]["results"]), "command": ["python", *sys.argv],
                  "load_average": os.getloadavg()[0],
                  "rows": [{k: v for k, v in r.items() if k != "results"} for r in rows]}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
