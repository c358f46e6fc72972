"""Reused batch memory: worker slots and joined batches are reused only once nothing holds them."""
import torch

from vbench.data.buffers import FREE, HELD, SENT, BatchBuffers, BlockPool, BufferLedger, busy_marks


class PendingCopy:
    """Stands for the CUDA event of a copy still running (this machine has no GPU)."""

    def __init__(self):
        self.done = False

    def record(self):
        pass

    def query(self):
        return self.done


def test_joined_batches_reuse_a_block_only_after_release_and_its_copy():
    events = []
    blocks = BlockPool(limit=2, new_event=lambda: events.append(PendingCopy()) or events[-1])
    first = blocks.empty((2, 3), torch.float32)
    second = blocks.empty((2, 3), torch.float32)  # the first is still held: another block
    assert second.data_ptr() != first.data_ptr()
    third = blocks.empty((2, 3), torch.float32)  # both blocks held and the limit reached: fresh memory
    assert third.data_ptr() not in (first.data_ptr(), second.data_ptr()) and len(blocks.blocks) == 2
    pointer = first.data_ptr()
    view = first[1:]
    blocks.copied(view)  # an asynchronous copy of it to a device was queued
    del first, view
    assert blocks.empty((2, 3), torch.float32).data_ptr() != pointer  # its copy is still running
    events[0].done = True
    reused = blocks.empty((1, 3), torch.float32)  # smaller batches fit in a released block
    assert reused.data_ptr() == pointer and reused.shape == (1, 3)
    assert blocks.empty((1, 3), torch.int64).data_ptr() != pointer  # reused is held


def test_worker_slots_are_reused_only_when_marked_free():
    busy = busy_marks(num_workers=2, prefetch_factor=0)
    buffers = BatchBuffers(busy, worker=1, batch_size=2)
    sent = [buffers.stack([torch.full((4,), value, dtype=torch.uint8)] * 2) for value in range(busy.shape[1])]
    assert sorted(slot for _, slot in sent) == list(range(busy.shape[1])) and busy[1].all() and not busy[0].any()
    assert buffers.stack([torch.zeros(4, dtype=torch.uint8)])[1] is None  # all busy: fresh memory
    assert [int(batch[0, 0]) for batch, _ in sent] == list(range(busy.shape[1]))  # nothing overwritten
    busy[1, 2] = FREE  # the main process let go of slot 2; a partial batch uses its first rows
    batch, slot = buffers.stack([torch.full((4,), 9, dtype=torch.uint8)])
    assert slot == 2 and batch.data_ptr() == sent[2][0].data_ptr() and busy[1, 2] == SENT and len(batch) == 1
    busy[1, 0] = HELD  # received by the main process; the others were dropped unreceived
    buffers.reclaim()
    assert busy[1, 0] == HELD and int((busy[1] == FREE).sum()) == busy.shape[1] - 1


def test_ledger_frees_a_slot_once_only_its_own_reference_is_left():
    busy = busy_marks(num_workers=1, prefetch_factor=0)
    busy[0, :2] = SENT  # two pieces sent by worker 0
    ledger = BufferLedger(busy)
    received = torch.zeros(2, 4, dtype=torch.uint8).share_memory_()  # stands for the mapped slot
    ledger.received(received, 0, 0)
    assert busy[0, 0] == HELD
    view = received[1:]
    del received
    ledger.collect()
    assert busy[0, 0] == HELD  # a view still reads it
    del view
    ledger.collect()
    assert busy[0, 0] == FREE
    ledger.received(torch.zeros(2, 4, dtype=torch.uint8), 0, 1)  # not shared: a pinned copy
    assert busy[0, 1] == FREE and ledger.in_slots == 2 and ledger.fresh == 0
