"""SQLAlchemy Core table models of each QCoDeS schema version.

The models are built by running the version's DDL (``schema_versions/``) in a
private in-memory SQLite database and reflecting it into a fresh
:class:`~sqlalchemy.MetaData`, so they cannot drift from what QCoDeS creates.
A real database can have more than its version's model: metadata columns added
by ``add_metadata``, an untyped ``snapshot`` in old files, results tables.
:func:`bind_runs_table` makes the model of one file's ``runs`` from the
model's columns plus the file's own.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from qcsql.schema.versions import schema_ddl

__all__ = ["SchemaModel", "bind_runs_table", "tables_for"]


@dataclass(frozen=True)
class SchemaModel:
    """The tables and indices a database of one schema version has.

    Every version from v0 on has these four tables; the reflected ``metadata`` also
    holds the indices and any other table of the version's DDL.
    """

    version: int
    metadata: sa.MetaData
    runs: sa.Table
    experiments: sa.Table
    layouts: sa.Table
    dependencies: sa.Table


@functools.cache
def tables_for(version: int) -> SchemaModel:
    """The table models of ``version``, built once per process from its DDL."""
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.executescript(schema_ddl(version))
        engine = sa.create_engine(
            "sqlite://", creator=lambda: scratch, poolclass=sa.pool.StaticPool
        )
        metadata = sa.MetaData()
        metadata.reflect(bind=engine)
        engine.dispose()
    finally:
        scratch.close()
    tables = metadata.tables
    return SchemaModel(
        version=version,
        metadata=metadata,
        runs=tables["runs"],
        experiments=tables["experiments"],
        layouts=tables["layouts"],
        dependencies=tables["dependencies"],
    )


def bind_runs_table(model: SchemaModel, actual_columns: Iterable[str]) -> sa.Table:
    """The ``runs`` table of one file: the model's typed columns plus the file's extra ones.

    Columns the file lacks are left out (a damaged or hand-edited file); columns
    the model lacks (metadata, old untyped ``snapshot``) are added untyped, which
    is what they are in the file.

    Built once per process for each model and list of columns, and shared by every
    file that has them (the tables are never changed once built): an archive holds
    hundreds of files of a few shapes, and building a table costs more than listing
    a file's runs.
    """
    return _bound_runs_table(model, tuple(actual_columns))


@functools.lru_cache(maxsize=256)
def _bound_runs_table(model: SchemaModel, actual_columns: tuple[str, ...]) -> sa.Table:
    metadata = sa.MetaData()
    modelled = model.runs.columns
    columns: list[sa.Column[object]] = []
    for name in actual_columns:
        if name in modelled:
            source = modelled[name]
            columns.append(sa.Column(name, source.type, primary_key=source.primary_key))
        else:
            columns.append(sa.Column(name, sa.types.NullType()))
    return sa.Table("runs", metadata, *columns)
