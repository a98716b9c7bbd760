"""The runs and experiments of one QCoDeS file, read as its schema version has them.

The version-aware part of qcsql lives here: which columns exist is read from the
file once, the table models come from :mod:`qcsql.schema.tables`, and every
old-schema fallback (no guid, no run_description, no captured ids, layouts instead
of a description) is applied in one place, so that nothing above needs to know the
schema version. Every layer above talks to the file's runs through one
:class:`RunStore`; ``qcsql.Database`` is its public face.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from qcsql.errors import (
    NotQCoDeSError,
    RunDescriptionError,
    SchemaError,
    UnknownSchemaVersionWarning,
)
from qcsql.schema.description import (
    LayoutRow,
    RunDescription,
    description_from_columns,
    description_from_layouts,
    parse_run_description,
)
from qcsql.schema.rows import Experiment, RunRow
from qcsql.schema.tables import bind_runs_table, tables_for
from qcsql.schema.versions import (
    LISTED_RUN_COLUMNS,
    NEWEST_KNOWN_VERSION,
    STANDARD_RUN_COLUMNS,
    model_version_for,
)
from qcsql.sqlite.connection import ReadOnlyConnection
from qcsql.sqlite.files import quote_identifier

__all__ = ["RunStore"]

REQUIRED_TABLES = ("experiments", "runs")
# From this schema version on, runs.run_description is what QCoDeS reads; before
# it, QCoDeS rebuilds descriptions from layouts/dependencies when it upgrades.
FIRST_VERSION_WITH_TRUSTED_DESCRIPTION = 4


class RunStore:
    """The run queries of one file: listing rows, one column of a run, its description.

    Threads may share it, as they share its connection (see
    :class:`~qcsql.sqlite.connection.ReadOnlyConnection`).
    """

    def __init__(self, connection: ReadOnlyConnection) -> None:
        self.connection = connection
        # has_table reads the table names again at most once per loading of runs
        self._rows_generation = self._names_generation = 0
        self._inspect_schema()

    @property
    def path(self) -> Path:
        return self.connection.path

    def _inspect_schema(self) -> None:
        # Plain sqlite3 statements: they run once per file opened, and a catalogue opens
        # hundreds of files, each costing SQLAlchemy's statement set-up more than SQLite.
        with self.connection.reading_raw() as raw:
            self.schema_version: int = int(raw.execute("PRAGMA user_version").fetchone()[0])
            self.table_names = self._read_table_names(raw)
            self.runs_sql = self._read_runs_sql(raw)
            missing = [name for name in REQUIRED_TABLES if name not in self.table_names]
            if missing:
                found = ", ".join(sorted(self.table_names)) or "none"
                raise NotQCoDeSError(
                    f"{self.path}: is an SQLite database but not a QCoDeS one "
                    f"(no {' or '.join(repr(m) for m in missing)} table; tables found: {found})",
                    path=self.path,
                )
            run_columns = [row[1] for row in raw.execute('PRAGMA table_info("runs")').fetchall()]
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
        self.runs = bind_runs_table(self.model, run_columns)
        self.has_captured_ids = "captured_run_id" in self.runs.c  # schema >= 7
        self.metadata_columns: tuple[str, ...] = tuple(
            name for name in run_columns if name not in STANDARD_RUN_COLUMNS
        )
        self._listing = _listing_sql(tuple(run_columns), self.metadata_columns)

    def schema_changed(self) -> bool:
        """Whether the schema version or the runs table's columns differ now from what was
        read at open (QCoDeS' ``add_metadata`` adds a column the first time a key is used;
        an upgrade changes the version), which a store kept open does not see: two
        short reads, for a caller that keeps its store over a file that changes."""
        with self.connection.reading_raw(table="runs") as raw:
            version = int(raw.execute("PRAGMA user_version").fetchone()[0])
            runs_sql = self._read_runs_sql(raw)
        return version != self.schema_version or runs_sql != self.runs_sql

    @staticmethod
    def _read_runs_sql(raw: sqlite3.Connection) -> str | None:
        """The runs table's ``CREATE TABLE`` as SQLite keeps it, which every ``ALTER TABLE
        ADD COLUMN`` rewrites. Read from sqlite_master rather than ``PRAGMA table_info``:
        a pragma answers from the schema the connection cached, a SELECT from the file."""
        row = raw.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
        ).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _read_table_names(raw: sqlite3.Connection) -> set[str]:
        rows = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows}

    def has_table(self, name: str) -> bool:
        """Whether ``name`` is a table: looks again when a run may have created it since the
        names were read, at most once per loading of runs (:meth:`run_rows`), so that a
        listing of runs without results tables (metadata-only files) costs no query per run."""
        if name not in self.table_names and self._names_generation != self._rows_generation:
            with self.connection.reading_raw() as raw:
                self.table_names = self._read_table_names(raw)
            self._names_generation = self._rows_generation
        return name in self.table_names

    def experiments(self) -> list[Experiment]:
        table = self.model.experiments
        statement = sa.select(*table.columns).order_by(table.c.exp_id)
        with self.connection.reading(table="experiments") as sql:
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

    def run_select(self) -> sa.Select[Any]:
        runs = self.runs.c
        experiments = self.model.experiments.c
        listed = [runs[name] if name in runs else sa.null() for name in LISTED_RUN_COLUMNS]
        metadata = [runs[name] for name in self.metadata_columns]
        joined = self.runs.outerjoin(self.model.experiments, runs.exp_id == experiments.exp_id)
        return (
            sa.select(*listed, experiments.name, experiments.sample_name, *metadata)
            .select_from(joined)
            .order_by(runs.run_id)
        )

    def run_rows(self, where: sa.ColumnElement[bool] | None = None) -> list[RunRow]:
        statement = self.run_select()
        if where is not None:
            statement = statement.where(where)
        with self.connection.reading(table="runs") as sql:
            rows = sql.execute(statement).all()
        self._rows_generation += 1  # tables made before these rows are seen by has_table
        return [self.run_row(tuple(row)) for row in rows]

    def run_rows_from(self, start_run_id: int) -> list[RunRow]:
        """:meth:`run_rows` of the runs from ``start_run_id`` on, by plain SQL text: the
        listing of every file a catalogue opens, where compiling :meth:`run_select` (a
        new statement for each file's own ``runs`` table) cost more than reading."""
        return self._listed(f"{_RUN_ID} >= ?", start_run_id)

    def run_rows_of_id(self, run_id: int) -> list[RunRow]:
        """:meth:`run_rows` of run ``run_id`` (none or one), by plain SQL text."""
        return self._listed(f"{_RUN_ID} = ?", run_id)

    def _listed(self, condition: str, value: int) -> list[RunRow]:
        select, tail = self._listing
        with self.connection.reading_raw(table="runs") as raw:
            rows = raw.execute(f"{select} WHERE {condition} {tail}", (value,)).fetchall()
        self._rows_generation += 1  # as in run_rows
        return [self.run_row(row) for row in rows]

    def run_row(self, values: tuple[Any, ...]) -> RunRow:
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
            raw_data_db_path,
            exp_name,
            sample_name,
        ) = values[: len(LISTED_RUN_COLUMNS) + 2]
        metadata_values = values[len(LISTED_RUN_COLUMNS) + 2 :]
        has_captured = self.has_captured_ids
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
            raw_data_db_path=None if raw_data_db_path is None else str(raw_data_db_path),
        )

    def run_id_range(self) -> str:
        runs = self.runs.c
        with self.connection.reading(table="runs") as sql:
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

    def results_table_home(self, row: RunRow) -> tuple[str, str | None] | None:
        """Where the run's results table is: ``("table", None)`` in this file,
        ``("raw_data_file", recorded path)`` in the separate raw-data file QCoDeS >= 0.59
        writes, None when neither holds it (an in-memory or metadata-only run). The one
        rule :meth:`in_memory` and :meth:`qcsql.data.location.DataLocator.where` share."""
        if row.table_name is None:
            return None
        if self.has_table(row.table_name):
            return ("table", None)
        recorded = row.raw_data_db_path
        return ("raw_data_file", recorded) if recorded else None

    def in_memory(self, row: RunRow) -> bool:
        """Whether QCoDeS loads the run as a ``DataSetInMem``: no results table of it
        exists, in the file or a raw-data file."""
        return self.results_table_home(row) is None

    def scalar_of_run(self, row: RunRow, column: str) -> Any:
        if column not in self.runs.c:
            return None
        statement = sa.select(self.runs.c[column]).where(self.runs.c.run_id == row.run_id)
        with self.connection.reading(run_id=row.run_id, table="runs") as sql:
            return sql.execute(statement).scalar_one_or_none()

    def snapshot_raw(self, row: RunRow) -> str | None:
        value = self.scalar_of_run(row, "snapshot")
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return None if value is None else str(value)

    def describe(self, row: RunRow) -> RunDescription:
        stored = None
        if self.schema_version >= FIRST_VERSION_WITH_TRUSTED_DESCRIPTION:
            stored = self.scalar_of_run(row, "run_description")
        try:
            if stored is not None:
                return parse_run_description(stored)
            return self.description_from_layouts(row)
        except ValueError as exc:
            source = "run_description" if stored is not None else "layouts"
            raise RunDescriptionError(
                f"{self.path}, run {row.run_id}: the {source} cannot be understood ({exc})",
                path=self.path,
                run_id=row.run_id,
                table="runs" if stored is not None else "layouts",
                column="run_description" if stored is not None else None,
            ) from exc

    def description_from_layouts(self, row: RunRow) -> RunDescription:
        if "layouts" not in self.table_names:
            return description_from_columns(self.column_types(row))
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
            .where(layouts.run_id == row.run_id)
            .order_by(layouts.layout_id)
        )
        with self.connection.reading(run_id=row.run_id, table="layouts") as sql:
            layout_rows = [
                LayoutRow.model_validate(row._mapping) for row in sql.execute(layout_statement)
            ]
            ids = [row.layout_id for row in layout_rows]
            links: Sequence[tuple[int, int, int]] = []
            if ids and "dependencies" in self.table_names:
                link_statement = (
                    sa.select(
                        dependencies.dependent, dependencies.independent, dependencies.axis_num
                    )
                    .where(dependencies.dependent.in_(ids) | dependencies.independent.in_(ids))
                    .order_by(sa.literal_column("rowid"))
                )
                links = [tuple(row) for row in sql.execute(link_statement)]
        column_types = self.column_types(row) if layout_rows else {}
        return description_from_layouts(layout_rows, links, column_types)

    def column_types(self, row: RunRow) -> dict[str, str]:
        if row.table_name is None or not self.has_table(row.table_name):
            return {}
        with self.connection.reading_raw(run_id=row.run_id, table=row.table_name) as raw:
            rows = raw.execute(f"PRAGMA table_info({quote_identifier(row.table_name)})").fetchall()
        return {row[1]: str(row[2]) for row in rows}


_RUN_ID = 'runs."run_id"'


def _listing_sql(
    run_columns: tuple[str, ...], metadata_columns: tuple[str, ...]
) -> tuple[str, str]:
    """:meth:`RunStore.run_select` as plain SQL text, around its ``WHERE`` clause: the
    same columns in the same order (a listed column the file lacks as NULL), the same
    outer join to the run's experiment, the same order. No column of it is converted
    by SQLAlchemy but ``is_completed`` (0/1 to a bool), which :meth:`RunStore.run_row`
    converts the same way."""
    present = set(run_columns)
    listed = [
        f"runs.{quote_identifier(name)}" if name in present else "NULL"
        for name in LISTED_RUN_COLUMNS
    ]
    metadata = [f"runs.{quote_identifier(name)}" for name in metadata_columns]
    columns = ", ".join([*listed, 'experiments."name"', 'experiments."sample_name"', *metadata])
    select = (
        f"SELECT {columns} FROM runs LEFT OUTER JOIN experiments "
        f'ON runs."exp_id" = experiments."exp_id"'
    )
    return select, f"ORDER BY {_RUN_ID}"


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
