"""Cold data: the dataset files leave the page cache (posix_fadvise) and mincore measures what is
left; a node's report and results.json's `data_cache` block."""
import os

import pytest

from vbench.bench.results_schema import DATA_CACHE_SPEC, check_spec
from vbench.bench.sysinfo import storage_info
from vbench.data.page_cache import CacheReport, evict, residency
from vbench.engine.cold_data import data_cache_block, describe

MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")  # files live in the page cache: nothing can be evicted


def written_file(folder, size):
    path = folder / "video.mp4"
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    return str(path)


def test_eviction_drops_a_read_files_resident_share(tmp_path):
    filesystem = storage_info(str(tmp_path))["filesystem"]
    if filesystem in MEMORY_FILESYSTEMS:
        pytest.skip(f"{tmp_path} is on {filesystem}, which keeps files only in memory: nothing to evict")
    path = written_file(tmp_path, 4 << 20)
    with open(path, "rb") as f:
        f.read()  # now in the page cache
    before = residency([path])
    assert (before.files, before.bytes, before.measured_bytes) == (1, 4 << 20, 4 << 20)
    assert before.resident_share > 0.9 and not before.problems
    assert evict([path]) == []
    after = residency([path])
    assert after.resident_share < 0.1, f"{filesystem} kept {after.resident} of {after.bytes} bytes"
    with open(path, "rb") as f:
        f.read()
    assert residency([path]).resident_share > 0.9  # reading brings it back: the measure is live


def test_missing_and_empty_files_are_counted_not_fatal(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    missing = str(tmp_path / "gone.mp4")
    failed = evict([missing, str(empty)])
    assert [path for path, _ in failed] == [missing] and "not evicted: No such file" in failed[0][1]
    report = residency([missing, str(empty)])
    assert (report.files, report.bytes, report.resident, report.resident_share) == (1, 0, 0, None)
    assert report.problems == [(missing, "not measured: No such file or directory")]


def test_the_results_block_adds_up_the_nodes_and_names_the_problems():
    node0 = CacheReport(files=3, bytes=300, measured_bytes=300, resident=30, seconds=0.5,
                        problems=[("a.mp4", "not evicted: Permission denied")])
    node1 = CacheReport(files=3, bytes=300, measured_bytes=200, resident=0, seconds=0.75,
                        problems=[("b.mp4", "not measured: not owned")])
    block = data_cache_block(True, [node0, node1])
    problems = []
    check_spec(block, DATA_CACHE_SPEC, "data_cache", problems)
    assert problems == []
    assert block["resident_share"] == pytest.approx(30 / 500)  # of the bytes mincore could measure
    assert (block["nodes"], block["files"], block["bytes"], block["seconds"]) == (2, 3, 300, 0.75)
    assert block["problem_count"] == 2 and block["problems"][0] == "a.mp4: not evicted: Permission denied"
    assert describe(block).startswith("page cache: dataset evicted on 2 node(s) in 0.75 s")
    assert "6.0% resident" in describe(block) and "2 file(s) not evicted or measured" in describe(block)
    unmeasured = data_cache_block(False, [CacheReport(files=1, bytes=10)])
    assert unmeasured["resident_share"] is None and "DATA.DROP_CACHE off" in describe(unmeasured)
    assert "residency not measurable" in describe(unmeasured)
