"""qcsql: read QCoDeS measurement databases of every schema version, read-only, without QCoDeS.

import qcsql

with qcsql.open_database("experiments.db") as db:
    for run in db.runs():
        print(run.run_id, run.guid, run.name, run.metadata)
"""

import typing as _typing

# Errors are light and every caller may catch them: imported at once.
from qcsql.errors import (
    AmbiguousRunSpecError,
    DatabaseBusyError,
    DatabaseCorruptError,
    DatabaseNotFoundError,
    DatabaseOpenError,
    DatabaseReadError,
    DataDecodeError,
    DataElsewhereError,
    DataNotFoundWarning,
    DirectLayoutError,
    ExportError,
    NotQCoDeSError,
    NotSQLiteError,
    ParameterNotFoundError,
    PlanError,
    QcsqlError,
    QcsqlWarning,
    RunDescriptionError,
    RunLookupError,
    RunNotChosenError,
    RunNotFoundError,
    SchemaError,
    SnapshotError,
    SnapshotMetadataWarning,
    UnknownSchemaVersionWarning,
    Where,
)

# The rest is resolved on first use, so that ``import qcsql`` (and ``qcsql --help``)
# does not pay for SQLAlchemy, pydantic and numpy before anything is read.
_LAZY = {
    "Access": "qcsql.sqlite.connection",
    "Database": "qcsql.database",
    "DatabaseSummary": "qcsql.database",
    "Experiment": "qcsql.schema.rows",
    "InterDependencies": "qcsql.schema.description",
    "Link": "qcsql.schema.rows",
    "ParamSpec": "qcsql.schema.description",
    "ParamSpecBase": "qcsql.schema.description",
    "Run": "qcsql.database",
    "RunDescription": "qcsql.schema.description",
    "open_database": "qcsql.database",
}

if _typing.TYPE_CHECKING:
    from qcsql.database import Database, DatabaseSummary, Run, open_database
    from qcsql.schema.description import (
        InterDependencies,
        ParamSpec,
        ParamSpecBase,
        RunDescription,
    )
    from qcsql.schema.rows import Experiment, Link
    from qcsql.sqlite.connection import Access


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qcsql' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Access",
    "AmbiguousRunSpecError",
    "DataDecodeError",
    "DataElsewhereError",
    "DataNotFoundWarning",
    "Database",
    "DatabaseBusyError",
    "DatabaseCorruptError",
    "DatabaseNotFoundError",
    "DatabaseOpenError",
    "DatabaseReadError",
    "DatabaseSummary",
    "DirectLayoutError",
    "Experiment",
    "ExportError",
    "InterDependencies",
    "Link",
    "NotQCoDeSError",
    "NotSQLiteError",
    "ParamSpec",
    "ParamSpecBase",
    "ParameterNotFoundError",
    "PlanError",
    "QcsqlError",
    "QcsqlWarning",
    "Run",
    "RunDescription",
    "RunDescriptionError",
    "RunLookupError",
    "RunNotChosenError",
    "RunNotFoundError",
    "SchemaError",
    "SnapshotError",
    "SnapshotMetadataWarning",
    "UnknownSchemaVersionWarning",
    "Where",
    "__version__",
    "open_database",
]
