"""Training-loader throughput and its scaling with loader workers (loader only, no model).

On `kinetics-like` synthetic videos (340x256, 30 fps, 10 s, H.264 with a 250-frame GOP) and the
X3D-M recipe (every 16-frame window at 15 fps, random short side in [256, 320], 224 crop, flip,
normalise), for each worker count of --workers and each pipeline of --pipelines:

- vbench: `loader_from_index` with the CPU transforms (float clips out of the workers);
- vbench_gpu_transforms: DATA.GPU_TRANSFORMS (uint8 clips out of the workers; on a CUDA machine
  the consumer runs the GPU transform, elsewhere only the CPU side is measured);
- vbench_nvdec: the same with torchcodec decoding on the GPU (DATA.DECODER_DEVICE cuda; skipped
  with a note where CUDA or torchcodec is missing);
- per_clip: every clip decoded on its own with a seek from the preceding keyframe, then the CPU
  transform (the reference implementation's pipeline), in a shuffled torch DataLoader;
- decode_only: every frame of every video decoded once to RGB (the ceiling; clips/s counts the
  plan's clips of the videos decoded).

Each setting gets `--videos-per-worker` videos per worker (so an epoch takes about as long at
every worker count), one warm-up epoch (workers start, files open), then one timed epoch. The
consumer touches every page of each batch once, as a model or the pin-memory copy would (on CUDA
it moves the batch to the GPU). Workers do not make the timed epoch's first pieces ahead
(DATA_LOADER.START_AHEAD False unless overridden): its clips and CPU time all count. Per setting it
reports clips/s, clips/s per worker, CPU ms per
clip (user + system of the workers and of this process, which is robust to other jobs on the
machine), the most threads seen in a worker process, voluntary / involuntary context switches and
minor page faults per clip, the time to the epoch's first batch, the cores the loader left idle
and, on a GPU, the GPU's and its video decoder's utilisation over the epoch (nvidia-smi).

    python benchmarks/bench_loader.py --workers 1,2                  # the 2-core VM: ~1-2 min
    python benchmarks/bench_loader.py --workers 15,8,4,2,1 --quick \
        --pipelines vbench_gpu_transforms,vbench,vbench_nvdec --json $OUT/bench_loader_h100.json
    python benchmarks/bench_loader.py --workers 2 --pipelines vbench,per_clip,decode_only --repeats 3
    python benchmarks/bench_loader.py --workers 1,2 --compare-with /tmp/vbench-old   # an older checkout, same run
    python benchmarks/bench_loader.py --workers 8 --frame-size 1920x1080 --pipelines vbench_gpu_transforms,vbench_nvdec

The second is the GPU-machine call (~2 min, the videos generated on every core included): with a
--budget (--quick: 110 s), a setting is skipped when the time so far plus 1.3x that pipeline's
previous setting would pass it, so list the worker counts that matter most first. A setting that
fails is reported and the rest still run. The data is generated once under --cache and reused.

KEY VALUE overrides after the flags go to the vbench pipelines' config (e.g. DATA.DECODER_THREADS 1).
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext

from hd_videos import scaled_copy

from loader_pipelines import build_pipeline, skip_reason
from proc_stats import GpuSampler, ThreadSampler, difference, snapshot, usable_cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = ("vbench", "vbench_gpu_transforms", "vbench_nvdec", "per_clip", "decode_only")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated loader worker counts")
    parser.add_argument("--pipelines", default="vbench,vbench_gpu_transforms",
                        help=f"comma-separated, from {', '.join(PIPELINES)}")
    parser.add_argument("--videos-per-worker", type=int, default=8,
                        help="videos per worker in each setting (9 clips each)")
    parser.add_argument("--quick", action="store_true",
                        help="4 videos per worker and a 110 s budget (the GPU-machine call)")
    parser.add_argument("--budget", type=float, default=0,
                        help="seconds: skip the settings that would not finish in time (0 = no limit)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    parser.add_argument("--frame-size", default="",
                        help="WxH: decode copies of the videos scaled to this size (hd_videos.py), e.g. 1920x1080")
    parser.add_argument("--backend", default="pyav", help="vbench decoder backend")
    parser.add_argument("--repeats", type=int, default=1, help="measure every setting this many times")
    parser.add_argument("--data", default="", help="dataset root (folder layout); default: generate")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/vbench/bench_loader"),
                        help="where generated videos and the index cache go")
    parser.add_argument("--json", default="", help="write the rows to this JSON file")
    parser.add_argument("--code", default="", help="import vbench from this checkout (default: this one)")
    parser.add_argument("--label", default="", help="name of this code in the rows (default: 'this')")
    parser.add_argument("--compare-with", default="",
                        help="another vbench checkout measured the same way, after each worker count")
    parser.add_argument("--quiet-table", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    args.worker_counts = [int(w) for w in args.workers.split(",")]
    args.pipeline_names = [p for p in args.pipelines.split(",") if p]
    unknown = set(args.pipeline_names) - set(PIPELINES)
    if unknown or min(args.worker_counts) < 1 or len(args.opts) % 2:
        parser.error(f"unknown pipelines {sorted(unknown)}" if unknown else
                     "worker counts must be >= 1" if min(args.worker_counts) < 1 else
                     "config overrides come as KEY VALUE pairs")
    if args.quick:
        args.videos_per_worker, args.budget = 4, args.budget or 110
    return args


# ------------------------------------------------------------------------------------ data
def find_or_generate(args, videos):
    """A kinetics-like dataset with at least `videos` training videos: --data, a folder generated
    earlier under --cache, or a new one (all cores). Returns (root, generation record or None)."""
    if args.data:
        return args.data, None
    os.makedirs(args.cache, exist_ok=True)
    per_class = -(-videos // 2)
    for name in sorted(os.listdir(args.cache)):
        if name.startswith("kinetics-like-2x") and name[16:].isdigit() and int(name[16:]) >= per_class:
            if os.path.isdir(os.path.join(args.cache, name, "train")):
                return os.path.join(args.cache, name), None
    import resource

    from vbench.data.synthetic import generate_dataset
    root = os.path.join(args.cache, f"kinetics-like-2x{per_class}")
    cores = usable_cores()
    print(f"generating {2 * per_class + 2} kinetics-like videos into {root} with {cores} workers ...")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = generate_dataset(root, preset="kinetics-like", num_classes=2, train_per_class=per_class,
                               val_per_class=1, seed=0, workers=cores)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = sum(summary["videos"].values())
    cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return root, {"videos": total, "workers": cores, "seconds": summary["seconds"],
                  "videos_per_s": summary["videos_per_s"], "cpu_s_per_video": cpu / total}


def load_index(args, root):
    from vbench.data.index import build_index
    from vbench.data.layouts import read_split
    entries, class_names = read_split(root, "train", layout="auto")
    infos = build_index(entries, cache_dir=os.path.join(args.cache, "index"), num_workers=usable_cores())
    infos = [info for info in infos if info.error is None]
    for info in infos:  # the page cache holds them: the sweep measures decoding, not the disk
        with open(info.path, "rb") as f:
            while f.read(1 << 22):
                pass
    return infos, class_names


def recipe_cfg(args, root, workers, pipeline, device):
    from vbench.config import get_cfg, load_config
    # a checkout whose track configs name the kinetics20 clip list: generated videos are not on it
    defaults = get_cfg()
    opts = ["DATA.CLIP_LIST", ""] if "CLIP_LIST" in defaults.DATA else []
    if "START_AHEAD" in defaults.DATA_LOADER:  # the timed epoch's first pieces made before its clock starts
        opts += ["DATA_LOADER.START_AHEAD", "False"]
    opts += ["NUM_GPUS", "1" if device.type == "cuda" else "0", "DATA.PATH_TO_DATA_DIR", root,
            "DATA.LAYOUT", "auto", "DATA.INDEX_CACHE_DIR", os.path.join(args.cache, "index"),
            "DATA.DECODING_BACKEND", args.backend, "TRAIN.BATCH_SIZE", str(args.batch_size),
            "DATA_LOADER.NUM_WORKERS", str(workers), "DATA_LOADER.INDEX_WORKERS", "1",
            "DATA.GPU_TRANSFORMS", str(pipeline != "vbench")]
    if pipeline == "vbench_nvdec":
        opts += ["DATA.DECODING_BACKEND", "torchcodec", "DATA.DECODER_DEVICE", "cuda"]
    if pipeline.startswith("vbench"):
        opts += list(args.opts)
    return load_config(os.path.join(args.code or REPO, "configs/Kinetics/X3D_M.yaml"), opts)


def frame_size(infos):
    """The most common (height, width) of the videos."""
    sizes = [(info.height, info.width) for info in infos]
    return max(set(sizes), key=sizes.count)


# ------------------------------------------------------------------------------------ measuring
def configure_main_process(cfg, device):
    """This process's torch threads as the trainer's launch sets them for this config."""
    from types import SimpleNamespace

    from vbench.engine.launch import configure_torch
    configure_torch(cfg, SimpleNamespace(device=device), 1)


def timed_epoch(pipeline, device):
    """Epoch 1 of a warmed-up pipeline: (clips, seconds to the first batch, seconds, worker counters,
    this process's counters, most threads seen in one worker, mean GPU utilisation {gpu, decoder})."""
    pids, main = pipeline.worker_pids(), os.getpid()
    before, main_before = snapshot(pids), snapshot([main])
    clips, first = 0, None
    with ThreadSampler(pids) as sampler, GpuSampler() if device.type == "cuda" else nullcontext() as gpu:
        start = time.perf_counter()
        for count in pipeline.epoch(1):
            first = time.perf_counter() - start if first is None else first
            clips += count
        seconds = time.perf_counter() - start
    work, own = difference(before, snapshot(pids)), difference(main_before, snapshot([main]))
    return clips, first, seconds, work, own, sampler.most, gpu.means if gpu else {"gpu": None, "decoder": None}


def measure(args, name, root, infos, class_names, workers, device):
    """One row: a warm-up epoch (the workers start), then a timed epoch."""
    import torch
    cfg = recipe_cfg(args, root, workers, name, device)
    videos = infos[:workers * args.videos_per_worker]
    configure_main_process(cfg, device)
    pipeline = build_pipeline(name, cfg, videos, class_names, workers, device)
    for _ in pipeline.epoch(0):
        pass
    loader = getattr(pipeline, "loader", None)
    ledger = getattr(loader, "_ledger", None)  # None: a torch DataLoader, or code without slots
    fresh = ledger.fresh if ledger is not None else None
    clips, first, seconds, work, own, threads, gpu = timed_epoch(pipeline, device)
    extra = {"decoder_threads": getattr(loader, "decoder_threads", cfg.DATA.DECODER_THREADS),
             "batches_in_fresh_memory": None if ledger is None else ledger.fresh - fresh,
             "distinct_videos_per_batch": (loader.mixing_stats()["mean_distinct_videos"]
                                           if hasattr(loader, "mixing_stats") else None)}
    del pipeline, loader, ledger
    gc.collect()  # the workers exit before the next setting starts

    def per_clip(*fields, scale=1):
        return scale * sum(counts[field] for counts in (work, own) for field in fields) / clips
    return {"pipeline": name, "workers": workers, "code": args.label or "this",
            "clips_per_s": clips / seconds, "clips_per_s_per_worker": clips / seconds / workers,
            "cpu_ms_per_clip": per_clip("cpu_s", scale=1000),
            "worker_cpu_ms_per_clip": 1000 * work["cpu_s"] / clips,
            "main_cpu_ms_per_clip": 1000 * own["cpu_s"] / clips,
            "threads_per_worker": threads, "main_threads": torch.get_num_threads(),
            "voluntary_cs_per_clip": per_clip("voluntary_cs"),
            "involuntary_cs_per_clip": per_clip("involuntary_cs"),
            "minor_faults_per_clip": per_clip("minor_faults"),
            "main_minor_faults_per_clip": own["minor_faults"] / clips,
            "first_batch_s": first, "epoch_s": seconds, "clips": clips, "videos": len(videos),
            # cores the loader left idle at this rate (of this process's), and the GPU's share of
            # time running kernels / the NVDEC engine's (the loader's GPU work the step loses)
            "cpu_cores_left": usable_cores() - clips / seconds * per_clip("cpu_s"),
            "gpu_util": gpu["gpu"], "decoder_util": gpu["decoder"],
            "frame_size": list(frame_size(videos)),
            "batch_size": args.batch_size, "device": device.type, **extra}


def compare_rows(args, root, workers, pipelines):
    """The same measurement of the --compare-with checkout, in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        command = [sys.executable, os.path.abspath(__file__), "--code", args.compare_with,
                   "--label", os.path.basename(os.path.normpath(args.compare_with)),
                   "--workers", str(workers), "--pipelines", ",".join(pipelines), "--data", root,
                   "--cache", args.cache, "--videos-per-worker", str(args.videos_per_worker),
                   "--batch-size", str(args.batch_size), "--backend", args.backend, "--json", out,
                   "--quiet-table", *args.opts]
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode:
            print(f"--compare-with run failed (exit {result.returncode}):\n{result.stdout[-3000:]}")
            return []
        with open(out) as f:
            return json.load(f)["rows"]


def summarise(rows):
    """Median of each numeric field over the repeats of one (code, pipeline, workers)."""
    groups = {}
    for row in rows:
        groups.setdefault((row["code"], row["pipeline"], row["workers"]), []).append(row)
    out = []
    for same in groups.values():
        merged = dict(same[0])
        for key, value in same[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "workers":
                merged[key] = statistics.median(r[key] for r in same)
        rates = [r["clips_per_s"] for r in same]
        merged.update(runs=len(same), clips_per_s_min=min(rates), clips_per_s_max=max(rates))
        out.append(merged)
    return out


# ------------------------------------------------------------------------------------ output
def machine_line():
    import av
    import psutil
    import torch

    from vbench.bench.sysinfo import cpu_model
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_model()}, {psutil.cpu_count()} logical CPUs ({psutil.cpu_count(logical=False)} "
            f"physical cores, {usable_cores()} usable), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"{gpu}; torch {torch.__version__}, av {av.__version__}")


COLUMNS = [("clips/s", "clips_per_s", 8, 1), ("/worker", "clips_per_s_per_worker", 7, 1),
           ("CPU ms/clip", "cpu_ms_per_clip", 11, 1), ("(main)", "main_cpu_ms_per_clip", 6, 1),
           ("threads/w", "threads_per_worker", 9, 0), ("dec thr", "decoder_threads", 7, 0),
           ("vcs/clip", "voluntary_cs_per_clip", 8, 0), ("ivcs/clip", "involuntary_cs_per_clip", 9, 0),
           ("faults/clip", "minor_faults_per_clip", 11, 0), ("1st batch s", "first_batch_s", 11, 2),
           ("cores left", "cpu_cores_left", 10, 1), ("GPU util", "gpu_util", 8, 2),
           ("NVDEC util", "decoder_util", 10, 2)]


def print_table(rows):
    head = f"{'code':<10} {'pipeline':<22} {'workers':>7} " + " ".join(f"{t:>{w}}" for t, _, w, _ in COLUMNS)
    print(head)
    for row in sorted(rows, key=lambda r: (r["pipeline"], r["workers"], r["code"] != "this")):
        cells = " ".join(f"{row[key]:>{w}.{d}f}" if isinstance(row.get(key), (int, float)) else f"{'-':>{w}}"
                         for _, key, w, d in COLUMNS)
        print(f"{row['code'][:10]:<10} {row['pipeline']:<22} {row['workers']:>7} {cells}")
    print("(CPU ms/clip: workers + this process, user + system; (main): this process alone; "
          "threads/w: most threads seen in one worker; dec thr: decoder threads per worker, 0 = "
          "FFmpeg's default, cores + 1; counts per clip are workers + this process; cores left: this "
          "process's cores the loader did not use at its rate; GPU / NVDEC util: share of the epoch "
          "a kernel / the video decoder ran)")
    for code in dict.fromkeys(r["code"] for r in rows):
        for pipeline in dict.fromkeys(r["pipeline"] for r in rows):
            same = sorted((r for r in rows if r["code"] == code and r["pipeline"] == pipeline),
                          key=lambda r: r["workers"])
            for low, high in zip(same, same[1:]):
                ratio = high["clips_per_s"] / low["clips_per_s"]
                print(f"scaling {code} {pipeline}: {high['workers']} / {low['workers']} workers = "
                      f"{ratio:.2f}x clips/s (ideal {high['workers'] / low['workers']:.2f}x)")


def sweep(args, root, infos, class_names, device, started):
    """Every (repeat, worker count, pipeline) row that fits in the budget; a setting that fails is
    reported and skipped, so one broken pipeline does not cost a whole device run."""
    rows, last_s = [], {}
    for _ in range(args.repeats):
        for workers in args.worker_counts:
            for name in args.pipeline_names:
                reason = skip_reason(name, device)
                estimate = 1.3 * last_s.get(name, 0)  # this pipeline's previous setting, a bit more
                if not reason and args.budget and time.perf_counter() - started + estimate > args.budget:
                    reason = f"over the {args.budget:.0f} s budget"
                if reason:
                    print(f"skipped {name} with {workers} workers: {reason}")
                    continue
                t0 = time.perf_counter()
                try:
                    rows.append(measure(args, name, root, infos, class_names, workers, device))
                except Exception as error:  # noqa: BLE001 -- report it and measure the rest
                    print(f"{name} with {workers} workers failed: {type(error).__name__}: {error}")
                    continue
                last_s[name] = time.perf_counter() - t0
                print(f"[{time.perf_counter() - started:.0f} s] {name}, {workers} workers: "
                      f"{rows[-1]['clips_per_s']:.1f} clips/s, {rows[-1]['cpu_ms_per_clip']:.1f} "
                      f"CPU ms/clip", flush=True)
            if args.compare_with:
                rows += compare_rows(args, root, workers, args.pipeline_names)
    return rows


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.code or REPO))
    import torch
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    needed = max(args.worker_counts) * args.videos_per_worker
    root, generation = find_or_generate(args, needed)
    if args.frame_size:
        width, height = (int(v) for v in args.frame_size.lower().split("x"))
        root = scaled_copy(root, os.path.join(args.cache, f"{os.path.basename(root)}-{width}x{height}"),
                           width, height, needed, usable_cores())
    infos, class_names = load_index(args, root)
    if len(infos) < needed:
        sys.exit(f"{root} has {len(infos)} readable training videos; the sweep needs {needed}")
    load_before = os.getloadavg()[0]
    if not args.quiet_table:
        print(f"machine: {machine_line()}; load average {load_before:.2f}")
        print(f"data: {root}, {args.videos_per_worker} videos per worker, batch {args.batch_size}; "
              f"budget {f'{args.budget:.0f} s' if args.budget else 'none'}")
    rows = summarise(sweep(args, root, infos, class_names, device, started))
    load_after = os.getloadavg()[0]
    if not args.quiet_table:
        print_table(rows)
        print(f"load average {load_before:.2f} before, {load_after:.2f} after; "
              f"{time.perf_counter() - started:.0f} s in all")
    if args.json:
        record = {"machine": machine_line(), "load_average": [load_before, load_after],
                  "command": ["python", *sys.argv], "videos_per_worker": args.videos_per_worker,
                  "generation": generation, "rows": rows}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
