"""`assert_and_infer_cfg`: resolve aliases, reject impossible settings, freeze."""
from vbench.errors import ConfigError

from .defaults import AUTO
from .launcher import launcher_world

CHOICES = {
    "TRAIN.PRECISION": ("fp32", "fp16", "bf16", "auto"),
    "MODEL.DEPTHWISE_CONV": ("auto", "default", "contiguous", "contiguous_fp32", "triton"),
    "TRAIN.SAMPLING": ("windows", "random_clips", "random"),
    "TEST.SAMPLING": ("windows", "uniform"),
    "DATA.LAYOUT": ("auto", "csv", "folder", "kinetics"),
    "DATA.DECODING_BACKEND": ("pyav", "torchcodec"),
    "DATA.DECODER_DEVICE": ("cpu", "cuda", "auto"),
    "SOLVER.OPTIMIZING_METHOD": ("sgd", "adamw"),
    "SOLVER.LR_POLICY": ("cosine_linear_warmup", "cosine", "multistep_warmup", "constant"),
    "SOLVER.LR_SCALING": ("none", "linear"),
    "BN.NORM_TYPE": ("batchnorm", "sync_batchnorm"),
    "BENCHMARK.METRIC": ("clip", "video"),
    "BENCHMARK.TRACK": ("", "cnn", "transformer"),
    "MVIT.MODE": ("conv", "max", "avg"),
    "DIST_BACKEND": ("auto", "nccl", "gloo"),
    "SYNTH.PRESET": ("demo", "kinetics-like"),
    "MODEL.LOSS_FUNC": ("cross_entropy",),  # with SOLVER.LABEL_SMOOTHING for a smoothed loss
}


def config_value(cfg, key):
    """The value of a dotted key ("DATA.NUM_FRAMES") of a config."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _require(ok, message):
    if not ok:
        raise ConfigError(message)


def _check_choices(cfg):
    for key, choices in CHOICES.items():
        value = config_value(cfg, key)
        _require(value in choices, f"config key '{key}' is {value!r}; choose one of {list(choices)}.")


def _check_positive(cfg):
    for key in ("TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE", "TRAIN.ACCUM_STEPS", "DATA.NUM_FRAMES",
                "DATA.SAMPLING_RATE", "DATA.FRAMES_BETWEEN_CLIPS", "DATA.TRAIN_CROP_SIZE",
                "DATA.TEST_CROP_SIZE", "MODEL.NUM_CLASSES", "SOLVER.MAX_EPOCH", "NUM_SHARDS",
                "TRAIN.EVAL_PERIOD", "TRAIN.CHECKPOINT_PERIOD", "LOG_PERIOD", "NUM_CPU_PROCS",
                "WATCHDOG.STALL_TIMEOUT_S", "WATCHDOG.STEP_FACTOR"):
        _require(config_value(cfg, key) > 0, f"config key '{key}' must be positive, got {config_value(cfg, key)}.")
    for key in ("NUM_GPUS", "DATA_LOADER.NUM_WORKERS", "DATA.DECODER_THREADS", "DATA.FRAME_RATE",
                "SOLVER.WARMUP_EPOCHS", "BENCHMARK.WARMUP_STEPS", "BENCHMARK.WARMUP_MAX_S",
                "DATA_LOADER.MAX_WORKER_RESTARTS"):
        value = config_value(cfg, key)
        _require(value == AUTO or value >= 0, f"config key '{key}' must be >= 0, got {value}.")
    _require(0 <= cfg.SHARD_ID < cfg.NUM_SHARDS,
             f"SHARD_ID {cfg.SHARD_ID} must be in [0, NUM_SHARDS={cfg.NUM_SHARDS}).")


def _resolve_aliases(cfg):
    if cfg.DATA.TRAIN_JITTER_SCALES:
        cfg.DATA.TRAIN_MIN_MAX_SCALE = list(cfg.DATA.TRAIN_JITTER_SCALES)
    cfg.DATA.TRAIN_JITTER_SCALES = list(cfg.DATA.TRAIN_MIN_MAX_SCALE)
    if cfg.BN.USE_PRECISE_STATS:
        cfg.TRAIN.PRECISE_BN = True
        cfg.TRAIN.NUM_BATCHES_PRECISE = cfg.BN.NUM_BATCHES_PRECISE


def _check_shapes(cfg):
    scale = cfg.DATA.TRAIN_MIN_MAX_SCALE
    _require(len(scale) == 2 and 0 < scale[0] <= scale[1],
             f"DATA.TRAIN_MIN_MAX_SCALE must be [min, max] with 0 < min <= max, got {scale}.")
    if not cfg.DATA.TRAIN_RESIZE:
        _require(scale[0] >= cfg.DATA.TRAIN_CROP_SIZE,
                 f"DATA.TRAIN_CROP_SIZE {cfg.DATA.TRAIN_CROP_SIZE} is larger than the smallest "
                 f"train scale {scale[0]} (DATA.TRAIN_MIN_MAX_SCALE); lower the crop or raise the scale.")
    for key in ("DATA.TRAIN_RESIZE", "DATA.TEST_RESIZE"):
        size = config_value(cfg, key)
        _require(len(size) in (0, 2), f"config key '{key}' must be [] or [H, W], got {size}.")
    _require(len(cfg.DATA.MEAN) == len(cfg.DATA.STD) == cfg.DATA.INPUT_CHANNEL_NUM[0],
             "DATA.MEAN and DATA.STD need one value per input channel (DATA.INPUT_CHANNEL_NUM).")
    _require(cfg.TEST.NUM_SPATIAL_CROPS in (1, 3), "TEST.NUM_SPATIAL_CROPS must be 1 or 3.")
    for key in ("DATA.MAX_BAD_FRACTION", "DATA.MAX_VAL_EXCLUDED_FRACTION"):
        _require(0.0 <= config_value(cfg, key) <= 1.0, f"{key} must be in [0, 1].")
    # vbench's MViT sizes its position embeddings for the training crop (as SlowFast asserts).
    _require(cfg.MODEL.ARCH != "mvit" or cfg.DATA.TEST_CROP_SIZE == cfg.DATA.TRAIN_CROP_SIZE,
             f"MODEL.ARCH mvit needs DATA.TEST_CROP_SIZE ({cfg.DATA.TEST_CROP_SIZE}) equal to "
             f"DATA.TRAIN_CROP_SIZE ({cfg.DATA.TRAIN_CROP_SIZE}): its position embeddings are "
             f"sized for the training crop.")


def world_size_of(cfg):
    """Processes in the run: GPUs x shards, or NUM_CPU_PROCS x shards on CPU."""
    per_node = cfg.NUM_GPUS if cfg.NUM_GPUS > 0 else cfg.NUM_CPU_PROCS
    return per_node * cfg.NUM_SHARDS


def _check_batches(cfg):
    launched = launcher_world()  # under torchrun its world counts, whatever NUM_GPUS/NUM_SHARDS say
    world = launched["world_size"] if launched else world_size_of(cfg)
    source = "torchrun's WORLD_SIZE" if launched else "NUM_GPUS x NUM_SHARDS"
    for key in ("TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE"):
        _require(config_value(cfg, key) % world == 0,
                 f"config key '{key}' = {config_value(cfg, key)} is the global batch and must divide evenly "
                 f"over {world} processes ({source}); pick a multiple of {world}.")
    # torch's SyncBatchNorm runs on GPUs only; one process needs no synchronisation
    _require(cfg.BN.NORM_TYPE != "sync_batchnorm" or cfg.NUM_GPUS > 0 or world == 1,
             f"BN.NORM_TYPE sync_batchnorm needs GPUs (torch's SyncBatchNorm does not run on the "
             f"CPU), but NUM_GPUS is 0 with {world} processes; use BN.NORM_TYPE batchnorm.")
    per_process = cfg.TRAIN.BATCH_SIZE // world
    _require(per_process % cfg.TRAIN.ACCUM_STEPS == 0,
             f"the per-process batch {per_process} (TRAIN.BATCH_SIZE / processes) must divide "
             f"evenly into TRAIN.ACCUM_STEPS = {cfg.TRAIN.ACCUM_STEPS} micro-batches.")


def _check_decoder_device(cfg):
    """GPU decoding: torchcodec on NVDEC, in a GPU run, feeding the GPU transforms."""
    if cfg.DATA.DECODER_DEVICE != "cuda":
        return
    _require(cfg.DATA.DECODING_BACKEND == "torchcodec",
             f"DATA.DECODER_DEVICE cuda decodes with torchcodec on the GPU's video decoder (NVDEC), "
             f"but DATA.DECODING_BACKEND is {cfg.DATA.DECODING_BACKEND!r}, which decodes on the CPU "
             f"only; set DATA.DECODING_BACKEND torchcodec, or DATA.DECODER_DEVICE cpu.")
    _require(cfg.NUM_GPUS > 0, "DATA.DECODER_DEVICE cuda needs a GPU run, but NUM_GPUS is 0; set "
                               "NUM_GPUS 1 or more, or DATA.DECODER_DEVICE cpu.")
    # "auto" is left to the run's resource decisions, which must pick the GPU transforms here
    _require(cfg.DATA.GPU_TRANSFORMS in (True, AUTO),
             "DATA.DECODER_DEVICE cuda leaves the decoded frames on the GPU, where only the GPU "
             "transforms take them; set DATA.GPU_TRANSFORMS True (or DATA.DECODER_DEVICE cpu).")


def assert_and_infer_cfg(cfg, freeze=True):
    """Resolve SlowFast aliases, check every constraint we can check without hardware, freeze."""
    _resolve_aliases(cfg)
    _check_choices(cfg)
    _check_positive(cfg)
    _check_shapes(cfg)
    _check_batches(cfg)
    _check_decoder_device(cfg)
    if freeze:
        cfg.freeze()
    return cfg
