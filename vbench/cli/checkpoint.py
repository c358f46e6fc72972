"""`vbench checkpoint convert --trust FILE [-o OUT]` (vbench/engine/checkpoint_convert.py)."""
import argparse
import sys

from vbench.engine.checkpoint_convert import convert_trusted_file
from vbench.errors import VbenchError


def convert_main(argv=None):
    parser = argparse.ArgumentParser(
        prog="vbench checkpoint convert",
        description="Rewrite a checkpoint or weights file you trust as plain data that vbench's safe "
                    "loader reads (NumPy RNG states of older vbench checkpoints, NumPy values, "
                    "argparse.Namespace). Reading FILE runs any code it holds: use it only on files "
                    "you or someone you trust wrote.")
    parser.add_argument("file", metavar="FILE", help="the checkpoint or weights file")
    parser.add_argument("--trust", action="store_true",
                        help="confirm that you trust FILE (required: reading it can run code)")
    parser.add_argument("-o", "--output", metavar="OUT", help="where to write (default: FILE itself)")
    args = parser.parse_args(argv)
    if not args.trust:
        print(f"vbench: error: converting '{args.file}' unpickles it with torch's full unpickler, "
              f"which runs any code the file holds. Add --trust if you trust where it came from.",
              file=sys.stderr)
        return 2
    try:
        print(convert_trusted_file(args.file, args.output))
    except VbenchError as err:
        print(f"vbench: error: {err}", file=sys.stderr)
        return 1
    return 0
