"""`vbench models`: registered models with parameters and GFLOPs per view (vbench/models/summary.py)."""
import os
import sys

from vbench.config import load_config
from vbench.config.args import cfg_argument_parser, parse_cfg_args
from vbench.errors import ConfigError
from vbench.models.summary import DESCRIPTION, KINETICS400_CLASSES, config_table, footnotes, format_table, model_table


def _build_parser():
    parser = cfg_argument_parser(DESCRIPTION)
    parser.add_argument("--names", default="", help="comma-separated model names (default: all)")
    parser.add_argument("--all-configs", action="store_true",
                        help="one row per model config under --configs-dir, at its own clip size")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--configs-dir", default="configs",
                        help="folder searched for each model's config files ('' to skip)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = parse_cfg_args(list(sys.argv[1:] if argv is None else argv), DESCRIPTION, _build_parser())
    names = [n.strip() for n in args.names.split(",") if n.strip()] or None
    cfg = None
    try:
        if args.all_configs:
            rows = config_table(args.configs_dir, progress=not args.no_progress)
        else:
            cfg = load_config(args.cfg_file, args.opts) if args.cfg_file or args.opts else None
            rows = model_table(cfg, names, progress=not args.no_progress)
    except ConfigError as err:
        print(f"vbench models: error: {err}", file=sys.stderr)
        return 2
    if args.all_configs:
        print(f"Every model config under {args.configs_dir}/ at its DATA.NUM_FRAMES x "
              f"DATA.TRAIN_CROP_SIZE^2 clip and its MODEL.NUM_CLASSES.")
    elif cfg is None:
        print(f"Registered models at their usual input size, with MODEL.NUM_CLASSES "
              f"{KINETICS400_CLASSES} (Kinetics-400's class count).")
    else:
        print(f"Model of {args.cfg_file or 'the defaults'} at DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE^2,"
              f" MODEL.NUM_CLASSES {cfg.MODEL.NUM_CLASSES}.")
    configs_dir = args.configs_dir if os.path.isdir(args.configs_dir or "") else ""
    print()
    print(format_table(rows, markdown=args.markdown, configs_dir=configs_dir))
    print()
    for note in footnotes(rows):
        print(("- " if args.markdown else "* ") + note)
    return 0
