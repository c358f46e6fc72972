"""Memory the loader reuses instead of faulting in fresh pages for every piece and batch: the
workers' shared-memory slots for their pieces, and the training process's blocks for the batches it
joins from them (`BlockPool`, pinned when the batches go to a GPU).

A worker used to collate each batch into new shared memory (torch's `default_collate` inside a
worker): a batch of 8 float clips is 77 MB, 19k page faults in the worker (each zero-fills a page)
and new mappings in the main process. Here each worker owns a few shared-memory slots per piece
shape and collates into a free one. A slot's mark in `busy` (a shared uint8 tensor, workers x
slots, made before the workers start) says who has it:

- FREE: the worker may fill it; SENT: filled and sent by the worker; HELD: received by the main
  process (`BufferLedger`), which keeps the slot's storage and marks it FREE once that storage has
  no other user (no piece, view or batch is left: the storage's use count, checked at every new
  piece). Keeping it also keeps the slot mapped in the main process for its next piece.
- A piece the main process never received (an epoch left before its end: torch discards the
  pieces in flight when the next epoch starts) stays SENT; the worker takes such slots back when
  its next epoch starts (`reclaim`), when nothing of its previous epoch is in flight any more.
- A worker that finds no free slot collates into fresh shared memory, as before: a consumer that
  keeps many batches costs page faults, never overwritten clips.
"""
import math

import torch
from torch.utils.data import default_collate

SLOTS_BEYOND_PREFETCH = 3  # pieces waiting in the joiner for their turn, one being copied
FREE, SENT, HELD = 0, 1, 2  # a slot's mark in `busy`


def busy_marks(num_workers, prefetch_factor):
    """The shared slot marks for `num_workers` workers sending up to `prefetch_factor` pieces ahead
    (None without worker processes)."""
    if num_workers <= 0:
        return None
    return torch.zeros((num_workers, prefetch_factor + SLOTS_BEYOND_PREFETCH), dtype=torch.uint8).share_memory_()


def _use_count(storage):
    """References to `storage` (its use count; a private torch function, present since torch 1.x).
    Where a torch lacks it, 2: nothing is ever reused, every batch goes to fresh memory."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return count(storage._cdata) if count is not None else 2


class BatchBuffers:
    """One worker's slots of `batch_size` clips (a piece): `stack(clips)` -> (tensor, slot or None)."""

    def __init__(self, busy, worker, batch_size):
        self.busy, self.worker, self.batch_size = busy, worker, batch_size
        self.slots = [None] * busy.shape[1]

    def reclaim(self, keep=()):
        """At the start of an epoch: take back the slots of pieces that were sent and never
        received (torch dropped them when the previous epoch was left early), but those in `keep`
        (pieces made ahead for this epoch, not yet sent)."""
        for index, mark in enumerate(self.busy[self.worker].tolist()):
            if mark == SENT and index not in keep:
                self.busy[self.worker, index] = FREE

    def _free_slot(self, shape, dtype):
        for index, slot in enumerate(self.slots):
            if self.busy[self.worker, index] == FREE:
                if slot is None or slot.shape[1:] != shape[1:] or slot.dtype != dtype or len(slot) < shape[0]:
                    self.slots[index] = torch.empty(shape, dtype=dtype).share_memory_()
                return index
        return None

    def stack(self, clips):
        first = clips[0]
        if first.device.type != "cpu":  # e.g. clips decoded on a GPU: CUDA IPC, no slots
            return default_collate(clips), None
        index = self._free_slot((max(len(clips), self.batch_size), *first.shape), first.dtype)
        if index is None:
            return default_collate(clips), None
        self.busy[self.worker, index] = SENT
        out = self.slots[index][:len(clips)]
        torch.stack(clips, out=out)
        return out, index


class BufferLedger:
    """The main process's side: marks a received slot HELD, and FREE once nothing uses it."""

    def __init__(self, busy):
        self.busy = busy
        # (worker, slot) -> the slot's storage. Kept after the slot is freed, so that the slot's
        # next piece finds it mapped (torch reuses a live mapping) instead of faulting it in again.
        self.mapped = {}
        self.in_use = set()  # slots received and not yet freed
        self.in_slots = self.fresh = 0  # pieces received in a slot / in fresh memory

    def received(self, clips, worker, slot):
        """Call for every piece from a worker, with the slot it names (None: not a slot)."""
        self.in_slots += slot is not None
        self.fresh += slot is None and clips.numel() > 0
        if slot is not None:
            if clips.is_shared():
                self.busy[worker, slot] = HELD
                self.mapped[(worker, slot)] = clips.untyped_storage()
                self.in_use.add((worker, slot))
            else:  # a copy (e.g. pinned by torch): the slot is no longer read
                self.busy[worker, slot] = FREE
        self.collect()

    def forget(self):
        """After the workers were replaced (`restart.py`): the old processes' slots are gone (their
        memory lives on only in batches still held), and every busy mark is cleared for the new ones."""
        self.mapped.clear()
        self.in_use.clear()
        self.busy.zero_()

    def collect(self):
        for key in list(self.in_use):
            if _use_count(self.mapped[key]) <= 1:  # only our own reference is left
                self.in_use.discard(key)
                self.busy[key] = FREE


class BlockPool:
    """The training process's memory for the batches it joins from pieces, reused: a block is
    handed out again only once nothing references it (its storage's use count) and, when it was
    copied to a GPU (`copied`), once that copy has finished (a CUDA event per block, recorded on
    the stream that queued the copy). With `pin` the blocks are pinned, so that the copy to the
    GPU runs asynchronously. At most `limit` blocks are kept; past that, fresh memory."""

    def __init__(self, pin=False, limit=6, new_event=None):
        self.pin, self.limit = pin, limit
        self.new_event = new_event or torch.cuda.Event
        self.blocks = []  # [storage, event of its last copy to a device or None]

    def empty(self, shape, dtype, device="cpu"):
        """An uninitialised tensor of `shape` in a free block (or fresh memory)."""
        if torch.device(device).type != "cpu":  # pieces decoded on a GPU: joined there
            return torch.empty(shape, dtype=dtype, device=device)
        nbytes = torch.empty(0, dtype=dtype).element_size() * math.prod(shape)
        for block in self.blocks:
            storage, event = block
            if storage.nbytes() >= nbytes and _use_count(storage) <= 1 and (event is None or event.query()):
                block[1] = None
                return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
        if len(self.blocks) >= self.limit:
            return torch.empty(shape, dtype=dtype, pin_memory=self.pin)
        storage = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin).untyped_storage()
        self.blocks.append([storage, None])
        return torch.empty(0, dtype=dtype).set_(storage, 0, shape)

    def copied(self, tensor):
        """Call right after queueing an asynchronous copy of `tensor` (a view of a block) to the
        current CUDA stream: the block is not reused before that copy has finished."""
        if tensor.device.type != "cpu" or not tensor.numel():
            return
        pointer = tensor.untyped_storage().data_ptr()
        for block in self.blocks:
            if block[0].data_ptr() == pointer:
                event = self.new_event()
                event.record()
                block[1] = event
