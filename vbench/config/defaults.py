"""Every config key vbench reads, with its default and a one-line meaning.

Key names follow SlowFast where SlowFast has the key. A YAML file or a command-line override may
only set keys that exist here; `vbench.config.load_config` enforces that.
"""
from fvcore.common.config import CfgNode

_C = CfgNode()

AUTO = "auto"
# Keys that take either a value of the given type or "auto"; each "auto" is decided per machine at
# launch, in one place (vbench/engine/resources.py), and recorded under "resolved" in results.json.
AUTO_KEYS = {"MODEL.CHANNELS_LAST": bool, "DATA.GPU_TRANSFORMS": bool, "DATA_LOADER.NUM_WORKERS": int}

# ---------------------------------------------------------------- run and resources
_C.NUM_GPUS = 1  # GPUs per node (one process each; torchrun: its --nproc-per-node); 0 trains on the CPU.
_C.NUM_SHARDS = 1  # number of nodes (machines) taking part in the run (torchrun: its --nnodes).
_C.SHARD_ID = 0  # index of this node among NUM_SHARDS (torchrun: its --node-rank).
_C.INIT_METHOD = "tcp://localhost:9999"  # torch.distributed rendezvous for multi-node runs.
_C.DIST_BACKEND = "auto"  # "auto" (nccl on GPUs, gloo on CPU), "nccl" or "gloo".
_C.NUM_CPU_PROCS = 1  # processes when NUM_GPUS is 0 (gloo DDP on CPU; used by tests).
_C.RNG_SEED = 0  # seed for Python, NumPy and torch in every process (offset by rank).
_C.DETERMINISTIC = False  # use deterministic torch algorithms (slower; for exact resume checks).
_C.OUTPUT_DIR = "./output"  # run folder: logs, checkpoints, results.json.
_C.LOG_PERIOD = 10  # iterations between metric reads (the only host syncs) and log lines.

# ---------------------------------------------------------------- training
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True  # run training.
_C.TRAIN.DATASET = "kinetics"  # registered dataset of the training split (vbench/data/registry.py).
_C.TRAIN.BATCH_SIZE = 64  # GLOBAL clips per optimizer step, over all processes.
_C.TRAIN.ACCUM_STEPS = 1  # gradient accumulation steps per optimizer step (same global batch).
_C.TRAIN.EVAL_PERIOD = 1  # epochs between evaluations.
_C.TRAIN.CHECKPOINT_PERIOD = 1  # epochs between checkpoints.
_C.TRAIN.CHECKPOINT_KEEP = 2  # newest checkpoints kept on disk.
_C.TRAIN.AUTO_RESUME = True  # resume from the newest loadable checkpoint in OUTPUT_DIR.
_C.TRAIN.CHECKPOINT_FILE_PATH = ""  # initial weights/checkpoint to load when not resuming.
_C.TRAIN.PRECISION = "fp32"  # "fp32", "fp16", "bf16" or "auto" (the fastest measured: vbench/engine/precision.py).
_C.TRAIN.SAMPLING = "windows"  # train clip plan: "windows", "random_clips" or "random".
_C.TRAIN.CLIPS_PER_VIDEO = 1  # clips per video per epoch for "random_clips".
_C.TRAIN.PRECISE_BN = False  # recompute BN statistics before each evaluation (fvcore precise BN).
_C.TRAIN.NUM_BATCHES_PRECISE = 20  # batches used for precise BN.

# ---------------------------------------------------------------- evaluation / testing
_C.TEST = CfgNode()
_C.TEST.ENABLE = True  # run multi-view testing after training (or alone with TRAIN.ENABLE False).
_C.TEST.DATASET = "kinetics"  # registered dataset of the validation/test split (data/registry.py).
_C.TEST.BATCH_SIZE = 64  # GLOBAL clips per evaluation batch.
_C.TEST.SAMPLING = "windows"  # eval clip plan: "windows" (clip-level) or "uniform" (views per video).
_C.TEST.NUM_ENSEMBLE_VIEWS = 10  # temporal views per video for "uniform".
_C.TEST.NUM_SPATIAL_CROPS = 3  # spatial crops per view for "uniform" (1 or 3).
_C.TEST.CHECKPOINT_FILE_PATH = ""  # checkpoint to test; empty uses the newest in OUTPUT_DIR.
_C.TEST.SPLIT = "val"  # split used by `vbench test`.

# ---------------------------------------------------------------- data
_C.DATA = CfgNode()
_C.DATA.PATH_TO_DATA_DIR = ""  # dataset root (layouts: see DATA.LAYOUT).
_C.DATA.LAYOUT = "auto"  # dataset "kinetics": "auto", "csv", "folder" or "kinetics" (vbench/data/layouts.py).
_C.DATA.PATH_PREFIX = ""  # prefix joined to relative video paths in CSV layouts.
_C.DATA.PATH_LABEL_SEPARATOR = " "  # separator between path and label in SlowFast CSVs.
_C.DATA.TRAIN_SPLIT = "train"  # split name used for training.
_C.DATA.VAL_SPLIT = "val"  # split name used for evaluation during training.
_C.DATA.INDEX_CACHE_DIR = ""  # video metadata cache; empty uses ~/.cache/vbench/index.
_C.DATA.NUM_FRAMES = 16  # frames per clip.
_C.DATA.FRAME_RATE = 15.0  # resample the timeline to this fps; 0 keeps native fps with DATA.SAMPLING_RATE.
_C.DATA.SAMPLING_RATE = 1  # native-frame stride between clip frames (SlowFast) when FRAME_RATE is 0.
_C.DATA.FRAMES_BETWEEN_CLIPS = 16  # stride, in resampled frames, between consecutive "windows" clips.
_C.DATA.TRAIN_MIN_MAX_SCALE = [256, 320]  # random short-side scale range for training.
_C.DATA.TRAIN_JITTER_SCALES = []  # SlowFast alias of TRAIN_MIN_MAX_SCALE (wins when set).
_C.DATA.TRAIN_RESIZE = []  # fixed [H, W] resize before the crop (torchvision recipe); overrides scale jitter.
_C.DATA.TRAIN_CROP_SIZE = 224  # training crop side.
_C.DATA.RANDOM_FLIP = True  # horizontal flip in training.
_C.DATA.TEST_MIN_SHORT_SIDE_SCALE = 256  # evaluation short-side resize.
_C.DATA.TEST_RESIZE = []  # fixed [H, W] evaluation resize (torchvision recipe); overrides short side.
_C.DATA.TEST_CROP_SIZE = 256  # evaluation crop side.
_C.DATA.MEAN = [0.45, 0.45, 0.45]  # per-channel mean after scaling pixels to [0, 1].
_C.DATA.STD = [0.225, 0.225, 0.225]  # per-channel std.
_C.DATA.INPUT_CHANNEL_NUM = [3]  # input channels per pathway (SlowFast).
_C.DATA.DECODING_BACKEND = "pyav"  # "pyav" or "torchcodec".
_C.DATA.DECODER_THREADS = 0  # decoder threads per loader worker; 0: the process's cores over its workers, at least 1.
_C.DATA.DECODE_PER_CLIP = False  # decode each clip alone (a seek each), as the reference did; for baselines.
_C.DATA.DECODER_DEVICE = "cpu"  # "cpu", "cuda" (torchcodec on NVDEC) or "auto" (NVDEC where measured faster).
_C.DATA.GPU_TRANSFORMS = False  # resize/crop/normalise on the GPU (uint8 clips cross PCIe): True, False, "auto".
_C.DATA.CLIP_LIST = ""  # folder of <split>.txt clip lists: a split is exactly these clips (configs/datasets/).
_C.DATA.MAX_BAD_FRACTION = 0.01  # stop when more than this fraction of training videos is missing or unreadable.
_C.DATA.MAX_VAL_EXCLUDED_FRACTION = 0.0  # stop when more of DATA.VAL_SPLIT is left out; 0: every video is evaluated.
_C.DATA.MAX_SUBSTITUTE_TRIES = 10  # substitute attempts for one bad training video.
_C.DATA.DROP_CACHE = False  # evict the dataset from the page cache before the clock starts (on in the benchmark).

# ---------------------------------------------------------------- synthetic data
_C.SYNTH = CfgNode()
_C.SYNTH.AUTO_GENERATE = False  # generate the synthetic dataset into DATA.PATH_TO_DATA_DIR when absent.
_C.SYNTH.PRESET = "demo"  # "demo" (small, learnable) or "kinetics-like" (performance work).
_C.SYNTH.NUM_CLASSES = 4  # motion-pattern classes.
_C.SYNTH.TRAIN_PER_CLASS = 16  # training videos per class.
_C.SYNTH.VAL_PER_CLASS = 4  # validation videos per class.
_C.SYNTH.SEED = 0  # generator seed (the dataset is a pure function of the seed and preset).

# ---------------------------------------------------------------- data loader
_C.DATA_LOADER = CfgNode()
_C.DATA_LOADER.NUM_WORKERS = 8  # loader workers per training process, or "auto" (GPU: its cores - 1; CPU: half).
_C.DATA_LOADER.PIN_MEMORY = True  # pin host memory for faster GPU copies.
_C.DATA_LOADER.PREFETCH_FACTOR = 2  # batches prefetched per training process (each worker at least 2 pieces ahead).
_C.DATA_LOADER.START_AHEAD = True  # a worker done with its epoch makes the next epoch's (or eval's) first pieces.
_C.DATA_LOADER.PIECE_SIZE = 8  # clips a worker sends at a time (joined into batches by the trainer); 0: whole batches.
_C.DATA_LOADER.SHUFFLE_BUFFER = 64  # clips mixed per worker when a video gives several clips in a row.
_C.DATA_LOADER.INDEX_WORKERS = 8  # threads probing video headers when building the index.
_C.DATA_LOADER.MAX_WORKER_RESTARTS = 3  # worker deaths survived per loader and attempt; one more stops the run.

# ---------------------------------------------------------------- solver
_C.SOLVER = CfgNode()
_C.SOLVER.OPTIMIZING_METHOD = "sgd"  # "sgd" or "adamw".
_C.SOLVER.BASE_LR = 0.1  # learning rate at the reference batch (see LR_SCALING).
_C.SOLVER.LR_SCALING = "none"  # "none" or "linear" (BASE_LR * TRAIN.BATCH_SIZE / REFERENCE_BATCH_SIZE).
_C.SOLVER.REFERENCE_BATCH_SIZE = 64  # global batch BASE_LR was tuned for (linear scaling).
_C.SOLVER.LR_POLICY = "cosine"  # "cosine_linear_warmup" (per epoch); "cosine", "multistep_warmup" (per iteration).
_C.SOLVER.MAX_EPOCH = 300  # training epochs.
_C.SOLVER.WARMUP_EPOCHS = 0.0  # linear warm-up length in epochs.
_C.SOLVER.WARMUP_START_LR = 0.01  # learning rate at the start of warm-up ("cosine", SlowFast).
_C.SOLVER.WARMUP_FACTOR = 0.1  # warm-up start as a fraction of BASE_LR ("cosine_linear_warmup", "multistep_warmup").
_C.SOLVER.COSINE_END_LR = 0.0  # learning rate at the end of the cosine.
_C.SOLVER.COSINE_MAX_EPOCH = 0  # epoch where the cosine ends ("cosine_linear_warmup"); 0 uses MAX_EPOCH.
_C.SOLVER.COSINE_AFTER_WARMUP = True  # cosine starts after warm-up ("cosine").
_C.SOLVER.STEPS = []  # epoch milestones for "multistep_warmup".
_C.SOLVER.GAMMA = 0.1  # LR factor at each milestone.
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum.
_C.SOLVER.NESTEROV = True  # Nesterov momentum.
_C.SOLVER.DAMPENING = 0.0  # SGD dampening.
_C.SOLVER.WEIGHT_DECAY = 1e-4  # L2 weight decay.
_C.SOLVER.ZERO_WD_1D_PARAM = False  # no weight decay for 1-D parameters (biases, norms, embeddings).
_C.SOLVER.BETAS = [0.9, 0.999]  # AdamW betas.
_C.SOLVER.CLIP_GRAD_VAL = 0.0  # clip gradients by value; 0 disables.
_C.SOLVER.CLIP_GRAD_L2NORM = 0.0  # clip gradients by global L2 norm; 0 disables.
_C.SOLVER.LABEL_SMOOTHING = 0.0  # cross-entropy label smoothing.

# ---------------------------------------------------------------- model
_C.MODEL = CfgNode()
_C.MODEL.ARCH = "x3d"  # model family ("x3d", "mvit", "torchvision").
_C.MODEL.MODEL_NAME = "x3d"  # registered model name, case-insensitive (see `vbench models`).
_C.MODEL.NUM_CLASSES = 400  # output classes.
_C.MODEL.LOSS_FUNC = "cross_entropy"  # training loss.
_C.MODEL.DROPOUT_RATE = 0.5  # dropout before the final projection.
_C.MODEL.WEIGHTS = ""  # local weights file (vbench, PyTorchVideo, SlowFast or torchvision format).
_C.MODEL.WEIGHTS_FORMAT = "auto"  # "auto", "vbench", "pytorchvideo", "slowfast", "torchvision".
_C.MODEL.CHANNELS_LAST = False  # channels_last_3d memory format: True, False or "auto".
_C.MODEL.COMPILE = False  # torch.compile the repeated blocks in place (regional; vbench/models/compile.py).
_C.MODEL.DEPTHWISE_CONV = "auto"  # "auto", "default", "contiguous(_fp32)" (X3D), "triton" (models/layers/).

# ---------------------------------------------------------------- X3D
_C.X3D = CfgNode()
_C.X3D.WIDTH_FACTOR = 2.0  # channel width expansion (gamma_w).
_C.X3D.DEPTH_FACTOR = 2.2  # stage depth expansion (gamma_d).
_C.X3D.BOTTLENECK_FACTOR = 2.25  # inner width of each bottleneck (gamma_b).
_C.X3D.DIM_C1 = 12  # stem output channels before width expansion.
_C.X3D.DIM_C5 = 2048  # channels of the head's last hidden layer.
_C.X3D.SCALE_RES2 = False  # apply width expansion to the first stage.
_C.X3D.BN_LIN5 = False  # BN after the head's hidden linear layer.
_C.X3D.CHANNELWISE_3x3x3 = True  # depthwise 3x3x3 convolution in each block.

# ---------------------------------------------------------------- MViT
_C.MVIT = CfgNode()
_C.MVIT.MODE = "conv"  # pooling in attention: "conv", "max" or "avg".
_C.MVIT.POOL_FIRST = False  # pool before the qkv projection.
_C.MVIT.CLS_EMBED_ON = True  # prepend a class token.
_C.MVIT.PATCH_KERNEL = [3, 7, 7]  # patch-embedding kernel (T, H, W).
_C.MVIT.PATCH_STRIDE = [2, 4, 4]  # patch-embedding stride.
_C.MVIT.PATCH_PADDING = [1, 3, 3]  # patch-embedding padding.
_C.MVIT.EMBED_DIM = 96  # embedding width of the first block.
_C.MVIT.NUM_HEADS = 1  # heads of the first block.
_C.MVIT.MLP_RATIO = 4.0  # MLP hidden width / embedding width.
_C.MVIT.QKV_BIAS = True  # bias in the qkv projection.
_C.MVIT.DROPPATH_RATE = 0.1  # stochastic depth rate (linearly increasing over blocks).
_C.MVIT.DEPTH = 16  # number of transformer blocks.
_C.MVIT.NORM = "layernorm"  # normalisation layer.
_C.MVIT.DIM_MUL = []  # [[block, factor], ...] embedding width multipliers.
_C.MVIT.HEAD_MUL = []  # [[block, factor], ...] head count multipliers.
_C.MVIT.POOL_KV_STRIDE = []  # [[block, t, h, w], ...] explicit key/value pooling strides.
_C.MVIT.POOL_KV_STRIDE_ADAPTIVE = []  # initial key/value stride, divided by each Q stride (SlowFast).
_C.MVIT.POOL_Q_STRIDE = []  # [[block, t, h, w], ...] query pooling strides.
_C.MVIT.POOL_KVQ_KERNEL = [3, 3, 3]  # pooling kernel; empty derives it from the stride.
_C.MVIT.ZERO_DECAY_POS_CLS = True  # no weight decay for position embeddings and the class token.
_C.MVIT.SEP_POS_EMBED = True  # separate spatial and temporal position embeddings.
_C.MVIT.DROPOUT_RATE = 0.0  # dropout in attention projections and MLPs.

# ---------------------------------------------------------------- batch norm
_C.BN = CfgNode()
_C.BN.NORM_TYPE = "batchnorm"  # "batchnorm" or "sync_batchnorm" (synchronised across processes).
_C.BN.EPSILON = 1e-5  # BN epsilon.
_C.BN.MOMENTUM = 0.1  # BN running-statistics momentum.
_C.BN.WEIGHT_DECAY = 0.0  # weight decay applied to BN parameters.
_C.BN.USE_PRECISE_STATS = False  # SlowFast alias of TRAIN.PRECISE_BN.
_C.BN.NUM_BATCHES_PRECISE = 200  # SlowFast alias of TRAIN.NUM_BATCHES_PRECISE.

# ---------------------------------------------------------------- benchmark
_C.WATCHDOG = CfgNode()  # ends a run in which a process stopped making progress (engine/watchdog.py)
_C.WATCHDOG.ENABLE = True  # watch every process from its first training step to the end of training.
_C.WATCHDOG.STALL_TIMEOUT_S = 300.0  # seconds without progress that end the run, at least (the limit's floor).
_C.WATCHDOG.STEP_FACTOR = 10.0  # the limit is at least this many times the slowest training step seen.

_C.BENCHMARK = CfgNode()
_C.BENCHMARK.TRACK = ""  # "cnn", "transformer" or "" (not a benchmark run).
_C.BENCHMARK.TARGET_TOP1 = 0.0  # validation top-1 (percent) that stops the clock; 0 disables.
_C.BENCHMARK.METRIC = "clip"  # accuracy that must reach the target: "clip" or "video".
_C.BENCHMARK.STOP_AT_TARGET = True  # stop training at the first evaluation that reaches the target.
_C.BENCHMARK.WARMUP_STEPS = 2  # untimed training steps (+1 eval) on random clips before the clock starts; 0: none.
_C.BENCHMARK.WARMUP_MAX_S = 600.0  # the warm-up's limit (compile, autotuning); past it the run stops.

# ---------------------------------------------------------------- logging
_C.TENSORBOARD = CfgNode()
_C.TENSORBOARD.ENABLE = False  # write TensorBoard events.
_C.TENSORBOARD.LOG_DIR = ""  # event folder; empty uses OUTPUT_DIR/tensorboard.


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()
