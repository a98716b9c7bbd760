"""qcsql: read QCoDeS measurement databases of every schema version, read-only, without QCoDeS.

import qcsql

with qcsql.open_database("experiments.db") as db:
    for run in db.runs():
        print(run.run_id, run.guid, run.name, run.metadata)
"""

from qcsql.database import Database, DatabaseSummary, Run, open_database
from qcsql.errors import (
    AmbiguousRunSpecError,
    DatabaseBusyError,
    DatabaseCorruptError,
    DatabaseNotFoundError,
    DatabaseOpenError,
    DatabaseReadError,
    DataDecodeError,
    DataElsewhereError,
    NotQCoDeSError,
    NotSQLiteError,
    ParameterNotFoundError,
    QcsqlError,
    QcsqlWarning,
    RunDescriptionError,
    RunLookupError,
    RunNotFoundError,
    SchemaError,
    SnapshotError,
    UnknownSchemaVersionWarning,
)
from qcsql.schema.description import InterDependencies, ParamSpec, ParamSpecBase, RunDescription
from qcsql.schema.rows import Experiment, Link
from qcsql.sqlite.connection import Access

__version__ = "0.1.0"

__all__ = [
    "Access",
    "AmbiguousRunSpecError",
    "DataDecodeError",
    "DataElsewhereError",
    "Database",
    "DatabaseBusyError",
    "DatabaseCorruptError",
    "DatabaseNotFoundError",
    "DatabaseOpenError",
    "DatabaseReadError",
    "DatabaseSummary",
    "Experiment",
    "InterDependencies",
    "Link",
    "NotQCoDeSError",
    "NotSQLiteError",
    "ParamSpec",
    "ParamSpecBase",
    "ParameterNotFoundError",
    "QcsqlError",
    "QcsqlWarning",
    "Run",
    "RunDescription",
    "RunDescriptionError",
    "RunLookupError",
    "RunNotFoundError",
    "SchemaError",
    "SnapshotError",
    "UnknownSchemaVersionWarning",
    "__version__",
    "open_database",
]
