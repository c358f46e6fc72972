"""`python -m vbench.cli COMMAND ...`, the same as `vbench COMMAND ...`."""
import sys

from vbench.cli import main

sys.exit(main())
