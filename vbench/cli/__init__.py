"""The `vbench` command: one module per command group, each a thin layer over the package's
functions. This is the one place that composes score, report and reference."""
import sys

from .checkpoint import convert_main
from .data import check_main, synth_main
from .export import export_main
from .models import main as models_main
from .preflight import main as preflight_main
from .score import report_main, score_main
from .sysinfo import main as sysinfo_main
from .train import test_main, train_main

# subcommand -> (function(argv) -> exit code, one-line help)
COMMANDS = {
    "train": (train_main, "train (and test) a model: --cfg FILE [KEY VALUE ...]"),
    "test": (test_main, "test a checkpoint with multi-view testing"),
    "preflight": (preflight_main, "before a run: which side limits it, expected clips/s and time, what would help"),
    "score": (score_main, "benchmark score from CNN and Transformer runs"),
    "report": (report_main, "Markdown + PNG report of one run folder"),
    "export": (export_main, "write a run as an MLPerf-format log: --mllog RUN"),
    "models": (models_main, "list registered models with parameters and GFLOPs"),
    "sysinfo": (sysinfo_main, "print the hardware and software block of results.json"),
    "data synth": (synth_main, "write the synthetic motion-pattern dataset"),
    "data check": (check_main, "validate a dataset folder (layout, decodability, balance, clip list, fingerprint)"),
    "checkpoint convert": (convert_main, "rewrite a trusted older checkpoint as plain data: --trust FILE [-o OUT]"),
}


def usage():
    lines = ["usage: vbench COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<20} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run `vbench COMMAND --help` for a command's arguments."]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if rest and f"{name} {rest[0]}" in COMMANDS:  # a command group: "data check", "checkpoint convert"
        name, rest = f"{name} {rest[0]}", rest[1:]
    if name not in COMMANDS:
        print(f"vbench: unknown command '{name}'.\n\n{usage()}", file=sys.stderr)
        return 2
    function, _ = COMMANDS[name]
    return function(rest) or 0
