"""A loader worker's next epoch started early: its first pieces are made while the training loop
still runs the current epoch's last steps, or the evaluation runs, so the next epoch's first batches
find them ready instead of waiting for every worker to decode from nothing.

A worker that has sent its last piece of an epoch has nothing to do until the next epoch starts.
`EpochAhead` runs the next epoch's piece generator in a background thread of the worker process for
up to `count` pieces. It is the generator the epoch itself runs (same plan, shuffle and random
draws), so the pieces are those the epoch would have made; when that epoch starts in the worker,
it takes the ready pieces (waiting for the thread to end its current piece) and continues the
generator itself. If another epoch starts instead (an epoch run again, e.g. for precise BN
statistics), the pieces are dropped and their slots freed. Only one thread uses the generator, its
decoder and its slots at a time.
"""
import threading

from .buffers import FREE


class EpochAhead:
    """Up to `count` pieces of `epoch` from `pieces` (a generator), made in a daemon thread."""

    def __init__(self, epoch, pieces, count):
        self.epoch, self.pieces = epoch, pieces
        self.ready, self.error = [], None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(count,), daemon=True,
                                       name=f"vbench-epoch-{epoch}-ahead")
        self.thread.start()

    def _run(self, count):
        try:
            while len(self.ready) < count and not self.stop.is_set():
                piece = next(self.pieces, None)
                if piece is None:
                    return
                self.ready.append(piece)
        except BaseException as error:  # noqa: BLE001 -- raised again in the epoch that takes the pieces
            self.error = error

    def take(self):
        """(the pieces made, the generator to continue) once the thread has stopped."""
        self.stop.set()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.ready, self.pieces

    def drop(self, busy=None):
        """Stop, and free the slots of the pieces made (never sent); `busy`: the slot marks."""
        self.stop.set()
        self.thread.join()
        for piece in self.ready:
            worker, slot = piece["buffer"]
            if busy is not None and slot is not None:
                busy[worker, slot] = FREE
        self.ready = []
        self.pieces.close()
