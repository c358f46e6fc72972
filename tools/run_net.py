#!/usr/bin/env python3
"""Train and/or test a video model: `python tools/run_net.py --cfg FILE [KEY VALUE ...]`.

See `vbench.engine.launch`.
"""
import sys

from vbench.engine.launch import run_net_main

if __name__ == "__main__":
    sys.exit(run_net_main())
