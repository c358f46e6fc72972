#!/usr/bin/env bash
# Every GPU figure the open issues need, in one device call of about 9 minutes (../shared/gpu/README.md):
#
#   bash ../shared/gpu/wheels.sh                       # here, once: fills .whl/ (git-ignored)
#   python3 -m pip download -q --no-deps -d .whl nvidia-ml-py   # and NVML for the telemetry step
#   run(command="OUT=$OUT bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=600)
#   SUITE_DEVICE=cpu OUT=/tmp/suite bash benchmarks/gpu_suite.sh   # the rehearsal, on a CPU (tiny sizes)
#   SUITE_STEPS="train_cnn telemetry" ...                          # only these steps
#
# Steps, most valuable first, each under its own timeout with its log in $OUT (a failed step does
# not stop the rest; a step that would pass the budget is skipped):
#   gpu_tests   the CUDA paths: depthwise variants, SDPA kernels, GPU decoding (issues 9, 10)
#   matrix      bench_model --matrix: {fp32, bf16} x {contiguous, channels_last_3d}, variants,
#               PyTorchVideo fp32 baseline, MFU, --profile, and with the matrix's budget left,
#               regional compile of the fastest cells (issue 9)
#   loader      bench_loader worker sweep, 15 workers down to 1 (issue 10)
#   train_cnn   the X3D-M trainer with every resource on "auto": clips/s, data wait, loader clips/s (issue 10)
#   telemetry   that X3D-M run's GPU telemetry (power, SM clock, throttling, energy) and page-cache
#               record, with its report and plot (issue 18)
# Records to commit afterwards: $OUT/*.json under benchmarks/results/, figures in docs/BENCHMARKS.md.
set -u
OUT=${OUT:?set OUT to the folder for the logs}
BUDGET=${BUDGET:-540}
T0=$(date +%s)
mkdir -p "$OUT"
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  if [ -n "${SUITE_STEPS:-}" ] && [[ " $SUITE_STEPS " != *" $name "* ]]; then echo "### $name not selected"; return; fi
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
  DEV="--device cuda"; MODEL="--batch 16 --frames 16 --crop 224 --warmup 3 --steps 4 --rounds 5"
  TRAIN_SIZE=(NUM_GPUS 1); SWEEP="--workers 15,8,4,2,1 --quick"; VIDEOS=8
else  # rehearsal: the same commands at sizes a 2-core CPU runs in minutes
  export PYTHONPATH=$PWD
  DEV="--device cpu --threads 1"; MODEL="--batch 1 --frames 4 --crop 64 --warmup 1 --steps 1 --rounds 2"
  TRAIN_SIZE=(NUM_GPUS 0 DATA.NUM_FRAMES 4 DATA.TRAIN_CROP_SIZE 64 DATA.TEST_CROP_SIZE 64
              DATA.TRAIN_MIN_MAX_SCALE "[64, 80]" DATA.TEST_MIN_SHORT_SIDE_SCALE 64 TRAIN.BATCH_SIZE 4
              TEST.BATCH_SIZE 4)
  SWEEP="--workers 2,1 --videos-per-worker 2"; VIDEOS=2
fi
export PYTHONUNBUFFERED=1
python3 -c "import torch, torchvision, av, vbench; print('torch', torch.__version__, 'tv', torchvision.__version__, 'av', av.__version__, 'cuda', torch.cuda.is_available(), 'cudnn', torch.backends.cudnn.version())"
python3 -c "import importlib.util as u; print('nvidia-ml-py (telemetry):', 'yes' if u.find_spec('pynvml') else 'MISSING')"
nproc; git log --oneline -1 2>/dev/null

step gpu_tests 60 python3 -m pytest -q -rs -x tests/test_model_fast_paths.py tests/test_decoders_cuda.py
step matrix 260 python3 benchmarks/bench_model.py --matrix $DEV $MODEL --cell-seconds 4 --cell-timeout 45 \
  --profile --compile --compile-timeout 90 --budget 210 --json "$OUT/matrix.json"
step loader 120 python3 benchmarks/bench_loader.py $SWEEP --pipelines vbench_gpu_transforms,vbench \
  --json "$OUT/bench_loader.json"
TAILN=40 step train_cnn 100 python3 benchmarks/bench_train.py --tracks cnn --videos-per-class $VIDEOS --epochs 2 \
  --out /tmp/suite_train "${TRAIN_SIZE[@]}"
for f in /tmp/suite_train/*/results.json; do [ -f "$f" ] && cp "$f" "$OUT/results_$(basename "$(dirname "$f")").json"; done
REQUIRE=$([ "${SUITE_DEVICE:-cuda}" = cuda ] && echo --require)  # on the GPU a run without telemetry fails the step
TAILN=40 step telemetry 60 python3 benchmarks/telemetry_record.py /tmp/suite_train/cnn --out "$OUT" $REQUIRE
echo "### total $(( $(date +%s) - T0 ))s"
