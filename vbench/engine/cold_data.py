"""Cold data before the clock (docs/PROTOCOL.md, "Cold data"): the dataset files leave the page cache.

MLPerf Training clears the cache before each run: a second run must not read the videos from
memory while the first read them from disk. With DATA.DROP_CACHE, the first process of each node
evicts the files of the training and validation splits (vbench/data/page_cache.py); processes of
one node share the page cache, so once per node is enough, and the others wait for it. With or
without eviction, each node then measures how much of the data is still resident, and
results.json records it (`data_cache`).
"""
import time

from vbench.data.page_cache import CacheReport, evict, residency
from vbench.engine import distributed as du
from vbench.engine.log import get_logger
from vbench.engine.train_loop import HookBase

PROBLEMS_KEPT = 10  # files named in results.json when eviction or measurement failed


class ColdDataHook(HookBase):
    """Evicts (DATA.DROP_CACHE) and measures the dataset files in the page cache in before_train.

    Register it after every hook that reads data before the clock (the data check, the warm-up)
    and before the clock starts (ClockHook starts it in before_epoch)."""

    def __init__(self, drop):
        self.drop = bool(drop)

    def before_train(self):
        t = self.trainer
        if t.finished:
            return
        report = None
        if t.ctx.local_rank == 0:
            paths = sorted(set(t.train_loader.file_paths()) | set(t.val_loader.file_paths()))
            start = time.perf_counter()
            failed = evict(paths) if self.drop else []
            report = residency(paths)
            report.problems = failed + report.problems
            report.seconds = time.perf_counter() - start
        reports = [r for r in du.all_gather_objects(report) if r is not None]  # waits for every node
        if t.ctx.is_main:
            block = data_cache_block(self.drop, reports)
            t.storage.put_run(data_cache=block)
            get_logger().info(describe(block))


def data_cache_block(dropped, reports):
    """results.json's `data_cache` from each node's CacheReport (docs/PROTOCOL.md)."""
    measured = sum(r.measured_bytes for r in reports)
    resident = sum(r.resident for r in reports)
    problems = [f"{path}: {reason}" for r in reports for path, reason in r.problems]
    first = reports[0] if reports else CacheReport()
    return {"dropped": dropped, "nodes": len(reports), "files": first.files, "bytes": first.bytes,
            "measured_bytes": measured, "resident_bytes": resident,
            "resident_share": resident / measured if measured else None,
            "seconds": max((r.seconds for r in reports), default=0.0),
            "problem_count": len(problems), "problems": problems[:PROBLEMS_KEPT]}


def describe(block):
    """One log line on the data's state when the clock starts."""
    size = f"{block['files']} files, {block['bytes'] / 2**20:.1f} MiB"
    share = block["resident_share"]
    state = ("residency not measurable" if share is None
             else f"{100 * share:.1f}% resident in the page cache")
    problems = f"; {block['problem_count']} file(s) not evicted or measured" if block["problem_count"] else ""
    if block["dropped"]:
        return (f"page cache: dataset evicted on {block['nodes']} node(s) in {block['seconds']:.2f} s "
                f"({size}); {state} when the clock starts{problems}")
    return f"page cache: DATA.DROP_CACHE off; dataset ({size}) {state} when the clock starts{problems}"
