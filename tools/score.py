#!/usr/bin/env python3
"""Benchmark score from CNN and Transformer runs: see `vbench.bench.score`."""
import sys

from vbench.bench.score import main

if __name__ == "__main__":
    sys.exit(main())
