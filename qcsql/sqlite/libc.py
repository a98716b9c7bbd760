"""The C library functions qcsql calls through ctypes where Python's ``os`` has nothing
that fits: ``preadv`` with thousands of vectors built by numpy (see
:mod:`qcsql.sqlite.scatter_read`) and ``sync_file_range`` (see
:mod:`qcsql.export.writeback`). Each is looked up once; where the platform lacks it
(Windows, 32-bit systems, a libc without the symbol) the lookup gives None and the caller
does without, which only ever costs speed."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

__all__ = ["libc_function"]


def libc_function(name: str, argtypes: list[Any], restype: Any) -> Any | None:
    """libc's ``name`` with its C signature, or None where it cannot be called here. The
    callers pass 64-bit addresses and offsets, so 32-bit systems get None too."""
    if sys.platform == "win32" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes = argtypes
    function.restype = restype
    return function
