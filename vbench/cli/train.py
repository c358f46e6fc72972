"""`vbench train`, `vbench test` and `python tools/run_net.py`: check, launch and report failures."""
import os
import sys
import time

from vbench.config import load_config
from vbench.config.args import parse_cfg_args
from vbench.engine.failures import WorkersFailed, failure_report, preemption_report, resume_advice
from vbench.engine.launch import launch
from vbench.engine.preemption import REQUEUE_EXIT, Preempted
from vbench.errors import RunInterrupted, VbenchError

USER_ERRORS = (VbenchError, FileNotFoundError)  # printed as one message, without a traceback


def run(argv, description, forced_opts=()):
    """Parse `--cfg FILE [KEY VALUE ...]`, then launch; 0 on success, REQUEUE_EXIT (75) when a
    scheduler's signal stopped it (state saved: rerun to resume), 1 (with the reason) otherwise."""
    setup_started = time.monotonic()
    args = parse_cfg_args(argv, description)
    try:
        cfg = load_config(args.cfg_file, list(args.opts) + list(forced_opts))
        launch(cfg, args.cfg_file, sys.argv, setup_started)
    except RunInterrupted as err:  # a fault in this process (one process, or torchrun's rank)
        lines = [f"vbench: error: {err}"] + ["  " + line for line in resume_advice(cfg, sys.argv, os.getcwd())]
        print("\n".join(lines), file=sys.stderr)
        return 1
    except USER_ERRORS as err:
        print(f"vbench: error: {err}", file=sys.stderr)
        return 1
    except WorkersFailed as failure:
        print(failure_report(cfg, failure, sys.argv, os.getcwd()), file=sys.stderr)
        return 1
    except Preempted as stop:
        print(preemption_report(cfg, stop, sys.argv, os.getcwd()), file=sys.stderr)
        return REQUEUE_EXIT
    return 0


def run_net_main(argv=None):
    """`python tools/run_net.py --cfg FILE [KEY VALUE ...]`: train and/or test (SlowFast style)."""
    return run(sys.argv[1:] if argv is None else argv, "Train and/or test a video model.")


def train_main(argv=None):
    """`vbench train --cfg FILE [KEY VALUE ...]`."""
    return run(argv, "Train (and, with TEST.ENABLE, test) a video model.")


def test_main(argv=None):
    """`vbench test --cfg FILE [KEY VALUE ...]`: multi-view testing of TEST.CHECKPOINT_FILE_PATH
    or the newest checkpoint in OUTPUT_DIR (training is switched off)."""
    return run(argv, "Test a trained video model.", ("TRAIN.ENABLE", "False", "TEST.ENABLE", "True"))
