"""qcsql never drops the SQLite locks that another connection of the same process holds.

POSIX advisory locks belong to a process, not to a descriptor: closing *any*
descriptor of a file drops *every* lock the process holds on it ("How To Corrupt An
SQLite Database File", section 2.2). SQLite shields its own connections from this,
but not from files the application opens and closes itself. A QCoDeS measurement
and qcsql in one Jupyter kernel is the everyday case: if qcsql opened and closed the
database file (to read its header, its pages, to copy it), then

* in rollback mode a second process gets past the measurement's lock: a second
  writer's ``BEGIN IMMEDIATE`` succeeds beside the first one's, an ``EXCLUSIVE``
  lock beside a reader's ``SHARED`` one;
* in WAL mode the next process that closes a connection takes itself for the last
  one, checkpoints and deletes the ``-wal`` and ``-shm`` that the writer still has
  open, and what the writer commits afterwards is invisible to every other process.

Each test holds a lock from a plain sqlite3 connection of the test process, runs one
qcsql entry point (the page readers, the array blob readers, the streamed grid fill,
the exports, the CLI), and then asks other processes whether the lock is still there
(:func:`lock_problems`). :func:`test_the_checks_see_a_dropped_lock` proves that they
notice when it is not.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fastpath_dbs import FASTPATH_RUNS

if TYPE_CHECKING:
    from qcsql import Database

PROBE_TIMEOUT_S = 60.0  # a subprocess that takes longer is stuck: fail, never hang
BUSY_TIMEOUT_S = 5.0  # for the probes that read and the holder's commit, not the lock probes

# What another process does to find out whether the test process still holds its lock;
# prints one JSON object. Runs with -I -S: only the standard library, quickly.
PROBE = r"""
import json, sqlite3, sys
action, path, busy = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = sqlite3.connect(path, timeout=busy, isolation_level=None)
try:
    if action in ("BEGIN EXCLUSIVE", "BEGIN IMMEDIATE"):
        try:
            conn.execute(action)
        except sqlite3.OperationalError as exc:
            print(json.dumps({"locked": True, "error": str(exc)}))
        else:
            conn.execute("ROLLBACK")
            print(json.dumps({"locked": False}))
    elif action == "runs":
        print(json.dumps({"runs": conn.execute("SELECT count(*) FROM runs").fetchone()[0]}))
    elif action == "notes":
        try:
            rows = conn.execute("SELECT note FROM lock_probe ORDER BY id").fetchall()
        except sqlite3.OperationalError as exc:  # no such table: the commit is not seen
            rows = [(str(exc),)]
        print(json.dumps({"notes": [row[0] for row in rows]}))
finally:
    conn.close()
"""


def probe(path: Path, action: str, busy: float = BUSY_TIMEOUT_S) -> dict[str, Any]:
    """Run one :data:`PROBE` action on ``path`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, action, str(path), str(busy)],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"probe {action!r} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- the lock held in the test process ---------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A file in ``journal`` mode and the lock the test process holds on it."""

    name: str
    journal: str  # "delete" (rollback) or "wal", as tests.fastpath_dbs builds it
    writer: bool  # BEGIN IMMEDIATE (a writer's RESERVED lock) or BEGIN; SELECT (SHARED)

    @property
    def rival(self) -> str:
        """What another process must not be able to do while the lock is held."""
        return "BEGIN IMMEDIATE" if self.writer else "BEGIN EXCLUSIVE"


SCENARIOS = [
    Scenario("rollback-reader", "delete", writer=False),
    Scenario("rollback-writer", "delete", writer=True),
    Scenario("wal-writer", "wal", writer=True),
]


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


@dataclass
class Holder:
    """The QCoDeS-like connection of the test process and what it looked like at the start."""

    scenario: Scenario
    path: Path
    conn: sqlite3.Connection
    side_inodes: dict[str, tuple[int, int] | None]


@contextlib.contextmanager
def holding(scenario: Scenario, path: Path) -> Iterator[Holder]:
    """Hold ``scenario``'s lock on ``path`` from a plain sqlite3 connection of this process."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        # A commit that leaves the schema as it was (qcsql's audit would report a table
        # of no run): in WAL mode the -wal then holds frames, as a QCoDeS writer's does.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE lock_probe (id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute("DROP TABLE lock_probe")
        conn.execute("COMMIT")
        if scenario.writer:
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM runs").fetchall()  # SHARED until COMMIT
        sides = {s: _inode(_side(path, s)) for s in ("-wal", "-shm")}
        if scenario.journal == "wal":
            assert None not in sides.values(), f"no -wal/-shm beside {path}: {sides}"
        yield Holder(scenario, path, conn, sides)
    finally:
        conn.close()


def lock_problems(holder: Holder) -> list[str]:
    """Ask other processes whether ``holder`` still holds its lock; every sign that it does
    not, as text (an empty list: the lock is intact). Ends the holder's transaction."""
    scenario, path, problems = holder.scenario, holder.path, []

    def sides_kept(when: str) -> None:
        if scenario.journal != "wal":
            return
        for suffix, before in holder.side_inodes.items():
            now = _inode(_side(path, suffix))
            if now != before:
                state = "deleted" if now is None else "deleted and created again"
                problems.append(f"{when}: the {suffix} was {state} under the live writer")

    # (a) Another process is still locked out.
    rival = probe(path, scenario.rival, busy=0.0)
    if not rival["locked"]:
        problems.append(f"(a) another process's {scenario.rival} succeeded beside the held lock")
    elif "database is locked" not in rival["error"]:
        problems.append(f"(a) {scenario.rival} failed, but not as locked: {rival['error']}")
    # (b) Another process opens, reads and closes: in WAL mode, were it to take itself for
    # the last connection, it would checkpoint and delete the -wal and -shm now.
    runs = probe(path, "runs")["runs"]
    if runs < 1:
        problems.append(f"(b) another process read {runs} runs")
    sides_kept("(b) after another process closed its connection")
    # (c) The holder commits a row, and (still connected) another process sees it. A
    # reader first ends its read transaction: its lock has kept everyone out until now.
    note = f"committed by the holder ({scenario.name})"
    conn = holder.conn
    try:
        if not scenario.writer:
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE lock_probe (id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute("INSERT INTO lock_probe (note) VALUES (?)", (note,))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        problems.append(f"(c) the holder could not commit its row: {exc}")
    else:
        seen = probe(path, "notes")["notes"]
        if seen != [note]:
            problems.append(f"(c) another process sees {seen} in lock_probe, not the committed row")
    sides_kept("(c) after the holder committed")
    return problems


# -- the database, built once per session --------------------------------------------------------


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fast-path database (tests.fastpath_dbs) in each journal mode, built once."""
    pytest.importorskip("qcodes")
    from tests.fastpath_dbs import built_fastpath_db

    return {journal: built_fastpath_db(tmp_path_factory, journal) for journal in ("delete", "wal")}


@pytest.fixture
def database(scenario: Scenario, built: dict[str, Path], tmp_path: Path) -> Iterator[Path]:
    """A copy of the built database in the journal mode of the test's ``scenario``, removed
    afterwards (the copies are large, and pytest keeps the temporary folders)."""
    copy = tmp_path / "db" / "fastpath.db"
    copy.parent.mkdir()
    shutil.copyfile(built[scenario.journal], copy)
    yield copy
    shutil.rmtree(copy.parent, ignore_errors=True)


# -- the qcsql entry points -------------------------------------------------------------------------

Step = Callable[[Path, Path], None]  # (database, an empty folder for output)
Method = Callable[["Database", Path], None]  # (an open qcsql Database, an output folder)


def _experiments(db: Database, out: Path) -> None:
    assert db.experiments()


def _every_run_property(db: Database, out: Path) -> None:
    for run in db.runs():
        run.metadata
        run.paramspecs
        run.shapes
        run.snapshot
        run.number_of_results
        run.description
        run.parent_dataset_links


def _load_by_id(db: Database, out: Path) -> None:
    for run in db.runs():
        db.load_by_id(run.run_id).description


def _load_by_guid(db: Database, out: Path) -> None:
    for run in db.runs():
        assert run.guid is not None
        db.load_by_guid(run.guid).description


def _load_by_run_spec(db: Database, out: Path) -> None:
    for run in db.runs():
        db.load_by_run_spec(captured_run_id=run.captured_run_id).description


def _summary(db: Database, out: Path) -> None:
    assert db.summary().runs == FASTPATH_RUNS


def _get_parameter_data(db: Database, out: Path) -> None:
    """The numeric page windows (runs 1, 2), the array blob readers (3, 4), complex (5)."""
    for run in db.runs():
        assert run.get_parameter_data()


def _export_hdf5(db: Database, out: Path) -> None:
    """The streamed exports: page windows, the grid fill, the blob readers."""
    for run in db.runs():
        assert run.export_hdf5(out).exists()


def _follow(db: Database, out: Path) -> None:
    for run in db.runs():
        chunks = list(run.follow(poll_interval=0.01, idle_timeout=0.5))
        assert chunks[-1].reason == "completed"
        assert sum(chunk.rows for chunk in chunks) == run.number_of_results


def _dataset_info(db: Database, out: Path) -> None:
    from qcsql.sync import QCoDeSConfigData, SnapshotMetadataWarning, dataset_info

    # Unvalidated: validating opens the file, which the "sync" step does on its own.
    config = QCoDeSConfigData.model_construct(database_path=db.path, set_up="locks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SnapshotMetadataWarning)  # QCoDeS wrote no station
        for run in db.runs():
            info = dataset_info(run, config, export_to=out)
            assert info.data_file is not None and info.data_file.exists()


def _runs_after(db: Database, out: Path) -> None:
    from qcsql.sync import runs_after

    every = runs_after(db, None)
    assert [r.run_id for r in runs_after(db, every[1].stable_guid)] == [3, 4, 5]


METHODS: dict[str, Method] = {
    "experiments": _experiments,
    "runs-and-properties": _every_run_property,
    "load_by_id": _load_by_id,
    "load_by_guid": _load_by_guid,
    "load_by_run_spec": _load_by_run_spec,
    "summary": _summary,
    "get_parameter_data": _get_parameter_data,
    "export_hdf5": _export_hdf5,
    "follow": _follow,
    "sync.dataset_info": _dataset_info,
    "sync.runs_after": _runs_after,
}


def _opening(method: Method) -> Step:
    """``method`` on a Database opened and closed inside the step."""

    def step(path: Path, out: Path) -> None:
        import qcsql

        with qcsql.open_database(path) as db:
            method(db, out)

    return step


def _database(path: Path, out: Path) -> None:
    import qcsql

    qcsql.Database(path).close()


def _open_database(path: Path, out: Path) -> None:
    import qcsql

    with qcsql.open_database(path):
        pass


def _sync_config(path: Path, out: Path) -> None:
    from qcsql.sync import QCoDeSConfigData

    QCoDeSConfigData(database_path=path, set_up="locks")  # its validation opens the file


def _audit(path: Path, out: Path) -> None:
    from qcsql.audit import audit

    report = audit(path, deep=True)
    assert report.runs_checked == FASTPATH_RUNS
    assert report.healthy, report.findings


def _cli(*commands: list[str]) -> Step:
    """Run ``qcsql`` with each of ``commands`` (DB and OUT stand for the paths): each must
    succeed (exit 0, output, no message), so that it really read every run."""

    def step(path: Path, out: Path) -> None:
        from qcsql.cli import main

        for command in commands:
            argv = [{"DB": str(path), "OUT": str(out)}.get(a, a) for a in command]
            stdout, stderr = io.StringIO(), io.StringIO()
            assert main(argv, out=stdout, err=stderr) == 0, (argv, stderr.getvalue())
            assert stdout.getvalue() and not stderr.getvalue(), (argv, stderr.getvalue())

    return step


RUN_IDS = [str(n) for n in range(1, FASTPATH_RUNS + 1)]

STEPS: dict[str, Step] = {
    "Database": _database,
    "open_database": _open_database,
    **{name: _opening(method) for name, method in METHODS.items()},
    "sync.QCoDeSConfigData": _sync_config,
    "audit-deep": _audit,
    "cli-info": _cli(["info", "DB"], ["info", "DB", "--json"]),
    "cli-runs": _cli(["runs", "DB"], ["runs", "DB", "--json"]),
    "cli-show": _cli(*(["show", "DB", n] for n in RUN_IDS)),
    "cli-export": _cli(["export", "DB", "--all", "-o", "OUT", "--quiet"]),
    "cli-follow": _cli(
        *(
            ["follow", "DB", "--run", n, "-o", "OUT", "--idle-timeout", "0.5", "--quiet"]
            for n in RUN_IDS
        )
    ),
    "cli-audit": _cli(["audit", "DB", "--deep"]),
    # the mirror loop: a Database per poll, another per live run, exports and records
    "cli-sync": _cli(["sync", "DB", "--to", "OUT", "--set-up", "locks", "--json", "--quiet"]),
    "cli-catalog": _cli(["catalog", "DB", "--json"]),
}


def _cases() -> list[Any]:
    return [
        pytest.param(scenario, step, id=f"{scenario.name}-{step}")
        for scenario in SCENARIOS
        for step in STEPS
    ]


def test_every_cli_command_is_covered() -> None:
    """A command added to the CLI must be added to STEPS too."""
    from qcsql.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    covered = {name.removeprefix("cli-") for name in STEPS if name.startswith("cli-")}
    assert set(commands.choices) == covered


@pytest.mark.requires_qcodes  # the database is written by QCoDeS
@pytest.mark.parametrize(("scenario", "step"), _cases())
def test_qcsql_keeps_the_lock_of_another_connection(
    scenario: Scenario, step: str, database: Path, tmp_path: Path
) -> None:
    """Hold the lock, run one entry point (it opens and closes its Database), check."""
    out = tmp_path / "out"
    out.mkdir()
    with holding(scenario, database) as holder:
        STEPS[step](database, out)
        problems = lock_problems(holder)
    assert not problems, "\n".join(problems)


@pytest.mark.requires_qcodes  # the database is written by QCoDeS
@pytest.mark.parametrize(
    ("scenario", "method"),
    [
        pytest.param(scenario, method, id=f"{scenario.name}-{method}")
        for scenario in SCENARIOS
        for method in METHODS
    ],
)
def test_a_database_opened_before_the_lock_keeps_it(
    scenario: Scenario, method: str, database: Path, tmp_path: Path
) -> None:
    """The notebook case: qcsql opened the file before the measurement took its lock, and
    reads (and is closed) while it is held. Nothing of the opening can hide here what the
    readers of pages and blobs, the exports and the follow do on their own."""
    import qcsql

    out = tmp_path / "out"
    out.mkdir()
    db = qcsql.open_database(database)
    try:
        with holding(scenario, database) as holder:
            METHODS[method](db, out)
            db.close()
            problems = lock_problems(holder)
    finally:
        db.close()
    assert not problems, "\n".join(problems)


# -- the checks can fail ----------------------------------------------------------------------------


@pytest.mark.requires_qcodes  # the database is written by QCoDeS
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_the_checks_see_a_dropped_lock(scenario: Scenario, database: Path) -> None:
    """One descriptor of the file opened and closed by hand, as old qcsql did: the checks
    must report the lock as lost (in rollback mode another process gets past it; in WAL
    mode the -wal and -shm are deleted and the holder's commit is lost to others)."""
    with holding(scenario, database) as holder:
        open(database, "rb").close()  # noqa: SIM115 - the close is the point
        problems = lock_problems(holder)
    if scenario.journal == "wal":
        assert any(p.startswith("(b)") and "-wal was deleted" in p for p in problems), problems
        assert any(p.startswith("(c)") and "no such table" in p for p in problems), problems
    else:
        assert any(p.startswith("(a)") and "succeeded" in p for p in problems), problems


@pytest.mark.requires_qcodes  # the database is written by QCoDeS
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_the_checks_pass_when_nothing_touches_the_file(scenario: Scenario, database: Path) -> None:
    """The control: with no descriptor closed, the checks find the lock intact (so the
    failures of old qcsql come from qcsql, not from the checks)."""
    with holding(scenario, database) as holder:
        os.stat(database)  # a look at the file that opens no descriptor
        problems = lock_problems(holder)
    assert not problems, "\n".join(problems)
