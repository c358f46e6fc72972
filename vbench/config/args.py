"""Command-line form shared by every entry point: `--cfg FILE [KEY VALUE ...]` or `--opts KEY VALUE ...`."""
import argparse


def cfg_argument_parser(description):
    """A parser taking `--cfg FILE` and config overrides, positionally or after `--opts`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", dest="cfg_file", default=None, help="YAML config file")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[],
        help="config overrides as KEY VALUE pairs, e.g. NUM_GPUS 4 DATA_LOADER.NUM_WORKERS 32 "
             "(also accepted after --opts)",
    )
    return parser


def parse_cfg_args(argv, description, parser=None):
    """Parse `argv`; returns the argparse namespace with `.cfg_file` and a flat `.opts` list."""
    parser = parser or cfg_argument_parser(description)
    args, extra = parser.parse_known_args(argv)
    opts = list(extra) + list(args.opts or [])
    args.opts = [word for word in opts if word != "--opts"]
    return args
