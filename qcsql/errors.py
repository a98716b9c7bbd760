"""Everything qcsql raises or warns, in one tree.

A caller that catches :class:`QcsqlError` catches every failure of qcsql;
sqlite3, SQLAlchemy, numpy and h5py exceptions never escape raw, they are
translated where they arise and chained with ``raise ... from``::

    QcsqlError
     ├── DatabaseOpenError          the file cannot be opened as a QCoDeS database
     │    ├── DatabaseNotFoundError nothing (or a directory) at that path
     │    ├── NotSQLiteError        the file is not an SQLite database
     │    └── NotQCoDeSError        SQLite, but not written by QCoDeS
     ├── DatabaseReadError          SQLite failed while reading
     │    ├── DatabaseBusyError     a writer held the file past the busy timeout
     │    └── DatabaseCorruptError  SQLite reports a malformed file
     ├── SchemaError                a table or column qcsql needs is missing
     ├── RunLookupError             no single run matches what was asked
     │    ├── RunNotFoundError      no run matches
     │    ├── AmbiguousRunSpecError several runs match
     │    └── RunNotChosenError     several runs, and none was named
     ├── RunDescriptionError        run_description cannot be understood
     ├── SnapshotError              the snapshot is not valid JSON
     ├── ParameterNotFoundError     the run has no parameter of that name
     ├── DataDecodeError            a value in a results table cannot be decoded
     ├── DataElsewhereError         the run's data are stored outside the file, and not found
     ├── PlanError                  the data cannot be laid out as QCoDeS lays out a dataset
     │    └── DirectLayoutError     QCoDeS' direct layout of a declared shape fails
     ├── ExportError                the export file cannot be written
     │    └── LiveFileError         the live file cannot take the rows that arrived
     └── SyncError                  the sync folder, its state or its database changed under it

    QcsqlWarning (UserWarning)
     ├── DataNotFoundWarning          the run's data were never stored, or their export is gone
     ├── UnknownSchemaVersionWarning  newer schema than qcsql knows, read best-effort
     └── SnapshotMetadataWarning      a malformed qh_meta instrument in the snapshot

Every error keeps the context that locates it in one :class:`Where` (``path``,
``run_id``, ``table``, ``column``; also as attributes of the error), and its message
names them too, because the person reading a sync agent's log needs the file and the
run, not a traceback.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

__all__ = [
    "AmbiguousRunSpecError",
    "DataDecodeError",
    "DataElsewhereError",
    "DataNotFoundWarning",
    "DatabaseBusyError",
    "DatabaseCorruptError",
    "DatabaseNotFoundError",
    "DatabaseOpenError",
    "DatabaseReadError",
    "DirectLayoutError",
    "ExportError",
    "LiveFileError",
    "NotQCoDeSError",
    "NotSQLiteError",
    "ParameterNotFoundError",
    "PlanError",
    "QcsqlError",
    "QcsqlWarning",
    "RunDescriptionError",
    "RunLookupError",
    "RunNotChosenError",
    "RunNotFoundError",
    "SchemaError",
    "SnapshotError",
    "SnapshotMetadataWarning",
    "SyncError",
    "UnknownSchemaVersionWarning",
    "Where",
]


@dataclasses.dataclass(frozen=True)
class Where:
    """Where a problem is: the file and, as far as known, the run, table and column.

    ``str()`` gives the form messages start with: ``experiments.db, run 3, table
    'results-1-3', column 'x'``.
    """

    path: Path | None = None
    run_id: int | None = None
    table: str | None = None
    column: str | None = None

    def __str__(self) -> str:
        parts = [] if self.path is None else [str(self.path)]
        if self.run_id is not None:
            parts.append(f"run {self.run_id}")
        if self.table is not None:
            parts.append(f"table {self.table!r}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)

    def at(self, **fields: Any) -> Where:
        """The same place, more precisely (``where.at(column="x")``)."""
        return dataclasses.replace(self, **fields)


class QcsqlError(Exception):
    """Root of every error qcsql raises."""

    def __init__(
        self,
        message: str,
        *,
        where: Where | None = None,
        path: Path | str | None = None,
        run_id: int | None = None,
        table: str | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        where = where or Where()
        self.where = Where(
            path=Path(path) if path is not None else where.path,
            run_id=run_id if run_id is not None else where.run_id,
            table=table if table is not None else where.table,
            column=column if column is not None else where.column,
        )

    @property
    def path(self) -> Path | None:
        return self.where.path

    @property
    def run_id(self) -> int | None:
        return self.where.run_id

    @property
    def table(self) -> str | None:
        return self.where.table

    @property
    def column(self) -> str | None:
        return self.where.column


class DatabaseOpenError(QcsqlError):
    """The file cannot be opened as a QCoDeS database."""


class DatabaseNotFoundError(DatabaseOpenError):
    """There is no file at the path, or it is a directory."""


class NotSQLiteError(DatabaseOpenError):
    """The file does not start with the SQLite header."""


class NotQCoDeSError(DatabaseOpenError):
    """An SQLite database without the tables QCoDeS creates."""


class DatabaseReadError(QcsqlError):
    """SQLite failed while reading an opened database."""


class DatabaseBusyError(DatabaseReadError):
    """A writer kept the database locked for longer than the busy timeout."""


class DatabaseCorruptError(DatabaseReadError):
    """SQLite reports the file (or its WAL) as malformed."""


class SchemaError(QcsqlError):
    """A table or column that the schema version promises is missing."""


class RunLookupError(QcsqlError, LookupError):
    """No single run matches a run id, guid or run spec."""


class RunNotFoundError(RunLookupError):
    """No run matches."""


class AmbiguousRunSpecError(RunLookupError):
    """More than one run matches a run spec or guid."""


class RunNotChosenError(RunLookupError):
    """The file holds several runs and none was named (``xr.open_dataset`` without
    ``run_id=``, ``guid=`` or a run spec): the message lists the run ids."""


class RunDescriptionError(QcsqlError):
    """A run's run_description (or its legacy layouts) cannot be understood."""


class SnapshotError(QcsqlError):
    """A run's snapshot is not valid JSON."""


class ParameterNotFoundError(QcsqlError, LookupError):
    """The run has no parameter of the requested name."""


class DataDecodeError(QcsqlError):
    """A stored value is not what its column's parameter type promises (corrupt blob, stray text)."""


class DataElsewhereError(QcsqlError):
    """The run's data live outside the database file (another SQLite file, a netCDF export)
    and cannot be read from where the database says they are."""


class PlanError(QcsqlError):
    """The run's data cannot be laid out as QCoDeS lays out a dataset."""


class DirectLayoutError(PlanError):
    """A parameter's data have exactly its declared shape, so QCoDeS lays them out
    directly, one dimension per setpoint, and that fails: the shape has more or fewer
    axes than the parameter has setpoints, a tree member holds another number of values,
    or the setpoints do not form a complete grid of the shape, one row a cell (QCoDeS
    0.62 places each value by its setpoints' values and raises ValueError there; 0.58
    laid the rows out in measured order). QCoDeS' export fails too."""


class ExportError(QcsqlError):
    """The export file could not be written."""


class LiveFileError(ExportError):
    """Rows arrived that the live file, laid out when the run started, cannot hold (a tree
    or column the run description did not have, text where numbers were, arrays of
    another shape): the live file ends there; the final export is not affected."""


class SyncError(QcsqlError):
    """A sync cannot go on: its folder cannot be written, its state file is from another
    database, or the database was replaced or deleted under a running sync."""


class QcsqlWarning(UserWarning):
    """Root of every warning qcsql emits."""


class DataNotFoundWarning(QcsqlWarning):
    """A run without results table whose data were never written anywhere (an in-memory
    run never exported) or whose export_info names an export that is gone: QCoDeS loads it
    as an empty dataset with a warning, so qcsql reads no data and warns instead of failing."""


class UnknownSchemaVersionWarning(QcsqlWarning):
    """The database is newer than the newest schema version qcsql knows."""


class SnapshotMetadataWarning(QcsqlWarning):
    """The snapshot's ``qh_meta`` instrument is missing or malformed: no extra tags/attributes."""
