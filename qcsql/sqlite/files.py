"""What qcsql knows of an SQLite file before SQLite opens it: its header, the side files
SQLite keeps beside it, the URI that opens it, how a table's name is quoted.

Kept apart from :mod:`qcsql.sqlite.connection` because none of it needs SQLAlchemy: the
catalogue of an unchanged archive (:mod:`qcsql.archive`) looks at files, their sizes and
its own catalogue file, and opens no database, so it should not pay the 0.2-0.3 s that
importing the database readers costs a fresh process.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from qcsql.errors import DatabaseNotFoundError, DatabaseOpenError, NotQCoDeSError, NotSQLiteError
from qcsql.sqlite.descriptors import KeptFile, kept_file

__all__ = [
    "HEADER_SIZE",
    "SQLITE_MAGIC",
    "FileHeader",
    "quote_identifier",
    "read_header",
    "side_file",
    "sqlite_uri",
]

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
# Byte 18 of the header is the write format version: 1 = rollback journal, 2 = WAL.
WAL_FORMAT = 2


@dataclass(frozen=True)
class FileHeader:
    """What the first 100 bytes of an SQLite file say, read before SQLite opens it, and
    the kept descriptor they were read through (the file SQLite opens a moment later;
    the page readers read the same inode through it, whatever the path names later)."""

    wal_mode: bool
    page_size: int
    reserved_bytes: int
    file: KeptFile
    application_id: int = 0  # PRAGMA application_id: what program the file belongs to
    text_encoding: int = 1  # PRAGMA encoding: 1 UTF-8, 2 UTF-16le, 3 UTF-16be


def read_header(path: Path) -> FileHeader:
    """Check that ``path`` is an SQLite file and read its header, with errors naming the file."""
    if not path.exists():
        raise DatabaseNotFoundError(f"{path}: no such file", path=path)
    if path.is_dir():
        raise DatabaseNotFoundError(
            f"{path}: is a directory, not a QCoDeS database file", path=path
        )
    try:
        kept = kept_file(path)
        header = kept.read(HEADER_SIZE, 0)
    except OSError as exc:
        raise DatabaseOpenError(f"{path}: cannot be read ({exc.strerror})", path=path) from exc
    if not header:
        raise NotQCoDeSError(f"{path}: is empty (0 bytes), not a QCoDeS database", path=path)
    if not header.startswith(SQLITE_MAGIC) or len(header) < HEADER_SIZE:
        raise NotSQLiteError(
            f"{path}: is not an SQLite database (it does not start with the SQLite header)",
            path=path,
        )
    page_size = int.from_bytes(header[16:18], "big")
    return FileHeader(
        wal_mode=header[18] == WAL_FORMAT,
        page_size=65536 if page_size == 1 else page_size,
        reserved_bytes=header[20],
        file=kept,
        application_id=int.from_bytes(header[68:72], "big"),
        text_encoding=int.from_bytes(header[56:60], "big"),
    )


def sqlite_uri(path: Path, **params: str) -> str:
    """A ``file:`` URI that survives ``?``, ``#`` and ``%`` in the path (QCoDeS' does not)."""
    return "file:" + _url_path(str(path)) + "?" + urllib.parse.urlencode(params)


def _url_path(path: str) -> str:
    """``urllib.request.pathname2url``, without importing ``urllib.request`` (it imports
    http.client and email: a fifth of a second catalogue's time in a fresh process). A
    path that starts with ``//`` gets an empty authority, or SQLite would take its first
    folder for a host."""
    if os.name == "nt":
        from nturl2path import pathname2url

        return pathname2url(path)
    quoted = urllib.parse.quote(path)
    return "//" + quoted if quoted.startswith("//") else quoted


def quote_identifier(identifier: str) -> str:
    """An SQL identifier quoted for SQLite, whatever characters QCoDeS let into it."""
    return '"' + identifier.replace('"', '""') + '"'


def side_file(path: Path, suffix: str) -> Path:
    """SQLite's ``-wal``, ``-shm`` or ``-journal`` file beside the database ``path``."""
    return path.with_name(path.name + suffix)
