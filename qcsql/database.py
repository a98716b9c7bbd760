"""A QCoDeS database opened read-only: its experiments and runs.

The version-aware part lives here: which columns exist is read from the file
once, the table models come from :mod:`qcsql.schema.tables`, and every old-schema
fallback (no guid, no run_description, no captured ids) is applied in one
place, so :class:`~qcsql.runs.Run` never needs to know the schema version.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from qcsql.data.location import SideStorage
from qcsql.data.parameter_data import ParameterData, read_parameter_data
from qcsql.data.results import ResultsTable
from qcsql.errors import (
    AmbiguousRunSpecError,
    NotQCoDeSError,
    QcsqlError,
    RunDescriptionError,
    RunNotFoundError,
    SchemaError,
    UnknownSchemaVersionWarning,
)
from qcsql.runs import Run
from qcsql.schema.description import (
    LayoutRow,
    RunDescription,
    description_from_columns,
    description_from_layouts,
    parse_run_description,
)
from qcsql.schema.guids import parse_guid
from qcsql.schema.rows import Experiment, RunRow
from qcsql.schema.tables import bind_runs_table, tables_for
from qcsql.schema.versions import NEWEST_KNOWN_VERSION, STANDARD_RUN_COLUMNS, model_version_for
from qcsql.sqlite.connection import Access, ReadOnlyConnection, side_file

__all__ = ["Database", "DatabaseSummary", "open_database"]

REQUIRED_TABLES = ("experiments", "runs")
# From this schema version on, runs.run_description is what QCoDeS reads; before
# it, QCoDeS rebuilds descriptions from layouts/dependencies when it upgrades.
FIRST_VERSION_WITH_TRUSTED_DESCRIPTION = 4

# The light columns of a run, in RunRow order; missing ones are selected as NULL.
_LISTED_RUN_COLUMNS = (
    "run_id",
    "exp_id",
    "name",
    "result_table_name",
    "result_counter",
    "run_timestamp",
    "completed_timestamp",
    "is_completed",
    "parameters",
    "guid",
    "captured_run_id",
    "captured_counter",
    "parent_datasets",
)


def open_database(path: str | Path) -> Database:
    """Open a QCoDeS database of any schema version read-only; use it as a context manager."""
    return Database(path)


@dataclass(frozen=True)
class DatabaseSummary:
    """What ``qcsql info`` reports."""

    path: Path
    size_bytes: int
    wal_bytes: int | None
    schema_version: int
    journal_mode: str
    access: str
    experiments: int
    runs: int
    completed_runs: int
    metadata_columns: tuple[str, ...]


class Database:
    """A QCoDeS SQLite file, opened read-only; never upgraded, never written.

    Threads may share a ``Database``: its one SQLite connection is guarded by a lock
    held for one statement (or one window of pages) at a time, so their reads are
    correct and take turns; a ``Database`` per thread reads side by side. Closing it
    while another thread reads makes that read fail with :class:`DatabaseOpenError`.
    """

    def __init__(self, path: str | Path) -> None:
        self._elsewhere = SideStorage(self)
        self._conn = ReadOnlyConnection(path)
        try:
            self._inspect_schema()
        except BaseException:
            self._conn.close()
            raise

    def _inspect_schema(self) -> None:
        with self._conn.reading() as sql:
            self.schema_version: int = int(sql.exec_driver_sql("PRAGMA user_version").scalar_one())
            self._table_names = self._read_table_names(sql)
            missing = [name for name in REQUIRED_TABLES if name not in self._table_names]
            if missing:
                found = ", ".join(sorted(self._table_names)) or "none"
                raise NotQCoDeSError(
                    f"{self.path}: is an SQLite database but not a QCoDeS one "
                    f"(no {' or '.join(repr(m) for m in missing)} table; tables found: {found})",
                    path=self.path,
                )
            run_columns = [row[1] for row in sql.exec_driver_sql('PRAGMA table_info("runs")')]
        if "run_id" not in run_columns:
            raise SchemaError(
                f"{self.path}: its runs table has no run_id column "
                f"(it has {', '.join(run_columns) or 'none'}); the file is damaged",
                path=self.path,
                table="runs",
                column="run_id",
            )
        if self.schema_version > NEWEST_KNOWN_VERSION:
            warnings.warn(
                f"{self.path}: schema version {self.schema_version} is newer than the newest "
                f"qcsql knows ({NEWEST_KNOWN_VERSION}); reading it as version "
                f"{NEWEST_KNOWN_VERSION}, best-effort",
                UnknownSchemaVersionWarning,
                stacklevel=3,
            )
        self.model = tables_for(model_version_for(self.schema_version))
        self._runs = bind_runs_table(self.model, run_columns)
        self._has_captured_ids = "captured_run_id" in self._runs.c  # schema >= 7
        self.metadata_columns: tuple[str, ...] = tuple(
            name for name in run_columns if name not in STANDARD_RUN_COLUMNS
        )

    @staticmethod
    def _read_table_names(sql: sa.Connection) -> set[str]:
        rows = sql.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._conn.path

    @property
    def access(self) -> Access:
        """How the file is being read (see :mod:`qcsql.sqlite.connection`)."""
        return self._conn.access

    @property
    def journal_mode(self) -> str:
        return "wal" if self._conn.header.wal_mode else "rollback"

    def close(self) -> None:
        self._elsewhere.close()
        self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<qcsql.Database {str(self.path)!r} schema v{self.schema_version}>"

    def has_table(self, name: str) -> bool:
        """Whether ``name`` is a table now; looks again when a run created it since opening."""
        if name not in self._table_names:
            with self._conn.reading() as sql:
                self._table_names = self._read_table_names(sql)
        return name in self._table_names

    # -- experiments -----------------------------------------------------------------------

    def experiments(self) -> list[Experiment]:
        table = self.model.experiments
        statement = sa.select(*table.columns).order_by(table.c.exp_id)
        with self._conn.reading(table="experiments") as sql:
            rows = sql.execute(statement).all()
        return [
            Experiment(
                exp_id=row.exp_id,
                name=row.name,
                sample_name=row.sample_name,
                start_time=_float_or_none(row.start_time),
                end_time=_float_or_none(row.end_time),
                run_counter=row.run_counter,
                format_string=row.format_string,
            )
            for row in rows
        ]

    # -- runs --------------------------------------------------------------------------------

    def _run_select(self) -> sa.Select[Any]:
        runs = self._runs.c
        experiments = self.model.experiments.c
        listed = [runs[name] if name in runs else sa.null() for name in _LISTED_RUN_COLUMNS]
        metadata = [runs[name] for name in self.metadata_columns]
        joined = self._runs.outerjoin(self.model.experiments, runs.exp_id == experiments.exp_id)
        return (
            sa.select(*listed, experiments.name, experiments.sample_name, *metadata)
            .select_from(joined)
            .order_by(runs.run_id)
        )

    def _run_rows(self, where: sa.ColumnElement[bool] | None = None) -> list[RunRow]:
        statement = self._run_select()
        if where is not None:
            statement = statement.where(where)
        with self._conn.reading(table="runs") as sql:
            rows = sql.execute(statement).all()
        return [self._run_row(tuple(row)) for row in rows]

    def _run_row(self, values: tuple[Any, ...]) -> RunRow:
        (
            run_id,
            exp_id,
            name,
            table_name,
            counter,
            run_timestamp,
            completed_timestamp,
            is_completed,
            parameters,
            guid,
            captured_run_id,
            captured_counter,
            parent_datasets,
            exp_name,
            sample_name,
        ) = values[: len(_LISTED_RUN_COLUMNS) + 2]
        metadata_values = values[len(_LISTED_RUN_COLUMNS) + 2 :]
        has_captured = self._has_captured_ids
        return RunRow(
            run_id=run_id,
            exp_id=exp_id,
            name=name,
            table_name=table_name,
            counter=counter,
            run_timestamp_raw=_float_or_none(run_timestamp),
            completed_timestamp_raw=_float_or_none(completed_timestamp),
            is_completed=bool(is_completed),
            parameters=parameters,
            guid=guid,
            captured_run_id=captured_run_id if has_captured else run_id,
            captured_counter=captured_counter if has_captured else counter,
            parent_datasets_raw=parent_datasets,
            exp_name=exp_name,
            sample_name=sample_name,
            metadata={
                column: value
                for column, value in zip(self.metadata_columns, metadata_values, strict=True)
                if value is not None
            },
        )

    def runs(self, start_run_id: int = 1) -> list[Run]:
        """Every run from ``start_run_id`` on, by run_id, from one query (no JSON parsed)."""
        rows = self._run_rows(self._runs.c.run_id >= start_run_id)
        return [Run(self, row) for row in rows]

    def load_by_id(self, run_id: int) -> Run:
        rows = self._run_rows(self._runs.c.run_id == run_id)
        if not rows:
            raise RunNotFoundError(
                f"run_id={run_id} is not in {self.path} ({self._run_id_range()}); "
                f"list them with 'qcsql runs {self.path}'",
                path=self.path,
                run_id=run_id,
                table="runs",
            )
        return Run(self, rows[0])

    def load_by_guid(self, guid: str) -> Run:
        if "guid" not in self._runs.c:
            raise RunNotFoundError(
                f"{self.path} is a schema v{self.schema_version} database, which has no guids; "
                "load its runs by run_id",
                path=self.path,
                table="runs",
            )
        rows = self._run_rows(self._runs.c.guid == guid)
        if not rows:
            raise RunNotFoundError(
                f"no run with guid {guid!r} in {self.path}", path=self.path, table="runs"
            )
        if len(rows) > 1:
            raise AmbiguousRunSpecError(
                f"guid {guid!r} is shared by runs {_id_list(rows)} of {self.path}; "
                "load one of them by run_id",
                path=self.path,
                table="runs",
            )
        return Run(self, rows[0])

    def load_by_run_spec(
        self,
        *,
        captured_run_id: int | None = None,
        captured_counter: int | None = None,
        experiment_name: str | None = None,
        sample_name: str | None = None,
        sample_id: int | None = None,
        location: int | None = None,
        work_station: int | None = None,
    ) -> Run:
        """The one run matching every given field (QCoDeS' ``load_by_run_spec``)."""
        runs = self._runs.c
        experiments = self.model.experiments.c
        captured_id_column = runs.captured_run_id if "captured_run_id" in runs else runs.run_id
        captured_counter_column = (
            runs.captured_counter if "captured_counter" in runs else runs.result_counter
        )
        conditions: list[sa.ColumnElement[bool]] = []
        for column, value in (
            (captured_id_column, captured_run_id),
            (captured_counter_column, captured_counter),
            (experiments.name, experiment_name),
            (experiments.sample_name, sample_name),
        ):
            if value is not None:
                conditions.append(column == value)
        rows = self._run_rows(sa.and_(sa.true(), *conditions))
        wanted_parts = {
            "sample": sample_id,
            "location": location,
            "work_station": work_station,
        }
        if any(value is not None for value in wanted_parts.values()):
            rows = [row for row in rows if _guid_matches(row.guid, wanted_parts)]
        spec = (
            ", ".join(
                f"{key}={value!r}"
                for key, value in (
                    ("captured_run_id", captured_run_id),
                    ("captured_counter", captured_counter),
                    ("experiment_name", experiment_name),
                    ("sample_name", sample_name),
                    ("sample_id", sample_id),
                    ("location", location),
                    ("work_station", work_station),
                )
                if value is not None
            )
            or "no criteria"
        )
        if not rows:
            raise RunNotFoundError(
                f"no run of {self.path} matches {spec}", path=self.path, table="runs"
            )
        if len(rows) > 1:
            listing = "; ".join(
                f"run_id={row.run_id} captured_run_id={row.captured_run_id} "
                f"exp={row.exp_name!r} sample={row.sample_name!r} guid={row.guid}"
                for row in rows[:10]
            )
            more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
            raise AmbiguousRunSpecError(
                f"{len(rows)} runs of {self.path} match {spec}: {listing}{more}; "
                "give more fields to pick one",
                path=self.path,
                table="runs",
            )
        return Run(self, rows[0])

    def _run_id_range(self) -> str:
        runs = self._runs.c
        with self._conn.reading(table="runs") as sql:
            low, high, count = sql.execute(
                sa.select(sa.func.min(runs.run_id), sa.func.max(runs.run_id), sa.func.count())
            ).one()
        if not count:
            return "it has no runs"
        return (
            f"runs {low}..{high}"
            if high - low + 1 == count
            else f"{count} runs between {low} and {high}"
        )

    # -- what Run asks for lazily --------------------------------------------------------------

    def _scalar_of_run(self, run: Run, column: str) -> Any:
        if column not in self._runs.c:
            return None
        statement = sa.select(self._runs.c[column]).where(self._runs.c.run_id == run.run_id)
        with self._conn.reading(run_id=run.run_id, table="runs") as sql:
            return sql.execute(statement).scalar_one_or_none()

    def _snapshot_raw(self, run: Run) -> str | None:
        value = self._scalar_of_run(run, "snapshot")
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return None if value is None else str(value)

    def _describe(self, run: Run) -> RunDescription:
        stored = None
        if self.schema_version >= FIRST_VERSION_WITH_TRUSTED_DESCRIPTION:
            stored = self._scalar_of_run(run, "run_description")
        try:
            if stored is not None:
                return parse_run_description(stored)
            return self._description_from_layouts(run)
        except ValueError as exc:
            source = "run_description" if stored is not None else "layouts"
            raise RunDescriptionError(
                f"{self.path}, run {run.run_id}: the {source} cannot be understood ({exc})",
                path=self.path,
                run_id=run.run_id,
                table="runs" if stored is not None else "layouts",
                column="run_description" if stored is not None else None,
            ) from exc

    def _description_from_layouts(self, run: Run) -> RunDescription:
        if "layouts" not in self._table_names:
            return description_from_columns(self._column_types(run))
        layouts = self.model.layouts.c
        dependencies = self.model.dependencies.c
        layout_statement = (
            sa.select(
                layouts.layout_id,
                layouts.parameter,
                layouts.label,
                layouts.unit,
                layouts.inferred_from,
            )
            .where(layouts.run_id == run.run_id)
            .order_by(layouts.layout_id)
        )
        with self._conn.reading(run_id=run.run_id, table="layouts") as sql:
            layout_rows = [
                LayoutRow.model_validate(row._mapping) for row in sql.execute(layout_statement)
            ]
            ids = [row.layout_id for row in layout_rows]
            links: Sequence[tuple[int, int, int]] = []
            if ids and "dependencies" in self._table_names:
                link_statement = (
                    sa.select(
                        dependencies.dependent, dependencies.independent, dependencies.axis_num
                    )
                    .where(dependencies.dependent.in_(ids) | dependencies.independent.in_(ids))
                    .order_by(sa.literal_column("rowid"))
                )
                links = [tuple(row) for row in sql.execute(link_statement)]
        column_types = self._column_types(run) if layout_rows else {}
        return description_from_layouts(layout_rows, links, column_types)

    def _column_types(self, run: Run) -> dict[str, str]:
        if run.table_name is None or not self.has_table(run.table_name):
            return {}
        with self._conn.reading(run_id=run.run_id, table=run.table_name) as sql:
            rows = sql.exec_driver_sql(f"PRAGMA table_info({_quote(run.table_name)})").all()
        return {row[1]: str(row[2]) for row in rows}

    def _parameter_data(
        self, run: Run, names: Sequence[str], start: int | None, end: int | None
    ) -> ParameterData:
        description = run.description
        if not names and not description.interdependencies.parameters:
            return {}  # pristine, or nothing described: QCoDeS returns {} too
        exported = self._elsewhere.exported_data(run, names, start, end)
        if exported is not None:
            return exported
        table = self._results_table(run)
        where = f"{self.path}, run {run.run_id}"
        return read_parameter_data(table, description, names, start, end, where)

    def _results_table(self, run: Run) -> ResultsTable:
        if run.table_name is not None and not self.has_table(run.table_name):
            recorded = self._scalar_of_run(run, "raw_data_db_path")
            if recorded:
                return self._elsewhere.results_table(run, str(recorded))
        if run.table_name is None or not self.has_table(run.table_name):
            raise SchemaError(
                f"{self.path}, run {run.run_id}: its results table {run.table_name!r} is not "
                "in the file (an in-memory or metadata-only run keeps its data elsewhere)",
                path=self.path,
                run_id=run.run_id,
                table=run.table_name,
            )
        return ResultsTable(self._conn, run.run_id, run.table_name)

    def _count_results(self, run: Run) -> int:
        if run.table_name is None:
            return 0
        if not self.has_table(run.table_name):
            try:
                table = self._results_table(run)
            except QcsqlError:
                return 0
            return table.count_rows()
        statement = sa.select(sa.func.count()).select_from(sa.table(run.table_name))
        with self._conn.reading(run_id=run.run_id, table=run.table_name) as sql:
            return int(sql.execute(statement).scalar_one())

    # -- summary -------------------------------------------------------------------------------

    def summary(self) -> DatabaseSummary:
        runs = self._runs.c
        completed = runs.is_completed if "is_completed" in runs else sa.literal(0)
        with self._conn.reading(table="runs") as sql:
            n_runs, n_completed = sql.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.case((completed == 1, 1), else_=0)), 0),
                )
            ).one()
            n_experiments = sql.execute(
                sa.select(sa.func.count()).select_from(self.model.experiments)
            ).scalar_one()
        wal = side_file(self.path, "-wal")
        return DatabaseSummary(
            path=self.path,
            size_bytes=self.path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else None,
            schema_version=self.schema_version,
            journal_mode=self.journal_mode,
            access=self.access.value,
            experiments=int(n_experiments),
            runs=int(n_runs),
            completed_runs=int(n_completed),
            metadata_columns=self.metadata_columns,
        )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _id_list(rows: Sequence[RunRow]) -> str:
    return ", ".join(str(row.run_id) for row in rows)


def _guid_matches(guid: str | None, wanted: dict[str, int | None]) -> bool:
    if guid is None:
        return False
    try:
        parts = parse_guid(guid)
    except ValueError:
        return False
    return all(value is None or getattr(parts, key) == value for key, value in wanted.items())
