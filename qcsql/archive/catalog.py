"""The catalogue of an archive: every run of every QCoDeS database under some folders.

:func:`build_catalog` walks the given paths (:mod:`qcsql.archive.discover`), opens
each candidate read-only through :class:`~qcsql.database.Database` (so nothing is
written, no descriptor of a database is ever closed under another connection, and a
WAL file copied without its ``-shm`` is read through a private snapshot copy), and
records one :class:`RunEntry` per run, one :class:`FileEntry` per candidate file and
one :class:`~qcsql.archive.discover.Problem` per thing that is not a readable QCoDeS
database. A previous catalogue makes the next one cheap: a file whose size and mtime
(and those of its ``-wal``) are unchanged is not opened again, its entries are reused.

Duplicates (one guid in several places, as ``extract_runs_into_db`` leaves them) are
what the runs' guids say; whether the copies hold the same data is a checksum of the
data (:func:`qcsql.archive.checksum.run_checksum`), computed only for the runs whose
guid occurs more than once, and kept as long as their file is unchanged.

Reading files and computing checksums are fan-out tasks (:mod:`qcsql.archive.fanout`):
``jobs`` local processes or a Dask client read the files side by side, and the
catalogue is the same as a serial one (entries in walk order).
"""

from __future__ import annotations

import base64
import functools
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from qcsql.archive.checksum import run_checksums, same_bytes, table_checksums
from qcsql.archive.discover import Problem, discover
from qcsql.archive.fanout import Outcome, run_tasks
from qcsql.database import Database, Run
from qcsql.errors import (
    DatabaseCorruptError,
    DataNotFoundWarning,
    NotQCoDeSError,
    NotSQLiteError,
    QcsqlError,
    RunDescriptionError,
    Where,
)
from qcsql.schema.description import (
    LayoutRow,
    RunDescription,
    description_from_layouts,
    parse_run_description,
)
from qcsql.schema.store import FIRST_VERSION_WITH_TRUSTED_DESCRIPTION
from qcsql.sqlite.connection import ReadOnlyConnection, quote_identifier, side_file

if TYPE_CHECKING:
    from dask.distributed import Client

__all__ = [
    "Catalog",
    "Duplicate",
    "FileEntry",
    "RunEntry",
    "build_catalog",
    "catalog_database",
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
    def stamp(self) -> tuple[int, int, int | None, int | None]:
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


@dataclass
class Catalog:
    files: list[FileEntry] = field(default_factory=list)
    runs: list[RunEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    reused_files: int = 0  # unchanged since the previous catalogue: not opened

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


Scanned = tuple["FileEntry | None", list["RunEntry"], list[Problem]]


def _stamp(path: Path) -> Stamp:
    info = path.stat()
    wal = side_file(path, "-wal")
    try:
        wal_info = wal.stat()
    except OSError:
        return (info.st_size, info.st_mtime_ns, None, None)
    return (info.st_size, info.st_mtime_ns, wal_info.st_size, wal_info.st_mtime_ns)


_PROBLEM_KINDS: dict[type[QcsqlError], str] = {
    NotSQLiteError: "not_sqlite",
    NotQCoDeSError: "not_qcodes",
    DatabaseCorruptError: "corrupt",
}


def _problem_kind(exc: QcsqlError) -> str:
    return next((k for t, k in _PROBLEM_KINDS.items() if isinstance(exc, t)), "unreadable")


def _json_ready(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    return value


def catalog_database(path: Path) -> tuple[FileEntry, list[RunEntry], list[Problem]]:
    """One candidate file: its entry, its runs, and what could not be read. Never raises
    for what the file holds (that is a problem of the catalogue); OSError only for a
    file that vanished between the walk and now."""
    stamp = _stamp(path)
    try:
        db = Database(path)
    except QcsqlError as exc:
        entry = FileEntry(str(path), *stamp, kind="problem")
        return entry, [], [Problem(str(path), _problem_kind(exc), str(exc))]
    problems: list[Problem] = []
    with db:
        try:
            listed = db.runs()
            bulk = _Bulk.read(db, listed)
        except QcsqlError as exc:
            entry = FileEntry(str(path), *stamp, kind="problem")
            return entry, [], [Problem(str(path), _problem_kind(exc), str(exc))]
        runs = []
        for run in listed:
            try:
                runs.append(_run_entry(db, run, bulk, problems))
            except QcsqlError as exc:  # a damaged run does not hide the others
                problems.append(Problem(str(path), _problem_kind(exc), str(exc), run.run_id))
        entry = FileEntry(
            str(path),
            *stamp,
            kind="qcodes",
            schema_version=db.schema_version,
            journal_mode=db.journal_mode,
            access=db.access.value,
            runs=len(runs),
        )
    return entry, runs, problems


@dataclass
class _Bulk:
    """What a catalogue needs of every run of a file, read in a few statements instead of
    a few per run: the stored run descriptions (one query) and the row counts of the
    results tables in the file (in a WAL file a few tables a statement,
    :data:`COUNTED_TOGETHER`; in a rollback-journal file, whose writer waits for our read
    lock to commit, one). A
    catalogue of thousands of small runs would otherwise spend its time compiling and
    sending per-run queries."""

    descriptions: dict[int, Any]
    counts: dict[str, int]
    layouts: dict[int, list[LayoutRow]] | None = None
    links: list[tuple[int, int, int]] = field(default_factory=list)
    column_types: dict[str, dict[str, str]] = field(default_factory=dict)  # by table

    @classmethod
    def read(cls, db: Database, runs: Sequence[Run]) -> _Bulk:
        connection = db.store.connection
        descriptions: dict[int, Any] = {}
        layouts: dict[int, list[LayoutRow]] | None = None
        links: list[tuple[int, int, int]] = []
        column_types: dict[str, dict[str, str]] = {}
        if (
            db.schema_version >= FIRST_VERSION_WITH_TRUSTED_DESCRIPTION
            and "run_description" in db.store.runs.c
        ):
            with connection.reading_raw(table="runs") as raw:
                statement = "SELECT run_id, run_description FROM runs"
                descriptions = dict(raw.execute(statement).fetchall())
        elif db.has_table("layouts") and db.has_table("dependencies"):
            layouts, links = _all_layouts(db)
            column_types = _all_column_types(db)
        tables = sorted(
            {str(run.table_name) for run in runs if db.data.where(run.row).kind == "table"}
        )
        # In a WAL file readers and writers never wait for each other; in a rollback-journal
        # file our read lock is what a committing writer waits for: a table a statement.
        together = COUNTED_TOGETHER if db.journal_mode == "wal" else 1
        groups = [tables[start : start + together] for start in range(0, len(tables), together)]
        try:
            counts = _counted(db, groups)
        except QcsqlError:
            counts = {}
            for group in groups:  # again, group by group, so that the error names its table
                try:
                    counts.update(_row_counts(db, group))
                except QcsqlError:
                    for table in group:
                        counts.update(_row_counts(db, [table]))
        return cls(descriptions, counts, layouts, links, column_types)

    @functools.cached_property
    def _links_of_layout(self) -> dict[int, list[int]]:
        """The positions in :attr:`links` of the links each layout_id takes part in."""
        positions: dict[int, list[int]] = defaultdict(list)
        for position, (dependent, independent, _) in enumerate(self.links):
            positions[dependent].append(position)
            if independent != dependent:
                positions[independent].append(position)
        return positions

    def parameters(self, run: Run) -> tuple[Parameter, ...] | None:
        """The run's parameters from what was read in bulk; None where the per-run path
        must read them (a v4+ run without a stored description, or no layouts). Equal
        descriptions (a lab repeats its measurements) are understood once."""
        stored = self.descriptions.get(run.run_id)
        if stored is not None:
            return _parameters_of_stored(stored)
        if self.layouts is None:
            return None
        rows = self.layouts.get(run.run_id, [])
        ids = {row.layout_id for row in rows}
        index = self._links_of_layout
        positions = sorted({p for layout_id in ids for p in index.get(layout_id, ())})
        links = [self.links[p] for p in positions]  # in storage order, as the store reads them
        types = self.column_types.get(str(run.table_name), {}) if rows else {}
        return _parameters_of_layouts(tuple(rows), tuple(links), tuple(types.items()))


# Results tables counted by one statement. An archive's files hold many small runs, and
# a statement per table cost more (compiling it, a read block in Python) than counting.
# Only in WAL files, where a long read makes no writer wait (see _Bulk.read).
COUNTED_TOGETHER = 32


def _counted(db: Database, groups: Sequence[Sequence[str]]) -> dict[str, int]:
    """The number of rows of every table of ``groups``, a statement a group, all sent in
    one block of the connection (:meth:`~qcsql.sqlite.connection.ReadOnlyConnection.reading_raw`).
    The connection is in autocommit mode, so each statement is a read transaction of its
    own, ended when its rows are fetched: a writer waits for one statement at most, as
    with a block a statement, which cost more than a small table's count. An error does
    not name its table here (:func:`_row_counts` does)."""
    counts: dict[str, int] = {}
    with db.store.connection.reading_raw() as raw:
        for group in groups:
            for index, count in raw.execute(_count_statement(group)).fetchall():
                counts[group[index]] = int(count)
    return counts


def _count_statement(tables: Sequence[str]) -> str:
    return " UNION ALL ".join(
        f"SELECT {index}, count(*) FROM {quote_identifier(table)}"
        for index, table in enumerate(tables)
    )


def _row_counts(db: Database, tables: Sequence[str]) -> dict[str, int]:
    """The number of rows of each of ``tables`` (at most a few), in one statement."""
    statement = _count_statement(tables)
    named = tables[0] if len(tables) == 1 else None
    with db.store.connection.reading_raw(table=named) as raw:
        rows = raw.execute(statement).fetchall()
    return {tables[index]: int(count) for index, count in rows}


def _as_parameters(description: RunDescription) -> tuple[Parameter, ...]:
    specs = description.paramspecs
    return tuple(Parameter(name, spec.paramtype, spec.unit) for name, spec in specs.items())


@functools.lru_cache(maxsize=1024)
def _parameters_of_stored(stored: Any) -> tuple[Parameter, ...]:
    return _as_parameters(parse_run_description(stored))


@functools.lru_cache(maxsize=1024)
def _parameters_of_layouts(
    rows: tuple[LayoutRow, ...],
    links: tuple[tuple[int, int, int], ...],
    types: tuple[tuple[str, str], ...],
) -> tuple[Parameter, ...]:
    return _as_parameters(description_from_layouts(rows, links, dict(types)))


def _all_column_types(db: Database) -> dict[str, dict[str, str]]:
    """The declared column types of every table of the file, in one statement over its
    schema instead of one ``PRAGMA table_info`` per run (as
    :meth:`qcsql.schema.store.RunStore.column_types` reads them for one run)."""
    statement = (
        "SELECT m.name, p.name, p.type FROM sqlite_master AS m "
        "JOIN pragma_table_info(m.name) AS p WHERE m.type = 'table' ORDER BY m.name, p.cid"
    )
    by_table: dict[str, dict[str, str]] = defaultdict(dict)
    with db.store.connection.reading_raw() as raw:
        for table, name, declared in raw.execute(statement).fetchall():
            by_table[table][name] = str(declared)
    return by_table


_LAYOUT_FIELDS = ("layout_id", "parameter", "label", "unit", "inferred_from")


@functools.lru_cache(maxsize=4096)
def _layout_row(fields: tuple[Any, ...]) -> LayoutRow:
    """A ``layouts`` row, validated once for all its equal rows (the copies of a file in
    an archive): one object, so the cached parameters' keys compare by identity too."""
    return LayoutRow.model_validate(dict(zip(_LAYOUT_FIELDS, fields, strict=True)))


def _all_layouts(db: Database) -> tuple[dict[int, list[LayoutRow]], list[tuple[int, int, int]]]:
    """Every run's ``layouts`` rows (by layout_id) and every ``dependencies`` row (in
    storage order), as :meth:`qcsql.schema.store.RunStore.description_from_layouts`
    reads them for one run; plain SQL text, since the columns are the same in every
    schema version and SQLAlchemy's statement set-up cost more than the reads."""
    by_run: dict[int, list[LayoutRow]] = defaultdict(list)
    statement = (
        "SELECT run_id, layout_id, parameter, label, unit, inferred_from "
        "FROM layouts ORDER BY layout_id"
    )
    link_statement = "SELECT dependent, independent, axis_num FROM dependencies ORDER BY rowid"
    with db.store.connection.reading_raw(table="layouts") as raw:
        for run_id, *fields in raw.execute(statement).fetchall():
            by_run[run_id].append(_layout_row(tuple(fields)))
    with db.store.connection.reading_raw(table="dependencies") as raw:
        links = [(int(a), int(b), int(c)) for a, b, c in raw.execute(link_statement).fetchall()]
    return by_run, links


def _parameters(db: Database, run: Run, bulk: _Bulk) -> tuple[Parameter, ...]:
    try:
        parameters = bulk.parameters(run)
    except ValueError as exc:
        raise RunDescriptionError(
            f"{db.path}, run {run.run_id}: its description cannot be understood ({exc})",
            where=Where(db.path, run.run_id, "runs"),
        ) from exc
    return _as_parameters(run.description) if parameters is None else parameters


def _run_entry(db: Database, run: Run, bulk: _Bulk, problems: list[Problem]) -> RunEntry:
    where = str(db.path)
    parameters: tuple[Parameter, ...] | None
    try:
        parameters = _parameters(db, run, bulk)
    except QcsqlError as exc:
        parameters = None
        problems.append(Problem(where, "run_description", str(exc), run.run_id))
    location = db.data.where(run.row)
    count: int | None
    if location.kind == "table":
        count = bulk.counts[str(run.table_name)]
    else:
        try:
            count = run.number_of_results
        except QcsqlError as exc:
            count = None
            problems.append(Problem(where, "results_unreadable", str(exc), run.run_id))
    return RunEntry(
        path=where,
        schema_version=db.schema_version,
        journal_mode=db.journal_mode,
        guid=run.stable_guid,
        **{column: getattr(run, column) for column in RUN_COLUMNS_AS_QCODES_NAMES_THEM},
        number_of_results=count,
        parameters=parameters,
        metadata={key: _json_ready(value) for key, value in run.metadata.items()},
        data_location=location.kind,
        data_table=run.table_name if location.kind in ("table", "raw_data_file") else None,
        data_file=location.recorded,
    )


Progress = Callable[[int, int, str], None]


def scan_task(path: str, run_id: None = None) -> Outcome:
    """:func:`catalog_database` as a fan-out task: the payload is its result."""
    try:
        return Outcome(path, run_id, True, payload=catalog_database(Path(path)))
    except OSError as exc:  # vanished since the walk
        problem = Problem(path, "unreadable", f"{path}: {exc.strerror or exc}")
        return Outcome(path, run_id, True, payload=(None, [], [problem]))


def checksum_task(
    path: str,
    run_id: None,
    run_ids: tuple[int, ...],
    tables: tuple[tuple[int, str, int | None], ...] = (),
) -> Outcome:
    """Checksums of the data of runs ``run_ids`` of ``path`` as a fan-out task: the payload
    maps each run to its checksum, or to a :class:`Problem` where it could not be read.
    ``tables`` are the results tables in the file of those runs that have one, with their
    rows, as the catalogue found them: these are hashed straight from their tables,
    without reading the file's schema and runs again (only the other runs need
    :class:`Database`)."""
    in_tables = {wanted: table for wanted, table, _ in tables}
    rows = {wanted: counted for wanted, _, counted in tables}
    others = tuple(wanted for wanted in run_ids if wanted not in in_tables)
    found: dict[int, str | QcsqlError] = {}
    try:
        if others:
            with Database(path) as db:
                runs = {run.run_id: run for run in db.runs()}
                with warnings.catch_warnings():
                    # Data never stored read as none, as QCoDeS reads them: no warning.
                    warnings.simplefilter("ignore", DataNotFoundWarning)
                    found = run_checksums(db, [runs[wanted] for wanted in others if wanted in runs])
                found.update(table_checksums(db.store.connection, list(in_tables.items()), rows))
        else:
            connection = ReadOnlyConnection(path)
            try:
                found = table_checksums(connection, list(in_tables.items()), rows)
            finally:
                connection.close()
    except QcsqlError as exc:
        problem = Problem(path, "checksum_failed", str(exc))
        return Outcome(path, run_id, True, payload=dict.fromkeys(run_ids, problem))
    results: dict[int, str | Problem] = {}
    for wanted in run_ids:
        result = found.get(wanted)
        if result is None or isinstance(result, QcsqlError):
            message = f"{path}: run gone" if result is None else str(result)
            results[wanted] = Problem(path, "checksum_failed", message, wanted)
        else:
            results[wanted] = result
    return Outcome(path, run_id, True, payload=results)


def build_catalog(
    paths: Sequence[str | Path],
    previous: Catalog | None = None,
    *,
    exclude: Iterable[Path] = (),
    progress: Progress | None = None,
    jobs: int = 1,
    client: Client | None = None,
    checksums: bool = True,
) -> Catalog:
    """The catalogue of everything under ``paths``; files unchanged since ``previous``
    (same size and mtime, and the same of their ``-wal``) are not opened again.
    ``checksums=False`` leaves out the checksums of duplicated runs' data (their cost
    grows with the data of every duplicated run; the rest only with the runs).
    ``progress(files done, files, path)`` is called after each file. Files are read in
    ``jobs`` local processes, or on the workers of a ``dask.distributed`` ``client``
    (see :mod:`qcsql.archive.fanout`)."""
    found = discover(paths, exclude)
    old_files = {f.path: f for f in previous.files} if previous is not None else {}
    old_runs: dict[str, list[RunEntry]] = defaultdict(list)
    old_problems: dict[str, list[Problem]] = defaultdict(list)
    if previous is not None:
        for run in previous.runs:
            old_runs[run.path].append(run)
        for problem in previous.problems:
            old_problems[problem.path].append(problem)
    scanned: dict[str, Scanned] = {}
    reused = 0
    stamps: dict[str, Stamp] = {}
    for path in found.files:
        key = str(path)
        old = old_files.get(key)
        try:
            stamps[key] = _stamp(path)
        except OSError as exc:
            scanned[key] = (
                None,
                [],
                [Problem(key, "unreadable", f"{path}: {exc.strerror or exc}")],
            )
            continue
        if old is not None and old.stamp == stamps[key]:
            scanned[key] = (old, old_runs[key], old_problems[key])
            reused += 1
    # Byte-for-byte copies of a file (backups) are read once: the first of each group is
    # scanned, the others get its entries under their own names (see _as_copy).
    labels: dict[str, str] = {}
    copies = _byte_groups(
        [(key, stamp[0], stamp[2]) for key, stamp in stamps.items() if key not in scanned],
        labels,
    )
    done = len(found.files) - sum(1 + len(others) for others in copies.values())

    def scan(paths: list[str]) -> Iterator[str]:
        nonlocal done
        for outcome in run_tasks(scan_task, [(p, None) for p in paths], jobs=jobs, client=client):
            scanned[outcome.database] = (
                outcome.payload
                if outcome.ok
                else (None, [], [Problem(outcome.database, "unreadable", str(outcome.message))])
            )
            done += 1
            if progress is not None:
                progress(done, len(found.files), outcome.database)
            yield outcome.database

    again: list[str] = []
    for first in scan(list(copies)):
        for copy in copies[first]:
            copied = _as_copy(scanned[first], stamps[first], copy, stamps[copy])
            if copied is None:
                again.append(copy)  # read it itself
                continue
            scanned[copy] = copied
            done += 1
            if progress is not None:
                progress(done, len(found.files), copy)
    for _ in scan(again):
        pass
    catalog = Catalog(problems=list(found.problems), reused_files=reused)
    for path in found.files:  # in walk order, whatever order the tasks finished in
        entry, runs, problems = scanned[str(path)]
        if entry is not None:
            catalog.files.append(entry)
        catalog.runs.extend(runs)
        catalog.problems.extend(problems)
    if checksums:
        _add_checksums(catalog, jobs, client, labels)
    return catalog


def _as_copy(scanned: Scanned, stamp: Stamp, copy: str, copy_stamp: Stamp) -> Scanned | None:
    """The catalogue entries of ``copy``, a byte-for-byte copy of the file ``scanned``
    (its stamp when it was hashed ``stamp``): those of the file under the copy's name and
    stamp. None where they could depend on more than the bytes: a file with problems
    (their messages name it), with runs whose data live in other files (found relative
    to its folder), or that changed between its hashing and its reading."""
    entry, runs, problems = scanned
    if entry is None or entry.kind != "qcodes" or problems or entry.stamp != stamp:
        return None
    if any(run.data_location not in ("table", "nowhere") for run in runs):
        return None
    size, mtime_ns, wal_size, wal_mtime_ns = copy_stamp
    copied = _changed(
        entry,
        path=copy,
        size=size,
        mtime_ns=mtime_ns,
        wal_size=wal_size,
        wal_mtime_ns=wal_mtime_ns,
    )
    return copied, [_changed(run, path=copy) for run in runs], []


_Entry = TypeVar("_Entry", FileEntry, RunEntry)


def _changed(entry: _Entry, **changes: Any) -> _Entry:
    """``dataclasses.replace(entry, **changes)`` for the catalogue's entries, thousands at
    a time: the instance's fields copied with ``changes``, without ``replace``'s call of
    ``__init__`` field by field, which cost a tenth of a catalogue of copies. The entries
    are plain frozen dataclasses (no ``__post_init__``, no slots, nothing derived), so
    the two give equal objects."""
    copied = object.__new__(type(entry))
    copied.__dict__.update(entry.__dict__, **changes)
    return copied


def _add_checksums(
    catalog: Catalog,
    jobs: int,
    client: Client | None,
    labels: dict[str, str],
) -> None:
    """Checksums of the data of every run whose guid occurs more than once, where the
    catalogue does not have one yet. Files that are byte-for-byte copies of each other
    (:func:`_identical_files`) are read once: the checksums of one are the others'.
    Entries get their checksums in copies (:func:`_changed`): those taken over from a
    previous catalogue are the caller's."""
    counts: dict[str, int] = defaultdict(int)
    for run in catalog.runs:
        if run.guid is not None:
            counts[run.guid] += 1
    wanted: dict[str, dict[int, int]] = defaultdict(dict)  # path -> run_id -> index
    for index, run in enumerate(catalog.runs):
        if run.guid is not None and counts[run.guid] > 1 and run.data_checksum is None:
            wanted[run.path][run.run_id] = index
    copies = _identical_files(catalog.files, wanted, labels)
    read = [path for path in wanted if path in copies]
    leftover = _read_checksums(catalog, wanted, read, copies, jobs, client)
    # Copies whose original could not be read are read themselves (their problems are theirs).
    _read_checksums(catalog, wanted, leftover, {}, jobs, client)


def _read_checksums(
    catalog: Catalog,
    wanted: dict[str, dict[int, int]],
    paths: list[str],
    copies: dict[str, list[str]],
    jobs: int,
    client: Client | None,
) -> list[str]:
    """Checksum tasks for ``paths``, each result given to the file and to its byte-for-byte
    ``copies`` too; returns the copies that did not get every checksum they want."""
    tasks = []
    for path in paths:
        run_ids = set(wanted[path]).union(*(wanted[copy] for copy in copies.get(path, ())))
        # The same run_id in a byte-for-byte copy is the same run in the same table.
        tables: dict[int, tuple[int, str, int | None]] = {}
        for copy in (path, *copies.get(path, ())):
            for run_id, at in wanted[copy].items():
                run = catalog.runs[at]
                if run.data_location == "table" and run.data_table is not None:
                    tables.setdefault(run_id, (run_id, run.data_table, run.number_of_results))
        tasks.append((path, None, tuple(sorted(run_ids)), tuple(sorted(tables.values()))))
    got: dict[str, set[int]] = defaultdict(set)
    for outcome in run_tasks(checksum_task, tasks, jobs=jobs, client=client):
        if not outcome.ok:
            catalog.problems.append(
                Problem(outcome.database, "checksum_failed", str(outcome.message))
            )
            continue
        for run_id, result in outcome.payload.items():
            if isinstance(result, Problem):
                if run_id in wanted[outcome.database]:
                    catalog.problems.append(result)
                continue
            for path in (outcome.database, *copies.get(outcome.database, ())):
                index = wanted[path].get(run_id)
                if index is not None:
                    catalog.runs[index] = _changed(catalog.runs[index], data_checksum=result)
                    got[path].add(run_id)
    return [
        copy
        for path in paths
        for copy in copies.get(path, ())
        if not set(wanted[copy]) <= got[copy]
    ]


def _identical_files(
    files: Sequence[FileEntry], wanted: dict[str, dict[int, int]], labels: dict[str, str]
) -> dict[str, list[str]]:
    """The files of ``wanted`` grouped by their bytes (:func:`_byte_groups`; ``labels``
    holds the groups the scan found)."""
    return _byte_groups(
        [(entry.path, entry.size, entry.wal_size) for entry in files if entry.path in wanted],
        labels,
    )


def _byte_groups(
    files: Sequence[tuple[str, int, int | None]], labels: dict[str, str]
) -> dict[str, list[str]]:
    """``files`` (path, size, size of its ``-wal``) grouped by their bytes: the first of
    each group (in the order given) maps to the others (an unmatched file maps to none).
    Only files of equal sizes are compared (:func:`~qcsql.archive.checksum.same_bytes`);
    ``labels`` keeps, by path, the first file of each group found, so that files already
    compared are not read again. A WAL file with a ``-shm`` is never grouped (a writer
    may be changing it while the other is read), nor a file with a ``-journal`` beside it
    (a hot journal changes what SQLite reads of that file alone)."""
    by_size: dict[tuple[int, int | None], list[str]] = defaultdict(list)
    for path, size, wal_size in files:
        shared = (wal_size is not None and side_file(Path(path), "-shm").exists()) or (
            side_file(Path(path), "-journal").exists()
        )
        key = (-1 - len(by_size), None) if shared else (size, wal_size)
        by_size[key].append(path)
    groups: dict[str, list[str]] = {}
    for paths in by_size.values():
        if len(paths) == 1:
            groups[paths[0]] = []
            continue
        if any(path not in labels for path in paths):
            named = {Path(path): path for path in paths}
            for part in same_bytes(list(named)):
                for member in part:
                    labels[named[member]] = named[part[0]]
        by_label: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            by_label[labels[path]].append(path)
        for same in by_label.values():
            groups[same[0]] = same[1:]
    return groups
