"""Bad input gets a qcsql error that names the file and what is wrong, never a raw traceback."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

import qcsql
from qcsql.cli import main
from tests.helpers import EXAMPLE_DB, copy_database, plain_sqlite, write_file


def _corrupt(copy: Path, *statements: str) -> Path:
    """Damage a copy of a genuine database the way a bad tool or disk would."""
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        for statement in statements:
            conn.execute(statement)
    return copy


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda d: d / "missing.db", qcsql.DatabaseNotFoundError, "no such file"),
        (lambda d: d, qcsql.DatabaseNotFoundError, "is a directory"),
        (
            lambda d: write_file(d / "notes.db", b"measurement notes\n" * 20),
            qcsql.NotSQLiteError,
            "not an SQLite",
        ),
        (lambda d: write_file(d / "empty.db", b""), qcsql.NotQCoDeSError, "empty"),
        (lambda d: plain_sqlite(d / "other.db"), qcsql.NotQCoDeSError, "not a QCoDeS"),
        (
            lambda d: write_file(d / "truncated.db", EXAMPLE_DB.read_bytes()[:50]),
            qcsql.NotSQLiteError,
            "not an SQLite",
        ),
        (
            lambda d: write_file(d / "truncated.db", EXAMPLE_DB.read_bytes()[:40000]),
            qcsql.DatabaseCorruptError,
            "damaged or truncated",
        ),
    ],
    ids=[
        "missing",
        "directory",
        "text",
        "empty",
        "other-sqlite",
        "truncated-header",
        "truncated-body",
    ],
)
def test_files_that_are_not_qcodes_databases(
    tmp_path: Path, make: object, error: type[qcsql.QcsqlError], words: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(error, match=words) as raised:
        qcsql.open_database(path)
    assert str(path) in str(raised.value)
    assert raised.value.path == path
    assert main(["info", str(path)]) == 1


def test_unknown_run_id_names_the_range(tmp_path: Path) -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        with pytest.raises(qcsql.RunNotFoundError, match=r"run_id=999 .*runs 1\.\.13") as raised:
            db.load_by_id(999)
    assert str(EXAMPLE_DB) in str(raised.value)
    assert raised.value.run_id == 999


def test_unknown_guid() -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        with pytest.raises(qcsql.RunNotFoundError, match="no run with guid 'nope'"):
            db.load_by_guid("nope")


def test_guid_on_schema_v0_explains_why() -> None:
    legacy = Path(__file__).parent / "fixtures" / "legacy" / "v0_qcodes-0.1.11.db"
    with qcsql.open_database(legacy) as db:
        with pytest.raises(qcsql.RunNotFoundError, match="schema v0 .* no guids"):
            db.load_by_guid("aaaaaaaa-0000-0000-0000-000000000000")


def test_ambiguous_and_unmatched_run_specs() -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        with pytest.raises(
            qcsql.AmbiguousRunSpecError,
            match="runs of .* match experiment_name='gate_characterisation'",
        ):
            db.load_by_run_spec(experiment_name="gate_characterisation")
        with pytest.raises(qcsql.RunNotFoundError, match="captured_run_id=77"):
            db.load_by_run_spec(captured_run_id=77)
        run = db.load_by_run_spec(captured_run_id=5, experiment_name="rf_readout")
        assert run.run_id == 5


def test_run_spec_by_guid_parts_matches_qcodes_parsing() -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        first = db.load_by_id(1)
        assert first.guid is not None
        sample = int(first.guid[:8], 16)
        assert db.load_by_run_spec(sample_id=sample).run_id == 1


def test_malformed_run_description(tmp_path: Path) -> None:
    copy = _corrupt(
        copy_database(EXAMPLE_DB, tmp_path),
        'UPDATE runs SET run_description = \'{"version": 3, "interdependencies_": \' WHERE run_id = 2',
    )
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(2)
        assert run.name == "gate_map_unshaped"  # the light record is still there
        with pytest.raises(
            qcsql.RunDescriptionError, match=r"run 2: the run_description .*not valid JSON"
        ) as raised:
            run.description
    assert raised.value.run_id == 2 and raised.value.column == "run_description"
    assert str(copy) in str(raised.value)


def test_run_description_of_the_wrong_shape(tmp_path: Path) -> None:
    copy = _corrupt(
        copy_database(EXAMPLE_DB, tmp_path),
        "UPDATE runs SET run_description = '[1, 2, 3]' WHERE run_id = 3",
    )
    with qcsql.open_database(copy) as db:
        with pytest.raises(qcsql.RunDescriptionError, match="must be a JSON object"):
            db.load_by_id(3).paramspecs


def test_malformed_snapshot(tmp_path: Path) -> None:
    copy = _corrupt(
        copy_database(EXAMPLE_DB, tmp_path),
        "UPDATE runs SET snapshot = '{not json' WHERE run_id = 1",
    )
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(1)
        assert run.snapshot_raw == "{not json"
        with pytest.raises(qcsql.SnapshotError, match="run 1: the snapshot is not valid JSON"):
            run.snapshot


def test_newer_schema_version_opens_with_a_warning(tmp_path: Path) -> None:
    copy = _corrupt(copy_database(EXAMPLE_DB, tmp_path), "PRAGMA user_version = 99")
    with pytest.warns(qcsql.UnknownSchemaVersionWarning, match="schema version 99 is newer"):
        db = qcsql.open_database(copy)
    with db:
        assert db.schema_version == 99
        assert len(db.runs()) == 13


def test_every_error_is_a_qcsql_error() -> None:
    for name in qcsql.__all__:
        item = getattr(qcsql, name)
        if isinstance(item, type) and issubclass(item, Exception) and not issubclass(item, Warning):
            assert issubclass(item, qcsql.QcsqlError), name


def test_every_error_carries_its_place_as_one_object() -> None:
    """``Where`` is the error's place; the attributes and the message's start agree with it."""
    where = qcsql.Where(Path("/data/a.db"), 3, "results-1-3", "x")
    error = qcsql.DataDecodeError(f"{where}: bad", where=where)
    assert (error.path, error.run_id, error.table, error.column) == (
        Path("/data/a.db"),
        3,
        "results-1-3",
        "x",
    )
    assert str(error) == "/data/a.db, run 3, table 'results-1-3', column 'x': bad"
    assert qcsql.QcsqlError("m", where=where, column="y").where == where.at(column="y")
