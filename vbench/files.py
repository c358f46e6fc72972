"""Writing run files: whole or not at all, and a clear error when the disk is full.

    with atomic_open(path, what_to_do) as f:     # a binary file object
        torch.save(state, f)                       # `path` is replaced only when this succeeds
    atomic_write_bytes(path, data, what_to_do)     # the same for bytes (results.json, heartbeat)
    append_line(path, line, what_to_do)           # a log line, appended whole or not at all

A write that fails leaves the previous `path` exactly as it was and removes its temporary file
(appends are cut back to the old length). When it fails because the file system is full (ENOSPC)
or the quota is used up (EDQUOT), the error is a `DiskFullError` naming the file, the space left
on its file system and `what_to_do`; any other OSError is raised as it is.
Used by every layer (bench, engine), so it imports nothing of vbench but its errors.
"""
import errno
import os
import shutil
import tempfile
from contextlib import contextmanager

from vbench.errors import DiskFullError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error):
    return isinstance(error, OSError) and error.errno in FULL_ERRNOS


def _size(num_bytes):
    for unit, scale in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} bytes"


def free_space(path):
    """'1.2 GiB free of 50.0 GiB' for the file system holding `path` (or its nearest existing parent)."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        usage = shutil.disk_usage(folder)
    except OSError as error:
        return f"free space unknown ({error.strerror or error})"
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def disk_full_error(path, error, what_to_do=""):
    """The DiskFullError for a write of `path` that failed with the OSError `error`."""
    reason = "the file system is full" if error.errno == errno.ENOSPC else "the disk quota is used up"
    folder = os.path.dirname(os.path.abspath(path))
    message = (f"cannot write '{path}': {reason} ({free_space(folder)} on the file system holding "
               f"'{folder}'); the file is as it was before this write.")
    return DiskFullError(f"{message} {what_to_do}".strip())


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def fsync_folder(folder):
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd, data):
    """os.write until every byte of `data` is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextmanager
def atomic_open(path, what_to_do="", check=None):
    """A binary file object whose content replaces `path` when the block ends without error.

    The content goes to a temporary file beside `path`, is fsynced and renamed over `path`; on
    any error the temporary file is removed and `path` is untouched (see the module docstring).
    `check(temporary_path, path)`, if given, may refuse the written file (by raising) before the
    rename.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; run files are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp, path)
        os.replace(tmp, path)
        tmp = None
        fsync_folder(folder)
    except BaseException as error:
        if tmp is not None:
            _remove(tmp)
        if is_disk_full(error):
            raise disk_full_error(path, error, what_to_do) from error
        raise


def atomic_write_bytes(path, data, what_to_do=""):
    """Replace `path` with `data` (bytes), whole or not at all."""
    with atomic_open(path, what_to_do) as f:
        write_all(f.fileno(), data)


def append_line(path, line, what_to_do=""):
    """Append `line` and a newline to `path`; on failure the file is cut back to its old length."""
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, data)
        except OSError as error:
            os.ftruncate(fd, size)
            if is_disk_full(error):
                raise disk_full_error(path, error, what_to_do) from error
            raise
    finally:
        os.close(fd)
