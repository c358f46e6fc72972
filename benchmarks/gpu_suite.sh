#!/usr/bin/env bash
# Every GPU figure the open issues ask for, in device calls of about 9 minutes (../shared/gpu/README.md,
# ../.library/device/METHOD.md): each step under its own timeout, its log and JSON in $OUT, a failed
# step does not stop the rest, a step that would pass the budget is cut or skipped.
#
#   bash benchmarks/gpu_wheels.sh          # here, once: fills .whl/ (git-ignored; av, fvcore, torchcodec, NVML, ...)
#   run(command="OUT=$OUT bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=600)          # call 1
#   run(command="STEPS='gpu_tests train telemetry preflight nvdec' OUT=$OUT bash benchmarks/gpu_suite.sh",
#       carry=[".whl"], timeout_s=600)                                                               # call 2
#   SUITE_DEVICE=cpu OUT=/tmp/suite bash benchmarks/gpu_suite.sh      # the rehearsal on a CPU (tiny sizes)
#
# Steps (STEPS picks; default, call 1: "gpu_tests depthwise matrix"), with their time on one H100:
#   gpu_tests  ~130 s the CUDA paths: vbench's Triton depthwise kernels against F.conv3d (every tuned
#                     tile, in torch.compile), depthwise variants, SDPA kernels, GPU decoding, the loader's
#                     pinned blocks and joined batches (issues 16, 17)
#   depthwise   ~90 s bench_depthwise: the Triton op against PyTorch's kernels on X3D-M's depthwise shapes
#                     (batch 16, bf16), autotuned, against the memory floor (issue 16)
#   matrix     ~320 s bench_model --matrix at batch 16 and the recipe's batch: triton / channels_last /
#                     bf16 / fp16 cells, MViT's SDPA backends, PyTorchVideo baseline, MFU, peak memory,
#                     profiles; compile cells last (the budget may cut them) (issue 16)
#   train      ~200 s both tracks end to end on "auto" (bench_train.py --tracks cnn,transformer): clips/s,
#                     data wait of the first 10 steps and the rest, loader clips/s, peak memory,
#                     evaluation seconds, summary-to-exit seconds (issue 17)
#   telemetry   ~20 s that X3D-M run's GPU telemetry (power, SM clock, throttling, energy) and page-cache
#                     record, with its report and plot (issue 18; needs train)
#   preflight   ~70 s vbench preflight on X3D-M and train's videos; its clips/s against train's (issue 17)
#   nvdec       ~80 s CPU workers + GPU transforms against NVDEC at 340x256 and 1920x1080 (issue 17)
#   loader     ~120 s bench_loader worker sweep, 15 workers down to 1 (issue 17's loader goal)
# Records to commit afterwards: $OUT/*.json under benchmarks/results/, figures in docs/BENCHMARKS.md.
set -u
OUT=${OUT:?set OUT to the folder for the logs}
BUDGET=${BUDGET:-540}
STEPS=${STEPS:-gpu_tests depthwise matrix}
T0=$(date +%s)
mkdir -p "$OUT"
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
wanted() { [[ " $STEPS " == *" $1 "* ]]; }
step() {  # step NAME SECONDS COMMAND... (SECONDS on the GPU machine; times SCALE elsewhere)
  local name=$1 secs=$(( $2 * ${SCALE:-1} )); shift 2
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
  # torchcodec loads FFmpeg 8 under its plain names: link PyAV's bundled copies (INSTALL.md)
  mkdir -p /tmp/ffmpeg && for f in /tmp/site/av.libs/lib{av,sw}*.so.*; do
    ln -sf "$f" /tmp/ffmpeg/$(basename "$f" | sed -E 's/-[0-9a-f]{8}(\.so\.[0-9]+).*/\1/'); done
  export LD_LIBRARY_PATH=/tmp/ffmpeg:/tmp/site/av.libs:${LD_LIBRARY_PATH:-}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  ls /usr/lib/x86_64-linux-gnu/libnvcuvid.so* /usr/lib64/libnvcuvid.so* 2>/dev/null || echo "no libnvcuvid (NVDEC) in the container"
  DEV="--device cuda"; MODEL="--batch 16,recipe --frames 16 --crop 224 --warmup 3 --steps 3 --rounds 4"
  DW="--batch 16 --frames 16 --crop 224"; MATRIX_BUDGET=300
  TESTS="tests/models/test_depthwise_triton.py tests/models/test_model_fast_paths.py tests/data/test_decoders_cuda.py
         tests/data/test_loader_cuda.py"
  TRAIN_SIZE=(NUM_GPUS 1); SWEEP="--workers 15,8,4,2,1 --quick"; VIDEOS=12; EPOCHS=3
  NVDEC="--workers 8 --quick"; HD=1920x1080
else  # rehearsal: the same commands at sizes a 2-core CPU runs in minutes (Triton: its interpreter)
  export PYTHONPATH=$PWD TRITON_INTERPRET=1; SCALE=${SCALE:-3}; BUDGET=$(( BUDGET * SCALE ))
  DEV="--device cpu --threads 1"; MODEL="--batch 1,2 --frames 4 --crop 64 --warmup 1 --steps 1 --rounds 2"
  DW="--batch 1 --frames 2 --crop 32 --reps 1 --limit 2"; MATRIX_BUDGET=200
  TESTS="tests/models/test_depthwise_triton.py"  # (the other files' CPU tests run in the suite)
  TRAIN_SIZE=(NUM_GPUS 0 DATA.NUM_FRAMES 4 DATA.TRAIN_CROP_SIZE 64 DATA.TEST_CROP_SIZE 64
              DATA.TRAIN_MIN_MAX_SCALE "[64, 80]" DATA.TEST_MIN_SHORT_SIDE_SCALE 64 TRAIN.BATCH_SIZE 4
              TEST.BATCH_SIZE 4)
  SWEEP="--workers 2,1 --videos-per-worker 2"; VIDEOS=2; EPOCHS=2; NVDEC="--workers 1 --videos-per-worker 2"; HD=680x512
fi
DATA=${DATA:-/tmp/suite_data}  # kinetics-like videos, 10 classes: made by the train step, read by the rest
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
TAILN=30 step train 240 python3 benchmarks/bench_train.py --tracks cnn,transformer --videos-per-class $VIDEOS \
  --epochs $EPOCHS --data "$DATA" --out /tmp/suite_train --json "$OUT/bench_train.json" "${TRAIN_SIZE[@]}"
if wanted train; then
  for f in /tmp/suite_train/*/results.json; do [ -f "$f" ] && cp "$f" "$OUT/results_$(basename "$(dirname "$f")").json"; done
fi
REQUIRE=$([ "${SUITE_DEVICE:-cuda}" = cuda ] && echo --require)  # on the GPU a run without telemetry fails the step
TAILN=40 step telemetry 20 python3 benchmarks/telemetry_record.py /tmp/suite_train/cnn --out "$OUT" $REQUIRE
step preflight 90 python3 -m vbench.cli preflight --cfg configs/Kinetics/X3D_M.yaml --budget 60 \
  --json "$OUT/preflight_x3d_m.json" DATA.PATH_TO_DATA_DIR "$DATA" DATA.LAYOUT folder DATA.CLIP_LIST "" \
  SOLVER.MAX_EPOCH $EPOCHS TRAIN.EVAL_PERIOD $EPOCHS "${TRAIN_SIZE[@]}"
if wanted preflight; then  # the same videos and resources as train's X3D-M run
  python3 - "$OUT" <<'PY' || true
import json, os, statistics, sys
out = sys.argv[1]
pre = json.load(open(os.path.join(out, "preflight_x3d_m.json")))["forecast"]["clips_per_s"]
run = json.load(open(os.path.join(out, "results_cnn.json")))["epochs"][1:]
measured = statistics.median(e["clips_per_s"] for e in run)
print(f"preflight predicted {pre:.1f} clips/s, the trainer measured {measured:.1f} (epochs 2+): ratio {pre / measured:.2f}")
PY
fi
if wanted nvdec; then
  STEPS="$STEPS nvdec_340x256 nvdec_hd"
  step nvdec_340x256 50 python3 benchmarks/bench_loader.py $NVDEC --data "$DATA" \
    --pipelines vbench_gpu_transforms,vbench_nvdec --json "$OUT/bench_nvdec_340x256.json"
  step nvdec_hd 70 python3 benchmarks/bench_loader.py $NVDEC --data "$DATA" --frame-size $HD \
    --pipelines vbench_gpu_transforms,vbench_nvdec --json "$OUT/bench_nvdec_$HD.json"
fi
step loader 120 python3 benchmarks/bench_loader.py $SWEEP --data "$DATA" \
  --pipelines vbench_gpu_transforms,vbench --json "$OUT/bench_loader.json"
echo "### total $(( $(date +%s) - T0 ))s"
