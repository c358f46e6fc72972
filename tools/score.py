#!/usr/bin/env python3
"""Benchmark score from CNN and Transformer runs: see `vbench.cli.score` and `vbench.bench.score`."""
import os
import sys

# this checkout's vbench first, even when another copy is pip-installed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vbench.cli.score import score_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
