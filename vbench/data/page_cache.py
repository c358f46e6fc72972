"""The dataset files and the page cache: evict them before the clock starts, and measure how much
of them is still in memory (docs/PROTOCOL.md, "Cold data").

`evict(paths)` asks the kernel to drop each file's cached pages: `fdatasync` (pages written
moments ago, e.g. by the synthetic generator, must be clean to go) and then
`posix_fadvise(POSIX_FADV_DONTNEED)`. No root is needed. Pages that a process has mapped or locked
stay, and tmpfs or ramfs hold files only in memory, so nothing leaves there.

`residency(paths)` counts the file pages in memory with mincore(2) on a read-only mapping (through
ctypes; Linux only). Since Linux 5.0 mincore reports the page cache only for files the caller owns
or may write (others would read as not resident): such files are counted as not measurable
instead of as cold.
"""
import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass, field

_PROT_READ, _MAP_SHARED = 1, 1


def _libc():
    """libc with mmap, munmap and mincore typed for ctypes, or None where they are not usable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    return libc


_LIBC = _libc()
_MAP_FAILED = ctypes.c_void_p(-1).value
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def evict_file(path):
    """Drop `path`'s pages from the page cache (raises OSError when the file cannot be opened)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def can_measure(path):
    """(True, "") when mincore reports `path`'s page cache, else (False, why)."""
    if _LIBC is None:
        return False, "mincore is not available on this system (Linux only)"
    if os.stat(path).st_uid != os.geteuid() and not os.access(path, os.W_OK):
        return False, "not owned by this user nor writable: mincore would not report its page cache"
    return True, ""


def resident_bytes(path):
    """Bytes of `path` in the page cache (whole pages, capped at the file size), by mincore."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _LIBC.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if address in (None, _MAP_FAILED):
            error = ctypes.get_errno()
            raise OSError(error, f"mmap failed: {os.strerror(error)}", path)
        try:
            pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
            vector = (ctypes.c_ubyte * pages)()
            if _LIBC.mincore(address, size, vector) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"mincore failed: {os.strerror(error)}", path)
            resident = sum(byte & 1 for byte in vector)
        finally:
            _LIBC.munmap(address, size)
    finally:
        os.close(fd)
    return min(size, resident * PAGE_SIZE)


@dataclass
class CacheReport:
    """One node's dataset files in the page cache: what `evict` dropped and `residency` found.

    files, bytes: the dataset files and their size; measured_bytes, resident: of those bytes, the
    ones mincore could measure, and the resident ones; problems: [(path, reason)] of files that
    could not be evicted or measured (counted, never fatal); seconds: the time it took."""

    files: int = 0
    bytes: int = 0
    measured_bytes: int = 0
    resident: int = 0
    problems: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def resident_share(self):
        """Resident share of the measured bytes, or None when nothing could be measured."""
        return self.resident / self.measured_bytes if self.measured_bytes else None


def evict(paths):
    """Drop every file of `paths` from the page cache; [(path, reason)] of those that failed."""
    if not hasattr(os, "posix_fadvise"):  # not on macOS or Windows
        return [(path, "not evicted: posix_fadvise is not available on this system") for path in paths]
    failed = []
    for path in paths:
        try:
            evict_file(path)
        except OSError as error:
            failed.append((path, f"not evicted: {error.strerror or error}"))
    return failed


def residency(paths):
    """A CacheReport of how much of `paths` is in the page cache now."""
    report = CacheReport()
    for path in paths:
        try:
            size = os.path.getsize(path)
            report.files += 1
            report.bytes += size
            ok, why = can_measure(path)
            if not ok:
                report.problems.append((path, f"not measured: {why}"))
                continue
            report.resident += resident_bytes(path)
            report.measured_bytes += size
        except OSError as error:
            report.problems.append((path, f"not measured: {error.strerror or error}"))
    return report
