"""Where the watchdog's heartbeats meet (engine/watchdog.py): in memory for one process, in the
process group's store for several (every node reaches it).

A board holds each rank's latest beat, the verdict the first rank to find a stall claims, and which
ranks answered it (wrote their stacks).
"""
import datetime
import json
import os
import queue
import threading
from urllib.parse import urlsplit

import torch.distributed as dist


class LocalBoard:
    """The heartbeats of a one-process run, in memory."""

    address = "this process"

    def __init__(self):
        self.beats, self.text, self.answers = {}, None, set()

    def publish(self, rank, beat):
        self.beats[rank] = dict(beat)

    def read(self, world):
        return dict(self.beats)

    def claim(self, text):
        """Record a verdict; True for the first rank to claim one."""
        first = self.text is None
        self.text = self.text or text
        return first

    def verdict(self):
        return self.text

    def answer(self, rank):
        self.answers.add(rank)

    def answered(self, world):
        return set(self.answers)


def store_address(init_method):
    """(host, port) of the rendezvous store of a tcp:// or env:// init method, else None."""
    if init_method == "env://":
        return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    parts = urlsplit(init_method)
    return (parts.hostname, parts.port) if parts.scheme == "tcp" else None


class BoundedCalls:
    """Runs calls in one helper thread and waits at most `timeout_s` for each. A TCPStore call can
    block for ever when the store's process is stopped (its timeout does not cover `check` or
    `add`); while one is stuck, every later call fails at once (TimeoutError)."""

    def __init__(self, timeout_s):
        self.timeout_s, self.requests, self.pending = timeout_s, queue.Queue(), None
        threading.Thread(target=self._serve, name="vbench-watchdog-store", daemon=True).start()

    def _serve(self):
        while True:
            call, box, done = self.requests.get()
            try:
                box.append((True, call()))
            except Exception as error:  # noqa: BLE001 - handed to the caller
                box.append((False, error))
            done.set()

    def __call__(self, call):
        if self.pending is not None and not self.pending.is_set():
            raise TimeoutError("an earlier call to the store has not returned")
        box, self.pending = [], threading.Event()
        self.requests.put((call, box, self.pending))
        if not self.pending.wait(self.timeout_s):
            raise TimeoutError(f"the store did not answer within {self.timeout_s:g} s")
        ok, value = box[0]
        if not ok:
            raise value
        return value


class StoreBoard(LocalBoard):
    """The heartbeats in the process group's store, through a client of their own whose calls
    give up after `timeout_s` (`BoundedCalls`; the process group's own client waits 30 minutes)."""

    def __init__(self, host, port, timeout_s):
        self.address = f"{host}:{port}"
        self.store = dist.TCPStore(host, port, is_master=False, wait_for_workers=False,
                                   timeout=datetime.timedelta(seconds=timeout_s))
        self.call = BoundedCalls(timeout_s)
        self.prefix = f"vbench_watchdog/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"

    def _key(self, *parts):
        return self.prefix + "/".join(str(part) for part in parts)

    def publish(self, rank, beat):
        self.call(lambda: self.store.set(self._key("beat", rank), json.dumps(beat)))

    def read(self, world):
        return self.call(lambda: self._read(world))

    def _read(self, world):
        keys = [self._key("beat", rank) for rank in range(world)]
        if self.store.check(keys):
            return {rank: json.loads(value) for rank, value in enumerate(self.store.multi_get(keys))}
        return {rank: json.loads(self.store.get(key)) for rank, key in enumerate(keys) if self.store.check([key])}

    def claim(self, text):
        def claim():
            first = self.store.add(self._key("claims"), 1) == 1
            if first:
                self.store.set(self._key("verdict"), text)
            return first
        return self.call(claim)

    def verdict(self):
        key = self._key("verdict")
        return self.call(lambda: self.store.get(key).decode() if self.store.check([key]) else None)

    def answer(self, rank):
        self.call(lambda: self.store.set(self._key("answer", rank), "1"))

    def answered(self, world):
        return self.call(lambda: {rank for rank in range(world) if self.store.check([self._key("answer", rank)])})
