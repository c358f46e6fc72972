#!/usr/bin/env python3
"""Train and/or test a video model: `python tools/run_net.py --cfg FILE [KEY VALUE ...]`.

See `vbench.cli.train` and `vbench.engine.launch`.
"""
import os
import sys

# this checkout's vbench first, even when another copy is pip-installed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vbench.cli.train import run_net_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_net_main())
