"""A checksum of a run's data, to tell whether two copies of a run hold the same data.

Copies of a run made by ``extract_runs_into_db`` have the same guid but a new run_id,
results table name and file; what must agree is the data, not the bytes of the files.

What "the same data" means for two runs whose results tables are in their files: the
tables have the same column names (but ``id``) and the same number of rows, and row by
row, in id order, each column holds the same value, where

* numbers are compared as QCoDeS reads them, rounded to 15 significant digits
  (:func:`qcsql.export.keys.as_qcodes_sees`): QCoDeS reads numbers through SQLite's
  text, so ``extract_runs_into_db`` writes the copy's values rounded that way, and a
  copy that differs from its source only beyond the 15th digit holds the same data for
  QCoDeS; an integer is the float it equals, and NULL is NaN (SQLite stores no NaN);
* text and blobs (array parameters) are compared byte for byte, and are never equal
  to a number, not even to the one a text spells;
* neither the order of the columns in the table nor the id values count (a copy that
  renumbers its rows in the same order holds the same data); the order of the rows does.

Each column is hashed on its own, under its name, in windows of :data:`WINDOW` rows: a
table of numbers alone from its pages where it is large (:func:`_read_pages`, no Python
object a value), any other through SQLite in windows of ids, so that no read holds the
file for long; both give the same digests (tests compare them). A catalogue hashes every
copy in an archive, and this costs one statement a window where QCoDeS'
``get_parameter_data`` costs several a parameter. Any other run (data in a raw-data
file or an export) is hashed from ``get_parameter_data``; the two kinds of checksum are
never equal (their first bytes differ), so a copy whose data moved elsewhere is reported
as not known to be equal.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from qcsql.archive.entries import Stamp, file_stamp
from qcsql.database import Database, Run
from qcsql.errors import QcsqlError
from qcsql.export.keys import as_qcodes_sees
from qcsql.sqlite.connection import ReadOnlyConnection
from qcsql.sqlite.files import quote_identifier
from qcsql.sqlite.pages import PageSource, Unsupported, read_numeric_window, table_leaves_digests

__all__ = [
    "ByContent",
    "data_checksum",
    "run_checksum",
    "run_checksums",
    "table_checksum",
    "table_checksums",
]

# Rows per read: one short statement each (the file may have a writer).
WINDOW = 20_000


def run_checksum(db: Database, run: Run) -> str:
    """The checksum of ``run`` of ``db``: of its results table where the file holds it."""
    if db.data.where(run.row).kind == "table":
        return table_checksum(db, run)
    return data_checksum(run)


def run_checksums(db: Database, runs: Sequence[Run]) -> dict[int, str | QcsqlError]:
    """:func:`run_checksum` of each of ``runs`` (the same strings), or the error that
    stopped it: a run that cannot be read does not hide the others (see
    :func:`table_checksums`)."""
    in_tables = [run for run in runs if db.data.where(run.row).kind == "table"]
    results = table_checksums(
        db.store.connection, [(run.run_id, str(run.table_name)) for run in in_tables]
    )
    for run in runs:
        if run.run_id not in results:
            try:
                results[run.run_id] = data_checksum(run)
            except QcsqlError as exc:
                results[run.run_id] = exc
    return {run.run_id: results[run.run_id] for run in runs}


def table_checksums(
    connection: ReadOnlyConnection,
    tables: Sequence[tuple[int, str]],
    rows: Mapping[int, int | None] | None = None,
    known: ByContent | None = None,
) -> dict[int, str | QcsqlError]:
    """The checksums of the results tables ``(run_id, table)`` of the file ``connection``
    reads, by run_id, or the error that stopped one. The numbers of all the tables are
    rounded together (:class:`_Deferred`): an archive's files hold many small runs, and
    rounding costs about the same for one window as for thousands of values. Needs
    nothing of the file but the tables: a catalogue knows them, and reading the file's
    schema and runs again would cost more than hashing a small run. ``rows`` (by run_id,
    as the catalogue counted them) spares small tables the look at their pages
    (:func:`_read_pages`). ``known``: checksums by the tables' content (see
    :class:`ByContent`), looked up before a table is read and added to after."""
    contents = _content_keys(connection, [t for _, t in tables]) if known is not None else {}
    stamp = _file_version(connection) if contents else None
    deferred = _Deferred()
    finishers: dict[int, Callable[[], str]] = {}
    results: dict[int, str | QcsqlError] = {}
    for run_id, table in tables:
        content = contents.get(table)
        if known is not None and content is not None and content in known.checksums:
            results[run_id] = known.checksums[content]
            continue
        counted = (rows or {}).get(run_id)
        try:
            from_pages = None
            if counted is None or counted >= PAGES_FROM_ROWS:
                from_pages = _read_pages(connection, run_id, table, deferred)
            finishers[run_id] = from_pages or _read_table(connection, run_id, table, deferred)
        except QcsqlError as exc:
            results[run_id] = exc
    deferred.flush()
    results.update((run_id, finish()) for run_id, finish in finishers.items())
    if known is not None and stamp is not None and _file_version(connection) == stamp:
        # No commit since the contents were keyed: the checksums are theirs.
        for run_id, table in tables:
            result = results.get(run_id)
            if isinstance(result, str) and table in contents:
                known.add(contents[table], result)
    return results


class ByContent:
    """Checksums of results tables by their content: a digest of the table's schema text
    (its columns and types, not its name), the file's page size and text encoding, and
    the bytes of its b-tree leaves (:func:`~qcsql.sqlite.pages.table_leaves_digests`).
    Equal content means equal records under equal columns, so equal values and an equal
    checksum, whatever file and table name. A run extracted into several files
    (``extract_runs_into_db``, once for each) is such a table in each, and a catalogue
    reads it once. Bounded: emptied when it holds :data:`CONTENTS_KEPT`."""

    def __init__(self) -> None:
        self.checksums: dict[bytes, str] = {}

    def add(self, content: bytes, checksum: str) -> None:
        if len(self.checksums) >= CONTENTS_KEPT:
            self.checksums.clear()
        self.checksums[content] = checksum


CONTENTS_KEPT = 1 << 16


def _content_keys(connection: ReadOnlyConnection, tables: Sequence[str]) -> dict[str, bytes]:
    """:class:`ByContent`'s key of each of ``tables`` whose content its pages tell (read
    in one :meth:`~qcsql.sqlite.pages.PageSource.window`: a consistent view of the
    file); none where the pages cannot be read safely from here."""
    wanted = set(tables)
    statement = "SELECT name, rootpage, sql FROM sqlite_master WHERE type = 'table'"
    with connection.reading_raw() as raw:
        schema = [row for row in raw.execute(statement).fetchall() if row[0] in wanted]
    header = connection.header
    prefix = f"{header.page_size} {header.reserved_bytes} {header.text_encoding}\x00".encode()
    keys: dict[str, bytes] = {}
    source = PageSource(connection)
    try:
        with source.window() as readable:
            if not readable:
                return {}
            named = [
                (name, root, sql.split("(", 1)[1])  # after the table's name: columns, types
                for name, root, sql in schema
                if isinstance(root, int) and isinstance(sql, str) and "(" in sql
            ]
            digests = [hashlib.sha256(prefix + columns.encode() + b"\x00") for *_, columns in named]
            told = table_leaves_digests(source, [root for _, root, _ in named], digests)
            for (name, *_), digest, ok in zip(named, digests, told, strict=True):
                if ok:
                    keys[name] = digest.digest()
    except Unsupported:
        return {}  # the file changed while its pages were read
    finally:
        source.close()
    return keys


def _file_version(connection: ReadOnlyConnection) -> Stamp | None:
    """What changes when a writer commits to the file (rollback journal: the file, WAL:
    its ``-wal``), as a catalogue stamps it (:func:`~qcsql.archive.entries.file_stamp`):
    checksums computed while it stayed the same belong to the contents keyed before them."""
    try:
        return file_stamp(connection.path)
    except OSError:
        return None


def table_checksum(db: Database, run: Run) -> str:
    """SHA-256 (hex) of the rows of the run's results table in the file."""
    found = table_checksums(db.store.connection, [(run.run_id, str(run.table_name))])
    result = found[run.run_id]
    if isinstance(result, QcsqlError):
        raise result
    return result


def _read_table(
    connection: ReadOnlyConnection, run_id: int, table: str, deferred: _Deferred
) -> Callable[[], str]:
    """Reads the run's results table into its columns' digests (numbers through
    ``deferred``); the returned function gives the checksum once ``deferred`` is flushed.
    The columns are those of ``SELECT *``, named by the statement itself (no
    ``PRAGMA table_info`` a table), each hashed under its name, in name order."""
    statement = f"SELECT id, * FROM {quote_identifier(table)} WHERE id > ? ORDER BY id LIMIT ?"
    names: list[str] | None = None
    digests: list[Any] = []
    positions: list[int] = []  # in each row, of the columns of ``names``
    last = -(2**63)
    while True:
        with connection.reading_raw(run_id=run_id, table=table) as raw:
            cursor = raw.execute(statement, (last, WINDOW))
            rows = cursor.fetchall()
            described = [column[0] for column in cursor.description]
        if names is None:
            names, positions = _hashed_columns(described, first=1)  # after the leading id
            digests = [hashlib.sha256() for _ in names]
        if not rows:
            break
        last = rows[-1][0]
        _update_window(digests, positions, rows, deferred)
        if len(rows) < WINDOW:
            break
    return _finisher(names or (), digests)


# Tables of at least this many rows are hashed from their pages where the page reader can
# (:func:`_read_pages`); below it, its set-up costs more than SQLite's rows.
PAGES_FROM_ROWS = 1000


def _read_pages(
    connection: ReadOnlyConnection, run_id: int, table: str, deferred: _Deferred
) -> Callable[[], str] | None:
    """What :func:`_read_table` gives (the same digests of the same bytes), decoded
    straight from the table's pages (:mod:`qcsql.sqlite.pages`) instead of through
    SQLite's rows, for tables of numbers and NULLs alone: each column's values in id
    order, cut into windows of :data:`WINDOW` rows as :func:`_read_table` reads them.
    None (and SQLite reads the table) where the table is small, its ids are not its
    rowids, the pages cannot be read safely from here (see
    :meth:`~qcsql.sqlite.pages.PageSource.window`), a value is text or a blob, or a row
    holds no value at all (the page reader skips those: the rows read would not add up)."""
    quoted = quote_identifier(table)
    with connection.reading_raw(run_id=run_id, table=table) as raw:
        cursor = raw.execute(
            f"SELECT count(*), max(rowid), count(id IS rowid OR NULL) FROM {quoted}"
        )
        count, last_id, by_rowid = cursor.fetchone()
        described = [
            column[0] for column in raw.execute(f"SELECT * FROM {quoted} LIMIT 0").description
        ]
        root = raw.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchall()
    if count < PAGES_FROM_ROWS or by_rowid != count or len(root) != 1:
        return None
    names, indices = _hashed_columns(described, first=0)
    if not indices or len(names) != len(set(names)):
        return None
    source = PageSource(connection)
    digests = [hashlib.sha256() for _ in names]
    blocks: list[np.ndarray[Any, Any]] = []  # decoded, not yet given to ``deferred``
    waiting = read = 0
    after = -(2**63)
    try:
        while after < last_id:
            window = read_numeric_window(
                source, int(root[0][0]), indices, len(indices), after, last_id, numeric_text=False
            )
            if window is None:
                return None
            if window.rows:
                blocks.append(np.vstack(window.values))
                waiting += window.rows
                read += window.rows
            while waiting >= WINDOW or (waiting and window.last_rowid >= last_id):
                joined = np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
                deferred.add(digests, np.ascontiguousarray(joined[:, :WINDOW]))
                blocks = [joined[:, WINDOW:]] if joined.shape[1] > WINDOW else []
                waiting = max(0, waiting - WINDOW)
            after = window.last_rowid
    finally:
        source.close()
    if read != count:
        return None
    return _finisher(names, digests)


def _hashed_columns(described: Sequence[str], first: int) -> tuple[list[str], list[int]]:
    """The columns a checksum hashes, from a statement's column names (those from
    position ``first`` on): every one but ``id``, in name order (the order of the columns
    in the table does not count), with their positions in the statement's rows."""
    by_name = sorted(
        (name, at) for at, name in enumerate(described) if at >= first and name != "id"
    )
    return [name for name, _ in by_name], [at for _, at in by_name]


def _finisher(names: Sequence[str], digests: Sequence[Any]) -> Callable[[], str]:
    """The checksum of a table from its columns' names and digests, once they are full."""

    def finish() -> str:
        total = hashlib.sha256(b"table\x00")
        for name, digest in zip(names, digests, strict=True):
            total.update(name.encode() + b"\x00" + digest.digest())
        return total.hexdigest()

    return finish


_NUMBERS = {int, float, type(None)}


class _Deferred:
    """Digest updates with numbers, queued so that one :func:`as_qcodes_sees` call
    rounds the numbers of many windows: it costs tens of numpy calls whatever the size,
    which for a small run were most of its checksum. The rounding is per value, so each
    digest gets the same bytes in the same order; the queue is flushed before any other
    update of a digest it holds (:meth:`holds`) and whenever it holds
    :data:`DEFERRED_VALUES`, so memory stays bounded."""

    def __init__(self) -> None:
        self._queue: list[tuple[list[Any], np.ndarray[Any, Any]]] = []
        self._size = 0
        self._waiting: set[int] = set()  # id() of every digest with an update queued

    def add(self, digests: list[Any], columns: np.ndarray[Any, Any]) -> None:
        """``columns[i]`` (floats, unrounded) is for ``digests[i]``."""
        self._queue.append((digests, columns))
        self._waiting.update(map(id, digests))
        self._size += columns.size
        if self._size >= DEFERRED_VALUES:
            self.flush()

    def holds(self, digest: Any) -> bool:
        """Whether ``digest`` has updates queued: they must come before any other."""
        return id(digest) in self._waiting

    def flush(self) -> None:
        if not self._queue:
            return
        keys = as_qcodes_sees(np.concatenate([columns.ravel() for _, columns in self._queue]))
        offset = 0
        for digests, columns in self._queue:
            block = keys[offset : offset + columns.size].reshape(columns.shape)
            offset += columns.size
            for digest, column in zip(digests, block, strict=True):
                digest.update(b"n" + column.tobytes())
        self._queue.clear()
        self._waiting.clear()
        self._size = 0


# Values queued at most before they are rounded (8 bytes each, twice while rounding).
DEFERRED_VALUES = 1 << 17


def _update_window(
    digests: list[Any], positions: list[int], rows: list[tuple[Any, ...]], deferred: _Deferred
) -> None:
    """Each column's digest updated with one window of rows, column ``positions[i]`` of
    the rows for ``digests[i]``. Where every cell is a number or NULL (most results
    tables), the window is converted in one go and its rounding deferred instead of done
    column by column: the bytes each digest gets are the same, at a fraction of the calls."""
    # numpy's own look at the values settles most windows: all numbers without NULL come
    # out as floats or integers (text and blobs as strings, NULLs and the rest as objects).
    found = np.array(rows)
    if found.dtype.kind in "fi" and found.ndim == 2:
        values = found.astype(np.float64, copy=False)[:, positions]
        deferred.add(digests, np.ascontiguousarray(values.T))
        return
    if set(map(type, itertools.chain.from_iterable(rows))) <= _NUMBERS:
        values = np.array(rows, dtype=np.float64)[:, positions]  # None becomes NaN
        deferred.add(digests, np.ascontiguousarray(values.T))
        return
    for position, digest in zip(positions, digests, strict=True):
        column = [row[position] for row in rows]
        if set(map(type, column)) <= _NUMBERS:  # a column of numbers beside text: queued
            deferred.add([digest], np.array(column, dtype=np.float64)[np.newaxis])
            continue
        if deferred.holds(digest):
            deferred.flush()  # its earlier windows' numbers come first
        _update_column(digest, column)


def _update_column(digest: Any, values: list[Any]) -> None:
    """A column of text and blobs (array parameters), or of text and numbers, value by
    value (the numbers among them rounded in one call)."""
    numbers = [value for value in values if isinstance(value, (int, float))]
    rounded = iter(as_qcodes_sees(np.array(numbers, dtype=np.float64))) if numbers else None
    for value in values:
        if value is None:
            digest.update(b"N")
        elif isinstance(value, (int, float)):
            assert rounded is not None
            digest.update(b"n" + next(rounded).tobytes())
        else:
            data = value.encode() if isinstance(value, str) else bytes(value)
            tag = b"s" if isinstance(value, str) else b"b"
            digest.update(tag + len(data).to_bytes(8, "little") + data)


def data_checksum(run: Run) -> str:
    """SHA-256 (hex) of the run's ``get_parameter_data()``, wherever its data live."""
    digest = hashlib.sha256(b"parameter data\x00")
    data = run.get_parameter_data()
    for top in sorted(data):
        digest.update(b"\x00tree\x00" + top.encode())
        for name in sorted(data[top]):
            _update_array(digest, name, np.asarray(data[top][name]))
    return digest.hexdigest()


def _update_array(digest: Any, name: str, array: np.ndarray[Any, Any]) -> None:
    digest.update(f"\x00{name}\x00{array.dtype.str}\x00{array.shape}\x00".encode())
    if array.dtype.hasobject:
        for item in array.ravel():
            if isinstance(item, np.ndarray):  # ragged data: repr() would elide the middle
                _update_array(digest, "", item)
            else:
                digest.update(repr(item).encode() + b"\x00")
    elif array.dtype.kind == "f":
        digest.update(as_qcodes_sees(array.ravel()).tobytes())
    else:
        digest.update(np.ascontiguousarray(array).tobytes())
