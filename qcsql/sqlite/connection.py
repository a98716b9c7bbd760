"""Open an SQLite file read-only without changing it or slowing down its writer.

How a file is opened depends on its journal mode and on who else has it open,
because each of SQLite's read-only modes is safe only in some situations:

* rollback-journal file: ``mode=ro``. Nothing is created beside the file; a
  read holds a SHARED lock only while a statement runs.
* WAL file with no ``-wal`` beside it: nobody has it open (a WAL writer keeps
  its ``-wal`` for as long as it is connected), so ``immutable=1`` reads it
  without the ``-wal``/``-shm`` files a plain ``mode=ro`` open would leave
  behind. Before every read we look again; once a ``-wal`` appears (a writer
  started) the connection is reopened with ``mode=ro`` to coordinate with it,
  and once the file itself changed (a writer came, committed and left between
  two reads: its ``-wal`` is gone again) it is reopened to see what it wrote.
* WAL file with ``-wal`` and ``-shm``: a writer may be live; ``mode=ro`` reads
  through SQLite's shared memory and never blocks it.
* WAL file with a ``-wal`` but no ``-shm`` (copied or archived files): no
  writer is live, and ``mode=ro`` would create the ``-shm``. The file and its
  ``-wal`` are copied into a private temporary directory and the copy is read,
  so the data committed in the ``-wal`` are seen and nothing is created beside
  the user's file. This is also the fallback when ``mode=ro`` cannot open a
  WAL file in a read-only directory.

No statement that writes is ever sent: the connection runs with
``PRAGMA query_only`` (connection-local, never stored in the file), no
journal-mode change, no table creation.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from qcsql.errors import (
    DatabaseBusyError,
    DatabaseCorruptError,
    DatabaseOpenError,
    DatabaseReadError,
    NotSQLiteError,
    QcsqlError,
    SchemaError,
    Where,
)
from qcsql.sqlite.descriptors import KeptFile, kept_file
from qcsql.sqlite.files import read_header, side_file, sqlite_uri

__all__ = [
    "Access",
    "ReadOnlyConnection",
    "translate_sqlite_errors",
]

log = logging.getLogger(__name__)

# A reader waits this long for a writer's commit before giving up; it never holds a lock meanwhile.
BUSY_TIMEOUT_S = 5.0


class Access(str, enum.Enum):
    """How the file is being read, reported by ``qcsql info``."""

    READ_ONLY = "read-only"
    IMMUTABLE = "immutable (WAL file, no writer connected)"
    SNAPSHOT_COPY = "private snapshot copy (WAL file with its -wal but no -shm)"


COPY_CHUNK = 1 << 20


def copy_kept(source: Path, target: Path) -> None:
    """Copy ``source`` through its kept descriptor (see :mod:`qcsql.sqlite.descriptors`): a
    plain ``shutil.copyfile`` would close a descriptor of the user's database."""
    kept = kept_file(source)
    try:
        with open(target, "wb") as out:
            offset = 0
            while chunk := kept.read(COPY_CHUNK, offset):
                out.write(chunk)
                offset += len(chunk)
    finally:
        kept.release()


def _private_file(path: Path) -> KeptFile:
    """A descriptor of our own file ``path`` (a snapshot copy), closed on release: no
    other connection of the process can hold locks on it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    info = os.fstat(fd)
    return KeptFile(path, fd, info.st_dev, info.st_ino, private=True)


def _lenient_text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _error_code(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)  # Python >= 3.11
    if isinstance(name, str):
        return name
    text = str(exc).lower()
    for needle, code in (
        ("file is not a database", "SQLITE_NOTADB"),
        ("malformed", "SQLITE_CORRUPT"),
        ("locked", "SQLITE_BUSY"),
        ("unable to open", "SQLITE_CANTOPEN"),
    ):
        if needle in text:
            return code
    return "SQLITE_ERROR"


@contextlib.contextmanager
def translate_sqlite_errors(
    path: Path, *, run_id: int | None = None, table: str | None = None
) -> Iterator[None]:
    """The one place where sqlite3 and SQLAlchemy errors become qcsql errors."""
    try:
        yield
    except QcsqlError:
        raise
    except UnicodeDecodeError as exc:  # an SQLite error message quoting damaged bytes
        raise DatabaseCorruptError(
            f"{path}: SQLite reports the file as damaged (damaged text in its schema or data)",
            path=path,
            run_id=run_id,
            table=table,
        ) from exc
    except (sqlite3.Error, sa.exc.DBAPIError, sa.exc.ResourceClosedError) as exc:
        original = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        where = Where(path, run_id, table)
        message = str(original).splitlines()[0] if str(original) else type(original).__name__
        code = _error_code(original) if isinstance(original, sqlite3.Error) else "SQLITE_ERROR"
        error, text = _classify(code, message)
        raise error(f"{where}: {text}", where=where) from exc


def _classify(code: str, message: str) -> tuple[type[QcsqlError], str]:
    """Which qcsql error an SQLite failure is, and how to say it to a person."""
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return DatabaseBusyError, (
            f"a writer kept the database locked for more than {BUSY_TIMEOUT_S:g} s "
            f"({message}); try again"
        )
    if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return DatabaseCorruptError, f"SQLite reports the file as damaged or truncated ({message})"
    if "no such table" in message or "no such column" in message:
        return SchemaError, message
    return DatabaseReadError, f"SQLite failed to read ({message})"


class ReadOnlyConnection:
    """One read-only SQLite connection to a QCoDeS file, with a SQLAlchemy engine on top.

    Every read goes through :meth:`reading`, which keeps the transaction as
    short as one statement (autocommit; results are fetched at once) and
    notices a writer that appeared since the last read.

    Threads may share it: :meth:`reading` and :meth:`reading_raw` hold one lock for
    as long as their block runs, so that a thread's statements (and the read
    transaction around a page window, see :meth:`qcsql.sqlite.pages.PageSource.window`)
    never interleave with another thread's on the one sqlite3 connection. The blocks
    are short (a statement, or one window of pages), and none yields to the caller.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser().absolute()
        # Reentrant: a page window's transaction runs the window's own statements.
        self._lock = threading.RLock()
        self.header = read_header(self.path)
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._sqlite: sqlite3.Connection | None = None
        self._engine: sa.Engine | None = None
        self._stamp_at_open: tuple[int, int, int] | None = None
        # A private snapshot copy that holds the whole database (see _checkpointed): the
        # page readers read it instead of the file.
        self.snapshot_file: KeptFile | None = None
        self.access = self._choose_access()
        self._open()

    # -- opening -----------------------------------------------------------------------------

    def _choose_access(self) -> Access:
        if not self.header.wal_mode:
            return Access.READ_ONLY
        if not side_file(self.path, "-wal").exists():
            return Access.IMMUTABLE
        if side_file(self.path, "-shm").exists():
            return Access.READ_ONLY
        return Access.SNAPSHOT_COPY

    def _open(self) -> None:
        try:
            self._connect(self.access)
        except DatabaseOpenError:
            if not self.header.wal_mode or self.access is Access.SNAPSHOT_COPY:
                raise
            # A WAL file whose -shm cannot be used from here (read-only media): read a copy.
            log.info("%s: cannot share the WAL index, reading a private snapshot copy", self.path)
            self.access = Access.SNAPSHOT_COPY
            self._connect(self.access)
        if self.access is Access.SNAPSHOT_COPY:
            log.info("%s: reading a private snapshot copy of the file and its -wal", self.path)

    def _connect(self, access: Access) -> None:
        target = self.path
        params = {"mode": "ro"}
        if access is Access.IMMUTABLE:
            params["immutable"] = "1"
            self._stamp_at_open = self._stamp()
        elif access is Access.SNAPSHOT_COPY:
            target = self._snapshot_copy()
            if self._checkpointed(target):
                params["immutable"] = "1"  # our own file, which nobody writes
                if self.snapshot_file is not None:
                    self.snapshot_file.release()
                self.snapshot_file = _private_file(target)
        try:
            raw = sqlite3.connect(
                sqlite_uri(target, **params),
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise DatabaseOpenError(
                f"{self.path}: SQLite cannot open it ({exc})", path=self.path
            ) from exc
        # Damaged text must not stop a read: undecodable bytes become U+FFFD.
        raw.text_factory = _lenient_text
        try:
            raw.execute("PRAGMA query_only = 1")
            # The first real read: SQLite parses the schema here, so a damaged file fails now.
            raw.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except UnicodeDecodeError as exc:  # SQLite's own message quoted damaged bytes
            raw.close()
            raise DatabaseCorruptError(
                f"{self.path}: SQLite reports the file as damaged (its schema is not valid text)",
                path=self.path,
            ) from exc
        except sqlite3.Error as exc:
            raw.close()
            if _error_code(exc) == "SQLITE_NOTADB":
                raise NotSQLiteError(
                    f"{self.path}: is not a readable SQLite database ({exc})", path=self.path
                ) from exc
            if _error_code(exc) == "SQLITE_CANTOPEN":
                raise DatabaseOpenError(
                    f"{self.path}: SQLite cannot open it ({exc})", path=self.path
                ) from exc
            with translate_sqlite_errors(self.path):
                raise
        self._sqlite = raw
        # The SQLAlchemy engine is made on the first SQLAlchemy read (:meth:`reading`): a
        # catalogue of an archive reads most files through :meth:`reading_raw` only, and
        # an engine per file costs more than the file's plain statements.
        self._engine = None

    def _sqlalchemy_engine(self, raw: sqlite3.Connection) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(
                "sqlite://",
                creator=lambda: raw,
                poolclass=StaticPool,
                isolation_level="AUTOCOMMIT",
            )
        return self._engine

    def _snapshot_copy(self) -> Path:
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="qcsql-snapshot-")
        folder = Path(self._tempdir.name)
        copy = folder / self.path.name
        try:
            copy_kept(self.path, copy)
            copy_kept(side_file(self.path, "-wal"), side_file(copy, "-wal"))
        except OSError as exc:
            raise DatabaseOpenError(
                f"{self.path}: cannot copy it and its -wal to read them ({exc})", path=self.path
            ) from exc
        return copy

    def _checkpointed(self, copy: Path) -> bool:
        """Whether the private snapshot ``copy`` could be checkpointed: its ``-wal``'s
        committed pages written into the copy itself (what SQLite would read from the
        ``-wal``), so that the copy alone holds the database and the page readers
        (:mod:`qcsql.sqlite.pages`) can read it as they read any file. Only the copy in
        qcsql's own temporary directory is written; where it fails, SQLite reads the copy
        and its ``-wal`` as before."""
        try:
            with contextlib.closing(
                sqlite3.connect(sqlite_uri(copy), uri=True, isolation_level=None)
            ) as own:
                own.execute("PRAGMA synchronous = OFF")  # a temporary file: no fsync
                busy, frames, done = own.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.info("%s: its snapshot copy cannot be checkpointed (%s)", self.path, exc)
            return False
        wal = side_file(copy, "-wal")
        return busy == 0 and frames == done and (not wal.exists() or wal.stat().st_size == 0)

    def _close_connection(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    def _stamp(self) -> tuple[int, int, int]:
        """What changes with every write that reaches the file (a checkpoint writes it)."""
        stat = os.fstat(self.header.file.fd)  # the kept descriptor: nothing opened or closed
        return stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size

    def _follow_new_writer(self) -> None:
        """An immutable read is only safe while no writer is connected, and sees only the
        file as it was when opened: switch to shared access when a writer comes, and open
        again when one came and went (its commits are in the file now, its ``-wal`` gone)."""
        if self.access is not Access.IMMUTABLE:
            return
        if side_file(self.path, "-wal").exists():
            log.info("%s: a writer connected, switching to shared read-only access", self.path)
            self._close_connection()
            self.access = Access.READ_ONLY
            self._open()
        elif self._stamp() != self._stamp_at_open:
            log.info("%s: changed since it was opened, opening it again", self.path)
            self._close_connection()
            self._open()

    # -- reading -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _held(self, run_id: int | None, table: str | None) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, up to date with any writer, errors translated."""
        with self._lock:
            if self._sqlite is None:
                raise DatabaseOpenError(f"{self.path}: the database is closed", path=self.path)
            self._follow_new_writer()
            assert self._sqlite is not None
            with translate_sqlite_errors(self.path, run_id=run_id, table=table):
                yield self._sqlite

    @contextlib.contextmanager
    def reading(
        self, *, run_id: int | None = None, table: str | None = None
    ) -> Iterator[sa.Connection]:
        """A SQLAlchemy connection for one short read; errors come out as qcsql errors."""
        with self._held(run_id, table) as raw:
            with self._sqlalchemy_engine(raw).connect() as connection:
                yield connection

    @contextlib.contextmanager
    def reading_raw(
        self, *, run_id: int | None = None, table: str | None = None
    ) -> Iterator[sqlite3.Connection]:
        """The plain sqlite3 connection, for the hot paths where SQLAlchemy's row objects
        cost too much."""
        with self._held(run_id, table) as raw:
            yield raw

    def close(self) -> None:
        with self._lock:
            self._close_connection()
            self.header.file.release()
            if self.snapshot_file is not None:
                self.snapshot_file.release()  # our copy's own descriptor: closed
                self.snapshot_file = None
            if self._tempdir is not None:
                self._tempdir.cleanup()
                self._tempdir = None

    @property
    def closed(self) -> bool:
        return self._sqlite is None
