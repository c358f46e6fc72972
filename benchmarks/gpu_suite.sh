#!/usr/bin/env bash
# The GPU figures of issue 16 in one device call of about 9 minutes (../shared/gpu/README.md):
#
#   bash ../shared/gpu/wheels.sh                       # here, once: fills .whl/ (git-ignored)
#   python3 -m pip download -q --no-deps -d .whl nvidia-ml-py   # and NVML for the telemetry step
#   run(command="OUT=$OUT bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=600)
#   SUITE_DEVICE=cpu OUT=/tmp/suite bash benchmarks/gpu_suite.sh   # the rehearsal, on a CPU (tiny sizes)
#   STEPS="train_cnn telemetry" ...                                # only these steps
#
# Steps (STEPS, in this order; default "gpu_tests depthwise matrix"), most valuable first, each
# under its own timeout with its log in $OUT (a failed step does not stop the rest; a step that
# would pass the budget is cut or skipped):
#   gpu_tests   the CUDA paths: vbench's Triton depthwise kernels against F.conv3d (every tuned
#               tile, inside torch.compile), the depthwise variants, SDPA kernels, GPU decoding
#   depthwise   bench_depthwise: forward + backward of the Triton op against PyTorch's kernels on
#               X3D-M's depthwise shapes (batch 16, bf16), autotuned, against the memory floor;
#               its compiled and tuned kernels stay in Triton's cache for the matrix
#   matrix      bench_model --matrix at batch 16 and the recipe's batch (X3D-M 64, MViT-B 48):
#               triton / channels_last / bf16 / fp16 + GradScaler cells, MViT's SDPA backends,
#               PyTorchVideo fp32 baseline, MFU, peak memory, --profile; compile cells last (the
#               budget may cut them: then `STEPS=matrix` with `--models x3d_m` in a call of its own)
#   loader      (issue 10, measured 2026-11-27) bench_loader worker sweep
#   train_cnn   (issue 10, measured 2026-11-27) the X3D-M trainer with every resource on "auto"
#   telemetry   that X3D-M run's GPU telemetry (power, SM clock, throttling, energy) and page-cache
#               record, with its report and plot (issue 18; needs train_cnn)
# Records to commit afterwards: $OUT/*.json under benchmarks/results/, figures in docs/BENCHMARKS.md.
set -u
OUT=${OUT:?set OUT to the folder for the logs}
BUDGET=${BUDGET:-540}
STEPS=${STEPS:-gpu_tests depthwise matrix}
T0=$(date +%s)
mkdir -p "$OUT"
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
wanted() { [[ " $STEPS " == *" $1 "* ]]; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  wanted "$name" || return 0
  local l; l=$(left); (( secs > l - 5 )) && secs=$(( l - 5 ))
  if (( secs < 20 )); then echo "### $name skipped (no time left)"; return; fi
  echo "### $name (timeout ${secs}s, $(left)s left)"
  timeout -k 5 "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "### $name exit $? after $(( $(date +%s) - T0 ))s"; tail -n "${TAILN:-25}" "$OUT/$name.log"
}

if [ "${SUITE_DEVICE:-cuda}" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  DEV="--device cuda"; MODEL="--batch 16,recipe --frames 16 --crop 224 --warmup 3 --steps 3 --rounds 4"
  DW="--batch 16 --frames 16 --crop 224"; MATRIX_BUDGET=300
  TESTS="tests/models/test_depthwise_triton.py tests/models/test_model_fast_paths.py tests/data/test_decoders_cuda.py"
  TRAIN_SIZE=(NUM_GPUS 1); SWEEP="--workers 15,8,4,2,1 --quick"; VIDEOS=8
else  # rehearsal: the same commands at sizes a 2-core CPU runs in minutes (Triton: its interpreter)
  export PYTHONPATH=$PWD TRITON_INTERPRET=1
  DEV="--device cpu --threads 1"; MODEL="--batch 1,2 --frames 4 --crop 64 --warmup 1 --steps 1 --rounds 2"
  DW="--batch 1 --frames 2 --crop 32 --reps 1 --limit 2"; MATRIX_BUDGET=200
  TESTS="tests/models/test_depthwise_triton.py"  # (the other files' CPU tests run in the suite)
  TRAIN_SIZE=(NUM_GPUS 0 DATA.NUM_FRAMES 4 DATA.TRAIN_CROP_SIZE 64 DATA.TEST_CROP_SIZE 64
              DATA.TRAIN_MIN_MAX_SCALE "[64, 80]" DATA.TEST_MIN_SHORT_SIDE_SCALE 64 TRAIN.BATCH_SIZE 4
              TEST.BATCH_SIZE 4)
  SWEEP="--workers 2,1 --videos-per-worker 2"; VIDEOS=2
fi
export PYTHONUNBUFFERED=1
python3 -c "import torch, torchvision, av, vbench; print('torch', torch.__version__, 'tv', torchvision.__version__, 'av', av.__version__, 'cuda', torch.cuda.is_available(), 'cudnn', torch.backends.cudnn.version())"
python3 -c "import triton; print('triton', triton.__version__)" || echo "no triton: the triton cells will be skipped"
python3 -c "import importlib.util as u; print('nvidia-ml-py (telemetry):', 'yes' if u.find_spec('pynvml') else 'MISSING')"
nproc; git log --oneline -1 2>/dev/null

TAILN=15 step gpu_tests 130 python3 -m pytest -q -rs $TESTS
TAILN=30 step depthwise 90 python3 benchmarks/bench_depthwise.py $DEV $DW --dtypes bf16 --models x3d_m \
  --json "$OUT/depthwise.json"
TAILN=60 step matrix $(( MATRIX_BUDGET + 40 )) python3 benchmarks/bench_model.py --matrix $DEV $MODEL \
  --cell-seconds 3 --cell-timeout 75 --profile --compile --compile-timeout 90 --budget $MATRIX_BUDGET \
  --json "$OUT/matrix.json"
step loader 120 python3 benchmarks/bench_loader.py $SWEEP --pipelines vbench_gpu_transforms,vbench \
  --json "$OUT/bench_loader.json"
TAILN=40 step train_cnn 100 python3 benchmarks/bench_train.py --tracks cnn --videos-per-class $VIDEOS --epochs 2 \
  --out /tmp/suite_train "${TRAIN_SIZE[@]}"
if wanted train_cnn; then
  for f in /tmp/suite_train/*/results.json; do [ -f "$f" ] && cp "$f" "$OUT/results_$(basename "$(dirname "$f")").json"; done
fi
REQUIRE=$([ "${SUITE_DEVICE:-cuda}" = cuda ] && echo --require)  # on the GPU a run without telemetry fails the step
TAILN=40 step telemetry 60 python3 benchmarks/telemetry_record.py /tmp/suite_train/cnn --out "$OUT" $REQUIRE
echo "### total $(( $(date +%s) - T0 ))s"
