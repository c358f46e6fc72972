"""Batch memory the loader reuses instead of faulting in fresh pages for every batch: the workers'
shared-memory slots, and the main process's blocks for merged batches (`ReusedTensors`).

A worker used to collate each batch into new shared memory (torch's `default_collate` inside a
worker): a batch of 8 float clips is 77 MB, 19k page faults in the worker (each zero-fills a page)
and new mappings in the main process. Here each worker owns a few shared-memory slots per batch
shape and collates into a free one. A slot is free again only when the main process has let go of
every tensor that views it:

- `busy` is a shared uint8 tensor (workers x slots) made before the workers start. A worker marks a
  slot busy when it fills it; only the main process clears the mark.
- The main process (`BufferLedger`) keeps the storage of every slot it received and clears the
  mark once that storage has no other user: no batch, view, Rebatcher remnant or trainer
  reference is left (the storage's use count, checked at every new batch). Keeping it also keeps
  the slot mapped in the main process for its next batch. A batch the pin-memory thread copied
  into pinned memory frees its slot as soon as it arrives.
- A worker that finds no free slot collates into fresh shared memory, as before: a consumer that
  keeps many batches (`list(loader)`) costs page faults, never overwritten clips.
"""
import math

import torch
from torch.utils.data import default_collate

SLOTS_BEYOND_PREFETCH = 3  # the batch being consumed, the loader's held batch, one in the Rebatcher


def busy_marks(num_workers, prefetch_factor):
    """The shared slot marks for `num_workers` workers (None without worker processes)."""
    if num_workers <= 0:
        return None
    return torch.zeros((num_workers, prefetch_factor + SLOTS_BEYOND_PREFETCH), dtype=torch.uint8).share_memory_()


def _use_count(storage):
    """References to `storage` (its use count; a private torch function, present since torch 1.x).
    Where a torch lacks it, 2: nothing is ever reused, every batch goes to fresh memory."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return count(storage._cdata) if count is not None else 2


class BatchBuffers:
    """One worker's slots of `batch_size` clips: `stack(clips)` -> (batch tensor, slot index or None)."""

    def __init__(self, busy, worker, batch_size):
        self.busy, self.worker, self.batch_size = busy, worker, batch_size
        self.slots = [None] * busy.shape[1]

    def _free_slot(self, shape, dtype):
        for index, slot in enumerate(self.slots):
            if not self.busy[self.worker, index]:
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
        self.busy[self.worker, index] = 1
        out = self.slots[index][:len(clips)]
        torch.stack(clips, out=out)
        return out, index


class BufferLedger:
    """The main process's side: clears a slot's busy mark once nothing uses the slot."""

    def __init__(self, busy):
        self.busy = busy
        # (worker, slot) -> the slot's storage. Kept after the slot is freed, so that the slot's
        # next batch finds it mapped (torch reuses a live mapping) instead of faulting it in again.
        self.mapped = {}
        self.in_use = set()  # slots received and not yet freed (a busy mark may already be a new batch's)
        self.in_slots = self.fresh = 0  # batches received in a slot / in fresh memory

    def received(self, clips, worker, slot):
        """Call for every batch from a worker, with the slot it names (None: not a slot)."""
        self.in_slots += slot is not None
        self.fresh += slot is None and clips.numel() > 0
        if slot is not None:
            if clips.is_shared():
                self.mapped[(worker, slot)] = clips.untyped_storage()
                self.in_use.add((worker, slot))
            else:  # the pin-memory thread copied it: the slot is no longer read
                self.busy[worker, slot] = 0
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
                self.busy[key] = 0


class ReusedTensors:
    """Main-process memory for the batches the Rebatcher merges from workers' partial batches,
    reused once nothing else holds it (a fresh 77 MB merge faults 19k pages in; there are a few
    per epoch and rank, at its end). At most `limit` blocks are kept; past that, fresh memory."""

    def __init__(self, limit=4):
        self.limit, self.storages = limit, []

    def cat(self, tensors):
        first = tensors[0]
        shape = (sum(len(t) for t in tensors), *first.shape[1:])
        if first.device.type != "cpu" or not shape[0]:
            return torch.cat(tensors)
        nbytes = first.element_size() * math.prod(shape)
        storage = next((s for s in self.storages if s.nbytes() >= nbytes and _use_count(s) <= 1), None)
        if storage is None:
            if len(self.storages) >= self.limit:
                return torch.cat(tensors)
            storage = torch.UntypedStorage(nbytes)
            self.storages.append(storage)
        return torch.cat(tensors, out=torch.empty(0, dtype=first.dtype).set_(storage, 0, shape))
