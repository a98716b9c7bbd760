"""One positional read of consecutive file bytes into many places in memory (``preadv``).

``os.preadv`` takes a list of Python buffer objects; a window of an array run needs
thousands of I/O vectors (one per stretch of each overflow page), and building a
memoryview for each costs more than the copy it saves. The vectors are therefore
built with numpy as ``(address, length)`` rows, exactly ``struct iovec`` on 64-bit
systems, and handed to libc's ``preadv`` through ctypes, which releases the GIL for
the call like any other read.

Every address must lie inside memory the caller keeps alive and owns; the caller
checks that before calling (:func:`qcsql.sqlite.blob_scatter.scatter_windows` does, vector by
vector). Where libc has no ``preadv`` (Windows), :data:`AVAILABLE` is False and the
caller reads through a buffer instead.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import numpy.typing as npt

from qcsql.sqlite.libc import libc_function

__all__ = ["AVAILABLE", "read_scattered"]


# preadv(fd, const struct iovec *iov, int iovcnt, off_t offset)
_PREADV = libc_function(
    "preadv", [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64], ctypes.c_ssize_t
)
AVAILABLE = _PREADV is not None


def _vectors_per_call() -> int:
    try:
        limit = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        limit = -1
    return min(limit, 1024) if limit > 0 else 16


VECTORS_PER_CALL = _vectors_per_call()


def read_scattered(fd: int, vectors: npt.NDArray[np.uint64], offset: int) -> bool:
    """Read ``sum(lengths)`` bytes from ``offset`` of ``fd`` into the ``(address, length)``
    rows of ``vectors``, in order; False if the file ended first or a read failed."""
    assert _PREADV is not None
    vectors = np.ascontiguousarray(vectors, dtype=np.uint64)
    ends = np.cumsum(vectors[:, 1].astype(np.int64))
    done = 0
    for first in range(0, len(vectors), VECTORS_PER_CALL):
        last = min(first + VECTORS_PER_CALL, len(vectors))
        want = int(ends[last - 1]) - done
        got = _PREADV(fd, vectors[first:last].ctypes.data, last - first, offset + done)
        if got != want:
            return False  # a short read: the file shrank under us, or an error
        done += want
    return True
