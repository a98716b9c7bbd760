"""Threads reading one database at once get exactly what one thread alone gets.

A Jupyter user, a plotting callback or a ``ThreadPoolExecutor`` over runs shares a
``Database`` (or opens one per thread) and reads the big runs concurrently. The runs
here (tests/fastpath_dbs.py) are large and regular enough to take every page reader,
so their windows (:meth:`qcsql.sqlite.pages.PageSource.window`) run in several threads at
once; in a rollback-journal file each window is a read transaction on the one sqlite3
connection of a shared ``Database``, which is where threads would collide.

Every result is compared with a single-threaded read done first: the same keys in the
same order, the same dtypes and shapes, equal values, byte-identical exports, and no
exception in any thread.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from qcsql.sqlite.pages import PageSource
from tests.fastpath_dbs import FASTPATH_RUNS, fastpath_db

pytestmark = pytest.mark.requires_qcodes  # the runs are written by QCoDeS 0.58
pytest.importorskip("qcodes")

THREADS = 4
ROUNDS = 3
JOIN_TIMEOUT_S = 120.0  # a deadlock fails the test instead of hanging CI


# -- what one thread alone sees ---------------------------------------------------------------


def listing(db: qcsql.Database) -> list[tuple[Any, ...]]:
    """What ``db.runs()`` says about each run, as comparable values."""
    return [
        (
            run.run_id,
            run.guid,
            run.name,
            run.exp_name,
            run.completed,
            run.run_timestamp_raw,
            run.metadata,
        )
        for run in db.runs()
    ]


def run_details(run: qcsql.Run) -> tuple[Any, ...]:
    """A run's metadata that is read lazily (description, snapshot, counts)."""
    return (
        run.description,
        run.paramspecs,
        run.shapes,
        run.snapshot_raw,
        run.number_of_results,
        run.parent_dataset_links,
    )


def followed(run: qcsql.Run) -> list[tuple[Any, ...]]:
    """A completed run followed to its end: the chunks, as comparable values."""
    chunks = list(run.follow(poll_interval=0.01, idle_timeout=30))
    return [(chunk.data, chunk.last_id, chunk.completed, chunk.reason) for chunk in chunks]


@dataclass(frozen=True)
class Reference:
    listing: list[tuple[Any, ...]]
    details: dict[int, tuple[Any, ...]]
    data: dict[int, Any]
    exports: dict[int, bytes]
    follows: dict[int, list[tuple[Any, ...]]]


def single_threaded(path: Path, folder: Path) -> Reference:
    folder.mkdir()
    with qcsql.open_database(path) as db:
        runs = db.runs()
        assert len(runs) == FASTPATH_RUNS
        return Reference(
            listing=listing(db),
            details={run.run_id: run_details(run) for run in runs},
            data={run.run_id: run.get_parameter_data() for run in runs},
            exports={run.run_id: run.export_hdf5(folder).read_bytes() for run in runs},
            follows={run.run_id: followed(run) for run in runs},
        )


def assert_identical(got: Any, expected: Any, where: str) -> None:
    """Equal, with dict keys in the same order and arrays of the same dtype and shape."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), where
        assert list(got) == list(expected), f"{where}: keys {list(got)} != {list(expected)}"
        for key in expected:
            assert_identical(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert got.dtype == expected.dtype, f"{where}: dtype {got.dtype} != {expected.dtype}"
        assert got.shape == expected.shape, f"{where}: shape {got.shape} != {expected.shape}"
        nan_aware = expected.dtype.kind in "fc"
        assert np.array_equal(got, expected, equal_nan=nan_aware), f"{where}: values differ"
    elif isinstance(expected, list | tuple):
        assert type(got) is type(expected) and len(got) == len(expected), where
        for index, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_identical(g, e, f"{where}[{index}]")
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


# -- proof that the page readers ran, in several threads --------------------------------------


@dataclass
class WindowLog:
    """Which thread entered each page window that read pages (``safe``), in time order."""

    owners: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def switches(self) -> int:
        return sum(1 for a, b in zip(self.owners, self.owners[1:], strict=False) if a != b)


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> WindowLog:
    log = WindowLog()
    original = PageSource.window

    @contextlib.contextmanager
    def logged(self: PageSource) -> Iterator[bool]:
        with original(self) as safe:
            if safe:
                with log.lock:
                    log.owners.append(threading.get_ident())
            yield safe

    monkeypatch.setattr(PageSource, "window", logged)
    return log


# -- running threads together -----------------------------------------------------------------


def run_together(count: int, work: Callable[[int], None]) -> list[str]:
    """Run ``work(index)`` in ``count`` threads released by one barrier; their errors (the
    first with its traceback, the others by their last line)."""
    barrier = threading.Barrier(count, timeout=60)
    errors: list[str] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as exc:  # every failure of every thread is reported
            text = traceback.format_exc() if not errors else f"{type(exc).__name__}: {exc}"
            errors.append(f"thread {index}: {text}")

    threads = [threading.Thread(target=body, args=(i,), name=f"reader-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"threads still running after {JOIN_TIMEOUT_S:g} s (a deadlock?): {hung}"
    return errors


@contextlib.contextmanager
def frequent_thread_switches() -> Iterator[None]:
    """Let the interpreter switch threads every 50 us instead of every 5 ms, so that
    threads meet inside short statements and windows, not only between whole reads."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.fixture(scope="module", params=["wal", "delete"])
def fastpath(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = fastpath_db(tmp_path_factory, request.param)
    return path


@pytest.fixture(scope="module")
def reference(fastpath: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return single_threaded(fastpath, tmp_path_factory.mktemp("single") / "exports")


# -- the tests --------------------------------------------------------------------------------


EXTRAS = ("listing and metadata", "export", "follow")


@pytest.mark.parametrize("sharing", ["one shared Database", "a Database per thread"])
def test_threads_read_every_run_as_one_thread_does(
    fastpath: Path, reference: Reference, windows: WindowLog, tmp_path: Path, sharing: str
) -> None:
    """THREADS threads x every run x ROUNDS rounds: get_parameter_data each time, and in
    turn (a different one for each round, run and thread) the listing and metadata, an
    export into the thread's own folder, or a follow consumed to its end."""
    shared = qcsql.open_database(fastpath) if sharing == "one shared Database" else None
    shared_runs = shared.runs() if shared is not None else None  # lazy parts load in threads

    def work(index: int) -> None:
        with contextlib.ExitStack() as stack:
            db = (
                shared if shared is not None else stack.enter_context(qcsql.open_database(fastpath))
            )
            runs = shared_runs if shared_runs is not None else db.runs()
            for round_ in range(ROUNDS):
                for position, run in enumerate(runs):
                    where = f"thread {index}, round {round_}, run {run.run_id}"
                    data = run.get_parameter_data()
                    assert_identical(data, reference.data[run.run_id], f"{where} data")
                    extra = EXTRAS[(index + round_ + position) % len(EXTRAS)]
                    if extra == "listing and metadata":
                        assert_identical(listing(db), reference.listing, f"{where} runs()")
                        details = run_details(db.load_by_id(run.run_id))
                        assert_identical(details, reference.details[run.run_id], where)
                    elif extra == "export":
                        folder = tmp_path / f"thread-{index}" / f"round-{round_}"
                        folder.mkdir(parents=True, exist_ok=True)
                        written = run.export_hdf5(folder).read_bytes()
                        assert written == reference.exports[run.run_id], f"{where}: export differs"
                    else:
                        got = followed(run)
                        assert_identical(got, reference.follows[run.run_id], f"{where} follow")

    try:
        with frequent_thread_switches():
            errors = run_together(THREADS, work)
    finally:
        if shared is not None:
            shared.close()
    assert not errors, f"{len(errors)} of {THREADS} threads failed:\n" + "\n".join(errors)
    # The fast paths really ran, and threads took turns inside them rather than one
    # after the other (a serialised run would switch owners only THREADS - 1 times).
    assert len(set(windows.owners)) >= THREADS, "the page readers did not run in every thread"
    assert windows.switches() > 2 * THREADS, "the page windows of the threads never interleaved"


def test_many_threads_share_the_rollback_journal_connection(
    tmp_path_factory: pytest.TempPathFactory, windows: WindowLog
) -> None:
    """Many threads reading big runs of one shared Database of a rollback-journal file:
    each page window is a read transaction (BEGIN ... COMMIT) on the Database's one
    sqlite3 connection, so without a lock the threads start transactions inside each
    other's ("cannot start a transaction within a transaction") and commit each other's
    ("cannot commit - no transaction is active"). Every read is tried, failed or not, so
    the message says how many failed."""
    path = fastpath_db(tmp_path_factory, "delete")
    count, rounds = 8, 2
    with qcsql.open_database(path) as db:
        runs = db.runs()
        expected = {run.run_id: run.get_parameter_data() for run in runs}
        failures: list[str] = []

        def work(index: int) -> None:
            for _ in range(rounds):
                for run in runs:
                    try:
                        data = run.get_parameter_data()
                        assert_identical(data, expected[run.run_id], f"run {run.run_id}")
                    except (qcsql.QcsqlError, AssertionError) as exc:
                        failures.append(f"{type(exc).__name__}: {exc}")

        with frequent_thread_switches():
            errors = run_together(count, work)
    assert not errors, "\n".join(errors)
    total = count * rounds * len(runs)
    kinds = sorted({failure.split(": ")[-1] for failure in failures})
    assert not failures, f"{len(failures)} of {total} reads failed: " + "; ".join(kinds)
    assert windows.switches() > 2 * count, "the page windows of the threads never interleaved"
