"""The catalogue as an SQLite file of qcsql's own, and as JSON lines.

The file is qcsql's output, never one of the databases it reads: it is written only
as a whole new file under a temporary name in the same folder, committed, synced and
renamed over the old one, so that a reader (``sqlite3 catalog.db``, a BI tool) sees
the old catalogue or the new one, never a half-written one, and an interrupted run
leaves the old one as it was. Its ``application_id`` marks it as a qcsql catalogue;
an existing file without that mark (a user's QCoDeS database given as ``-o`` by
mistake) is refused, never overwritten.

Tables (plain columns, JSON text where a run has lists or maps):

* ``files``: one row per candidate file, with the size and mtimes that decide
  whether the next run opens it again; ``kind`` is ``qcodes`` or ``problem``.
* ``runs``: one row per run; ``parameters`` is a JSON list of ``[name, paramtype,
  unit]``, ``metadata`` a JSON object; ``data_checksum`` is set where the guid occurs
  more than once.
* ``problems``: one row per thing that is not a readable QCoDeS database or run.
* view ``duplicates``: each guid found in several places, with how many copies and
  how many distinct data checksums they have.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from qcsql.archive.discover import Problem
from qcsql.archive.entries import Catalog, DuplicateCounts, FileEntry, Parameter, RunEntry
from qcsql.errors import DatabaseReadError, ExportError, QcsqlError
from qcsql.sqlite.files import read_header, sqlite_uri

__all__ = ["APPLICATION_ID", "catalog_records", "read_catalog", "write_catalog"]

# "qcsq": PRAGMA application_id of every catalogue file (bytes 68-71 of the header).
APPLICATION_ID = 0x71637371
FORMAT_VERSION = 2  # 2: the runs' columns take QCoDeS' names (exp_name, ...)

# The tables' columns are the entries' fields, in their order.
_FILE_COLUMNS = tuple(field.name for field in fields(FileEntry))
_RUN_COLUMNS = tuple(field.name for field in fields(RunEntry))
_PROBLEM_COLUMNS = ("path", "run_id", "kind", "message")

_SCHEMA = f"""
CREATE TABLE files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    wal_size INTEGER, wal_mtime_ns INTEGER, kind TEXT NOT NULL,
    schema_version INTEGER, journal_mode TEXT, access TEXT, runs INTEGER NOT NULL
);
CREATE TABLE runs (
    path TEXT NOT NULL REFERENCES files(path), schema_version INTEGER, journal_mode TEXT,
    run_id INTEGER NOT NULL, captured_run_id INTEGER, captured_counter INTEGER, guid TEXT,
    exp_name TEXT, sample_name TEXT, name TEXT, run_timestamp_raw REAL,
    completed_timestamp_raw REAL,
    completed INTEGER, number_of_results INTEGER, parameters TEXT, metadata TEXT,
    data_location TEXT, data_table TEXT, data_file TEXT, data_checksum TEXT,
    PRIMARY KEY (path, run_id)
);
CREATE INDEX runs_by_guid ON runs (guid, data_checksum);  -- covers the duplicates
CREATE TABLE problems (path TEXT NOT NULL, run_id INTEGER, kind TEXT NOT NULL, message TEXT);
CREATE VIEW duplicates AS
    SELECT guid, count(*) AS copies, count(DISTINCT data_checksum) AS distinct_checksums,
           group_concat(path || ' run ' || run_id, char(10)) AS locations
    FROM runs WHERE guid IS NOT NULL GROUP BY guid HAVING count(*) > 1;
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {FORMAT_VERSION};
"""


def _is_catalogue(path: Path) -> bool:
    """Whether ``path`` holds a qcsql catalogue: its header, read as every database's is
    (through the kept descriptor: the file might be a user's database after all)."""
    try:
        header = read_header(path)
    except QcsqlError:
        return False  # not an SQLite file at all
    header.file.release()
    return header.application_id == APPLICATION_ID


def _check_target(path: Path) -> None:
    if not path.exists():
        return
    if path.is_dir() or not _is_catalogue(path):
        raise ExportError(
            f"{path}: exists and is not a qcsql catalogue; give a new file name (a catalogue "
            "is only ever written over an older catalogue)",
            path=path,
        )


def read_catalog(path: str | Path) -> Catalog | None:
    """The catalogue stored at ``path``; None where there is none, or an older format.
    Its files and problems are read at once, its runs when they are first asked for
    (:attr:`Catalog.stored_runs`): from the same file, or a :class:`DatabaseReadError`
    if another catalogue has been written over it since."""
    path = Path(path).absolute()
    if not path.is_file():
        return None
    _check_target(path)
    stored = _StoredRuns(path, _identity(path))
    with stored.reading() as conn:
        if conn.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
            return None
        columns = ", ".join(_FILE_COLUMNS)
        files = [
            FileEntry(*values)
            for values in conn.execute(f"SELECT {columns} FROM files ORDER BY rowid")
        ]
        columns = ", ".join(_PROBLEM_COLUMNS)
        problems = [
            Problem(**dict(zip(_PROBLEM_COLUMNS, values, strict=True)))
            for values in conn.execute(f"SELECT {columns} FROM problems ORDER BY rowid")
        ]
    return Catalog(files, problems=problems, stored_runs=stored)


def _identity(path: Path) -> tuple[int, int, int, int]:
    """What tells one catalogue file from another written over it: every catalogue is
    written as a new file renamed onto the path (a new inode), and any other change to
    it changes its size or mtime."""
    info = path.stat()
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass
class _StoredRuns:
    """The runs of the catalogue file ``path`` as it was when read (``identity``), read
    or counted on demand (:class:`~qcsql.archive.entries.StoredRuns`). The counts are
    kept once made: a catalogue of an unchanged archive asks for them twice (whether a
    checksum is missing, then the command's summary), and the file they come from is
    checked to be the same one whenever it is read. Two threads asking at once may both
    count; they count the same file, and either result is kept."""

    path: Path
    identity: tuple[int, int, int, int]
    _counts: DuplicateCounts | None = None

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection to the file, which must still be the one first read
        (checked before and after: the block's reads are of that file)."""
        self._check()
        with contextlib.closing(
            sqlite3.connect(sqlite_uri(self.path, mode="ro"), uri=True)
        ) as conn:
            yield conn
        self._check()

    def _check(self) -> None:
        try:
            same = _identity(self.path) == self.identity
        except OSError:
            same = False
        if not same:
            raise DatabaseReadError(
                f"{self.path}: the catalogue was replaced or changed since it was read; "
                "read it again",
                path=self.path,
            )

    def load(self) -> list[RunEntry]:
        columns = ", ".join(_RUN_COLUMNS)
        with self.reading() as conn:
            rows = conn.execute(f"SELECT {columns} FROM runs ORDER BY rowid").fetchall()
        return list(map(_run_from_row, rows))

    def count(self) -> int:
        with self.reading() as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])

    def duplicate_counts(self) -> DuplicateCounts:
        if self._counts is None:
            with self.reading() as conn:
                guids, differing, lacking = conn.execute(_DUPLICATE_COUNTS).fetchone()
            self._counts = DuplicateCounts(guids, differing or 0, lacking or 0)
        return self._counts


# Catalog.duplicate_counts in SQL: a guid's copies differ when every copy has a checksum
# and they are not all the same (Duplicate.same_data is False).
_DUPLICATE_COUNTS = """
SELECT count(*),
       sum(checksummed = copies AND distinct_checksums > 1),
       sum(checksummed < copies)
FROM (
    SELECT count(*) AS copies, count(data_checksum) AS checksummed,
           count(DISTINCT data_checksum) AS distinct_checksums
    FROM runs WHERE guid IS NOT NULL GROUP BY guid HAVING count(*) > 1
)
"""


def _run_from_row(values: tuple[Any, ...]) -> RunEntry:
    """The run of a stored row (its columns those of ``RunEntry``, in its order)."""
    row = list(values)
    parameters = row[_PARAMETERS_AT]
    row[_PARAMETERS_AT] = None if parameters is None else _parameters_from_json(parameters)
    row[_METADATA_AT] = orjson.loads(row[_METADATA_AT])
    row[_COMPLETED_AT] = bool(row[_COMPLETED_AT])
    return RunEntry.from_columns(row)


@functools.lru_cache(maxsize=4096)
def _parameters_from_json(text: str) -> tuple[Parameter, ...]:
    """A run's parameters as the catalogue stores them, read once per distinct text: the
    runs of an archive repeat their measurements, and a second catalogue reads them all."""
    return tuple(Parameter(*p) for p in orjson.loads(text))


def _fields(entry: Any) -> dict[str, Any]:
    """The fields of a catalogue entry by name, as they are: ``dataclasses.asdict`` copies
    every value deeply, which cost a catalogue of thousands of runs more than writing it."""
    return {f.name: getattr(entry, f.name) for f in fields(entry)}


def _run_rows(runs: list[RunEntry]) -> list[tuple[Any, ...]]:
    """The runs' rows: each run's fields read in one call (thousands of runs a
    catalogue), the parameters and metadata as JSON text. The parameters' text is made
    once per list object: an archive's runs repeat their measurements, and the scan hands
    equal descriptions one shared tuple (``runs`` keeps every one alive meanwhile, so
    their ids are theirs); hashing the tuples for a cache cost more than the rest."""
    texts: dict[int, str] = {}
    rows = []
    for run in runs:
        row = list(_RUN_VALUES(run))
        parameters = run.parameters
        if parameters is not None:
            text = texts.get(id(parameters))
            if text is None:
                text = texts[id(parameters)] = _parameters_text(parameters)
            row[_PARAMETERS_AT] = text
        row[_METADATA_AT] = orjson.dumps(run.metadata).decode()
        rows.append(tuple(row))
    return rows


_RUN_VALUES = operator.attrgetter(*_RUN_COLUMNS)
_PARAMETERS_AT = _RUN_COLUMNS.index("parameters")
_METADATA_AT = _RUN_COLUMNS.index("metadata")
_COMPLETED_AT = _RUN_COLUMNS.index("completed")


def _parameters_text(parameters: tuple[Parameter, ...]) -> str:
    return orjson.dumps([[p.name, p.paramtype, p.unit] for p in parameters]).decode()


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` if the block succeeds."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)  # our own new file: no other connection can hold a lock on it
    temporary = Path(name)
    try:
        temporary.unlink()  # SQLite creates it: an empty file would do too, but is not needed
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        for leftover in (temporary, temporary.with_name(temporary.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise


def write_catalog(catalog: Catalog, path: str | Path, previous: Catalog | None = None) -> Path:
    """Write ``catalog`` to ``path`` as a whole (see the module docstring); returns it.
    ``previous``, the catalogue read from ``path`` before ``catalog`` was built from it:
    where nothing differs (an unchanged archive catalogued again), the file is left as
    it is instead of being written again."""
    path = Path(path).expanduser().absolute()
    _check_target(path)
    if previous is not None and path.is_file() and _same_entries(catalog, previous):
        return path
    if not path.parent.is_dir():
        raise ExportError(f"{path}: the folder {path.parent} does not exist", path=path)
    try:
        with _replacing(path) as temporary:
            with contextlib.closing(sqlite3.connect(temporary)) as conn:
                # Our own new file, renamed onto ``path`` once whole and synced: no journal
                # and no syncs of SQLite's own (the rename is the atomic step, the one
                # fsync below the durable one).
                conn.execute("PRAGMA journal_mode = OFF")
                conn.execute("PRAGMA synchronous = OFF")
                conn.executescript(_SCHEMA)
                with conn:  # one transaction
                    conn.executemany(
                        f"INSERT INTO files VALUES ({', '.join('?' * len(_FILE_COLUMNS))})",
                        [tuple(getattr(f, c) for c in _FILE_COLUMNS) for f in catalog.files],
                    )
                    conn.executemany(
                        f"INSERT INTO runs VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
                        _run_rows(catalog.runs),
                    )
                    conn.executemany(
                        "INSERT INTO problems VALUES (?, ?, ?, ?)",
                        [(p.path, p.run_id, p.kind, p.message) for p in catalog.problems],
                    )
            with open(temporary, "rb") as written:  # our own file, closed by nobody else
                os.fsync(written.fileno())
    except (OSError, sqlite3.Error) as exc:
        raise ExportError(f"{path}: cannot write the catalogue ({exc})", path=path) from exc
    return path


def _same_entries(catalog: Catalog, previous: Catalog) -> bool:
    """Whether the two hold the same entries (runs still stored in the same file are the
    same without being read)."""
    return (catalog.files, catalog.problems) == (
        previous.files,
        previous.problems,
    ) and catalog.same_runs(previous)


def catalog_records(catalog: Catalog) -> Iterator[dict[str, Any]]:
    """The catalogue as JSON-ready records, one per line of ``qcsql catalog --json``:
    ``{"type": "file" | "run" | "problem" | "duplicate", ...}``."""
    for entry in catalog.files:
        yield {"type": "file", **_fields(entry)}
    for run in catalog.runs:
        record = _fields(run)
        record["parameters"] = (
            None
            if run.parameters is None
            else [[p.name, p.paramtype, p.unit] for p in run.parameters]
        )
        yield {"type": "run", **record}
    for problem in catalog.problems:
        yield {"type": "problem", **_fields(problem)}
    for duplicate in catalog.duplicates():
        yield {
            "type": "duplicate",
            "guid": duplicate.guid,
            "locations": [{"path": p, "run_id": r} for p, r in duplicate.locations],
            "checksums": list(duplicate.checksums),
            "same_data": duplicate.same_data,
        }
