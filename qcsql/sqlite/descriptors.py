"""Read database files outside SQLite without ever cancelling SQLite's locks.

POSIX advisory locks (``fcntl``) belong to a process and an inode, not to a file
descriptor: closing *any* descriptor of a file releases *every* lock the process
holds on that file ("How To Corrupt An SQLite Database File", section 2.2). SQLite's
unix VFS protects its own connections from this (a connection that closes while
another connection of the process holds a lock on the same inode parks its
descriptor until the last lock is gone: ``unixInodeInfo`` in ``os_unix.c``), but it
cannot know about descriptors the application opens itself. A reader that opens the
file, reads its header or some pages and closes it again silently drops the locks of
the QCoDeS connection that measures in the same Jupyter kernel: a second writer then
gets past them, or, in WAL mode, another process believes it closes the last
connection and deletes the ``-wal`` and ``-shm`` under the live writer.

So every byte qcsql reads from a database file (or its ``-wal``, ``-journal``, or a
raw-data side file) outside SQLite goes through :func:`kept_file`: one read-only
descriptor per file (device and inode), opened on first use and kept for the life of
the process, as SQLite keeps its parked ones. Reads are positional (``pread``), so
threads share a descriptor without sharing a file offset.

* A file replaced at the same path (a new inode) gets a descriptor of its own; the
  old one is kept, since SQLite connections of the process may still hold locks on
  the old inode.
* A deleted (or replaced) file's descriptor is closed once no other descriptor of the
  process refers to its inode (Linux, through ``/proc/self/fd``; looked at when new
  files are opened, after every :data:`LOOK_EVERY`-th part of the files kept): with no
  descriptor left, the process cannot hold a lock on it, and nobody can open it again
  by its name. Elsewhere such descriptors are kept, one per file that was deleted or
  replaced while the process read it. Looking at every kept descriptor whenever a new
  file is opened made a catalogue of n files look n²/2 times; a closing that comes a
  few files later is as safe (a descriptor kept longer never drops a lock).
* After ``fork`` the child keeps the inherited descriptors (closing them would drop
  locks its own connections may take) and gets a fresh registry lock.
* Windows has no POSIX locks (its byte-range locks belong to a handle), and a kept
  handle would stop others from deleting or renaming the file, so there every
  :func:`kept_file` is a private handle that :meth:`KeptFile.release` closes.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KeptFile", "kept_file"]

_POSIX = sys.platform != "win32"
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
    # A FIFO or device named like a database must not block the open; regular files
    # ignore the flag.
    | getattr(os, "O_NONBLOCK", 0)
)


@dataclass(frozen=True)
class KeptFile:
    """A read-only descriptor of one file; on POSIX shared and never closed."""

    path: Path
    fd: int
    device: int
    inode: int
    private: bool = field(default=False)

    def read_into(self, buffer: memoryview, offset: int) -> int:
        """Fill ``buffer`` from ``offset``; returns how many bytes the file had there."""
        if hasattr(os, "preadv"):
            return os.preadv(self.fd, [buffer], offset)
        done = 0
        while done < len(buffer):
            chunk = self._pread(len(buffer) - done, offset + done)
            if not chunk:
                break
            buffer[done : done + len(chunk)] = chunk
            done += len(chunk)
        return done

    def read(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer only where the file ends), in one
        new ``bytes`` (no zeroed buffer filled and copied)."""
        chunks = []
        while size > 0:
            chunk = self._pread(size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def release(self) -> None:
        """Done with it: closes a private (Windows) handle, keeps a shared one open."""
        if self.private:
            os.close(self.fd)

    def _pread(self, size: int, offset: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self.fd, size, offset)
        os.lseek(self.fd, offset, os.SEEK_SET)  # pragma: no cover - Windows: a private handle
        return os.read(self.fd, size)  # pragma: no cover


# New files opened between two looks for deleted ones: one per this part of those kept.
LOOK_EVERY = 8


class _Registry:
    """The process's kept descriptors, by (device, inode)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_inode: dict[tuple[int, int], KeptFile] = {}
        self.spare: list[int] = []  # second descriptors of a kept inode: open for good
        self.opened_since_look = 0

    def get(self, path: Path) -> KeptFile:
        info = os.stat(path)
        _check_regular(path, info.st_mode)
        key = (info.st_dev, info.st_ino)
        with self.lock:
            kept = self.by_inode.get(key)
            if kept is not None:
                return kept
            fd = os.open(path, _OPEN_FLAGS)
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):  # replaced by a folder or a device meanwhile
                os.close(fd)  # not a file SQLite can hold locks on
                _check_regular(path, opened.st_mode)
            # The path may name another file now than a moment ago: key by what was opened.
            # A second descriptor of an inode already kept must not be closed either, so
            # it simply takes the first one's place and both stay open.
            opened_key = (opened.st_dev, opened.st_ino)
            kept = self.by_inode.get(opened_key)
            if kept is None:
                kept = self.by_inode[opened_key] = KeptFile(path, fd, *opened_key)
            else:
                self.spare.append(fd)
            self.opened_since_look += 1
            if self.opened_since_look * LOOK_EVERY >= len(self.by_inode):
                self.opened_since_look = 0
                self._forget_deleted()
            return kept

    def _forget_deleted(self) -> None:
        """Close the descriptors of deleted files that nothing else in the process has open."""
        gone = [kept for kept in self.by_inode.values() if _deleted(kept.fd)]
        if not gone:
            return
        others = _other_open_inodes({kept.fd for kept in self.by_inode.values()} | set(self.spare))
        if others is None:
            return  # no way to tell here: keep them
        for kept in gone:
            if (kept.device, kept.inode) not in others:
                del self.by_inode[(kept.device, kept.inode)]
                os.close(kept.fd)

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()


def _check_regular(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        raise OSError(22, "Not a regular file", str(path))


def _deleted(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return False


def _other_open_inodes(ours: set[int]) -> set[tuple[int, int]] | None:
    """The (device, inode) of every descriptor of the process but ``ours``; None where the
    system does not list them (only Linux's /proc is used)."""
    folder = "/proc/self/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    found: set[tuple[int, int]] = set()
    for name in names:
        if not name.isdigit() or int(name) in ours:
            continue
        try:
            info = os.stat(f"{folder}/{name}")
        except OSError:
            continue  # closed meanwhile, or the listing's own descriptor
        found.add((info.st_dev, info.st_ino))
    return found


_REGISTRY = _Registry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_REGISTRY.after_fork_in_child)


def kept_file(path: Path) -> KeptFile:
    """The read-only descriptor of ``path`` that qcsql reads it through.

    Raises ``OSError`` (``FileNotFoundError``, ``PermissionError``,
    ``IsADirectoryError``, or errno ``EINVAL`` for what is not a regular file). Call
    :meth:`KeptFile.release` when done; on POSIX that keeps the descriptor open.
    """
    if _POSIX:
        return _REGISTRY.get(path)
    info = os.stat(path)  # pragma: no cover - Windows
    _check_regular(path, info.st_mode)  # pragma: no cover
    fd = os.open(path, _OPEN_FLAGS)  # pragma: no cover
    opened = os.fstat(fd)  # pragma: no cover
    return KeptFile(path, fd, opened.st_dev, opened.st_ino, private=True)  # pragma: no cover
