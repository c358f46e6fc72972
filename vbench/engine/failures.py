"""When a process of a multi-process run fails: find out which one and how, and say so plainly.

`join_workers` waits for the processes `launch_workers` spawned. When one fails (it ends with an
error, or notes a failure and then hangs, e.g. in a collective or in NCCL's shutdown), the others get
STOP_GRACE_S to end by themselves (their error written, results.json closed); the launcher then
stops the rest (SIGTERM, then SIGKILL after KILL_AFTER_S), and those are never blamed. Of the
processes that ended on their own, the cause is the first to fail: each notes the time its Python
code failed in shared memory (`FailureNotes`), and one killed outright (no time) comes before all
of them, since the others' errors are then its consequence (a collective whose peer is gone). The
same notes say whether the error was a user's (a `vbench.errors.VbenchError`, printed without its
traceback) or a bug, and hold the message of an error noted by a thread that then ended the process
itself (the watchdog, engine/watchdog.py: `note_failure`).
`WorkersFailed` carries that; `failure_report` turns it into the text the launcher prints: which
rank died and how, what results.json and the checkpoints hold, and the command that resumes the run.

A run stopped on a scheduler's signal is no failure: its processes save and exit with
REQUEUE_EXIT (preemption.py), the launcher raises `Preempted`, and `preemption_report` says what
was saved and how to resume.

Not covered here: a single-process run is the launcher's own process (a SIGKILL ends it without a
word), and under torchrun nothing is spawned: its agent reports a failed rank itself.
"""
import multiprocessing.connection
import os
import pickle
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass

from vbench.bench.results import RESULTS_FILE, load_results
from vbench.engine.checkpoint import Checkpointer, checkpoint_position
from vbench.engine.distributed import launched_by_torchrun
from vbench.engine.preemption import REQUEUE_EXIT, Preempted
from vbench.errors import ResultsError, VbenchError

_OOM_HINT = ("likely killed by the kernel's out-of-memory killer (check `dmesg` for 'Killed "
             "process {pid}'), or by hand")
_STOP_HINT = "stopped from outside: by hand, a job scheduler (time limit, preemption) or a closed terminal"
_CRASH_HINT = "a crash in native code (a video decoder, a CUDA or driver library, or torch itself)"
MESSAGE_BYTES = 4096  # room for one noted error message per process
STOP_GRACE_S = 15.0  # after a process fails, the others' time to end by themselves (a torch process
# can take several seconds to tear down on a busy machine; one that hangs is stopped after this)
KILL_AFTER_S = 30.0  # then the time they get to end after SIGTERM, before SIGKILL
POLL_S = 1.0  # how often the launcher looks for a process that failed but has not ended
SIGNAL_HINTS = {"SIGKILL": _OOM_HINT, "SIGTERM": _STOP_HINT, "SIGINT": _STOP_HINT, "SIGHUP": _STOP_HINT,
                "SIGSEGV": _CRASH_HINT, "SIGBUS": _CRASH_HINT, "SIGILL": _CRASH_HINT,
                "SIGFPE": _CRASH_HINT, "SIGABRT": _CRASH_HINT}


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass(frozen=True)
class ProcessEnd:
    """How one spawned process ended on its own."""

    rank: int
    local_rank: int
    pid: int
    exit_code: int  # negative: killed by signal -exit_code (multiprocessing's convention)
    traceback: str = ""  # its Python traceback, when it raised
    failed_at: float = 0.0  # time.monotonic() when its Python code failed; 0.0: killed outright
    user_error: bool = False  # its error was a VbenchError: the message says it all
    hung: bool = False  # it failed, then did not end by itself and was stopped

    @property
    def signal_name(self):
        """The signal that ended it: by killing it, or by making it exit with 128 + the signal."""
        if self.exit_code < 0:
            return _signal_name(-self.exit_code)
        if 128 < self.exit_code < 128 + signal.NSIG and not self.traceback:
            return _signal_name(self.exit_code - 128)
        return None

    @property
    def error(self):
        """The exception its traceback ends with ("ValueError: ...", every line of the message), or ""."""
        lines = self.traceback.strip().splitlines()
        start = 0
        for i, line in enumerate(lines):
            if line.startswith("  File "):  # a frame: its source and caret lines follow, indented
                start = i + 1
                while start < len(lines) and lines[start].startswith("    "):
                    start += 1
        return "\n".join(lines[start:])

    def how(self):
        if self.hung:
            return (f"failed, then did not end within {STOP_GRACE_S:g} s and was stopped (its "
                    f"error message is lost; it may have hung in a collective or in shutting down)")
        if self.traceback:
            return f"failed with {self.error}"
        if self.exit_code < 0:
            how = f"was killed by signal {self.signal_name}"
        elif self.signal_name:
            how = f"exited with code {self.exit_code} after receiving {self.signal_name}"
        else:
            how = f"exited with code {self.exit_code}"
        hint = SIGNAL_HINTS.get(self.signal_name)
        return f"{how}: {hint.format(pid=self.pid)}" if hint else how


class WorkersFailed(RuntimeError):
    """Processes of this node failed. `ends`: the ones that ended on their own, the cause first
    (see the module docstring); `stopped`: how many the launcher stopped."""

    def __init__(self, ends, world_size, stopped):
        self.ends = sorted(ends, key=lambda end: (end.failed_at, end.rank))
        self.world_size = world_size
        self.stopped = stopped
        first = self.ends[0]
        super().__init__(f"rank {first.rank} of {world_size} (pid {first.pid}) {first.how()}")


class FailureNotes:
    """Shared memory in which each spawned process notes when it failed and whether its error was
    a user's (see `_worker` in launch.py). Made before the processes start, passed to each."""

    def __init__(self, procs):
        context = multiprocessing.get_context("spawn")
        self.failed_at = context.RawArray("d", procs)  # time.monotonic() of the failure; 0: none
        self.user_error = context.RawArray("b", procs)
        self.messages = context.RawArray("c", procs * MESSAGE_BYTES)  # "module.Class: message"

    def note(self, local_rank, error, with_message=False):
        self.failed_at[local_rank] = time.monotonic()
        self.user_error[local_rank] = isinstance(error, VbenchError)
        if with_message:
            text = f"{type(error).__module__}.{type(error).__name__}: {error}".encode()[:MESSAGE_BYTES - 1]
            start = local_rank * MESSAGE_BYTES
            self.messages[start:start + len(text) + 1] = text + b"\0"

    def message(self, local_rank):
        start = local_rank * MESSAGE_BYTES
        return self.messages[start:start + MESSAGE_BYTES].split(b"\0", 1)[0].decode(errors="replace")


_PROCESS_NOTES = None  # (FailureNotes, local rank) in a process the launcher spawned


def register_notes(notes, local_rank):
    """Called by the launcher in each process it spawned (launch._worker)."""
    global _PROCESS_NOTES
    _PROCESS_NOTES = None if notes is None else (notes, local_rank)


def note_failure(error):
    """Note `error` (and its message) for the launcher, from a thread that is about to end this
    process itself. Returns False when no launcher of ours watches this process (one process,
    torchrun): the caller must then say it."""
    if _PROCESS_NOTES is None:
        return False
    notes, local_rank = _PROCESS_NOTES
    notes.note(local_rank, error, with_message=True)
    return True


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles strings, numbers, lists, tuples and dicts only: any other object is a reference to
    a global (a class or function), and those are refused, so no code can run."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is read")


def _read_traceback(error_file):
    """The traceback torch's process wrapper wrote for a process that raised ("" if none, or if it
    was stopped while writing it); the file is removed.

    torch names the file in the shared temporary folder (e.g. /tmp/pytorch-errorfile-*.pickle) and
    the process writes it only when it fails, so another local user could put a file there first.
    It is therefore read by `_PlainUnpickler`: anything but the traceback string is ignored.
    """
    if not os.path.exists(error_file):
        return ""
    try:
        with open(error_file, "rb") as f:
            text = _PlainUnpickler(f).load()
        return text if isinstance(text, str) else ""
    except Exception:  # noqa: BLE001 - damaged, cut short or not torch's: no traceback to show
        return ""
    finally:
        try:
            os.remove(error_file)
        except OSError:
            pass


def _stop(processes):
    """SIGTERM (a worker then ends as on an error), SIGKILL what is still alive KILL_AFTER_S later.
    SIGCONT after SIGTERM: a stopped process (SIGSTOP, a suspended job) holds SIGTERM until continued."""
    for process in processes:
        process.terminate()
        try:
            os.kill(process.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + KILL_AFTER_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.exitcode is None:
            process.kill()
            process.join()


def join_workers(context, notes, first_rank, world_size):
    """Wait for the processes of a torch `ProcessContext`; raise WorkersFailed when one fails.

    `notes`: the `FailureNotes` the processes got; `first_rank`: the global rank of local
    process 0 (SHARD_ID * processes per node).
    """
    processes, failed_at = context.processes, notes.failed_at
    pending = {process.sentinel: process for process in processes}
    while pending:
        for sentinel in multiprocessing.connection.wait(list(pending), timeout=POLL_S):
            pending.pop(sentinel).join()
        # exitcode: None while running, 0 on success, REQUEUE_EXIT when it saved and stopped on a
        # scheduler's signal (the others stop at the same step); a failure time: failed, maybe stuck
        if any(process.exitcode not in (None, 0, REQUEUE_EXIT) for process in processes) or any(failed_at):
            break
    else:
        stopped = sum(process.exitcode == REQUEUE_EXIT for process in processes)
        if stopped:
            raise Preempted(f"{stopped} of {len(processes)} processes saved and stopped on a scheduler's signal")
        return
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    ended = [i for i, process in enumerate(processes) if process.exitcode not in (None, 0, REQUEUE_EXIT)]
    alive = [i for i, process in enumerate(processes) if process.exitcode is None]
    hung = [i for i in alive if failed_at[i]]  # failed, maybe first, but did not end: reported too
    _stop([processes[i] for i in alive])  # (which makes them note a failure time)
    ends = [ProcessEnd(first_rank + i, i, processes[i].pid, processes[i].exitcode,
                       _read_traceback(context.error_files[i]) or notes.message(i), failed_at[i],
                       bool(notes.user_error[i]), hung=i in hung)
            for i in ended + hung]
    raise WorkersFailed(ends, world_size, len(alive) - len(hung))


# ---------------------------------------------------------------------------- the report
def _who(end, cfg, world_size):
    node = f"node SHARD_ID {cfg.SHARD_ID}, local process {end.local_rank}, " if cfg.NUM_SHARDS > 1 else ""
    return f"rank {end.rank} of {world_size} ({node}pid {end.pid})"


def rerun_command(argv, extra=()):
    """`argv` as a shell command line that runs it again, with `extra` words appended."""
    program, *rest = argv
    if program.endswith(".py"):
        python = shutil.which("python")
        same = python and os.path.realpath(python) == os.path.realpath(sys.executable)
        words = ["python" if same else sys.executable, program]
    else:
        name = os.path.basename(program)
        on_path = shutil.which(name)
        words = [name if on_path and os.path.realpath(on_path) == os.path.realpath(program) else program]
    return shlex.join(words + list(rest) + list(extra))


def _results_line(cfg):
    if cfg.SHARD_ID != 0:
        return "results.json is written by rank 0, on the node with SHARD_ID 0."
    path = os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE)
    if not os.path.exists(path):
        return f"no {RESULTS_FILE} was written: the run failed during set-up."
    try:
        return f"{path} says \"{load_results(path)['run']['status']}\"."
    except ResultsError as err:
        return f"{path} cannot be read: {err}"


def _resume_lines(cfg, newest, argv, cwd):
    """How to resume from `newest` ("epoch 5", or None without a checkpoint)."""
    if launched_by_torchrun():
        checkpoint = (f"continues from {newest} (TRAIN.AUTO_RESUME {cfg.TRAIN.AUTO_RESUME})"
                      if newest is not None else "runs it again")
        return [f"Rerunning the same torchrun command on every node {checkpoint}; each rank ran:",
                f"  cd {shlex.quote(cwd)} && {rerun_command(argv)}"]
    every_node = " on every node (each with its own SHARD_ID)" if cfg.NUM_SHARDS > 1 else ""
    extra = ()
    if newest is None:
        intro = f"To run it again, rerun the same command{every_node}:"
    elif cfg.TRAIN.AUTO_RESUME:
        intro = (f"To resume from {newest}, rerun the same command{every_node} "
                 f"(TRAIN.AUTO_RESUME is on: it continues from the newest checkpoint in OUTPUT_DIR):")
    else:
        extra = ("TRAIN.AUTO_RESUME", "True")
        intro = (f"TRAIN.AUTO_RESUME is off; to resume from {newest}, rerun the command "
                 f"with TRAIN.AUTO_RESUME True{every_node}:")
    return [intro, f"  cd {shlex.quote(cwd)} && {rerun_command(argv, extra)}"]


def newest_checkpoint_line(cfg):
    """(where the newest checkpoint is, "epoch 5" or "epoch 5, step 37 of epoch 6", or None; a
    line naming it)."""
    checkpoints = Checkpointer(cfg.OUTPUT_DIR, is_main=False).list_checkpoints()
    if not checkpoints:
        return None, "No checkpoint was written yet."
    epoch, step = checkpoint_position(checkpoints[0])
    steps = f", and {step} steps of epoch {epoch + 1}" if step else ""
    where = f"epoch {epoch}, step {step} of epoch {epoch + 1}" if step else f"epoch {epoch}"
    return where, f"Newest checkpoint: {checkpoints[0]} (epoch {epoch} of {cfg.SOLVER.MAX_EPOCH}{steps})."


def preemption_report(cfg, stop, argv, cwd):
    """What `vbench train` prints when the run stopped on a scheduler's signal (`stop`: Preempted)."""
    lines = [f"vbench: preempted: {stop}", f"  exit status {REQUEUE_EXIT} asks the scheduler to requeue the job "
             f"(tools/slurm/)."]
    newest = None
    if cfg.TRAIN.ENABLE:
        newest, line = newest_checkpoint_line(cfg)
        lines.append("  " + line)
    lines += ["  " + line for line in _resume_lines(cfg, newest, argv, cwd)]
    return "\n".join(lines)


def resume_advice(cfg, argv, cwd):
    """What results.json and the checkpoints hold after a failed run, and the command that resumes
    it (or runs it again), as lines."""
    lines, newest = [], None
    if cfg.TRAIN.ENABLE:
        lines.append(_results_line(cfg))
        newest, line = newest_checkpoint_line(cfg)
        lines.append(line)
    return lines + _resume_lines(cfg, newest, argv, cwd)


def failure_report(cfg, failure, argv, cwd):
    """The text the launcher prints for a WorkersFailed `failure` of the run `argv` started in `cwd`.

    The failing process's traceback comes first unless its error was a user's (a VbenchError,
    whose message says it all).
    """
    first, *others = failure.ends
    lines = [f"{_who(first, cfg, failure.world_size)} {first.how()}"]
    lines += [f"then {_who(end, cfg, failure.world_size)} {end.how()}" for end in others]
    if failure.stopped:
        lines.append(f"The launcher stopped the other {failure.stopped} process(es) of this node.")
    lines += resume_advice(cfg, argv, cwd)
    text = "\n".join(["vbench: error: " + lines[0]] + ["  " + line for line in lines[1:]])
    if first.traceback and not first.user_error:
        text = first.traceback.rstrip() + "\n" + text
    return text
