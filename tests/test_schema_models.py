"""The table models built from schema_versions/ describe real databases of each version."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

import qcsql
from qcsql.schema.tables import SchemaModel, tables_for
from qcsql.schema.versions import KNOWN_VERSIONS, STANDARD_RUN_COLUMNS
from tests.helpers import all_databases, copy_database

SNAPSHOT_BECAME_STANDARD = 5  # before it, QCoDeS added an untyped snapshot column on demand


def _actual_schema(
    path: Path, folder: Path
) -> tuple[int, set[str], dict[str, list[str]], set[str]]:
    copy = copy_database(path, folder)  # the main file alone may lack what its -wal holds
    with contextlib.closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as conn, conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {
            table: [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            for table in ("runs", "experiments", "layouts", "dependencies")
            if table in tables
        }
        indices = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    return version, tables, columns, indices


@pytest.mark.parametrize("path", all_databases(), ids=lambda p: p.name)
def test_model_matches_real_database(path: Path, tmp_path: Path) -> None:
    version, tables, columns, indices = _actual_schema(path, tmp_path)
    model = tables_for(version)
    for table in model.metadata.tables.values():
        if table.name not in tables:
            assert path.name.startswith("v0_real_qcodes-docs_2017"), f"{table.name} missing"
            continue  # the 2017 prototype predates layouts/dependencies
        actual = columns[table.name]
        expected = [column.name for column in table.columns]
        if table.name == "runs":
            extra = set(actual) - set(expected)
            allowed = set() if version >= SNAPSHOT_BECAME_STANDARD else {"snapshot"}
            assert extra - allowed <= set(actual) - STANDARD_RUN_COLUMNS
            assert set(expected) <= set(actual)
        else:
            assert actual == expected
    assert _index_names(model) <= indices


def _index_names(model: SchemaModel) -> frozenset[str]:
    return frozenset(str(i.name) for table in model.metadata.tables.values() for i in table.indexes)


def test_every_version_has_a_model() -> None:
    runs_columns = [{c.name for c in tables_for(v).runs.columns} for v in KNOWN_VERSIONS]
    assert all(
        earlier <= later for earlier, later in zip(runs_columns, runs_columns[1:], strict=False)
    )
    assert "guid" not in runs_columns[0] and "guid" in runs_columns[1]
    assert "run_description" in runs_columns[3]
    assert "captured_run_id" in runs_columns[7] and "parent_datasets" in runs_columns[8]
    assert _index_names(tables_for(9)) == {
        "IX_runs_exp_id",
        "IX_runs_guid",
        "IX_runs_captured_run_id",
    }


def test_database_uses_the_model_of_its_version() -> None:
    for path in all_databases():
        with qcsql.open_database(path) as db:
            assert db.model.version == min(db.schema_version, 9)
