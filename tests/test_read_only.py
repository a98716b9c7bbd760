"""qcsql never writes: only reading statements reach the file, nothing appears beside it,
and a QCoDeS writer working on the same file is neither blocked nor missed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import qcsql
import qcsql.sqlite.connection
from qcsql.cli import main
from tests.helpers import (
    EXAMPLE_DB,
    TracedStatements,
    copy_database,
    corpus_databases,
    side_files,
)

# Everything qcsql may say to SQLite about a user's file.
# "-- PRAGMA table_info='t'": SQLite's trace of the table-valued pragma_table_info(t) run
# inside a SELECT (the catalogue reads every table's columns in one such statement).
READING_STATEMENT = re.compile(
    r"^\s*(SELECT\b|BEGIN$|COMMIT$|PRAGMA (query_only = 1|read_uncommitted|user_version|table_info\(.*\))\s*$"
    r"|-- PRAGMA table_info='[^'\n]*'$)",
    re.IGNORECASE | re.DOTALL,
)


def exercise_everything(db: qcsql.Database) -> None:
    db.experiments()
    db.summary()
    for run in db.runs():
        run.description
        run.snapshot
        run.number_of_results
        run.parent_dataset_links
        if run.guid is not None:
            db.load_by_guid(run.guid)
        db.load_by_id(run.run_id)
        run.get_parameter_data()


def test_only_reading_statements_reach_the_file(
    any_database: Path, traced_statements: TracedStatements, guard: list[Path]
) -> None:
    guard.append(any_database)
    try:
        with qcsql.open_database(any_database) as db:
            exercise_everything(db)
    except (qcsql.RunDescriptionError, qcsql.DataDecodeError):
        pass  # broken data are reported, not written around
    seen = traced_statements + traced_statements.to_private_copies
    assert seen, "the trace saw nothing: the test would pass vacuously"
    writing = [s for s in traced_statements if not READING_STATEMENT.match(s)]
    assert writing == []
    # A WAL file without -shm is read through a private copy in qcsql's temporary folder,
    # checkpointed there so that the page readers can read it: only that copy is written.
    writing_the_copy = [
        s for s in traced_statements.to_private_copies if not READING_STATEMENT.match(s)
    ]
    assert set(writing_the_copy) <= {"PRAGMA synchronous = OFF", "PRAGMA wal_checkpoint(TRUNCATE)"}


def test_cli_leaves_every_file_alone(any_database: Path, tmp_path: Path, guard: list[Path]) -> None:
    copy = copy_database(any_database, tmp_path / "writable")
    guard.append(copy)
    guard.append(any_database)
    for argv in (
        ["info", str(copy)],
        ["runs", str(copy)],
        ["runs", str(copy), "--json"],
        ["info", str(any_database)],
    ):
        assert main(argv) == 0


def test_wal_file_without_writer_is_read_in_place(tmp_path: Path, guard: list[Path]) -> None:
    copy = copy_database(EXAMPLE_DB, tmp_path)
    assert side_files(copy) == []
    guard.append(copy)
    with qcsql.open_database(copy) as db:
        assert db.journal_mode == "wal"
        assert db.access is qcsql.Access.IMMUTABLE
        assert len(db.runs()) > 0
    assert side_files(copy) == []


def test_rollback_journal_writer_commits_while_qcsql_has_the_file_open(tmp_path: Path) -> None:
    """Between reads qcsql holds no lock, so a writer's commit never waits for it."""
    copy = copy_database(EXAMPLE_DB, tmp_path)
    with contextlib.closing(sqlite3.connect(copy)) as setup, setup:
        setup.execute("PRAGMA journal_mode=DELETE")
    with qcsql.open_database(copy) as db:
        assert db.access is qcsql.Access.READ_ONLY
        before = len(db.runs())
        writer = sqlite3.connect(copy, timeout=0.05)
        writer.execute(
            "INSERT INTO runs (exp_id, name, result_table_name, result_counter, is_completed) "
            "VALUES (1, 'from the writer', 'results-1-99', 99, 0)"
        )
        writer.commit()  # would raise 'database is locked' after 50 ms if qcsql held a lock
        writer.close()
        assert len(db.runs()) == before + 1


def test_qcodes_writer_appearing_on_a_wal_file_is_followed(tmp_path: Path) -> None:
    """Opened while nobody wrote (immutable), qcsql switches to shared access once QCoDeS connects."""
    qcodes_database = pytest.importorskip("qcodes.dataset.sqlite.database")
    from qcodes.dataset import Measurement, load_experiment
    from qcodes.parameters import Parameter

    copy = copy_database(EXAMPLE_DB, tmp_path)
    with qcsql.open_database(copy) as db:
        assert db.access is qcsql.Access.IMMUTABLE
        before = {run.run_id for run in db.runs()}
        conn = qcodes_database.connect(str(copy))
        try:
            x = Parameter("x", set_cmd=None, get_cmd=None)
            y = Parameter("y", set_cmd=None, get_cmd=None)
            measurement = Measurement(exp=load_experiment(1, conn=conn), name="live")
            measurement.register_parameter(x)
            measurement.register_parameter(y, setpoints=(x,))
            with measurement.run() as saver:
                for value in range(5):
                    saver.add_result((x, value), (y, value * 2))
                live = saver.dataset
                # QCoDeS still holds its connection: -wal and -shm exist now.
                new = [run for run in db.runs() if run.run_id not in before]
                assert db.access is qcsql.Access.READ_ONLY
                assert [run.guid for run in new] == [live.guid]
            assert db.load_by_guid(live.guid).completed
        finally:
            conn.close()


def test_wal_without_shm_is_read_from_a_private_copy(tmp_path: Path, guard: list[Path]) -> None:
    """A copied WAL database with its -wal (no -shm): the runs committed only in the -wal are
    seen, and nothing is created beside the file."""
    live = copy_database(EXAMPLE_DB, tmp_path / "live")
    writer = sqlite3.connect(live)
    writer.execute("PRAGMA wal_autocheckpoint=0")  # keep the commit in the -wal
    writer.execute(
        "INSERT INTO runs (exp_id, name, result_table_name, result_counter, is_completed) "
        "VALUES (1, 'only in the wal', 'results-1-99', 99, 0)"
    )
    writer.commit()
    archived = tmp_path / "archived"
    archived.mkdir()
    for item in (live, live.with_name(live.name + "-wal")):
        (archived / item.name).write_bytes(item.read_bytes())  # copied while the writer is open
    writer.close()
    copied = archived / live.name
    assert side_files(copied) == [copied.with_name(copied.name + "-wal")]
    guard.append(copied)
    with qcsql.open_database(copied) as db:
        assert db.access is qcsql.Access.SNAPSHOT_COPY
        assert db.runs()[-1].name == "only in the wal"


def test_unusual_characters_in_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "run #3 ?%20 µ"
    copy = copy_database(EXAMPLE_DB, folder)
    with qcsql.open_database(copy) as db:
        assert db.path == copy
        assert db.runs()


def _run_as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to drop to an unprivileged user")
    command = [
        setpriv,
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        sys.executable,
        "-c",
        code,
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(qcsql.__file__).parent.parent)}
    probe = subprocess.run([*command[:-1], "import qcsql"], capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot run this Python: {probe.stderr[-200:]}")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_wal_files_on_read_only_media_open(tmp_path: Path) -> None:
    """Archived media: a folder nobody may write to, WAL files with and without -wal/-shm."""
    folder = Path(tempfile.mkdtemp(prefix="qcsql-archive-"))
    try:
        folder.chmod(0o755)
        wal_source = next((p for p in corpus_databases() if side_files(p)), None)
        shutil.copyfile(EXAMPLE_DB, folder / "no_wal.db")
        cases = {"no_wal.db": "IMMUTABLE"}
        if wal_source is not None:
            for name in ("with_wal.db", "with_wal_and_shm.db"):
                shutil.copyfile(wal_source, folder / name)
                shutil.copyfile(side_files(wal_source)[0], folder / (name + "-wal"))
            with (
                contextlib.closing(
                    sqlite3.connect(f"file:{folder / 'with_wal_and_shm.db'}?mode=ro", uri=True)
                ) as c,
                c,
            ):
                c.execute(
                    "SELECT count(*) FROM runs"
                ).fetchone()  # leaves a -shm, as a crashed writer would
            cases.update({"with_wal.db": "SNAPSHOT_COPY", "with_wal_and_shm.db": "READ_ONLY"})
        for item in folder.iterdir():
            item.chmod(0o444)
        folder.chmod(0o555)
        listing = sorted(os.listdir(folder))
        code = (
            "import json, sys, qcsql\n"
            "out = {}\n"
            f"for name in {sorted(cases)!r}:\n"
            f"    with qcsql.open_database({str(folder)!r} + '/' + name) as db:\n"
            "        out[name] = [db.access.name, len(db.runs())]\n"
            "print(json.dumps(out))\n"
        )
        result = _run_as_nobody(code)
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        assert {name: access for name, (access, _) in seen.items()} == cases
        for name, (_, n_runs) in seen.items():
            with qcsql.open_database(folder / name) as db:
                assert n_runs == len(db.runs()) > 0
        assert sorted(os.listdir(folder)) == listing
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_listing_runs_without_results_tables_costs_no_query_per_run(
    tmp_path: Path, traced_statements: list[str]
) -> None:
    """A metadata-only file (every results table gone): listing its runs with their
    metadata and completion reads the table names once, not once per run."""
    path = copy_database(EXAMPLE_DB, tmp_path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'results-%'"
        ).fetchall()
        for (table,) in tables:
            conn.execute(f'DROP TABLE "{table}"')
        conn.commit()
    with qcsql.open_database(path) as db:
        traced_statements.clear()
        runs = db.runs()
        for run in runs:
            run.metadata, run.completed, run.in_memory
    assert len(runs) > 5 and all(run.in_memory for run in runs)
    assert len(traced_statements) <= 2, traced_statements
