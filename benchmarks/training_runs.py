"""Helpers shared by the benchmark scripts that run the real trainer (bench_tta.py, bench_train.py):
make the data outside every timing, run `tools/run_net.py` in a subprocess, read its results.json."""
import collections
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's vbench, as tools/run_net.py uses


def prepare_data(cfg_file, opts):
    """Generate the synthetic dataset (if the config asks for it) before anything is timed."""
    from vbench.config import load_config
    from vbench.data.synthetic import ensure_synthetic

    ensure_synthetic(load_config(cfg_file, opts))


def run_net(name, cfg_file, out, opts, root=ROOT, timings=None):
    """(wall seconds, results.json dict) of one training run of the checkout at `root`; exits with
    its output if it fails. `timings`, a dict if given, gets "exit_after_summary_s": the seconds from
    the run's closing summary line to the end of its process (None without a summary line)."""
    command = [sys.executable, os.path.join(root, "tools", "run_net.py"), "--cfg", cfg_file,
               "OUTPUT_DIR", out, *opts]
    print(f"[{name}] {' '.join(command)}", flush=True)
    start = time.monotonic()
    summary_at, lines = None, collections.deque(maxlen=200)
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                   [root, os.environ.get("PYTHONPATH", "")])))
    for line in process.stdout:
        lines.append(line)
        if summary_at is None and "summary: " in line:
            summary_at = time.monotonic()
    process.wait()
    ended = time.monotonic()
    if process.returncode:
        sys.exit(f"[{name}] failed (exit {process.returncode}):\n{''.join(lines)[-4000:]}")
    if timings is not None:
        timings["exit_after_summary_s"] = None if summary_at is None else ended - summary_at
    with open(os.path.join(out, "results.json")) as f:
        return ended - start, json.load(f)


def machine_line(results):
    """The machine a run used, for the line under a benchmark table."""
    import platform

    from vbench.bench.sysinfo import describe_hardware

    return f"machine: {describe_hardware(results['hardware'])}; {platform.platform()}"
