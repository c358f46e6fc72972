"""The errors a user can cause. Each message says what was wrong, where (file, line, key, path)
and what to do; the launcher prints such an error without a traceback (engine/failures.py).

Everything here derives from `VbenchError`. An exception of any other class is a bug in vbench
(or in a library it uses) and is reported with its traceback.
"""


class VbenchError(Exception):
    """Base class of every error a user can cause."""


class ConfigError(VbenchError, ValueError):
    """A config problem: an unknown key, a bad value, an impossible setting, a missing path."""


class DatasetError(ConfigError):
    """A dataset problem: a missing split, a malformed annotation line, an empty folder."""


class TooManyBadVideos(DatasetError):
    """More videos were missing or unreadable than DATA.MAX_BAD_FRACTION (training) or
    DATA.MAX_VAL_EXCLUDED_FRACTION (validation) allows."""


class WeightsError(ConfigError):
    """MODEL.WEIGHTS cannot be loaded: missing, unreadable, or not matching the model."""


class CheckpointError(VbenchError):
    """A checkpoint file is missing, damaged, unsafe to load or not a vbench checkpoint."""


class UnsafeFileError(VbenchError):
    """A checkpoint or weights file holds pickled Python objects other than tensors, numbers,
    strings, lists and dicts. vbench never rebuilds them (unpickling them can run any code) and
    did not load the file; `vbench checkpoint convert --trust FILE` rewrites a file one trusts."""


class TrainingDiverged(VbenchError):
    """The loss became NaN or infinite."""


class ResultsError(VbenchError, ValueError):
    """A results file is missing, not JSON, or does not follow the schema."""


class ScoreError(VbenchError, ValueError):
    """A problem with the score's inputs: a run folder, a reference table, a mismatch between them."""


class DiskFullError(VbenchError):
    """A run file (checkpoint, results.json, a log) could not be written: the file system holding it
    is full or the user's quota is used up. The message names the file, the free space and what to
    do; the file's previous version is left as it was (vbench/files.py)."""


class ExportError(VbenchError):
    """A run cannot be exported (`vbench export`): a missing optional package, an unwritable file."""


class VideoDecodeError(VbenchError):
    """A video could not be decoded; `path` names the file and `reason` says why. Training counts
    such videos against DATA.MAX_BAD_FRACTION instead of stopping (data/dataset.py)."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"cannot decode video '{self.path}': {self.reason}")

    def __reduce__(self):  # keep (path, reason) when sent back from a loader worker process
        return type(self), (self.path, self.reason)


class RunInterrupted(VbenchError):
    """A fault ended a run that can resume from its newest checkpoint: the message says what
    happened, and the launcher (or `vbench train`) adds the command that resumes."""


class LoaderWorkersDied(RunInterrupted):
    """Loader worker processes died more often than DATA_LOADER.MAX_WORKER_RESTARTS allows."""


class RankStalled(RunInterrupted):
    """The watchdog found a process that stopped making progress (engine/watchdog.py)."""
