"""`vbench data synth`, `vbench data check` and `tools/prepare_kinetics.py`: write the synthetic
dataset (vbench/data/synthetic.py), check a dataset folder (vbench/data/check.py), build kinetics20
from a Kinetics download (vbench/data/prepare_kinetics.py)."""
import argparse
import json
import logging
import os
import sys

from vbench.config import config_value, load_config
from vbench.data.check import (
    CONFIG_OPTIONS,
    check_split,
    default_splits,
    print_class_differences,
    print_list,
    print_table,
)
from vbench.data.check import __doc__ as CHECK_DOC
from vbench.data.fingerprint import format_fingerprint
from vbench.data.layouts import LAYOUTS, SPLIT_NAMES, detect_layout
from vbench.data.prepare_kinetics import (
    DEFAULT_CLIP_LIST,
    REENCODE,
    SAMPLING_DEFAULTS,
    Results,
    build_split,
    report_incomplete,
    write_outputs,
)
from vbench.data.prepare_kinetics import __doc__ as PREPARE_DOC
from vbench.data.resources import usable_cores
from vbench.data.synthetic import generate_dataset
from vbench.data.synthetic_patterns import FLIP_SAFE_CLASSES, PATTERNS, PRESETS
from vbench.errors import ConfigError, DatasetError


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


def parse_check_args(argv):
    parser = argparse.ArgumentParser(prog="vbench data check", description=CHECK_DOC.splitlines()[0])
    parser.add_argument("path", nargs="?", help="dataset root (DATA.PATH_TO_DATA_DIR; default: that of --cfg)")
    parser.add_argument("--cfg", default=None, help="config file: take the data settings from it")
    parser.add_argument("--layout", choices=("auto",) + LAYOUTS, help="dataset layout (DATA.LAYOUT)")
    parser.add_argument("--clip-list", help="clip list folder to compare with (DATA.CLIP_LIST), e.g. "
                                            "configs/datasets/kinetics20")
    parser.add_argument("--split", nargs="+", default=None, help="splits to check (default: all found)")
    parser.add_argument("--decode-sample", type=int, default=0,
                        help="decode one clip from N random videos per split (0 = every video)")
    parser.add_argument("--num-frames", type=int, help="clip length (DATA.NUM_FRAMES)")
    parser.add_argument("--frame-rate", type=float, help="clip frame rate (DATA.FRAME_RATE)")
    parser.add_argument("--path-prefix", help="DATA.PATH_PREFIX (csv layout)")
    parser.add_argument("--separator", help="DATA.PATH_LABEL_SEPARATOR (csv layout)")
    parser.add_argument("--cache-dir", help="index cache folder (DATA.INDEX_CACHE_DIR)")
    parser.add_argument("--backend", help="decoding backend (DATA.DECODING_BACKEND)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="probe/decode threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the decode sample")
    return fill_from_config(parser.parse_args(argv), parser)


def fill_from_config(args, parser):
    """Options not given take the --cfg config's value, else their default; args.cfg becomes the
    loaded config (or None)."""
    cfg = None
    if args.cfg:
        try:
            cfg = load_config(args.cfg, [])
        except ConfigError as error:
            parser.error(str(error))
    for option, (key, default) in CONFIG_OPTIONS.items():
        if getattr(args, option) is None:
            setattr(args, option, config_value(cfg, key) if cfg is not None else default)
    if not args.path:
        parser.error("give the dataset folder, or --cfg FILE whose DATA.PATH_TO_DATA_DIR names it")
    args.cfg = cfg
    return args


def check_main(argv=None):
    args = parse_check_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root = os.path.abspath(os.path.expanduser(args.path))
    problems, warnings = [], []
    try:
        layout = detect_layout(root) if args.layout in ("", "auto") else args.layout
    except DatasetError as error:
        print(f"dataset {root}: PROBLEM: {error}")
        return 1
    splits = args.split or default_splits(root, layout, args)
    if not splits:
        print(f"dataset {root}: PROBLEM: no split found for layout '{layout}' (looked for {', '.join(SPLIT_NAMES)}).")
        return 1
    against = f", clip list {args.clip_list}" if args.clip_list else ""
    print(f"dataset {root}: layout '{layout}', splits {', '.join(splits)}{against}")
    reports, class_names = [], None
    for split in splits:
        report, names = check_split(root, split, layout, args, problems, warnings)
        reports.append(report)
        class_names = class_names or names
    print()
    print_table(reports, class_names)
    print_class_differences(reports)
    print("\nfingerprints (as results.json records them):")
    for report in reports:
        if report.fingerprint:
            print("  " + format_fingerprint(report.name, report.fingerprint))
    print_list("warnings", warnings)
    print_list("problems", problems)
    verdict = f"{len(problems)} problem{'s' * (len(problems) != 1)} found" if problems else "no problems found"
    print(f"\n{verdict} ({len(warnings)} warnings).")
    return 1 if problems else 0


def parse_prepare_args(argv):
    parser = argparse.ArgumentParser(prog="tools/prepare_kinetics.py", description=PREPARE_DOC.splitlines()[0])
    parser.add_argument("--src", required=True, help="Kinetics download root (<split>/ folders, annotations)")
    parser.add_argument("--dst", required=True, help="output dataset folder, e.g. data/kinetics20")
    parser.add_argument("--clip-list", default=None,
                        help=f"build exactly the clips of this list folder (<split>.txt); default {DEFAULT_CLIP_LIST}")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to build")
    parser.add_argument("--classes", default=None, help="sampled subset: 'kinetics20', a text file with one "
                                                        "class per line, or a comma-separated list")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="sampled subset: train clips per class (0 = every available clip; default 64)")
    parser.add_argument("--val-per-class", type=int, default=None,
                        help="sampled subset: clips per class for every other split (0 = all; default 5)")
    parser.add_argument("--from-list", default="", help="a subset.csv from an earlier run: take exactly these clips")
    parser.add_argument("--mode", choices=("copy", "link", "reencode"), default="copy",
                        help="copy files, hard-link them (falls back to copy across file systems), or "
                             "write the canonical re-encode (H.264, short side 256, keyframe every 250 frames)")
    parser.add_argument("--short-side", type=int, default=REENCODE["short_side"],
                        help="short side for --mode reencode (another value than 256 is not the canonical recipe)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel clips")
    parser.add_argument("--seed", type=int, default=None, help="sampled subset: seed of the per-class clip order")
    parser.add_argument("--report", default="", help="report file (default <dst>/prepare_report.txt)")
    return choose_clips(parser.parse_args(argv), parser)


def choose_clips(args, parser):
    """Set args.source to "clip list", "from list" or "sampled" (see the module docstring)."""
    sampling = [f"--{name.replace('_', '-')}" for name in SAMPLING_DEFAULTS if getattr(args, name) is not None]
    chosen = [name for name, given in (("--clip-list", args.clip_list is not None),
                                       ("--from-list", bool(args.from_list)), (" / ".join(sampling), sampling))
              if given]
    if len(chosen) > 1:
        parser.error(f"{' and '.join(chosen)} choose the clips in different ways; give one of them.")
    args.source = "from list" if args.from_list else "sampled" if sampling else "clip list"
    args.clip_list = args.clip_list or DEFAULT_CLIP_LIST
    for name, default in SAMPLING_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def prepare_main(argv=None):
    args = parse_prepare_args(sys.argv[1:] if argv is None else argv)
    results, chosen = Results(), []
    os.makedirs(args.dst, exist_ok=True)
    try:
        for split in args.splits:
            per_class = args.train_per_class if split == "train" else args.val_per_class
            per_class = per_class if args.source == "sampled" else 0  # 0: every clip, none replaced
            chosen += build_split(args, split, per_class, results)
    except DatasetError as error:
        print(f"prepare_kinetics: {error}", file=sys.stderr)
        return 2
    report = write_outputs(args, chosen, results)
    classes = sorted({name for _, name in results.wanted})
    print(f"wrote {sum(results.written.values())} clips of {len(classes)} classes to {args.dst} "
          f"({', '.join(f'{s}: {sum(n for (sp, _), n in results.written.items() if sp == s)}' for s in args.splits)}); "
          f"{len(results.missing)} missing, {len(results.unreadable)} unreadable: see {report}")
    short = [f"{split}/{name}: {results.written[(split, name)]} of {n}"
             for (split, name), n in sorted(results.wanted.items()) if results.written[(split, name)] < n]
    if short:
        print(f"classes with fewer clips than asked: {', '.join(short)}")
    if args.source != "sampled":
        return report_incomplete(args, results, report)
    empty = [key for key in results.wanted if results.written[key] == 0]
    if empty:
        print(f"prepare_kinetics: {len(empty)} split/class folders got no clip at all (first: "
              f"{'/'.join(empty[0])}); the class list of the dataset would differ between splits.",
              file=sys.stderr)
        return 1
    return 0
