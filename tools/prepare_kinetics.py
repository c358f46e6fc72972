#!/usr/bin/env python3
"""Build kinetics20 (or another class subset) from a Kinetics download; see `--help`."""
import sys

from vbench.data.prepare_kinetics import main

if __name__ == "__main__":
    sys.exit(main())
