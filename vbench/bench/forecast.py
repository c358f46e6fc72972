"""What `vbench preflight` concludes from its measurements (vbench/engine/preflight.py): which side
limits the run, the expected clips/s, epoch time and time for the recipe's epochs, and what would
help. Pure arithmetic on the measured figures and the config, so it can be checked without a GPU.

- Which side limits: the loader alone (its clips/s on a sample of the training videos, with the
  run's workers) against the training step alone (random clips of the run's shape on the run's
  device). Within BALANCED of each other: balanced.
- The expected clips/s: the real training loop on the sample (the loader feeding the step),
  times the training processes of the run (one GPU each; DDP's gradient exchange not counted).
  On a CPU the loader and the model share the cores, so this is below both alone.
- An epoch: its training clips at that rate, plus the evaluation (its clips at the measured
  evaluation's rate) every TRAIN.EVAL_PERIOD epochs; the first epoch also waits for the loader's
  first batch.
"""
from dataclasses import dataclass, field

from vbench.data.resources import nvdec_measured_faster

BALANCED = 0.10  # loader and step rates within 10% of each other: neither side limits alone
LARGE_FRAME = 960 * 540  # pixels per frame above which NVDEC is worth measuring (published figures)
SMALL_SHORT_SIDE = 256  # videos up to this short side are cheap to decode: no advice to shrink them


@dataclass
class Measured:
    """Everything preflight measured (rates in clips/s of one training process)."""
    device: str  # "cpu" or the GPU's name
    processes: int  # training processes of the run (GPUs, or NUM_CPU_PROCS)
    cores: int  # CPU cores of one process's share
    workers: int  # loader workers per process
    split_videos: int  # videos listed in the training split
    sample_videos: int  # videos probed
    unreadable: list = field(default_factory=list)  # (rel_path, reason) in the sample
    frame_size: tuple = (0, 0)  # the sample's most common (height, width)
    frame_size_share: float = 1.0  # share of the sample at that size
    train_clips: int = 0  # training clips per epoch (estimated from the sample, all processes)
    eval_clips: int = 0  # evaluation clips (all processes)
    loader: float = 0.0  # the training loader alone
    loader_first_batch_s: float = 0.0  # its wait for the first batch with fresh workers
    step: float = 0.0  # the training step alone
    together: float = 0.0  # the loader feeding the step
    together_wait: float = 0.0  # data-wait share while together
    eval: float = 0.0  # the evaluation (its loader feeding the forward)
    seconds: float = 0.0  # preflight's own time
    notes: list = field(default_factory=list)  # what could not be measured, and why


def limiting_side(loader, step):
    """"loader", "model" or "balanced" (within BALANCED), from the rates of each side alone."""
    if abs(loader - step) <= BALANCED * max(loader, step):
        return "balanced"
    return "loader" if loader < step else "model"


def forecast(m, epochs, eval_period):
    """{side, clips_per_s, train_s, eval_s, epoch_s, first_epoch_s, recipe_s} for the whole run."""
    rate = (m.together or min(m.loader, m.step)) * m.processes
    eval_rate = m.eval * m.processes
    train_s = m.train_clips / rate if rate else float("inf")
    eval_s = m.eval_clips / eval_rate if eval_rate else 0.0
    evaluations = epochs // max(1, eval_period) + (1 if epochs % max(1, eval_period) else 0)
    recipe_s = epochs * train_s + evaluations * eval_s + m.loader_first_batch_s
    return {"side": limiting_side(m.loader, m.step), "clips_per_s": rate, "train_s": train_s,
            "eval_s": eval_s, "epoch_s": train_s + eval_s / max(1, eval_period),
            "first_epoch_s": train_s + m.loader_first_batch_s, "recipe_s": recipe_s,
            "epochs": epochs, "eval_period": max(1, eval_period), "evaluations": evaluations}


def advice(m, cfg, side, gpu_name=None, fastest=None):
    """What would help, most useful first (a list of sentences). `fastest`: the (precision,
    channels_last) the measured rule picks for this model on this device, or None."""
    tips = []
    gpu = cfg.NUM_GPUS > 0
    if side in ("loader", "balanced"):
        spare = m.cores - (1 if gpu else max(1, m.cores // 2)) - m.workers
        if spare > 0:
            tips.append(f"more loader workers: DATA_LOADER.NUM_WORKERS {m.workers + spare} (now {m.workers}; "
                        f"{m.cores} cores per process)")
        if gpu and not cfg.DATA.GPU_TRANSFORMS:
            tips.append("GPU transforms: DATA.GPU_TRANSFORMS True (uint8 clips, about 40% less CPU per clip "
                        "on the H100 machine's sweep)")
        height, width = m.frame_size
        if gpu and nvdec_measured_faster(gpu_name or "", (height, width)):
            tips.append("NVDEC: DATA.DECODER_DEVICE auto (a record measured it faster for this GPU and size)")
        elif gpu and height * width > LARGE_FRAME:
            tips.append(f"NVDEC may win at {width}x{height} (published figures favour it above ~960x540); "
                        "measure it: benchmarks/bench_loader.py --pipelines vbench_gpu_transforms,vbench_nvdec")
        short = min(height, width)
        wanted = max(cfg.DATA.TRAIN_MIN_MAX_SCALE)
        if short > max(1.5 * wanted, SMALL_SHORT_SIDE):
            tips.append(f"videos smaller on disk: a short side of {short} px is decoded to train at "
                        f"{wanted}; re-encode them (tools/prepare_kinetics.py --mode reencode "
                        f"--short-side {wanted})")
        if not gpu:
            tips.append("a GPU: on the CPU the loader and the model share the cores")
    if side in ("model", "balanced"):
        if fastest is not None and (cfg.TRAIN.PRECISION, cfg.MODEL.CHANNELS_LAST) != fastest:
            tips.append(f"the fastest measured path: TRAIN.PRECISION {fastest[0]} MODEL.CHANNELS_LAST "
                        f"{fastest[1]} (or both \"auto\")")
        if gpu and not cfg.MODEL.COMPILE:
            tips.append("MODEL.COMPILE True (regional compile of the repeated blocks; compiled during the "
                        "untimed warm-up)")
        tips.append("more GPUs (NUM_GPUS), with loader workers for each" if gpu else
                    "a GPU: on the CPU the model step is the limit")
    if m.unreadable:
        tips.append(f"{len(m.unreadable)} of {m.sample_videos} sampled videos are unreadable: run "
                    f"`vbench data check {cfg.DATA.PATH_TO_DATA_DIR}`")
    return tips


def _time(seconds):
    if seconds == float("inf"):
        return "never"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_report(m, result, tips):
    """The printed summary."""
    height, width = m.frame_size
    lines = [
        f"preflight on {m.device} ({m.processes} training process(es), {m.workers} loader workers and "
        f"{m.cores} cores each), {m.seconds:.0f} s",
        f"videos: {m.split_videos} in the training split, {m.sample_videos} sampled: {width}x{height} "
        f"({100 * m.frame_size_share:.0f}% of them), {len(m.unreadable)} unreadable; "
        f"{m.train_clips} training clips per epoch, {m.eval_clips} evaluation clips",
        f"loader alone: {m.loader:.1f} clips/s (first batch after {m.loader_first_batch_s:.1f} s); "
        f"training step alone: {m.step:.1f} clips/s",
        f"training loop: {m.together:.1f} clips/s per process, data wait {100 * m.together_wait:.0f}%; "
        f"evaluation: {m.eval:.1f} clips/s",
    ]
    side = {"loader": "the loader limits the run (the model could train faster)",
            "model": "the model step limits the run (the loader keeps up)",
            "balanced": "loader and model step are balanced (within 10%)"}[result["side"]]
    lines += [
        f"verdict: {side}",
        f"expected: {result['clips_per_s']:.1f} clips/s in training; an epoch {_time(result['train_s'])} "
        f"of training + {_time(result['eval_s'])} per evaluation (every {result['eval_period']} "
        f"epoch(s)); the recipe's "
        f"{result['epochs']} epochs {_time(result['recipe_s'])} (the time to target, which stops at the "
        f"first evaluation reaching it, is at most this)",
    ]
    if tips:
        lines.append("what would help:")
        lines += [f"  - {tip}" for tip in tips]
    lines += [f"note: {note}" for note in m.notes]
    return "\n".join(lines)
