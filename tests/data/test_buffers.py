"""Reused batch memory: worker slots and merged batches are reused only once nothing holds them."""
import torch

from vbench.data.buffers import BatchBuffers, BufferLedger, ReusedTensors, busy_marks


def test_merged_batches_reuse_memory_only_after_release():
    merges = ReusedTensors(limit=2)
    parts = [torch.full((2, 3), 1.0), torch.full((1, 3), 2.0)]
    first = merges.cat(parts)
    assert torch.equal(first, torch.cat(parts))
    second = merges.cat(parts)  # the first is still held: another block
    assert second.data_ptr() != first.data_ptr()
    third = merges.cat(parts)  # both blocks held and the limit reached: fresh memory
    assert third.data_ptr() not in (first.data_ptr(), second.data_ptr()) and len(merges.storages) == 2
    pointer = first.data_ptr()
    view = first[1:]
    del first
    assert merges.cat(parts).data_ptr() != pointer  # a view still reads it
    del view
    reused = merges.cat([torch.zeros(1, 3)])  # smaller batches fit in a released block
    assert reused.data_ptr() == pointer and reused.shape == (1, 3) and not reused.any()


def test_worker_slots_are_reused_only_when_marked_free():
    busy = busy_marks(num_workers=2, prefetch_factor=0)
    buffers = BatchBuffers(busy, worker=1, batch_size=2)
    sent = [buffers.stack([torch.full((4,), value, dtype=torch.uint8)] * 2) for value in range(busy.shape[1])]
    assert sorted(slot for _, slot in sent) == list(range(busy.shape[1])) and busy[1].all() and not busy[0].any()
    assert buffers.stack([torch.zeros(4, dtype=torch.uint8)])[1] is None  # all busy: fresh memory
    assert [int(batch[0, 0]) for batch, _ in sent] == list(range(busy.shape[1]))  # nothing overwritten
    busy[1, 2] = 0  # the main process let go of slot 2; a partial batch uses its first rows
    batch, slot = buffers.stack([torch.full((4,), 9, dtype=torch.uint8)])
    assert slot == 2 and batch.data_ptr() == sent[2][0].data_ptr() and busy[1, 2] == 1 and len(batch) == 1


def test_ledger_frees_a_slot_once_only_its_own_reference_is_left():
    busy = busy_marks(num_workers=1, prefetch_factor=0)
    busy[0, :2] = 1  # two batches sent by worker 0
    ledger = BufferLedger(busy)
    received = torch.zeros(2, 4, dtype=torch.uint8).share_memory_()  # stands for the mapped slot
    ledger.received(received, 0, 0)
    view = received[1:]
    del received
    ledger.collect()
    assert busy[0, 0] == 1  # a view still reads it
    del view
    ledger.collect()
    assert busy[0, 0] == 0
    ledger.received(torch.zeros(2, 4, dtype=torch.uint8), 0, 1)  # not shared: a pinned copy
    assert busy[0, 1] == 0 and ledger.in_slots == 2 and ledger.fresh == 0
