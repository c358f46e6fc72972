#!/usr/bin/env bash
# The Python packages the GPU machine's image lacks, as wheels in .whl/ (git-ignored), for a device
# call that carries ".whl" (../shared/gpu/README.md). Run from the project root, on a machine with the
# package index:   bash benchmarks/gpu_wheels.sh
#
# The image has torch 2.11 (cu130), torchvision 0.26, numpy, psutil, timm, tqdm, matplotlib,
# tensorboard, simplejson, pyyaml, pytest; it lacks av, fvcore, iopath, yacs, pytorchvideo and
# torchcodec. torchcodec 0.11 is the release for torch 2.11. Its CUDA build (NVDEC) is published only
# on download.pytorch.org/whl/cu130, tried first; where that index cannot be reached the PyPI wheel
# is taken, which is CPU-only (no CUDA device interface compiled in), and the suite's nvdec step then
# says so. torchcodec loads FFmpeg 8's shared libraries: PyAV's wheel bundles them, and
# benchmarks/gpu_suite.sh links them under the names torchcodec asks for (INSTALL.md) instead of
# carrying a second copy. The carried tree may hold 64 MiB in all: this checks the total.
set -euo pipefail
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
          "${plat[@]}" -d .whl "$@"; }
get av==18.1.0 yacs iopath termcolor parameterized nvidia-ml-py   # nvidia-ml-py: GPU telemetry
python3 -m pip wheel -q --no-deps -w .whl fvcore pytorchvideo   # pure-Python sdists
rm -f .whl/torchcodec-*.whl
if get --index-url https://download.pytorch.org/whl/cu130 "torchcodec==0.11.*" 2>/dev/null; then
  echo "torchcodec: the CUDA build (download.pytorch.org/whl/cu130)"
else
  get "torchcodec==0.11.*"
  echo "torchcodec: download.pytorch.org not reachable; PyPI's wheel, CPU decoding only (no NVDEC)"
fi
ls -la .whl
whl_kib=$(du -sk .whl | cut -f1)
tree_kib=$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -n 1 | cut -f1)
echo "carry: .whl ${whl_kib} KiB + tracked tree ${tree_kib} KiB = $(( (whl_kib + tree_kib) / 1024 )) MiB of 64"
(( whl_kib + tree_kib < 64 * 1024 )) || { echo "over the 64 MiB carry limit" >&2; exit 1; }
