"""A read-only health report of a QCoDeS database, run by run, that never raises.

People audit old lab databases precisely because they are old, odd or damaged, so
every check catches what it finds and reports it as a :class:`Finding` instead of
stopping: a damaged run does not hide the others.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa

from qcsql.archive.fanout import Outcome, failure, find_databases, run_tasks
from qcsql.database import Database, Run, open_database
from qcsql.errors import (
    DataElsewhereError,
    DataNotFoundWarning,
    NotQCoDeSError,
    NotSQLiteError,
    QcsqlError,
)
from qcsql.schema.guids import is_well_formed
from qcsql.schema.versions import NEWEST_KNOWN_VERSION

if TYPE_CHECKING:
    from dask.distributed import Client

__all__ = ["AuditReport", "Finding", "audit", "audit_archive", "audit_task"]

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or odd) about the file or one run."""

    level: Level
    code: str
    message: str
    run_id: int | None = None


@dataclass
class AuditReport:
    path: Path
    schema_version: int | None = None
    journal_mode: str | None = None
    runs_checked: int = 0
    quick_check: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.findings

    def add(self, level: Level, code: str, message: str, run_id: int | None = None) -> None:
        self.findings.append(Finding(level, code, message, run_id))


def audit(path: str | Path, *, deep: bool = False) -> AuditReport:
    """Check the file and every run; ``deep`` decodes every value instead of a sample."""
    report = AuditReport(path=Path(path))
    try:
        db = open_database(path)
    except QcsqlError as exc:
        report.add("error", "cannot_open", str(exc))
        return report
    with db:
        _audit_open(db, report, deep)
    return report


def _audit_open(db: Database, report: AuditReport, deep: bool) -> None:
    """:func:`audit` of a database it opened."""
    report.schema_version = db.schema_version
    report.journal_mode = db.journal_mode
    _check_database(db, report)
    try:
        runs = db.runs()
    except QcsqlError as exc:
        report.add("error", "cannot_list_runs", str(exc))
        return
    _check_guids(runs, report)
    for run in runs:
        report.runs_checked += 1
        try:
            _check_run(db, run, report, deep)
        except QcsqlError as exc:
            report.add("error", "run_unreadable", str(exc), run.run_id)


def _check_database(db: Database, report: AuditReport) -> None:
    if db.schema_version > NEWEST_KNOWN_VERSION:
        report.add(
            "warning",
            "schema_newer",
            f"schema version {db.schema_version} is newer than {NEWEST_KNOWN_VERSION}",
        )
    try:
        with db.store.connection.reading() as sql:
            report.quick_check = [row[0] for row in sql.exec_driver_sql("PRAGMA quick_check")]
            tables = {
                n
                for (n,) in sql.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
            }
            referenced = {
                n
                for (n,) in sql.execute(sa.select(db.store.model.runs.c.result_table_name))
                if n is not None
            }
    except QcsqlError as exc:
        report.add("error", "cannot_check", str(exc))
        return
    if report.quick_check != ["ok"]:
        report.add(
            "error", "quick_check", "SQLite's quick_check: " + "; ".join(report.quick_check[:5])
        )
    if "layouts" not in tables:
        report.add(
            "warning",
            "no_layouts_table",
            "no layouts table (a 2017 prototype file): parameters are read from the results tables' columns",
        )
    standard = {"experiments", "runs", "layouts", "dependencies", "sqlite_sequence", "sqlite_stat1"}
    for orphan in sorted(tables - referenced - standard):
        report.add("warning", "orphaned_table", f"table {orphan!r} belongs to no run")


def _check_guids(runs: list[Run], report: AuditReport) -> None:
    counts = Counter(run.guid for run in runs if run.guid is not None)
    for run in runs:
        if run.guid is None:
            continue
        if not is_well_formed(run.guid):
            report.add(
                "warning",
                "guid_malformed",
                f"guid {run.guid!r} is not 8-4-4-4-12 lower-case hex",
                run.run_id,
            )
        if counts[run.guid] > 1:
            report.add(
                "error",
                "guid_duplicate",
                f"guid {run.guid} is shared by {counts[run.guid]} runs",
                run.run_id,
            )


def _check_run(db: Database, run: Run, report: AuditReport, deep: bool) -> None:
    run_id = run.run_id
    if run.completed and run.completed_timestamp_raw is None:
        report.add(
            "warning",
            "completed_without_timestamp",
            "marked completed but has no completed_timestamp",
            run_id,
        )
    if not run.completed and run.completed_timestamp_raw is not None:
        report.add(
            "warning",
            "timestamp_without_completion",
            "has a completed_timestamp but is not marked completed",
            run_id,
        )
    if run.started and not run.completed:
        report.add(
            "warning",
            "never_completed",
            "started but never marked completed (still running, or its process died)",
            run_id,
        )
    if not run.started and not run.completed:
        report.add("warning", "never_started", "created but never started (pristine)", run_id)
    if "measurement_exception" in run.metadata:
        first = str(run.metadata["measurement_exception"]).strip().splitlines()[-1:]
        report.add(
            "warning", "measurement_exception", f"the measurement raised: {' '.join(first)}", run_id
        )
    try:
        description = run.description
    except QcsqlError as exc:
        report.add("error", "run_description", str(exc), run_id)
        return
    if description.source == "run_description" and db.schema_version >= 4:
        _check_against_layouts(db, run, report)
    if run.table_name is None or not db.has_table(run.table_name):
        if description.interdependencies.parameters:
            _check_data_elsewhere(run, report)
        return
    if run.number_of_results == 0:
        report.add("warning", "no_rows", "its results table holds no rows", run_id)
        return
    if not description.interdependencies.parameters:
        return
    try:
        if deep:
            run.get_parameter_data()
        else:  # a sample: the first and the last row of every tree decode
            _decode_first_and_last_rows(run)
    except QcsqlError as exc:
        report.add("error", "data_undecodable", str(exc), run_id)
        return
    _check_shapes(run, report)


def _decode_first_and_last_rows(run: Run) -> None:
    table = run.results_table()
    upto = table.max_id()
    for top in run.description.interdependencies.top_level_parameters:
        rows = table.locate(top, None, None, upto).rows  # each tree has its own rows
        run.get_parameter_data(top, end=1)
        if rows > 1:
            run.get_parameter_data(top, start=rows, end=rows)


def _check_data_elsewhere(run: Run, report: AuditReport) -> None:
    """A run without results table in the file: its data must be where the file says. One
    whose data are nowhere (never exported, or the export gone) reads as no data with a
    :class:`DataNotFoundWarning`, as QCoDeS loads it; the audit reports that as a finding
    rather than letting the warning escape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataNotFoundWarning)  # raised, to be reported
            run.get_parameter_data()
    except DataNotFoundWarning as warning:
        report.add("error", "data_not_found", str(warning), run.run_id)
    except DataElsewhereError as exc:
        report.add("error", "data_not_found", str(exc), run.run_id)
    except QcsqlError as exc:
        report.add("error", "results_table_missing", str(exc), run.run_id)


def _check_against_layouts(db: Database, run: Run, report: AuditReport) -> None:
    try:
        stored_names = set(run.description.interdependencies.parameters)
        legacy = db.store.description_from_layouts(run.row)
    except (QcsqlError, ValueError):
        return
    legacy_names = set(legacy.interdependencies.parameters)
    if legacy.source == "layouts" and legacy_names and legacy_names != stored_names:
        report.add(
            "warning",
            "layouts_disagree",
            f"run_description names {sorted(stored_names)}, layouts {sorted(legacy_names)}",
            run.run_id,
        )
    if run.description.version == 0 and _is_4a(db, run):
        report.add(
            "warning",
            "run_description_4a",
            "run_description is in the unreleased '4a' form QCoDeS cannot read",
            run.run_id,
        )


def _is_4a(db: Database, run: Run) -> bool:
    raw = db.store.scalar_of_run(run.row, "run_description")
    return isinstance(raw, str) and '"interdependencies": {"parameters"' in raw.replace("'", '"')


def _check_shapes(run: Run, report: AuditReport) -> None:
    shapes = run.shapes or {}
    if not shapes:
        return
    table = run.results_table()
    upto = table.max_id()
    for name, shape in shapes.items():
        if name not in run.description.interdependencies.parameters:
            report.add(
                "warning",
                "shape_of_unknown_parameter",
                f"shapes name {name!r}, which the run does not have",
                run.run_id,
            )
            continue
        rows = table.locate(name, None, None, upto).rows
        try:
            first = run.get_parameter_data(name, end=1)[name][name] if rows else None
        except QcsqlError as exc:  # a declared shape QCoDeS cannot apply either
            report.add("error", "shape_invalid", str(exc), run.run_id)
            continue
        per_row = max(1, first.size) if first is not None else 1  # array rows hold many values
        expected = math.prod(shape) // per_row
        if rows < expected:
            report.add(
                "warning",
                "shape_incomplete",
                f"{name}: {rows} of {expected} rows the declared shape {shape} needs",
                run.run_id,
            )
        elif rows > expected:
            report.add(
                "warning",
                "shape_exceeded",
                f"{name}: {rows} rows, more than the declared shape {shape}",
                run.run_id,
            )


def audit_task(database: str, run_id: None, deep: bool) -> Outcome:
    """:func:`audit` as a fan-out task (:mod:`qcsql.archive.fanout`): the report is the
    outcome's payload. The task opens the file itself, once, and a file it cannot open
    as a QCoDeS database is a failed outcome naming why (:func:`audit_archive` leaves
    out files found in folders that are not QCoDeS databases, as
    :func:`~qcsql.archive.fanout.find_databases` does); an audit never raises for what
    the file holds."""
    try:
        db = open_database(database)
    except (QcsqlError, OSError) as exc:
        return failure(database, run_id, exc)
    report = AuditReport(path=Path(database))
    with db:
        _audit_open(db, report, deep)
    return Outcome(database, run_id, True, payload=report)


def audit_archive(
    paths: Sequence[str | Path],
    *,
    deep: bool = False,
    jobs: int = 1,
    client: Client | None = None,
) -> Iterator[Outcome]:
    """Audit every QCoDeS database under ``paths`` (files and folders, recursively), one
    task per file, in ``jobs`` local processes or on a ``dask.distributed`` ``client``;
    yields an :class:`~qcsql.archive.fanout.Outcome` per file as it finishes, whose
    ``payload`` is its :class:`AuditReport` (a failed outcome for a path given that is
    not a QCoDeS database, a database that cannot be opened, or a task that died).
    Each file is opened once, by its task: telling QCoDeS databases from other files
    beforehand would open every file twice."""
    inputs = find_databases(paths, list_runs=False, open_files=False)
    yield from inputs.failures
    named = {str(Path(p).expanduser().absolute()) for p in paths}
    tasks = [(str(path), None, deep) for path, _ in inputs.databases]
    for outcome in run_tasks(audit_task, tasks, jobs=jobs, client=client):
        if outcome.error_type in _NOT_A_DATABASE and outcome.database not in named:
            continue  # a file of a folder that is not a QCoDeS database: not audited
        yield outcome


_NOT_A_DATABASE = {NotSQLiteError.__name__, NotQCoDeSError.__name__}
