"""`vbench data synth`: write the synthetic motion-pattern dataset (vbench/data/synthetic.py)."""
import argparse
import json

from vbench.data.resources import usable_cores
from vbench.data.synthetic import generate_dataset
from vbench.data.synthetic_patterns import FLIP_SAFE_CLASSES, PATTERNS, PRESETS


def synth_main(argv=None):
    """`vbench data synth --out DIR [--preset P] [--classes N] ...`"""
    parser = argparse.ArgumentParser(
        prog="vbench data synth",
        description="Write the synthetic motion-pattern dataset (folder per class + SlowFast CSVs). "
                    f"Classes, in order: {', '.join(PATTERNS)}; the first {FLIP_SAFE_CLASSES} "
                    "are unchanged by horizontal flips, the rest need DATA.RANDOM_FLIP False.")
    parser.add_argument("--out", required=True, help="dataset folder to create (absent or empty)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS),
                        help="demo: 128x96, 15 fps, 3.2 s; kinetics-like: 340x256, 30 fps, 10 s")
    parser.add_argument("--classes", type=int, default=4, help=f"classes (1-{len(PATTERNS)})")
    parser.add_argument("--train-per-class", type=int, default=16)
    parser.add_argument("--val-per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=usable_cores(),
                        help="processes rendering and encoding videos, one encoder thread each "
                             "(default: every core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(argv)
    try:
        summary = generate_dataset(args.out, args.preset, args.classes, args.train_per_class,
                                   args.val_per_class, args.seed, args.workers,
                                   progress=not args.quiet)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    if args.quiet:
        print(json.dumps(summary))
    return 0
