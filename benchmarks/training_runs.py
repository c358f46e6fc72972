"""Helpers shared by the benchmark scripts that run the real trainer (bench_tta.py, bench_train.py):
make the data outside every timing, run `tools/run_net.py` in a subprocess, read its results.json."""
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


def run_net(name, cfg_file, out, opts):
    """(wall seconds, results.json dict) of one training run; exits with its output if it fails."""
    command = [sys.executable, os.path.join(ROOT, "tools", "run_net.py"), "--cfg", cfg_file,
               "OUTPUT_DIR", out, *opts]
    print(f"[{name}] {' '.join(command)}", flush=True)
    start = time.monotonic()
    process = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall_s = time.monotonic() - start
    if process.returncode:
        sys.exit(f"[{name}] failed (exit {process.returncode}):\n{process.stdout[-4000:]}")
    with open(os.path.join(out, "results.json")) as f:
        return wall_s, json.load(f)


def machine_line(results):
    """The machine a run used, for the line under a benchmark table."""
    import platform

    from vbench.bench.sysinfo import describe_hardware

    return f"machine: {describe_hardware(results['hardware'])}; {platform.platform()}"
