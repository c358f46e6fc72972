"""Preemption: a scheduler's signal saves a checkpoint at the next step boundary, and the process
exits with a status that asks for a requeue (GETTING_STARTED.md, "Slurm"; tools/slurm/).

SIGUSR1 (Slurm's advance notice, `sbatch --signal=USR1@180`) and, during training, SIGTERM (a
preemption, `scancel`, the time limit) only set a flag in a training process (`request_stop`). At
every step boundary `PreemptionHook` learns whether ANY process has the flag: an all-reduce on a
gloo side group, started at one boundary and read at the next, so the step loop never waits for it
and every process decides at the same step. Then all save one checkpoint inside the epoch
(checkpoint_epoch_<done>_step_<steps>.pyth, with every process's meters and timers) and raise
`Preempted`; a spawned process exits with REQUEUE_EXIT, and so do the launcher and `vbench train`.
Rerunning the same command resumes (TRAIN.AUTO_RESUME): the resumed epoch reads again the batches
of the steps already done, drops them, and continues exactly where the interrupted run stopped.
The clock counts as after any resume (docs/PROTOCOL.md, "Resume accounting"): the checkpoint
holds the clock at the signal, so the queue time is not counted, and reading the dropped batches
again is.

A signal before training starts (set-up) stops the run at the start of training, with nothing
new to save. Loader workers ignore both signals (vbench/data/loader.py): they end with the loader.
"""
import contextlib
import os
import signal
import threading

import torch
import torch.distributed as dist

from vbench.data.loader import batching
from vbench.engine import distributed as du
from vbench.engine.log import get_logger
from vbench.engine.train_loop import HookBase

REQUEUE_EXIT = 75  # EX_TEMPFAIL, "try again later": requeue the job (slurm.conf RequeueExit=75, tools/slurm/)
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
_requested = []  # the signals this process received


class Preempted(Exception):
    """Training stopped on a scheduler's signal (state saved when training had started); rerun the
    same command to resume."""


def request_stop(signum, frame=None):
    """Signal handler: remember the request; the training loop acts on it at its next step."""
    _requested.append(signum)


def stop_requested():
    """The first signal received (a number), or None."""
    return _requested[0] if _requested else None


def in_main_thread():
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def signals_handled(handlers):
    """Install {signal: handler} (main thread only), and put the previous handlers back after."""
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()} if in_main_thread() else {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def notices_kept():
    """SIGUSR1 sets the flag from here on (a notice during set-up is acted on when training starts);
    the flag is cleared afterwards."""
    try:
        with signals_handled({signal.SIGUSR1: request_stop}):
            yield
    finally:
        _requested.clear()


def forwarding_signals(processes):
    """In the launcher: SIGUSR1 and SIGTERM go on to the training `processes` still running."""
    def forward(signum, frame):
        for process in processes:
            if process.exitcode is None:
                os.kill(process.pid, signum)
    return signals_handled({sig: forward for sig in SIGNALS})


class PreemptionHook(HookBase):
    """Saves and stops all processes at the same step boundary after a scheduler's signal (see the
    module docstring). Register it last: every other hook's state goes into its checkpoint."""

    def __init__(self):
        self.group = self.pending = None
        self.flag = torch.zeros(1, dtype=torch.int32)
        self.progress = None  # while saving inside an epoch: every process's meters and timer
        self.handlers = None

    def before_train(self):
        self.handlers = signals_handled({sig: request_stop for sig in SIGNALS})
        self.handlers.__enter__()
        if du.is_distributed():
            self.group = dist.new_group(backend="gloo")  # a CPU flag, whatever the training backend
        if self.any_process_asked(wait=True):
            self.stop("before training started", None)

    def after_step(self):
        if not self.any_process_asked():
            return
        t = self.trainer
        step = t.iter + 1
        self.progress = du.all_gather_objects({"meter": t.meter.state_dict(), "wait": t.wait_timer.state_dict()})
        state = t.state_dict()  # a collective, with this hook's `progress`
        self.progress = None
        t.checkpointer.save(state, t.epoch, step)  # rank 0 writes it
        du.barrier()
        path = t.checkpointer.path_for(t.epoch, step)
        self.stop(f"at epoch {t.epoch + 1}, step {step} of {t.iters_per_epoch}", path)

    def after_train(self):
        if self.pending is not None and self.trainer.failure is None:
            self.pending.wait()  # every process started the same number of reductions
        self.pending = None
        if self.handlers is not None:
            self.handlers.__exit__(None, None, None)
            self.handlers = None
        _requested.clear()

    def any_process_asked(self, wait=False):
        """Whether any process received a signal: as of the previous call (the reduction it
        started has finished by now), or, with `wait`, as of now. The same answer everywhere."""
        mine = int(stop_requested() is not None)
        if self.group is None:
            return bool(mine)
        if self.pending is not None:
            self.pending.wait()
            self.pending = None
            if self.flag.item() > 0:
                return True
        self.flag = torch.tensor([mine], dtype=torch.int32)
        if wait:
            dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group)
            return self.flag.item() > 0
        self.pending = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return False

    def stop(self, where, path):
        t = self.trainer
        t.storage.put_run(end_status="preempted")
        signum = stop_requested()
        name = signal.Signals(signum).name if signum else "a signal to another process"
        saved = f"saved {path}" if path else "nothing new to save"
        message = f"stopped on {name} {where}: {saved}; rerun the same command to resume"
        get_logger().warning(message)
        raise Preempted(message)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        t = self.trainer
        return {"progress": self.progress, "batching": batching(t.cfg, t.ctx.world_size)}

    def load_state_dict(self, state):
        """A checkpoint taken inside an epoch: the trainer reads its steps' batches again and takes
        this process's meters and timer back (`Trainer.skip_saved_steps`). Those are the batches
        the steps trained only if the loader batches as it did then: if not, a warning says so."""
        progress = state.get("progress")
        if progress is None:
            return
        t = self.trainer
        mine = progress[t.ctx.rank] if len(progress) == t.ctx.world_size else None
        t.saved_progress = {"steps": state["step"], "rank": mine, "rng_states": state["rng_states"]}
        then, now = state.get("batching"), batching(t.cfg, t.ctx.world_size)
        if then is not None and then != now:
            get_logger().warning(batching_changed(then, now, state["epoch"], state["step"]))


def batching_changed(then, now, epoch, steps):
    """The warning for a resume inside epoch `epoch` (0-based) whose loader batches otherwise."""
    changed = [key for key in now if then.get(key) != now[key]]
    was = ", ".join(f"{key} {then.get(key)}" for key in changed)
    fix = " ".join(f"{key} {then.get(key)}" for key in changed if key.startswith("DATA_LOADER."))
    return (f"resuming inside epoch {epoch + 1} after {steps} steps, which were trained with {was}; this run "
            f"has {', '.join(f'{key} {now[key]}' for key in changed)}, so its loader puts other clips in each "
            f"batch: the {steps} steps' batches read again are not the ones trained, and epoch {epoch + 1} "
            f"trains some clips twice and leaves others out (later epochs are whole)."
            + (f" For an exact resume, rerun with {fix}." if fix else ""))
