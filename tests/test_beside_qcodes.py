"""qcsql in the same process as a running QCoDeS measurement, as in one Jupyter kernel.

A genuine QCoDeS 0.58 ``Measurement`` writes a few thousand rows a second in a thread
of the test process, over a file that already holds the big runs of
tests/fastpath_dbs.py, and keeps its connection open as a notebook does. Meanwhile,
in other threads of the same process, qcsql follows the live run and reads and
exports the completed runs again and again (through one shared ``Database`` and
through fresh ones), and another process checks every few tenths of a second that
every row QCoDeS has committed so far is visible to it.

What could go wrong, and what is checked:

* closing any descriptor of the database file drops every POSIX lock the process
  holds on it, QCoDeS' included; in WAL mode the checking process then takes itself
  for the last connection and deletes the ``-wal`` and ``-shm`` under the writer,
  whose later commits nobody else sees: the ``-wal``/``-shm`` inodes must stay the
  same while the writer is connected, and the other process must see every
  committed row;
* a read transaction that qcsql keeps open (or leaves open after a collision of
  threads on its connection) makes QCoDeS' commit fail with "database is locked",
  which QCoDeS only logs: its log must stay free of warnings;
* qcsql's follow must give exactly the run's rows, in order, none twice (compared with
  QCoDeS' own ``get_parameter_data`` on a copy after the run), and the reads and
  exports of the completed runs must equal those made before the writer started;
* the file must pass ``PRAGMA integrity_check`` afterwards.

Both journal modes: WAL (QCoDeS' default) and rollback journal, which QCoDeS keeps
when it connects to a file in that mode (checked by header byte 18, read by the
checking process: this process must not open the file while QCoDeS has it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from tests.fastpath_dbs import FASTPATH_RUNS, fastpath_db
from tests.helpers import copy_database
from tests.qcodes_build import parameters

pytestmark = pytest.mark.requires_qcodes
pytest.importorskip("qcodes")

MEASURE_S = 3.0  # how long QCoDeS measures
ROWS_PER_S = 4000.0
BATCH = 40  # rows per add_result call
WRITE_PERIOD_S = 0.02  # QCoDeS commits at most this long after add_result
CHECK_EVERY_S = 0.15  # how often the other process looks
SUBPROCESS_TIMEOUT_S = 30.0
JOIN_TIMEOUT_S = 60.0  # a thread that takes longer hangs: fail, never hang CI
HEADER_BYTE_18 = {"wal": 2, "delete": 1}

# Another process: which rows of the live run it sees, and the file's write format.
# A plain read-write connection, as any tool would open: when it closes in WAL mode,
# SQLite checkpoints and deletes the -wal if it can lock the file exclusively, which
# it can only if the writer's lock is gone.
CHECK = r"""
import json, sqlite3, sys
path, run_id = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(path, timeout=10)
try:
    (table,) = conn.execute("SELECT result_table_name FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    count, low, high, wrong = conn.execute(
        f'SELECT count(*), min(x), max(x), sum(y != 2 * x + 0.25) FROM "{table}"'
    ).fetchone()
finally:
    conn.close()
with open(path, "rb") as handle:
    byte_18 = handle.read(100)[18]
print(json.dumps({"count": count, "low": low, "high": high, "wrong": wrong, "byte_18": byte_18}))
"""

INTEGRITY = r"""
import sqlite3, sys, urllib.request
conn = sqlite3.connect("file:" + urllib.request.pathname2url(sys.argv[1]) + "?mode=ro", uri=True)
print(" ".join(row[0] for row in conn.execute("PRAGMA integrity_check")))
conn.close()
"""


def in_another_process(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- the QCoDeS side ------------------------------------------------------------------------


@dataclass
class Writer:
    """A QCoDeS measurement in a thread, and what it has committed so far."""

    path: Path
    added: int = 0  # rows handed to QCoDeS
    committed: int = 0  # rows of successful commits (DataSet.add_results returned)
    run_id: int = 0
    error: str | None = None
    log: list[str] = field(default_factory=list)  # QCoDeS' warnings ("Could not commit ...")
    lock: threading.Lock = field(default_factory=threading.Lock)
    connected: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)  # may disconnect now
    thread: threading.Thread | None = None

    def measure(self) -> None:
        from qcodes.dataset import Measurement, load_or_create_experiment
        from qcodes.dataset.sqlite.database import connect

        try:
            conn = connect(str(self.path))  # in this thread: QCoDeS' connections are per thread
            try:
                self.connected.set()
                experiment = load_or_create_experiment("beside qcsql", sample_name="s", conn=conn)
                x, y = parameters("x", "y")
                measurement = Measurement(exp=experiment, name="live sweep")
                measurement.register_parameter(x)
                measurement.register_parameter(y, setpoints=(x,))
                measurement.write_period = WRITE_PERIOD_S
                with measurement.run() as saver:
                    self.run_id = saver.run_id
                    self.started.set()
                    began = time.monotonic()
                    while time.monotonic() - began < MEASURE_S:
                        values = np.arange(self.added, self.added + BATCH, dtype=float)
                        self.added += BATCH
                        saver.add_result((x, values), (y, 2 * values + 0.25))
                        delay = began + self.added / ROWS_PER_S - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                with self.lock:  # the run is completed: QCoDeS flushed and committed the rest
                    self.committed = self.added
                self.finished.set()
                self.release.wait(JOIN_TIMEOUT_S)  # connected, as a notebook stays
            finally:
                conn.close()
        except BaseException:  # every failure is the test's business
            self.error = traceback.format_exc()
        finally:
            self.started.set()
            self.finished.set()


@contextlib.contextmanager
def watching_qcodes(writer: Writer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Count the rows of each successful commit, and collect QCoDeS' warnings: it only logs
    a commit that failed ("Could not commit to database; database is locked")."""
    from qcodes.dataset.data_set import DataSet

    add_results = DataSet.add_results

    def counted(self: DataSet, results: Any) -> None:
        add_results(self, results)  # one transaction, committed when it returns
        with writer.lock:
            writer.committed += len(results)

    monkeypatch.setattr(DataSet, "add_results", counted)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            writer.log.append(f"{record.name}: {record.getMessage()}")

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("qcodes")
    logger.addHandler(handler)
    assert logger.isEnabledFor(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)


# -- the qcsql side -------------------------------------------------------------------------


@dataclass
class Workers:
    """The qcsql threads: an error that ends one is kept in ``errors``; the repeating
    readers count their failed passes instead (:meth:`repeat`)."""

    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    passes: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # failed passes of the readers
    first_failure: dict[str, str] = field(default_factory=dict)

    def repeat(self, name: str, one_pass: Callable[[int], None]) -> Callable[[], None]:
        """Call ``one_pass(turn)`` until stopped, twice at least. A pass that fails is
        counted (the first failure kept with its traceback) and the next one goes on, so
        the load on the file stays up for the whole measurement."""

        def body() -> None:
            turn = 0
            while not self.stop.is_set() or turn < 2:
                try:
                    one_pass(turn)
                except (qcsql.QcsqlError, AssertionError):
                    self.failures[name] = self.failures.get(name, 0) + 1
                    self.first_failure.setdefault(name, traceback.format_exc())
                turn += 1
            self.passes[name] = turn

        return body

    def start(self, name: str, body: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                body()
            except BaseException:  # every failure is the test's business
                self.errors.append(f"{name}: {traceback.format_exc()}")

        thread = threading.Thread(target=guarded, name=name)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT_S)
        hung = [thread.name for thread in self.threads if thread.is_alive()]
        assert not hung, f"qcsql threads still running after {JOIN_TIMEOUT_S:g} s: {hung}"


@dataclass(frozen=True)
class Completed:
    """The completed runs, read and exported before the writer started."""

    data: dict[int, Any]
    exports: dict[int, bytes]


def read_completed(path: Path, folder: Path) -> Completed:
    folder.mkdir()
    with qcsql.open_database(path) as db:
        runs = db.runs()
        assert len(runs) == FASTPATH_RUNS
        return Completed(
            data={run.run_id: run.get_parameter_data() for run in runs},
            exports={run.run_id: run.export_hdf5(folder).read_bytes() for run in runs},
        )


def assert_same_data(got: Any, expected: Any, where: str) -> None:
    assert list(got) == list(expected), where
    for top, tree in expected.items():
        assert list(got[top]) == list(tree), f"{where}: {top}"
        for name, values in tree.items():
            value = got[top][name]
            assert value.dtype == values.dtype and value.shape == values.shape, f"{where}: {name}"
            assert np.array_equal(value, values, equal_nan=True), f"{where}: {name} differs"


def assert_live_prefix(data: Any, where: str) -> None:
    """Rows of the live run read while it grows: x = 0, 1, 2, ..., y = 2 x + 0.25."""
    if not data:
        return
    x, y = data["y"]["x"], data["y"]["y"]
    assert np.array_equal(x, np.arange(len(x), dtype=float)), f"{where}: x is not 0..{len(x) - 1}"
    assert np.array_equal(y, 2 * x + 0.25), f"{where}: y does not match x"


# -- the test -------------------------------------------------------------------------------


def _inodes(path: Path) -> dict[str, tuple[int, int] | None]:
    found: dict[str, tuple[int, int] | None] = {}
    for suffix in ("-wal", "-shm"):
        try:
            info = os.stat(path.with_name(path.name + suffix))  # stat opens no descriptor
            found[suffix] = (info.st_dev, info.st_ino)
        except FileNotFoundError:
            found[suffix] = None
    return found


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_qcsql_beside_a_live_qcodes_measurement(
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    journal: str,
) -> None:
    path = fastpath_db(tmp_path_factory, journal)
    completed = read_completed(path, tmp_path / "before")
    shared = qcsql.open_database(path)  # opened before QCoDeS connects, used by two threads
    writer = Writer(path)
    workers = Workers()
    checks: list[str] = []  # what the other process got wrong
    check_count = 0
    side_file_changes: list[str] = []
    watch_side_files = threading.Event()
    with watching_qcodes(writer, monkeypatch):
        writer.thread = threading.Thread(target=writer.measure, name="qcodes-writer")
        writer.thread.start()
        try:
            assert writer.connected.wait(JOIN_TIMEOUT_S) and writer.started.wait(JOIN_TIMEOUT_S)
            assert writer.error is None, writer.error
            run_id = writer.run_id

            if journal == "wal":  # QCoDeS' connection keeps its -wal and -shm: watch them
                first = _inodes(path)
                assert all(first.values()), f"QCoDeS is connected but {first}"
                watch_side_files.set()

                def watch() -> None:
                    while watch_side_files.is_set():
                        now = _inodes(path)
                        if now != first:
                            side_file_changes.append(f"{first} became {now}")
                            return
                        time.sleep(0.002)

                workers.start("side files", watch)

            chunks: list[Any] = []

            def follow() -> None:
                run = shared.load_by_id(run_id)
                # yield_empty: look at the stop after every poll, should the run never complete
                for chunk in run.follow(poll_interval=0.02, yield_empty=True):
                    chunks.append(chunk)
                    if workers.stop.is_set():
                        break

            def read_shared(turn: int) -> None:  # the follow's Database, as in one notebook
                run = shared.load_by_id(turn % FASTPATH_RUNS + 1)
                where = f"shared Database, run {run.run_id}"
                assert_same_data(run.get_parameter_data(), completed.data[run.run_id], where)
                folder = tmp_path / "shared" / str(turn)
                folder.mkdir(parents=True)
                written = run.export_hdf5(folder).read_bytes()
                assert written == completed.exports[run.run_id], f"{where}: export differs"

            def read_fresh(turn: int) -> None:  # a new Database each time: opening reads the header
                with qcsql.open_database(path) as db:
                    db.summary()
                    assert [run.run_id for run in db.runs()][-1] == run_id
                    run = db.load_by_id(turn % FASTPATH_RUNS + 1)
                    where = f"fresh Database, run {run.run_id}"
                    assert_same_data(run.get_parameter_data(), completed.data[run.run_id], where)
                    assert_live_prefix(db.load_by_id(run_id).get_parameter_data(), "live run")

            workers.start("follow", follow)
            workers.start("read shared", workers.repeat("read shared", read_shared))
            workers.start("read fresh", workers.repeat("read fresh", read_fresh))

            def check() -> None:
                nonlocal check_count
                with writer.lock:
                    committed = writer.committed
                seen = json.loads(in_another_process(CHECK, str(path), str(run_id)))
                check_count += 1
                if seen["byte_18"] != HEADER_BYTE_18[journal]:
                    checks.append(f"header byte 18 is {seen['byte_18']}: {journal} was not kept")
                if seen["count"] < committed:
                    checks.append(f"{committed} rows committed, another process sees {seen}")
                elif seen["count"] and (
                    seen["low"] != 0 or seen["high"] != seen["count"] - 1 or seen["wrong"]
                ):
                    checks.append(f"another process sees damaged rows: {seen}")

            while not writer.finished.wait(CHECK_EVERY_S):
                check()
            if writer.error is None:  # the follow ends when it sees the run completed
                for thread in workers.threads:
                    if thread.name == "follow":
                        thread.join(JOIN_TIMEOUT_S)
            workers.stop.set()
            check()  # every row, while QCoDeS is still connected
            watch_side_files.clear()
            workers.join()
        finally:
            workers.stop.set()
            watch_side_files.clear()
            shared.close()
            writer.release.set()
            writer.thread.join(JOIN_TIMEOUT_S)
    # Every problem at once: which of them the old code shows says what went wrong.
    problems: list[str] = []
    if writer.thread.is_alive():
        problems.append("the QCoDeS writer did not finish")
    if writer.error is not None:
        problems.append(f"the QCoDeS writer failed: {writer.error}")
    problems += [f"QCoDeS logged (a failed commit?): {line}" for line in writer.log]
    problems += [
        f"the -wal/-shm changed while QCoDeS was connected: {c}" for c in side_file_changes
    ]
    if checks:
        problems.append(f"{len(checks)} of {check_count} checks failed: " + "; ".join(checks[:3]))
    problems += workers.errors
    for name, count in workers.failures.items():
        problems.append(f"{name}: {count} passes failed, first: {workers.first_failure[name]}")
    integrity = in_another_process(INTEGRITY, str(path))
    if integrity != "ok":
        problems.append(f"PRAGMA integrity_check: {integrity}")
    else:
        problems += follow_problems(chunks, path, run_id, writer.added, tmp_path / "copy")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
    assert check_count >= 5, f"another process looked only {check_count} times"
    assert writer.added >= ROWS_PER_S * MEASURE_S / 3, f"QCoDeS wrote only {writer.added} rows"
    grew = sum(1 for chunk in chunks if chunk.data)
    assert grew > 5, f"only {grew} chunks with rows: the run was not followed while it grew"


def follow_problems(
    chunks: list[Any], path: Path, run_id: int, written: int, copy: Path
) -> list[str]:
    """How the rows qcsql's follow gave differ from what QCoDeS reads (on a copy)."""
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(copy_database(path, copy)))
    try:
        expected = load_by_id(run_id, conn=conn).get_parameter_data()["y"]
    finally:
        conn.close()
    if len(expected["x"]) != written:
        return [f"QCoDeS reads {len(expected['x'])} rows of the {written} it wrote"]
    if not chunks or chunks[-1].reason != "completed":
        return [f"the follow did not end with the run's completion: {chunks[-1:]}"]
    trees = [chunk.data["y"] for chunk in chunks if chunk.data]
    problems: list[str] = []
    for tree in trees:
        if list(tree) != list(expected):
            problems.append(f"follow's keys {list(tree)} != QCoDeS' {list(expected)}")
    for name in expected:
        got = np.concatenate([tree[name] for tree in trees]) if trees else np.empty(0)
        if got.dtype != expected[name].dtype or not np.array_equal(got, expected[name]):
            problems.append(
                f"follow's {name} ({len(got)} rows, {got.dtype}) != QCoDeS' "
                f"({len(expected[name])} rows, {expected[name].dtype})"
            )
    return problems
