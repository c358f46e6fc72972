#!/usr/bin/env python3
"""Build kinetics20 (or another class subset) from a Kinetics download; see `--help`."""
import os
import sys

# this checkout's vbench first, even when another copy is pip-installed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vbench.cli.data import prepare_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
