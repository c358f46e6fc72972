#!/usr/bin/env python
"""Write the synthetic motion-pattern dataset; same as `vbench data synth`. See data/README.md."""
import os
import sys

# this checkout's vbench first, even when another copy is pip-installed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vbench.cli.data import synth_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
