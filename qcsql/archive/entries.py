"""The catalogue's entries: one per candidate file, one per run, one per guid found in
several places, and the :class:`Catalog` that holds them.

Nothing here opens a database, so this module imports no database reader (SQLAlchemy,
numpy, pydantic): a catalogue read back from its file (:mod:`qcsql.archive.store`) and
compared with an unchanged archive needs none.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from qcsql.archive.discover import Problem
from qcsql.sqlite.files import side_file

__all__ = [
    "RUN_COLUMNS_AS_QCODES_NAMES_THEM",
    "Catalog",
    "DuplicateCounts",
    "Duplicate",
    "FileEntry",
    "FileKind",
    "Parameter",
    "RunEntry",
    "Stamp",
    "StoredRuns",
    "file_stamp",
    "stamp_of",
    "with_changes",
]

FileKind = Literal["qcodes", "problem"]
# A file's size and mtime, and those of its -wal (None where it has none).
Stamp = tuple[int, int, int | None, int | None]


@dataclass(frozen=True)
class FileEntry:
    """One candidate file as it was when catalogued; ``kind`` says whether it is a QCoDeS
    database (its runs are in the catalogue) or not (its problem is)."""

    path: str
    size: int
    mtime_ns: int
    wal_size: int | None
    wal_mtime_ns: int | None
    kind: FileKind
    schema_version: int | None = None
    journal_mode: str | None = None
    access: str | None = None
    runs: int = 0

    @property
    def stamp(self) -> Stamp:
        return (self.size, self.mtime_ns, self.wal_size, self.wal_mtime_ns)


@dataclass(frozen=True)
class Parameter:
    name: str
    paramtype: str
    unit: str


# What a catalogue row takes of a run as it is, under QCoDeS' names (``DataSet``'s, as
# ``qcsql runs --json`` prints them), so that one name means one thing across qcsql.
RUN_COLUMNS_AS_QCODES_NAMES_THEM = (
    "run_id",
    "captured_run_id",
    "captured_counter",
    "exp_name",
    "sample_name",
    "name",
    "run_timestamp_raw",
    "completed_timestamp_raw",
    "completed",
)


@dataclass(frozen=True)
class RunEntry:
    """One run of one file: what a lab asks of its archive without opening the file."""

    path: str
    schema_version: int
    journal_mode: str
    run_id: int
    captured_run_id: int | None
    captured_counter: int | None
    guid: str | None  # the stable guid: for schema-v0 runs the one QCoDeS' upgrade gives
    exp_name: str | None
    sample_name: str | None
    name: str | None
    run_timestamp_raw: float | None
    completed_timestamp_raw: float | None
    completed: bool
    number_of_results: int | None
    parameters: tuple[Parameter, ...] | None
    metadata: dict[str, Any]
    data_location: str  # table, raw_data_file, export or nowhere
    data_table: str | None
    data_file: str | None
    data_checksum: str | None = None

    @classmethod
    def from_columns(cls, values: Sequence[Any]) -> RunEntry:
        """The entry whose fields are ``values``, all of them in the order of the class's
        fields, as a stored catalogue gives them back: set as they are, without
        ``__init__``'s call per field, which cost most of a second catalogue's time (it
        reads every run back)."""
        entry = object.__new__(cls)
        entry.__dict__.update(zip(_RUN_FIELDS, values, strict=True))
        return entry


_RUN_FIELDS = tuple(f.name for f in fields(RunEntry))


@dataclass(frozen=True)
class Duplicate:
    """One guid found in several places; ``same_data`` is None where a copy's data could
    not be read (its checksum is missing)."""

    guid: str
    locations: tuple[tuple[str, int], ...]
    checksums: tuple[str | None, ...]

    @property
    def same_data(self) -> bool | None:
        if any(c is None for c in self.checksums):
            return None
        return len(set(self.checksums)) == 1


@dataclass(frozen=True)
class DuplicateCounts:
    """How many guids occur in several places, how many of them are copies whose data
    differ, and how many lack the checksum of some copy (its data could not be read, or
    the catalogue was built without checksums)."""

    guids: int
    differing: int
    lacking_checksums: int


class StoredRuns(Protocol):
    """The runs of a catalogue still in its file (:mod:`qcsql.archive.store`), not read
    yet: what a :class:`Catalog` asks of them before it needs the runs themselves."""

    def load(self) -> list[RunEntry]:
        """Every run, in the stored order."""

    def count(self) -> int:
        """How many runs there are."""

    def duplicate_counts(self) -> DuplicateCounts:
        """:meth:`Catalog.duplicate_counts` of the stored runs, counted by SQLite."""


# Catalogues load their stored runs rarely and briefly: one lock for all of them keeps a
# catalogue shared by threads from reading its runs twice, and a catalogue picklable.
_LOADING = threading.Lock()


class Catalog:
    """Every candidate file of an archive, every run of its QCoDeS databases, and every
    problem met; ``reused_files`` counts the files found unchanged since the previous
    catalogue (not opened again).

    A catalogue read back from its file (:func:`qcsql.archive.store.read_catalog`) reads
    its runs there when they are first asked for (``stored_runs``): a second catalogue
    of an unchanged archive is its files' sizes and mtimes compared with the stored
    ones, and reading thousands of runs back would be most of its time. A catalogue
    built from an unchanged archive shares those stored runs until they are asked for.
    """

    def __init__(
        self,
        files: list[FileEntry] | None = None,
        runs: list[RunEntry] | None = None,
        problems: list[Problem] | None = None,
        reused_files: int = 0,
        *,
        stored_runs: StoredRuns | None = None,
    ) -> None:
        if runs is not None and stored_runs is not None:
            raise ValueError("a catalogue's runs are either given or stored, not both")
        self.files: list[FileEntry] = [] if files is None else files
        self.problems: list[Problem] = [] if problems is None else problems
        self.reused_files = reused_files
        self._runs = [] if runs is None and stored_runs is None else runs
        self._stored = stored_runs

    @property
    def runs(self) -> list[RunEntry]:
        runs = self._runs
        if runs is None:
            with _LOADING:
                if self._runs is None:
                    assert self._stored is not None
                    self._runs = self._stored.load()
                runs = self._runs
        return runs

    @runs.setter
    def runs(self, runs: list[RunEntry]) -> None:
        self._runs = runs

    @property
    def stored_runs(self) -> StoredRuns | None:
        """Where this catalogue's runs still are, unread (None once they are read, or when
        the catalogue was never stored)."""
        return self._stored if self._runs is None else None

    def run_count(self) -> int:
        stored = self.stored_runs
        return stored.count() if stored is not None else len(self.runs)

    def duplicates(self) -> list[Duplicate]:
        by_guid: dict[str, list[RunEntry]] = defaultdict(list)
        for run in self.runs:
            if run.guid is not None:
                by_guid[run.guid].append(run)
        return [
            Duplicate(
                guid,
                tuple((r.path, r.run_id) for r in copies),
                tuple(r.data_checksum for r in copies),
            )
            for guid, copies in sorted(by_guid.items())
            if len(copies) > 1
        ]

    def duplicate_counts(self) -> DuplicateCounts:
        """What :meth:`duplicates` would say, counted (by SQLite for stored runs)."""
        stored = self.stored_runs
        if stored is not None:
            return stored.duplicate_counts()
        duplicates = self.duplicates()
        return DuplicateCounts(
            guids=len(duplicates),
            differing=sum(d.same_data is False for d in duplicates),
            lacking_checksums=sum(None in d.checksums for d in duplicates),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalog):
            return NotImplemented
        return (self.files, self.problems, self.reused_files) == (
            other.files,
            other.problems,
            other.reused_files,
        ) and self.same_runs(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it replaced

    def same_runs(self, other: Catalog) -> bool:
        """Whether the two hold equal runs; without reading them where both still share
        the same stored runs."""
        stored = self.stored_runs
        if stored is not None and stored is other.stored_runs:
            return True
        return self.runs == other.runs

    def __repr__(self) -> str:
        runs = "stored" if self.stored_runs is not None else str(len(self.runs))
        return (
            f"Catalog(files={len(self.files)}, runs={runs}, problems={len(self.problems)}, "
            f"reused_files={self.reused_files})"
        )


def file_stamp(path: Path) -> Stamp:
    """The file's size and mtime, and those of its ``-wal``: what decides whether the next
    catalogue opens the file again."""
    info = path.stat()
    try:
        wal: os.stat_result | None = side_file(path, "-wal").stat()
    except OSError:
        wal = None
    return stamp_of(info, wal)


def stamp_of(info: os.stat_result, wal: os.stat_result | None) -> Stamp:
    """:func:`file_stamp` from the file's ``stat`` and its ``-wal``'s (None: it has none)."""
    if wal is None:
        return (info.st_size, info.st_mtime_ns, None, None)
    return (info.st_size, info.st_mtime_ns, wal.st_size, wal.st_mtime_ns)


_Entry = TypeVar("_Entry", FileEntry, RunEntry)


def with_changes(entry: _Entry, **changes: Any) -> _Entry:
    """``dataclasses.replace(entry, **changes)`` for the catalogue's entries, thousands at
    a time: the instance's fields copied with ``changes``, without ``replace``'s call of
    ``__init__`` field by field, which cost a tenth of a catalogue of copies. The entries
    are plain frozen dataclasses (no ``__post_init__``, no slots, nothing derived), so
    the two give equal objects."""
    copied = object.__new__(type(entry))
    copied.__dict__.update(entry.__dict__, **changes)
    return copied
