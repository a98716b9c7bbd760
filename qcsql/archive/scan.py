"""Reading one candidate file of an archive into the catalogue's entries, and the data
checksums of some of its runs: the two fan-out tasks of :func:`qcsql.archive.catalog.build_catalog`.

Each file is opened read-only through :class:`~qcsql.database.Database` (so nothing is
written, no descriptor of a database is ever closed under another connection, and a
WAL file copied without its ``-shm`` is read through a private snapshot copy). This is
the one module of the catalogue that imports the database readers (SQLAlchemy, numpy,
pydantic): :mod:`qcsql.archive.catalog` imports it only once some file must be read.
"""

from __future__ import annotations

import base64
import functools
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcsql.archive.checksum import ByContent, run_checksums, table_checksums
from qcsql.archive.discover import Problem
from qcsql.archive.entries import (
    RUN_COLUMNS_AS_QCODES_NAMES_THEM,
    FileEntry,
    Parameter,
    RunEntry,
    file_stamp,
)
from qcsql.archive.fanout import Outcome
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
from qcsql.sqlite.connection import ReadOnlyConnection
from qcsql.sqlite.files import quote_identifier

__all__ = ["catalog_database", "checksum_task", "scan_task"]


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
    stamp = file_stamp(path)
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
    known: ByContent | None = None,
) -> Outcome:
    """Checksums of the data of runs ``run_ids`` of ``path`` as a fan-out task: the payload
    maps each run to its checksum, or to a :class:`Problem` where it could not be read.
    ``tables`` are the results tables in the file of those runs that have one, with their
    rows, as the catalogue found them: these are hashed straight from their tables,
    without reading the file's runs again (only the other runs need :class:`Database`).
    ``known``: checksums by the tables' content, shared by the tasks of one catalogue that
    run in this process (a task in another process gets a copy of its own); it only
    spares reads, the results are the same without it."""
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
                found.update(
                    table_checksums(db.store.connection, list(in_tables.items()), rows, known)
                )
        else:
            connection = ReadOnlyConnection(path)
            try:
                found = table_checksums(connection, list(in_tables.items()), rows, known)
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
