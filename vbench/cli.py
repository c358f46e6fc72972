"""The `vbench` command. Each subcommand is a thin wrapper over a `main(argv)` in the package."""
import importlib
import sys

# subcommand -> (module, function, one-line help); imported only when used.
COMMANDS = {
    "train": ("vbench.engine.launch", "train_main", "train (and test) a model: --cfg FILE [KEY VALUE ...]"),
    "test": ("vbench.engine.launch", "test_main", "test a checkpoint with multi-view testing"),
    "score": ("vbench.bench.score", "main", "benchmark score from CNN and Transformer runs"),
    "report": ("vbench.bench.report", "main", "Markdown + PNG report of one run folder"),
    "export": ("vbench.bench.export", "main", "write a run as an MLPerf-format log: --mllog RUN"),
    "models": ("vbench.models.summary", "main", "list registered models with parameters and GFLOPs"),
    "sysinfo": ("vbench.bench.sysinfo", "main", "print the hardware and software block of results.json"),
    "data synth": ("vbench.data.synthetic", "main", "write the synthetic motion-pattern dataset"),
    "data check": ("vbench.data.check", "main", "validate a dataset folder (layout, decodability, balance, clip list, fingerprint)"),
}


def usage():
    lines = ["usage: vbench COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<12} {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    lines += ["", "Run `vbench COMMAND --help` for a command's arguments."]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "data" and rest and not rest[0].startswith("-"):
        name, rest = f"data {rest[0]}", rest[1:]
    if name not in COMMANDS:
        print(f"vbench: unknown command '{name}'.\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    function = getattr(importlib.import_module(module_name), function_name)
    return function(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
