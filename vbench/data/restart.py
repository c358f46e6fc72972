"""A loader worker that dies (the kernel's out-of-memory killer picks a decoding worker first) is
survived: the loader names the worker, the signal and the likely cause, starts new workers and
goes on with the same epoch plan, so no clip is skipped or repeated.

How the batches stay the same. Every piece names its plan worker and its number in that worker's
epoch (`dataset.ClipDataset`), and each worker's pieces reach the training process in their order,
so the pieces received fix where the epoch stands: how many each plan worker has delivered, and
whether it sent its last. New workers are started with `dataset.resume` = [rotation, pieces
delivered per plan worker, -1 for a worker done]: process j plays plan worker (j + rotation) mod W
(the rotation puts the worker after the last one heard from at torch's first turn), and each replays
its share of the epoch from the start, sending only the pieces not yet delivered and taking the
transform's random draws for the others without computing them. The joiner (`join.PieceJoiner`)
orders pieces by (plan worker, number) whatever process sends them, so the batches are the
uninterrupted ones. The replay costs the decoding the workers had done in this epoch (at most one
epoch's loading, half on average).

Done around torch's DataLoader (private parts, checked by the tests):
- torch's SIGCHLD handler raises in the main thread, at whatever line it is running (the middle of
  an optimizer step), when a worker dies; the workers are taken off that handler (`detach_sigchld`)
  so the death shows where it can be handled, in the thread that joins the pieces: before the next
  piece is requested (a worker that ended with pieces left), while it waits for a piece (torch checks
  its workers every 5 s, `MP_STATUS_CHECK_INTERVAL`; or reading a piece the dying worker sent fails,
  its shared memory being handed over by the worker) or at the next pass's start. A piece that could
  not be read, or that torch held back for its order, counts as not delivered: it is sent again.
- a new iterator draws its base seed from the DataLoader's own generator (the loader gives it one),
  so starting workers never moves the training process's random stream (dropout).
- the shared-memory piece slots (`buffers.py`): the old workers' slots are forgotten and every
  busy mark cleared; the new processes allocate their own slots, and the pieces still waiting for
  their turn keep their old memory until joined. Pieces an old worker made ahead for the next epoch
  (`ahead.py`) die with it; the new ones make them again.

Restarts are counted (`events`) and bounded by DATA_LOADER.MAX_WORKER_RESTARTS per loader; one
more death raises `LoaderWorkersDied`, which says what happened and what to lower.
"""
import logging
import signal
import time

import torch
from torch.utils.data._utils import signal_handling

from vbench.errors import LoaderWorkersDied

logger = logging.getLogger(__name__)
DEATH_WAIT_S = 1.0  # after an error from the workers' side, how long to wait for a dead worker to show

_MEMORY = ("most likely the kernel's out-of-memory killer (check `dmesg` for 'Killed process {pid}'), "
           "or by hand")
_CRASH = "a crash in native code (the video decoder, or a library it uses)"
SIGNAL_CAUSES = {"SIGKILL": _MEMORY, "SIGSEGV": _CRASH, "SIGBUS": _CRASH + " or too little shared "
                 "memory (/dev/shm)", "SIGABRT": _CRASH, "SIGILL": _CRASH, "SIGFPE": _CRASH,
                 "SIGTERM": "stopped from outside", "SIGINT": "stopped from outside"}


def detach_sigchld(iterator):
    """Take `iterator`'s workers off torch's SIGCHLD check (see the module docstring)."""
    if getattr(iterator, "_worker_pids_set", False):
        signal_handling._remove_worker_pids(id(iterator))
        iterator._worker_pids_set = False


def dead_workers(iterator, wait_s=DEATH_WAIT_S):
    """(process index, pid, exit code) of every worker of a torch iterator that has ended, waiting
    up to `wait_s` for one to end: reading a batch of a worker that is being killed can fail
    (its shared memory is handed over through a socket the kernel closes) a moment before the
    worker can be reaped."""
    workers = getattr(iterator, "_workers", [])
    deadline = time.monotonic() + wait_s
    while True:
        dead = [(i, w.pid, w.exitcode) for i, w in enumerate(workers) if w.exitcode is not None]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.02)


def ended_with_work_left(iterator):
    """Whether a worker that has not finished this pass has ended (torch's own check of its workers
    waits for a batch for 5 s first). One non-blocking waitpid per worker: microseconds a batch."""
    status = getattr(iterator, "_workers_status", ())
    return any(active and worker.exitcode is not None for active, worker in zip(status, iterator._workers))


def how_it_ended(exit_code):
    """("killed by signal SIGKILL", "SIGKILL") or ("exited with code 1", None)."""
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"was killed by signal {name}", name
    return f"exited with code {exit_code}", None


class WorkerRestarts:
    """A `ClipLoader`'s pieces from its torch DataLoader, surviving worker deaths.

    data_loader: the DataLoader (persistent workers, its own `generator`); resume: `ClipDataset.resume`;
    ledger: the loader's `BufferLedger` or None; limit: DATA_LOADER.MAX_WORKER_RESTARTS; role: "train"
    or "eval"; rank: this process's rank; batch_size: the rank's batch size (for the records);
    settings: {config key: value} named in the hint.
    """

    def __init__(self, data_loader, resume, ledger, limit, role, rank, batch_size, settings):
        self.data_loader, self.resume, self.ledger = data_loader, resume, ledger
        self.limit, self.role, self.rank, self.settings = int(limit), role, rank, dict(settings)
        self.batch_size = batch_size
        self.num_workers = data_loader.num_workers
        self.events = []  # one dict per restart

    def begin(self):
        """The torch iterator of a new pass (call it in the training thread: torch's signal set-up),
        its workers keeping the rotation they run with; a worker found dead is replaced."""
        if self.num_workers == 0:
            return iter(self.data_loader)
        return self._start([0] * self.num_workers, [False] * self.num_workers, None, 0)

    def pieces(self, iterator, epoch, num_batches):
        """Yield the pass's pieces from `iterator` (from `begin`), replacing the workers when one
        dies (`num_batches`: the loader's batches per epoch, for the messages)."""
        if self.num_workers == 0:
            yield from iterator
            return
        n = self.num_workers
        delivered, done, clips, last = [0] * n, [False] * n, 0, None
        while True:
            try:
                while True:
                    if ended_with_work_left(iterator):  # it died while the trainer computed: go on at once
                        raise RuntimeError("a loader worker with pieces left has ended")
                    piece = next(iterator, None)
                    if piece is None:
                        return
                    worker, number, is_last = piece["piece"]
                    delivered[worker], done[worker], last = number + 1, is_last, worker
                    clips += len(piece["labels"])
                    self._resumed()
                    yield piece
            except Exception as error:  # torch's RuntimeError, or a failed hand-over
                dead = dead_workers(self.data_loader._iterator)
                if not dead:
                    raise
                self._restart(error, dead, epoch, clips // self.batch_size, num_batches)
                if last is not None:  # the worker after the last one heard from comes first
                    self.resume[0] = (last + 1) % n
                iterator = self._start(delivered, done, epoch, clips // self.batch_size)

    def _resumed(self):
        """Stamp the newest restart with the seconds from noticing the death to the next piece."""
        if self.events and "resume_s" not in self.events[-1]:
            self.events[-1]["resume_s"] = round(time.monotonic() - self._noticed, 3)

    def _start(self, delivered, done, epoch, received):
        """A torch iterator whose processes resume at `delivered` pieces per plan worker (`done`:
        those that sent their last piece send nothing); `epoch`, `received`: where, for the records."""
        self.resume[1:] = torch.tensor([-1 if end else count for count, end in zip(delivered, done)])
        while True:
            try:
                iterator = iter(self.data_loader)
            except Exception as error:  # a persistent worker died between passes
                dead = dead_workers(self.data_loader._iterator)
                if not dead:
                    raise
                self._restart(error, dead, epoch, received, None)
                continue
            detach_sigchld(iterator)
            return iterator

    def _restart(self, error, dead, epoch, received, num_batches):
        """Stop every worker, forget their piece slots, count the restart (or fail past the limit)."""
        self._noticed = time.monotonic()
        old = self.data_loader._iterator
        if old is not None:
            old._shutdown_workers()
        self.data_loader._iterator = None
        if self.ledger is not None:
            self.ledger.forget()
        rotation = int(self.resume[0])  # process j played plan worker j + rotation
        what = self.describe(dead, rotation)
        where = (f"epoch {epoch + 1}, after its first {received} batches (of {num_batches})"
                 if num_batches is not None else "the start of a pass")
        if len(self.events) >= self.limit:
            raise LoaderWorkersDied(
                f"{what}. That is {len(self.events) + 1} worker deaths in this loader, more than "
                f"DATA_LOADER.MAX_WORKER_RESTARTS = {self.limit}: the run stops. {self.hint()} "
                f"(torch: {error})") from None
        _, pid, code = dead[0]
        self.events.append({"role": self.role, "rank": self.rank, "epoch": None if epoch is None else epoch + 1,
                            "worker": (dead[0][0] + rotation) % self.num_workers, "pid": pid,
                            "how": how_it_ended(code)[0], "at_batch": received})
        logger.warning(f"{what}. Restarting the workers at {where} (restart {len(self.events)} of at "
                       f"most {self.limit}, DATA_LOADER.MAX_WORKER_RESTARTS); the new workers first "
                       f"replay this epoch's part already delivered. {self.hint()}")

    def describe(self, dead, rotation):
        parts = []
        for process, pid, code in dead:
            how, name = how_it_ended(code)
            cause = SIGNAL_CAUSES.get(name, "")
            worker = (process + rotation) % self.num_workers
            parts.append(f"{self.role} loader worker {worker} of {self.num_workers} of rank {self.rank} "
                         f"(pid {pid}) {how}" + (f": {cause.format(pid=pid)}" if cause else ""))
        return "; ".join(parts)

    def hint(self):
        settings = ", ".join(f"{key} (now {value})" for key, value in self.settings.items())
        return (f"If memory ran out, each worker holds a video's decoded frames and its prefetched "
                f"batches: lower {settings}.")
