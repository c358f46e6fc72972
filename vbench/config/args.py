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


def _split_flags(parser, words):
    """(flags, overrides): the parser's own flags found among `words` (the positional overrides
    swallow everything after the first KEY), with their values, and the remaining words."""
    flags, overrides, i = [], [], 0
    while i < len(words):
        action = parser._option_string_actions.get(words[i].split("=", 1)[0])
        if action is None:
            overrides.append(words[i])
            i += 1
            continue
        takes_value = action.nargs is None and "=" not in words[i]
        flags += words[i:i + 1 + takes_value]
        i += 1 + takes_value
    return flags, overrides


def parse_cfg_args(argv, description, parser=None):
    """Parse `argv`; returns the argparse namespace with `.cfg_file` and a flat `.opts` list.
    Flags may also come after the overrides (`--cfg`, or the command's own, e.g. `--markdown`)."""
    parser = parser or cfg_argument_parser(description)
    args, extra = parser.parse_known_args(argv)
    words = [word for word in list(extra) + list(args.opts or []) if word != "--opts"]
    flags, opts = _split_flags(parser, words)
    if flags:
        parser.parse_known_args(flags, namespace=args)
    args.opts = opts
    return args
