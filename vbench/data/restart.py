"""A loader worker that dies (the kernel's out-of-memory killer picks a decoding worker first) is
survived: the loader names the worker, the signal and the likely cause, starts new workers and
goes on with the next batch of the same epoch plan, so no clip is skipped or repeated.

How the batches stay the same. torch hands an iterable dataset's batches out in a fixed order:
round-robin over the workers (0, 1, ..., 0, 1, ...), skipping a worker once it has none left. So
the batches the loader has received fix where the epoch stands: how many each plan worker has
delivered, and which worker's batch comes next (the one after the last batch's worker). New
workers are started with `dataset.resume` = [rotation, delivered per plan worker]: process j
plays plan worker (j + rotation) mod W, so torch's round-robin (which starts at process 0)
continues with the worker whose batch is due, and each replays its share of the epoch from the
start, sending only the batches not yet delivered (`ClipDataset.__iter__`). The replay costs the
decoding the workers had done in this epoch (at most one epoch's loading, half on average).

Done around torch's DataLoader (private parts, checked by the tests):
- torch's SIGCHLD handler raises in the main thread, at whatever line it is running (the middle of
  an optimizer step), when a worker dies; the workers are taken off that handler (`detach_sigchld`)
  so the death shows where it can be handled: before the next batch is requested (a worker that
  ended with batches left), while the main process waits for a batch (torch checks its workers
  every 5 s, `MP_STATUS_CHECK_INTERVAL`; or reading a batch the dying worker sent fails, its shared
  memory being handed over by the worker) or at the next epoch's start. A batch that could not be
  read counts as not delivered: the new worker sends it again.
- a new iterator draws its base seed from the global torch generator; a restart puts the
  generator back, so the training process's own random stream (dropout) is not moved.
- the shared-memory batch slots (`buffers.py`): the old workers' slots are forgotten and every
  busy mark cleared; the new processes allocate their own slots, and the batches the trainer still
  holds keep their old memory until dropped. Pinned copies: the pin-memory thread stops with the
  old iterator.

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
    """A `ClipLoader`'s batches from its torch DataLoader, surviving worker deaths.

    data_loader: the DataLoader (persistent workers); resume: `ClipDataset.resume`; ledger: the
    loader's `BufferLedger` or None; limit: DATA_LOADER.MAX_WORKER_RESTARTS; role: "train" or
    "eval"; rank: this process's rank; settings: {config key: value} named in the hint.
    """

    def __init__(self, data_loader, resume, ledger, limit, role, rank, settings):
        self.data_loader, self.resume, self.ledger = data_loader, resume, ledger
        self.limit, self.role, self.rank, self.settings = int(limit), role, rank, dict(settings)
        self.num_workers = data_loader.num_workers
        self.events = []  # one dict per restart

    def batches(self, epoch, num_batches):
        """Yield (plan worker, batch) for one pass over the epoch (`num_batches`: the loader's
        batches per epoch, for the messages)."""
        if self.num_workers == 0:
            for batch in self.data_loader:
                yield 0, batch
            return
        n = self.num_workers
        delivered, last, rotation = [0] * n, n - 1, 0
        iterator = self._start(rotation, delivered, restarted=False)
        while True:
            try:
                while True:
                    if ended_with_work_left(iterator):  # it died while the trainer computed: go on at once
                        raise RuntimeError("a loader worker with batches left has ended")
                    batch = next(iterator, None)
                    if batch is None:
                        return
                    last = (batch["buffer"][0] + rotation) % n
                    delivered[last] += 1
                    self._resumed()
                    yield last, batch
            except Exception as error:  # torch's RuntimeError, or a failed hand-over
                dead = dead_workers(self.data_loader._iterator)
                if not dead:
                    raise
                self._restart(error, dead, rotation, epoch, sum(delivered), num_batches)
                rotation = (last + 1) % n  # the worker whose batch is due comes first
                iterator = self._start(rotation, delivered, restarted=True)

    def _resumed(self):
        """Stamp the newest restart with the seconds from noticing the death to the next batch."""
        if self.events and "resume_s" not in self.events[-1]:
            self.events[-1]["resume_s"] = round(time.monotonic() - self._noticed, 3)

    def _start(self, rotation, delivered, restarted):
        """A torch iterator whose workers begin at `delivered` with plan worker `rotation` first."""
        self.resume[0] = rotation
        self.resume[1:] = torch.tensor(delivered, dtype=torch.int64)
        while True:
            state = torch.get_rng_state() if restarted else None
            try:
                iterator = iter(self.data_loader)
            except Exception as error:  # a persistent worker died between passes
                dead = dead_workers(self.data_loader._iterator)
                if not dead:
                    raise
                self._restart(error, dead, rotation, None, sum(delivered), None)
                restarted = True
                continue
            finally:
                if state is not None:
                    torch.set_rng_state(state)
            detach_sigchld(iterator)
            return iterator

    def _restart(self, error, dead, rotation, epoch, received, num_batches):
        """Stop every worker, forget their batch slots, count the restart (or fail past the limit).
        `rotation`: the one the dead processes ran with (process j played plan worker j + rotation)."""
        self._noticed = time.monotonic()
        old = self.data_loader._iterator
        if old is not None:
            old._shutdown_workers()
        self.data_loader._iterator = None
        if self.ledger is not None:
            self.ledger.forget()
        what = self.describe(dead, rotation)
        where = (f"epoch {epoch + 1}, after its first {received} batches (of {num_batches})" if epoch is not None
                 else "the start of the next pass")
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
