"""Session set-up shared by the tests.

- The `extras` marker: tests that need something `pip install -e ".[test]"` does not install
  (PyTorchVideo, torchcodec, the ffmpeg command-line tool; tests/README.md). Without it they skip
  and say what is missing; `python -m pytest -q -m extras tests` runs just them.
- Without a CUDA GPU, vbench's Triton kernels (vbench/models/layers/depthwise_triton.py) run in
  Triton's interpreter: TRITON_INTERPRET=1 must be in the environment when their module is imported
  (Triton 3.8 reads it as `@triton.jit` wraps each kernel), which this file, loaded before any test
  module, guarantees. With a GPU it is left unset, so the kernels compile for the GPU.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "extras: needs an optional package or tool (pytorchvideo, torchcodec, "
                                       "ffmpeg); skips naming it when absent")
