"""The watchdog: a run in which a process stopped making progress ends in minutes, naming it.

Without it a stalled rank (a hung file-system read, a GPU that stopped answering, a stopped
process) is found only by the process group's 30-minute timeout, and a one-process run waits forever.

Progress. Each rank counts what it does: the start and the end of every training step (two integer
increments in the hook: nothing per step reaches the device or the network) and every batch its
loaders yield or their workers make (training, precise BN, evaluation, the replay after a loader
restart). Set-up is not watched: the watchdog arms once every rank has finished its first training
step of this attempt (indexing, the model build, the warm-up and any compilation come before), and
stops when training ends. A checkpoint write and the epoch-end collectives count nothing: they must
fit in the limit (its floor is there for them).

Heartbeats. A thread in each rank publishes, every `check_interval` seconds, (beat number, progress
count, its slowest step, state, host, pid) in the process group's store (the rendezvous store, in
rank 0's process or in torchrun's agent, which every node reaches; through a client of its own that
gives up after a few seconds; one process: in memory), reads every rank's, and notes on its own
clock when each rank's beat and progress last changed: no clocks are compared across machines.

The limit is max(WATCHDOG.STALL_TIMEOUT_S, WATCHDOG.STEP_FACTOR x the slowest training step any
rank has made, the attempt's first step left out). A rank whose progress has not changed for longer
has stalled. When one stops, the others stop soon after (they wait for it in a collective), so the
rank named is: one whose beats stopped too (its process does not run: SIGSTOP, a suspended job, a
frozen machine); else the stalled ranks with the least progress (a rank hung in its data loading
has one batch less than the ranks waiting for it in the gradient all-reduce; ranks that tie are all
named, and their stacks show where each waits); or rank 0 when the store has not answered for
longer than the limit (in a run the launcher spawned the store lives in rank 0's process).

Then the first rank to find it (`RankStalled`): every rank that can still answer writes the Python
stacks of all its threads (faulthandler) to OUTPUT_DIR/watchdog/stacks_rank<r>.txt on its node and
to its stderr; rank 0 marks results.json "failed" (checkpoints are written atomically: none is left
half-written); the finder notes the error for the launcher, which stops the other processes and
prints the report with the resume command (engine/failures.py), or, with no launcher of ours (one
process, torchrun), prints it itself; then it ends its process.
"""
import faulthandler
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

from vbench.bench.results import RESULTS_FILE, mark_failed
from vbench.engine.failures import note_failure, resume_advice
from vbench.engine.heartbeats import LocalBoard, StoreBoard, store_address
from vbench.engine.log import get_logger
from vbench.engine.train_loop import HookBase
from vbench.errors import RankStalled

STACKS_DIR = "watchdog"


def check_interval(floor_s):
    """Seconds between heartbeats: a twentieth of the limit's floor, within [0.2, 5]."""
    return min(5.0, max(0.2, floor_s / 20))


# ------------------------------------------------------------------------------ the verdict
@dataclass(frozen=True)
class Verdict:
    ranks: tuple  # the ranks named
    kind: str  # "not_running", "no_progress" or "store"
    silent_s: float  # how long they have made no progress (or the store has not answered)
    limit_s: float
    slowest_s: float  # the slowest step seen, over the ranks


class StallDetector:
    """Which ranks stalled, from the heartbeats one rank reads (see the module docstring).

    `max_gap_s`: when this rank itself did not look for longer (it was not scheduled), what happened
    meanwhile is unknown: every rank's clock starts again."""

    def __init__(self, world, floor_s, factor, max_gap_s):
        self.world, self.floor_s, self.factor, self.max_gap_s = world, floor_s, factor, max_gap_s
        self.seen, self.alive_at, self.moved_at = {}, {}, {}
        self.last_look = self.store_down_since = None
        self.was_armed = False

    def limit(self):
        slowest = max((beat["slowest_s"] for beat in self.seen.values()), default=0.0)
        return max(self.floor_s, self.factor * slowest), slowest

    def _armed(self):
        states = [beat["state"] for beat in self.seen.values()]
        return len(states) == self.world and "setup" not in states and "armed" in states

    def _restart_clocks(self, now):
        self.alive_at = dict.fromkeys(self.alive_at, now)
        self.moved_at = dict.fromkeys(self.moved_at, now)
        self.store_down_since = None if self.store_down_since is None else now

    def _look(self, now):
        if self.last_look is not None and now - self.last_look > self.max_gap_s:
            self._restart_clocks(now)
        self.last_look = now

    def observe(self, now, beats):
        """Note the beats ({rank: beat}) read at `now`; a Verdict when a rank stalled, else None."""
        self._look(now)
        self.store_down_since = None
        for rank, beat in beats.items():
            old = self.seen.get(rank)
            if old is None or beat["beat"] != old["beat"]:
                self.alive_at[rank] = now
            if old is None or (beat["progress"], beat["state"]) != (old["progress"], old["state"]):
                self.moved_at[rank] = now
            self.seen[rank] = beat
        if not self._armed():
            return None
        if not self.was_armed:  # a rank that armed early waited for the others: it was not stalled
            self.was_armed = True
            self._restart_clocks(now)
        limit, slowest = self.limit()
        stalled = [r for r, b in self.seen.items() if b["state"] == "armed" and now - self.moved_at[r] > limit]
        if not stalled:
            return None
        not_running = [r for r in stalled if now - self.alive_at[r] > limit]
        if not_running:
            return Verdict(tuple(sorted(not_running)), "not_running", now - max(self.moved_at[r] for r in not_running),
                           limit, slowest)
        least = min(self.seen[r]["progress"] for r in stalled)
        named = tuple(sorted(r for r in stalled if self.seen[r]["progress"] == least))
        return Verdict(named, "no_progress", now - max(self.moved_at[r] for r in named), limit, slowest)

    def store_failed(self, now):
        """The store did not answer at `now`: a Verdict naming rank 0 once that lasts past the limit."""
        self._look(now)
        if self.store_down_since is None:
            self.store_down_since = now
        limit, slowest = self.limit()
        if self._armed() and now - self.store_down_since > limit:
            return Verdict((0,), "store", now - self.store_down_since, limit, slowest)
        return None


def describe(verdict, beats, world, floor_s, factor, address):
    """The verdict as one message (see `RankStalled`)."""
    who = ", ".join(f"rank {r} of {world} (host {beats[r]['host']}, pid {beats[r]['pid']})" if r in beats
                    else f"rank {r} of {world}" for r in verdict.ranks)
    silent = f"{verdict.silent_s:.0f} s"
    if verdict.kind == "not_running":
        what = (f"has not run for {silent}: its process is stopped (SIGSTOP, a suspended job) or its "
                f"machine froze")
    elif verdict.kind == "store":
        what = (f"stopped answering: the process group's store at {address}, which lives in rank 0's "
                f"process (or in torchrun's agent on the first node), has not answered for {silent}")
    elif len(verdict.ranks) == 1:
        what = (f"made no progress for {silent} while its process runs (hung in a read, a device call "
                f"or a collective: its stack shows where)")
    else:
        what = (f"made no progress for {silent} while their processes run, and none has done more than "
                f"the others (their stacks show where each waits)")
    return (f"watchdog: {who} {what}. Limit {verdict.limit_s:.0f} s = max(WATCHDOG.STALL_TIMEOUT_S "
            f"{floor_s:g}, WATCHDOG.STEP_FACTOR {factor:g} x the slowest step {verdict.slowest_s:.1f} s).")


# ------------------------------------------------------------------------------ the hook
class WatchdogHook(HookBase):
    """Counts this rank's progress and runs its watchdog thread from before training to its end."""

    def __init__(self, cfg, ctx):
        self.cfg, self.ctx = cfg, ctx
        self.floor_s, self.factor = float(cfg.WATCHDOG.STALL_TIMEOUT_S), float(cfg.WATCHDOG.STEP_FACTOR)
        self.interval_s = check_interval(self.floor_s)
        self.ticks = self.steps = 0
        self.slowest_s, self.step_started = 0.0, 0.0
        self.state = "setup"  # "armed" after this attempt's first step, "done" after training
        self.board, self.thread, self.stopping = None, None, threading.Event()
        self.answered = False

    def before_train(self):
        if not self.cfg.WATCHDOG.ENABLE:
            return
        self.board = self.make_board()
        if self.board is not None:
            self.thread = threading.Thread(target=self.watch, name="vbench-watchdog", daemon=True)
            self.thread.start()

    def make_board(self):
        if self.ctx.world_size == 1:
            return LocalBoard()
        address = store_address(self.ctx.init_method)
        if address is None:
            get_logger().warning(f"the watchdog needs a tcp:// or env:// rendezvous, not "
                                 f"'{self.ctx.init_method}': it is off for this run.")
            return None
        return StoreBoard(*address, timeout_s=max(1.0, 2 * self.interval_s))

    def before_step(self):
        self.ticks += 1
        self.step_started = time.monotonic()

    def after_step(self):
        self.ticks += 1
        self.steps += 1
        if self.steps > 1:  # the attempt's first step may compile, tune or fill the loader: left out
            self.slowest_s = max(self.slowest_s, time.monotonic() - self.step_started)
        else:
            self.state = "armed"

    def after_train(self):
        self.state = "done"
        if self.thread is not None:
            self.stopping.set()
            self.thread.join(timeout=30)
            try:
                self.board.publish(self.ctx.rank, self.beat(-1))
            except Exception:  # noqa: BLE001 - the store may be gone with the other processes
                pass

    def progress(self):
        t = self.trainer
        return self.ticks + t.train_loader.progress() + t.val_loader.progress()

    def beat(self, number):
        return {"beat": number, "progress": self.progress(), "slowest_s": self.slowest_s,
                "state": self.state, "host": socket.gethostname(), "pid": os.getpid()}

    # -------------------------------------------------------------------- the thread
    def watch(self):
        try:
            self._watch()
        except Exception as error:  # noqa: BLE001 - never silently: the run goes on unwatched
            get_logger().warning(f"the watchdog of rank {self.ctx.rank} stopped ({type(error).__name__}: "
                                 f"{error}); the run goes on without it.")

    def _watch(self):
        world, rank = self.ctx.world_size, self.ctx.rank
        detector = StallDetector(world, self.floor_s, self.factor, max_gap_s=3 * self.interval_s + 2)
        number = 0
        while not self.stopping.wait(self.interval_s):
            number += 1
            try:
                self.board.publish(rank, self.beat(number))
                beats, text = self.board.read(world), self.board.verdict()
            except Exception:  # noqa: BLE001 - the store did not answer in time
                verdict = detector.store_failed(time.monotonic())
                if verdict is not None:
                    self.end_run(verdict, detector.seen)
                continue
            if text is not None:  # another rank found a stall: show where this one is
                self.answer()
                continue
            verdict = detector.observe(time.monotonic(), beats)
            if verdict is not None:
                self.end_run(verdict, beats)

    def answer(self):
        """Once: this rank's stacks to OUTPUT_DIR/watchdog/stacks_rank<r>.txt and stderr; on rank 0
        results.json marked failed."""
        if self.answered:
            return
        self.answered = True
        rank = self.ctx.rank
        folder = os.path.join(self.cfg.OUTPUT_DIR, STACKS_DIR)
        try:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"stacks_rank{rank}.txt"), "w") as f:
                f.write(f"rank {rank} (host {socket.gethostname()}, pid {os.getpid()}) at "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}:\n")
                f.flush()
                faulthandler.dump_traceback(f, all_threads=True)
        except OSError as error:  # e.g. a full disk: the stacks still go to stderr
            sys.stderr.write(f"vbench watchdog: cannot write the stacks into {folder}: {error}\n")
        sys.stderr.write(f"vbench watchdog: Python stacks of rank {rank} (pid {os.getpid()}):\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        if rank == 0 and self.cfg.TRAIN.ENABLE:
            mark_failed(os.path.join(self.cfg.OUTPUT_DIR, RESULTS_FILE))
        try:
            self.board.answer(rank)
        except Exception:  # noqa: BLE001 - the store may not answer (that may be the stall)
            pass

    def end_run(self, verdict, beats):
        """Name the stalled rank(s), gather the stacks, end this process (see the module docstring)."""
        world = self.ctx.world_size
        message = describe(verdict, beats, world, self.floor_s, self.factor, self.board.address)
        try:
            first = self.board.claim(message)
        except Exception:  # noqa: BLE001 - no store: nobody else can claim either
            first = True
        self.answer()
        if not first:
            return
        expected = set(range(world)) - (set(verdict.ranks) if verdict.kind != "no_progress" else set())
        deadline = time.monotonic() + 3 * self.interval_s + 2
        answered = {self.ctx.rank}
        while time.monotonic() < deadline and not expected <= answered:
            time.sleep(self.interval_s / 2)
            try:
                answered |= self.board.answered(world)
            except Exception:  # noqa: BLE001
                break
        folder = os.path.join(os.path.abspath(self.cfg.OUTPUT_DIR), STACKS_DIR)
        if world == 1:
            where = f"Python stacks: {folder}/stacks_rank0.txt (also on stderr)."
        else:
            where = (f"Python stacks of the ranks that answered ({', '.join(map(str, sorted(answered)))}): "
                     f"{folder}/stacks_rank<r>.txt on each rank's node (also on its stderr).")
        error = RankStalled(f"{message} {where}")
        if not note_failure(error):  # no launcher of ours: say it here
            advice = resume_advice(self.cfg, sys.argv, os.getcwd())
            lines = [f"vbench: error: {error}"] + ["  " + line for line in advice]
            sys.stderr.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
