"""What the engine asks of a loader (`ClipLoader` in loader.py is the one vbench builds).

The trainer, its hooks and the evaluator use a loader only through these members, so a test (or
another data pipeline) may hand the engine any object that has them (tests/conftest.py's
`FakeLoader` is one).
"""
from typing import Iterator, Protocol, runtime_checkable


@runtime_checkable
class BatchLoader(Protocol):
    """Batches of one split for one rank; a batch is a dict with at least "clips" and "labels"
    (evaluation also reads "video_ids" and "valid") and, optionally, "bad_videos" ([(path, reason)]
    found while decoding it)."""

    num_videos: int  # videos of the split (all ranks), the denominator of the bad-video limits
    class_names: list  # label i is class_names[i]
    index_excluded: list  # [(rel_path, reason)] left out before any decoding (missing, unreadable)
    excluded: list  # index_excluded plus the videos that failed to decode so far (this rank)
    restarts: object  # its worker restarts (`.events`, data/restart.py), or None without workers to restart

    def __len__(self) -> int:
        """Batches per epoch on this rank."""

    def __iter__(self) -> Iterator[dict]:
        """The batches of the current epoch, in the plan's order."""

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose plan `__iter__` follows (training shuffles per epoch)."""

    def to_device(self, batch: dict, device) -> tuple:
        """(clips, labels) of `batch` on `device`, transformed and ready for the model."""

    def fingerprint(self) -> dict:
        """The split's fingerprint for results.json (vbench/data/fingerprint.py)."""

    def file_paths(self) -> list:
        """The video files it reads (the page-cache eviction before the clock, engine/cold_data.py)."""

    def loader_clips_per_s(self):
        """Clips per second its workers produced while working this epoch, or None if unknown."""

    def progress(self) -> int:
        """A count that grows while it works (batches yielded, pieces decoded): the watchdog's
        sign of life for a step that waits on data (engine/watchdog.py)."""

    def close(self) -> None:
        """Stop its worker processes (a finished run must exit promptly)."""
