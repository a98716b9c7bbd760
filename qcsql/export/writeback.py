"""Start writing an export's bytes to the disk while the rest of the file is still made.

An export ends with an ``fsync`` (see :mod:`qcsql.export.writer`): the file must be on
disk before it is renamed into place. Left to itself, the kernel holds everything
written in its page cache until then (or until its dirty-page timer fires, seconds
later), so the whole file goes to the disk inside that final ``fsync``, while nothing
else happens: for a 32 MB file about 20 ms, a tenth of a large array export. Asking the
kernel to start writing back what is already written, batch after batch, lets the disk
work while the next rows are read and decoded, and the final ``fsync`` only waits for
the last few megabytes.

``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`` does exactly that on Linux: it
submits the dirty pages of the file for write-out and returns without waiting for them
(and, unlike ``posix_fadvise(DONTNEED)``, leaves them in the page cache for whoever
reads the file next). It promises nothing about durability, which stays the final
``fsync``'s job; where the call does not exist (other systems), nothing is done and the
final ``fsync`` writes everything, as before.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from qcsql.sqlite.libc import libc_function

__all__ = ["WRITEBACK_BYTES", "Writeback"]

WRITEBACK_BYTES = 4 * 1024 * 1024  # written between two requests: a few per large file
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: initiate write-out of dirty pages, do not wait


# sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags): Linux only
_SYNC_FILE_RANGE = libc_function(
    "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint], ctypes.c_int
)


class Writeback:
    """Counts the bytes written to the file at ``path`` and, every :data:`WRITEBACK_BYTES`,
    asks the kernel to start writing them to the disk. It does so through a read-only
    descriptor of the file of its own (HDF5's is not public), opened at the first request
    (the file exists by then) and closed by :meth:`close`, which the writer calls once
    HDF5 has closed the file: that close cannot touch the lock HDF5 holds while writing."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._asking = _SYNC_FILE_RANGE is not None
        self._pending = 0

    def wrote(self, nbytes: int) -> None:
        """``nbytes`` more were written to the file."""
        if not self._asking:
            return
        self._pending += nbytes
        if self._pending < WRITEBACK_BYTES:
            return
        self._pending = 0
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            self._asking = False  # the final fsync writes it all, as it would anyway
            return
        request = _SYNC_FILE_RANGE
        if request is None or request(self._fd, 0, 0, _SYNC_FILE_RANGE_WRITE) != 0:
            self._asking = False  # a file system that refuses: the final fsync does it all

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
