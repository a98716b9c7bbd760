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
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from qcsql.archive.catalog import Catalog, FileEntry, Parameter, RunEntry
from qcsql.archive.discover import Problem
from qcsql.errors import ExportError, QcsqlError
from qcsql.sqlite.connection import read_header, sqlite_uri

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
CREATE INDEX runs_by_guid ON runs (guid);
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
    """The catalogue stored at ``path``; None where there is none, or an older format."""
    path = Path(path)
    if not path.is_file():
        return None
    _check_target(path)
    with contextlib.closing(
        sqlite3.connect(sqlite_uri(path.absolute(), mode="ro"), uri=True)
    ) as conn:
        if conn.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
            return None
        catalog = Catalog()
        columns = ", ".join(_FILE_COLUMNS)
        for values in conn.execute(f"SELECT {columns} FROM files ORDER BY rowid"):
            catalog.files.append(FileEntry(**dict(zip(_FILE_COLUMNS, values, strict=True))))
        columns = ", ".join(_RUN_COLUMNS)
        rows = conn.execute(f"SELECT {columns} FROM runs ORDER BY rowid").fetchall()
        catalog.runs.extend(map(_run_from_row, rows))
        columns = ", ".join(_PROBLEM_COLUMNS)
        for values in conn.execute(f"SELECT {columns} FROM problems ORDER BY rowid"):
            catalog.problems.append(Problem(**dict(zip(_PROBLEM_COLUMNS, values, strict=True))))
    return catalog


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


def _run_row(run: RunEntry) -> tuple[Any, ...]:
    """The run's row: its fields read in one call (thousands of runs a catalogue), the
    parameters and metadata as JSON text (the parameters' text once per distinct list:
    an archive's runs repeat their measurements)."""
    row = list(_RUN_VALUES(run))
    row[_PARAMETERS_AT] = None if run.parameters is None else _parameters_text(run.parameters)
    row[_METADATA_AT] = orjson.dumps(run.metadata).decode()
    return tuple(row)


_RUN_VALUES = operator.attrgetter(*_RUN_COLUMNS)
_PARAMETERS_AT = _RUN_COLUMNS.index("parameters")
_METADATA_AT = _RUN_COLUMNS.index("metadata")
_COMPLETED_AT = _RUN_COLUMNS.index("completed")


@functools.lru_cache(maxsize=4096)
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
                        [_run_row(r) for r in catalog.runs],
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
    return (catalog.files, catalog.runs, catalog.problems) == (
        previous.files,
        previous.runs,
        previous.problems,
    )


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
