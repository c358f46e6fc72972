#!/usr/bin/env python
"""Write the synthetic motion-pattern dataset; same as `vbench data synth`. See data/README.md."""
import sys

from vbench.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
