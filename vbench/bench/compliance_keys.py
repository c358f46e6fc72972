"""Which config keys a compliant benchmark run may change (docs/PROTOCOL.md, "Compliance").

Every key not matched by RESOURCE_KEYS is part of the recipe and must keep the value of the
track's benchmark config. A pattern ending in ".*" matches every key of that section.
"""
import fnmatch

RESOURCE_KEYS = (
    # processes, devices, rendezvous
    "NUM_GPUS", "NUM_SHARDS", "SHARD_ID", "INIT_METHOD", "DIST_BACKEND", "NUM_CPU_PROCS",
    # input pipeline resources and where things live
    "DATA_LOADER.*", "OUTPUT_DIR", "DATA.PATH_TO_DATA_DIR", "DATA.PATH_PREFIX", "DATA.INDEX_CACHE_DIR",
    # switches that keep the mathematics of the recipe
    "TRAIN.PRECISION", "MODEL.CHANNELS_LAST", "MODEL.COMPILE", "MODEL.DEPTHWISE_CONV", "DETERMINISTIC",
    "DATA.DECODING_BACKEND", "DATA.DECODER_THREADS", "DATA.DECODE_PER_CLIP", "DATA.DECODER_DEVICE",
    "DATA.GPU_TRANSFORMS",
    "DATA.DROP_CACHE",  # page-cache eviction before the clock; results.json records the data's state
    "TRAIN.ACCUM_STEPS",  # micro-batches of the same global TRAIN.BATCH_SIZE
    "TEST.BATCH_SIZE",  # evaluation runs in eval mode: the batch size does not change predictions
    # seed: runs of one submission should differ; never choose a seed by looking at results
    "RNG_SEED",
    # logging, checkpoints, what happens after the clock has stopped
    "LOG_PERIOD", "TENSORBOARD.*", "TRAIN.AUTO_RESUME", "TRAIN.CHECKPOINT_PERIOD", "TRAIN.CHECKPOINT_KEEP",
    "BENCHMARK.STOP_AT_TARGET", "TEST.ENABLE", "TEST.CHECKPOINT_FILE_PATH",
    # untimed warm-up before the clock starts: the weights are restored after it
    "BENCHMARK.WARMUP_STEPS", "BENCHMARK.WARMUP_MAX_S",
    # fault handling: the stall watchdog (WATCHDOG.*); DATA_LOADER.MAX_WORKER_RESTARTS is under DATA_LOADER.*
    "WATCHDOG.*",
)


def is_resource_key(key):
    """True when the dotted config `key` may differ from the recipe."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RESOURCE_KEYS)

