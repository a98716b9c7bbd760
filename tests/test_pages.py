"""The page reader (qcsql/pages.py) gives exactly what SQLite gives, bit for bit."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
import qcsql.data.results
import qcsql.sqlite.pages
from qcsql.sqlite.connection import Access, ReadOnlyConnection
from tests.helpers import EXAMPLE_DB, copy_database


@contextlib.contextmanager
def _pages_disabled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    @contextlib.contextmanager
    def never(self: qcsql.sqlite.pages.PageSource) -> Iterator[bool]:
        yield False

    with monkeypatch.context() as patch:
        patch.setattr(qcsql.sqlite.pages.PageSource, "window", never)
        yield


def _read_all(path: Path) -> dict[int, dict]:
    out = {}
    with qcsql.open_database(path) as db:
        for run in db.runs():
            try:
                out[run.run_id] = run.get_parameter_data()
            except qcsql.QcsqlError as error:
                out[run.run_id] = type(error)
    return out


def _windows_recorded(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What every page window read from here on gave (None: handed to SQLite)."""
    windows: list[object] = []
    real = qcsql.data.results.read_numeric_window

    def spy(*args: object, **kwargs: object) -> object:
        windows.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return windows[-1]

    monkeypatch.setattr(qcsql.data.results, "read_numeric_window", spy)
    return windows


def test_pages_and_sqlite_agree_exactly(
    any_database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_pages = _read_all(any_database)
    with _pages_disabled(monkeypatch):
        through_sqlite = _read_all(any_database)
    assert with_pages.keys() == through_sqlite.keys()
    for run_id, data in through_sqlite.items():
        if isinstance(data, type):
            assert with_pages[run_id] is data
            continue
        for top, tree in data.items():
            for name, array in tree.items():
                ours = with_pages[run_id][top][name]
                assert ours.dtype == array.dtype and ours.shape == array.shape
                np.testing.assert_array_equal(ours, array, err_msg=f"run {run_id} {top}/{name}")


def test_page_reader_handles_every_integer_width_and_nan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values SQLite stores in each record format (1- to 8-byte ints, 0, 1, floats, 'nan',
    NULL), written into a copy of a real results table, read identically both ways."""
    copy = copy_database(EXAMPLE_DB, tmp_path)
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(2)
        table = run.table_name
    values = [
        0,
        1,
        -1,
        127,
        -128,
        32767,
        -32768,
        8388607,
        -8388608,
        2**31 - 1,
        -(2**31),
        2**47 - 1,
        -(2**47),
        2**53,
        -(2**53),
        0.5,
        -2.25,
        1e300,
        float("inf"),
        "nan",
        None,
    ]
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f'DELETE FROM "{table}"')
        conn.executemany(
            f'INSERT INTO "{table}" (dac_plunger, dac_barrier, dmm_current) VALUES (?, ?, ?)',
            [(i, v, float(i)) for i, v in enumerate(values)],
        )
    windows = _windows_recorded(monkeypatch)
    data = _read_all(copy)[2]["dmm_current"]
    assert windows and all(w is not None for w in windows), "the page reader was not used"
    expected = np.array([np.nan if v in ("nan", None) else float(v) for v in values])
    np.testing.assert_array_equal(data["dac_barrier"], expected)
    np.testing.assert_array_equal(data["dac_plunger"], np.arange(len(values), dtype=float))


def test_a_writer_connecting_mid_read_sends_the_read_back_to_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of a WAL file are read without locks only while no -wal exists; one appearing
    during a window discards that window, and SQLite (following the writer) reads the rest."""
    copy = copy_database(EXAMPLE_DB, tmp_path)
    expected = _read_all(copy)
    real = qcsql.sqlite.pages.leaf_pages
    wal = copy.with_name(copy.name + "-wal")

    def writer_connects(*args: object, **kwargs: object) -> list[int]:
        wal.touch()  # what a QCoDeS writer's connection does first
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(qcsql.sqlite.pages, "leaf_pages", writer_connects)
    with qcsql.open_database(copy) as db:
        assert db.access is qcsql.Access.IMMUTABLE
        data = db.load_by_id(1).get_parameter_data()
        assert db.access is qcsql.Access.READ_ONLY
    for name, array in expected[1]["dmm_current"].items():
        np.testing.assert_array_equal(data["dmm_current"][name], array)


def test_records_of_a_few_headers_are_each_decoded_at_fixed_offsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parameters measured on the same setpoints alternate record headers (each tree in
    rows of its own, the others' columns NULL; whole numbers stored as integers): each
    header shared by many records is decoded at fixed offsets, only the odd records one
    by one, and the values are SQLite's."""
    copy = copy_database(EXAMPLE_DB, tmp_path)
    with qcsql.open_database(copy) as db:
        table = db.load_by_id(2).table_name
    rows: list[tuple[object, object, object]] = []
    for i in range(3000):
        kind = i % 3 if i % 101 else 3
        if kind == 0:
            rows.append((i + 0.5, -i - 0.25, i * 1e-3 + 0.1))
        elif kind == 1:
            rows.append((i + 0.5, None, i * 1e-3 + 0.1))
        elif kind == 2:
            rows.append((float(i), -i - 0.25, None))
        else:  # odd ones out: small integers, a NULL setpoint
            rows.append((i % 7, None, i))
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f'DELETE FROM "{table}"')
        conn.executemany(
            f'INSERT INTO "{table}" (dac_plunger, dac_barrier, dmm_current) VALUES (?, ?, ?)',
            rows,
        )
    one_by_one: list[int] = []
    real = qcsql.sqlite.pages._decode_any_header

    def spy(into: object, rest: np.ndarray, header_size: np.ndarray) -> None:
        one_by_one.append(len(rest))
        real(into, rest, header_size)  # type: ignore[arg-type]

    monkeypatch.setattr(qcsql.sqlite.pages, "_decode_any_header", spy)
    with_pages = _read_all(copy)[2]
    assert 0 < sum(one_by_one) < 300, "shared headers were decoded record by record"
    with _pages_disabled(monkeypatch):
        through_sqlite = _read_all(copy)[2]
    for top, tree in through_sqlite.items():
        for name, array in tree.items():
            np.testing.assert_array_equal(with_pages[top][name], array, err_msg=f"{top}/{name}")


def _read_with_pages_and_without(
    path: Path, access: qcsql.Access, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[int, dict], dict[int, dict]]:
    """Every run of ``path`` (opened with ``access``) read by the page readers, which
    must have read every window, and read with them turned off (through SQLite)."""
    windows = _windows_recorded(monkeypatch)
    with qcsql.open_database(path) as db:
        assert db.access is access
    with_pages = _read_all(path)
    assert windows and all(w is not None for w in windows), "the page reader was not used"
    monkeypatch.undo()
    with _pages_disabled(monkeypatch):
        return with_pages, _read_all(path)


def _wal_copy_a_viewer_read(source: Path, folder: Path) -> Path:
    """A WAL copy of ``source`` after a viewer's plain ``mode=ro`` open came and went: it
    leaves an empty ``-wal`` and a ``-shm`` behind, which SQLite may not remove."""
    copy = copy_database(source, folder)
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    with contextlib.closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as viewer:
        viewer.execute("SELECT count(*) FROM runs").fetchone()
    return copy


def test_an_empty_wal_a_viewer_left_does_not_keep_the_page_reader_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _wal_copy_a_viewer_read(EXAMPLE_DB, tmp_path)
    wal = copy.with_name(copy.name + "-wal")
    assert wal.stat().st_size == 0 and copy.with_name(copy.name + "-shm").exists()
    with_pages, through_sqlite = _read_with_pages_and_without(
        copy, qcsql.Access.READ_ONLY, monkeypatch
    )
    assert with_pages.keys() == through_sqlite.keys()
    for run_id, data in through_sqlite.items():
        for top, tree in data.items():
            for name, array in tree.items():
                np.testing.assert_array_equal(with_pages[run_id][top][name], array)
    assert wal.stat().st_size == 0


def _wal_copy_without_shm(source: Path, folder: Path) -> Path:
    """A copy of ``source`` in WAL mode whose committed changes are still in its ``-wal``
    (every number of every results table doubled there), copied with its ``-wal`` but
    without ``-shm``, as archives hold them."""
    work = copy_database(source, folder / "work")
    with contextlib.closing(sqlite3.connect(work, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        tables = [t for (t,) in conn.execute("SELECT result_table_name FROM runs")]
        for table in tables:
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            doubled = ", ".join(
                f'"{c}" = CASE typeof("{c}") WHEN \'real\' THEN "{c}" * 2 ELSE "{c}" END'
                for c in columns
                if c != "id"
            )
            if doubled:
                conn.execute(f'UPDATE "{table}" SET {doubled}')
        archived = folder / "archived"
        archived.mkdir()
        copy = archived / work.name
        for suffix in ("", "-wal"):
            shutil.copyfile(str(work) + suffix, str(copy) + suffix)
    assert Path(str(copy) + "-wal").stat().st_size > 0
    return copy


def test_a_wal_file_copied_without_shm_is_read_from_pages_of_its_private_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guard: list[Path]
) -> None:
    """Archived WAL files are read through a private snapshot copy; that copy is
    checkpointed in qcsql's temporary folder, so the page readers read it (before, every
    value went through SQLite's rows), and what they read is what SQLite reads."""
    copy = _wal_copy_without_shm(EXAMPLE_DB, tmp_path)
    guard.append(copy)
    guard.append(Path(str(copy) + "-wal"))
    with_pages, through_sqlite = _read_with_pages_and_without(
        copy, qcsql.Access.SNAPSHOT_COPY, monkeypatch
    )
    # The same data, checkpointed by SQLite itself into a plain rollback-journal file.
    plain = tmp_path / "plain" / copy.name
    plain.parent.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(str(copy) + suffix, str(plain) + suffix)
    with contextlib.closing(sqlite3.connect(plain)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    expected = _read_all(plain)
    original = _read_all(EXAMPLE_DB)
    assert with_pages.keys() == through_sqlite.keys() == expected.keys()
    doubled = 0
    for run_id, data in expected.items():
        for top, tree in data.items():
            for name, array in tree.items():
                np.testing.assert_array_equal(with_pages[run_id][top][name], array)
                np.testing.assert_array_equal(through_sqlite[run_id][top][name], array)
                if array.dtype.kind == "f" and np.any(array != 0):
                    doubled += not np.array_equal(original[run_id][top][name], array)
    assert doubled, "the -wal changed nothing: the test could not tell the file from its -wal"
    assert not Path(str(copy) + "-shm").exists()


_GENERATIONS_WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
generation = 1
while time.monotonic() < deadline:
    generation += 1
    conn.execute("UPDATE t SET y = ?", (float(generation),))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    time.sleep(0.002)
print(generation, flush=True)
"""


def test_pages_read_beside_an_empty_wal_are_never_torn_by_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a writer commits and checkpoints (truncating its -wal to nothing each time),
    every window the page reader reads directly is one committed state of the table: a
    checkpoint copying the next commit into the file mid-window would mix two. Each window
    reads its pages in two halves a few milliseconds apart, and takes its snapshot a few
    milliseconds after it first looked at the -wal, so that commits and checkpoints fall
    in between often."""
    real_pages = qcsql.sqlite.pages.PageSource.pages

    def pages_in_two_halves(self: qcsql.sqlite.pages.PageSource, numbers: list[int]) -> np.ndarray:
        half = len(numbers) // 2
        first = real_pages(self, numbers[:half])
        time.sleep(0.005)
        return np.concatenate([first, real_pages(self, numbers[half:])])

    real_reading_raw = ReadOnlyConnection.reading_raw

    @contextlib.contextmanager
    def reading_raw_late(self: ReadOnlyConnection, **where: Any) -> Iterator[sqlite3.Connection]:
        time.sleep(0.003)  # a commit may land between a look at the -wal and the snapshot
        with real_reading_raw(self, **where) as raw:
            yield raw

    monkeypatch.setattr(qcsql.sqlite.pages.PageSource, "pages", pages_in_two_halves)
    monkeypatch.setattr(ReadOnlyConnection, "reading_raw", reading_raw_late)
    path = tmp_path / "generations.db"
    rows = 20_000
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL, y REAL)")
        conn.executemany("INSERT INTO t (x, y) VALUES (?, 1.0)", ((float(i),) for i in range(rows)))
    writer = subprocess.Popen(
        [sys.executable, "-c", _GENERATIONS_WRITER, str(path), "4"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    connection = ReadOnlyConnection(path)
    try:
        assert connection.access is Access.READ_ONLY
        with connection.reading_raw() as raw:
            (root,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 't'").fetchone()
        source = qcsql.sqlite.pages.PageSource(connection)
        direct = 0
        while writer.poll() is None:
            window = qcsql.sqlite.pages.read_numeric_window(source, root, [2, 1], 1, 0, rows)
            if window is None:
                continue  # frames in the -wal: SQLite's to read
            direct += 1
            y, x = window.values
            assert window.rows == rows
            np.testing.assert_array_equal(x, np.arange(rows, dtype=float))
            assert np.unique(y).size == 1, f"a window mixed generations {np.unique(y)}"
    finally:
        writer.communicate()
        connection.close()
    assert writer.returncode == 0
    assert direct > 10, "the page reader never read beside the empty -wal"


def test_pages_of_a_closed_snapshot_copy_are_not_read(tmp_path: Path) -> None:
    """Closing a connection closes the descriptor of its checkpointed snapshot copy: a page
    window opened afterwards (another thread, a lazy array) raises, as SQLite's reads do,
    and never reads through a descriptor number the process may have handed out again."""
    copy = _wal_copy_without_shm(EXAMPLE_DB, tmp_path)
    connection = ReadOnlyConnection(copy)
    assert connection.access is Access.SNAPSHOT_COPY and connection.snapshot_file is not None
    source = qcsql.sqlite.pages.PageSource(connection)
    with source.window() as readable:
        assert readable
    connection.close()
    with pytest.raises(qcsql.DatabaseOpenError, match="closed"):
        with source.window():
            pass
