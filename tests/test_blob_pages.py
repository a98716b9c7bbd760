"""Array rows copied straight from the pages (qcsql/blob_pages.py, and the scattered
reads of qcsql/blob_scatter.py) equal what SQLite and QCoDeS give, on every page layout
SQLite produces: overflow chains before or after their leaf, many cells per leaf,
interior pages between rows, chains through reused (scattered) pages, interleaved
trees, every page size, rollback and WAL files."""

from __future__ import annotations

import io
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import qcsql
import qcsql.data.results
import qcsql.sqlite.blob_pages
import qcsql.sqlite.blob_scatter
import qcsql.sqlite.scatter_read
from qcsql.data.npy import parse_header
from qcsql.data.results import ResultsTable, RowRange
from qcsql.sqlite.blob_cells import ColumnTarget
from qcsql.sqlite.connection import ReadOnlyConnection
from tests.helpers import copy_database


def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


# -- the page reader alone, against SQLite, on tables written with plain SQLite -------------


def _write_table(
    path: Path,
    page_size: int,
    wal: bool,
    rows: list[tuple[Any, Any, Any]],
    filler: int,
) -> None:
    """A QCoDeS-like results table (id, an array top column, a numeric column, an array
    setpoint); ``filler`` rows of a dropped table leave free pages that SQLite reuses for
    the new rows' overflow chains, in no particular order."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size={page_size}")
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    if filler:
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.executemany("INSERT INTO filler VALUES (?)", [(bytes(3000),)] * filler)
        conn.commit()
        conn.execute("DROP TABLE filler")
    conn.execute(
        'CREATE TABLE "results-1-1" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
        "signal array, gate numeric, freq array)"
    )
    conn.executemany('INSERT INTO "results-1-1" (signal, gate, freq) VALUES (?, ?, ?)', rows)
    conn.commit()
    conn.close()
    assert not path.with_name(path.name + "-wal").exists()


def _expected(rows: list[tuple[Any, Any, Any]], points: int) -> list[np.ndarray]:
    kept = [row for row in rows if row[0] is not None]
    signal = np.array([np.load(io.BytesIO(row[0])) for row in kept]).reshape(len(kept), points)
    gate = np.array([np.nan if r[1] in (None, "nan") else float(r[1]) for r in kept])
    freq = np.array([np.load(io.BytesIO(row[2])) for row in kept]).reshape(len(kept), points)
    return [signal, np.broadcast_to(gate[:, None], (len(kept), points)), freq]


def _fill(path: Path, points: int) -> tuple[int, list[np.ndarray], int]:
    conn = ReadOnlyConnection(path)
    try:
        table = ResultsTable(conn, 1, "results-1-1")
        upto = table.max_id()
        with conn.reading_raw() as raw:
            first = raw.execute(
                'SELECT signal FROM "results-1-1" WHERE signal IS NOT NULL ORDER BY id LIMIT 1'
            ).fetchone()[0]
        header = parse_header(first)
        prefix = first[: header.data_offset]
        outs = [np.full((upto, points), -1.0) for _ in range(3)]
        targets = [
            ColumnTarget(1, prefix, header.data_nbytes, header.dtype, outs[0], True),
            ColumnTarget(2, None, 8, np.dtype(np.float64), outs[1], False),
            ColumnTarget(3, prefix, header.data_nbytes, header.dtype, outs[2], True),
        ]
        filled, covered = table.fill_from_pages(targets, RowRange(0, upto, upto, exact=False))
        return filled, outs, covered
    finally:
        conn.close()


def _rows(points: int, spec: list[tuple[bool, Any]]) -> list[tuple[Any, Any, Any]]:
    """Rows from a compact spec (so that hypothesis reports small examples): per row,
    whether it belongs to the tree (else it is another tree's row, NULL here) and the
    numeric column's value."""
    freq = _npy(np.linspace(4e9, 8e9, points))
    return [
        (_npy(np.arange(points) * 0.5 + index), gate, freq) if ours else (None, gate, None)
        for index, (ours, gate) in enumerate(spec)
    ]


_real_start = qcsql.sqlite.blob_pages._Span.start


def _poisoning_start(span: qcsql.sqlite.blob_pages._Span, first: int) -> None:
    """Fill the buffer with junk before each window, so that reading a byte the window
    did not load gives wrong numbers every time, not only when stale memory happens to."""
    _real_start(span, first)
    span.buffer.fill(0xA5)


_real_parse = qcsql.sqlite.blob_pages._parse_window


def _parse_loaded_leaves_only(source: Any, span: Any, leaves: list[int], *rest: Any) -> Any:
    """Every leaf a window parses has been read into its buffer."""
    assert all(span.first <= leaf < span.first + span.loaded for leaf in leaves)
    return _real_parse(source, span, leaves, *rest)


def _small_windows(patch: pytest.MonkeyPatch) -> None:
    """Windows of a few pages, so that a table of a few hundred rows takes many of them,
    and the scattered reads that follow a learned pattern get their turn."""
    patch.setattr(qcsql.sqlite.blob_pages, "WINDOW_PAGES", 24)
    patch.setattr(qcsql.sqlite.blob_pages, "BUFFER_PAGES", 48)
    patch.setattr(qcsql.sqlite.blob_pages, "LEARNING_LEAVES", 2)
    patch.setattr(qcsql.sqlite.blob_scatter, "SCATTER_PAGES", 20)


@pytest.fixture
def scattered_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows each scattered read filled (one window, or several planned ahead)."""
    filled: list[int] = []
    real = qcsql.sqlite.blob_scatter.scatter_windows

    def counting(*args: Any) -> Any:
        result = real(*args)
        filled.append(result.rows if result else 0)
        return result

    monkeypatch.setattr(qcsql.sqlite.blob_pages, "scatter_windows", counting)
    return filled


_GATES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-300, 300),
    st.floats(allow_nan=False),
    st.sampled_from([None, "nan", 0, 1]),
)


EXAMPLES = int(os.environ.get("QCSQL_EXAMPLES", "40"))  # more for a long run by hand


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    page_size=st.sampled_from([512, 1024, 4096, 65536]),
    wal=st.booleans(),
    filler=st.sampled_from([0, 0, 50]),
    small=st.booleans(),
    points=st.sampled_from([1, 3, 40, 500, 1000, 3000]),
    spec=st.lists(
        st.tuples(st.sampled_from([True, True, True, False]), _GATES), min_size=1, max_size=700
    ),
    regular=st.tuples(st.integers(0, 300), st.integers(0, 300)),
)
# Leaves out of key order in the file (free pages reused): one outside the buffer ended
# a window too late, one inside it but past the last leaf was never read.
@example(
    page_size=65536,
    wal=False,
    filler=50,
    small=False,
    points=3000,
    spec=[(True, 0)] * 3,
    regular=(0, 0),
)
@example(
    page_size=1024,
    wal=False,
    filler=50,
    small=False,
    points=40,
    spec=[(True, 127), (True, 127), (False, None), (True, -8e-300)],
    regular=(0, 0),
)
def test_pages_give_what_sqlite_gives(
    tmp_path_factory: pytest.TempPathFactory,
    page_size: int,
    wal: bool,
    filler: int,
    small: bool,
    points: int,
    spec: list[tuple[bool, Any]],
    regular: tuple[int, int],
) -> None:
    # Rows as QCoDeS appends them before and after the random ones: a pattern to learn,
    # to scatter, to see broken and to learn again.
    lead, trail = ([(True, index + 0.5)] * count for index, count in enumerate(regular))
    spec = [*lead, (True, spec[0][1]), *spec[1:], *trail]  # the tree has at least one row
    rows = _rows(points, spec)
    path = tmp_path_factory.mktemp("blob") / "table.db"
    _write_table(path, page_size, wal, rows, filler)
    with pytest.MonkeyPatch.context() as patch:
        if small:
            _small_windows(patch)
        patch.setattr(qcsql.sqlite.blob_pages._Span, "start", _poisoning_start)
        patch.setattr(qcsql.sqlite.blob_pages, "_parse_window", _parse_loaded_leaves_only)
        filled, outs, covered = _fill(path, points)
    ids = np.array([i + 1 for i, (ours, _) in enumerate(spec) if ours])
    assert filled == int(np.sum(ids <= covered))  # exactly the tree's rows up to ``covered``
    for out, want in zip(outs, _expected(rows, points), strict=True):
        np.testing.assert_array_equal(out[:filled], want[:filled])


def test_regular_layouts_are_read_entirely_from_pages(
    tmp_path: Path, scattered_rows: list[int]
) -> None:
    """Rows as QCoDeS appends them, in WAL (two threads) and rollback files: no SQLite;
    rows whose blobs spill to overflow pages are read mostly by scattered reads."""
    for wal in (True, False):
        for points in (10, 1000):
            path = tmp_path / f"regular-{wal}-{points}.db"
            freq = _npy(np.linspace(0, 1, points))
            rows = [(_npy(np.arange(points) + i * 1.0), i, freq) for i in range(2000)]
            _write_table(path, 4096, wal, rows, 0)
            scattered_rows.clear()
            filled, outs, covered = _fill(path, points)
            assert (filled, covered) == (2000, 2000)
            for out, want in zip(outs, _expected(rows, points), strict=True):
                np.testing.assert_array_equal(out[:filled], want)
            if points == 1000:
                assert sum(scattered_rows) > 1800, scattered_rows
            else:
                assert scattered_rows == []  # no overflow pages: no pattern to scatter


@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
@pytest.mark.parametrize(
    "change", ["shorter blob", "NULL array", "text gate", "reused pages", "id gap"]
)
def test_scattered_reads_stop_where_the_pattern_breaks(
    tmp_path: Path, scattered_rows: list[int], change: str, wal: bool
) -> None:
    """Rows 1-1200 follow the pattern; from row 1201 on something differs (for "id gap",
    the next id is 1301, so the predicted rowid is wrong). The scattered
    windows stop before the first row that differs (whatever the read put in later rows
    is overwritten), the buffered reader or SQLite reads it, and the pattern is learned
    again afterwards. In a WAL file nobody writes, windows are planned ahead while
    others read, so windows planned past the change are read and dropped."""
    path = tmp_path / "breaks.db"
    freq = _npy(np.linspace(0, 1, 1000))
    rows: list[tuple[Any, Any, Any]] = [
        (_npy(np.arange(1000) + i * 1.0), i, freq) for i in range(2400)
    ]
    if change == "shorter blob":
        rows[1200] = (_npy(np.arange(999) * 1.0), 1200, freq)
    elif change == "NULL array":
        rows[1200] = (None, 1200, None)
    elif change == "text gate":
        rows[1200:1300] = [(row[0], "nan", row[2]) for row in rows[1200:1300]]
    conn = sqlite3.connect(path)
    if change == "reused pages":  # free pages of a dropped table, taken by rows 1200 on
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.commit()
    conn.close()
    _write_table(path, 4096, wal, rows[:1200], 0)
    conn = sqlite3.connect(path)
    if change == "reused pages":
        conn.executemany("INSERT INTO filler VALUES (?)", [(bytes(3000),)] * 400)
        conn.commit()
        conn.execute("DROP TABLE filler")
        conn.commit()
    ids = [
        index + 1 + (100 if change == "id gap" and index >= 1200 else 0) for index in range(2400)
    ]
    conn.executemany(
        'INSERT INTO "results-1-1" (id, signal, gate, freq) VALUES (?, ?, ?, ?)',
        [(row_id, *row) for row_id, row in zip(ids[1200:], rows[1200:], strict=True)],
    )
    conn.commit()
    conn.close()
    with pytest.MonkeyPatch.context() as patch:
        _small_windows(patch)
        patch.setattr(qcsql.sqlite.blob_scatter, "SCATTER_PAGES", 400)
        filled, outs, covered = _fill(path, 1000)
    read = [row for row, i in zip(rows, ids, strict=True) if i <= covered and row[0] is not None]
    assert filled == len(read)
    for out, want in zip(outs, _expected(read, 1000), strict=True):
        np.testing.assert_array_equal(out[:filled], want)
    assert sum(scattered_rows) >= 1000, scattered_rows
    if change == "shorter blob":
        assert covered == 1200  # a blob of another size: SQLite reads on (and finds it ragged)
    elif change == "reused pages":
        assert covered >= 1200  # chains through pages out of order are left to SQLite
    else:
        assert covered == ids[-1]
        assert sum(scattered_rows) > 2000, scattered_rows  # learned again after the change


def test_interleaved_trees_on_two_threads_close_the_gap(tmp_path: Path) -> None:
    """Every other row belongs to another tree, so the second half of the ids, read on its
    own thread from row ids/2, is moved down to follow the first half's rows."""
    path = tmp_path / "interleaved.db"
    freq = _npy(np.linspace(0, 1, 100))
    rows = [
        (_npy(np.arange(100) + i * 1.0), i, freq) if i % 2 else (None, i, None) for i in range(3000)
    ]
    _write_table(path, 4096, True, rows, 0)
    filled, outs, covered = _fill(path, 100)
    assert (filled, covered) == (1500, 3000)
    for out, want in zip(outs, _expected(rows, 100), strict=True):
        np.testing.assert_array_equal(out[:filled], want)


def test_rows_scattered_reads_cannot_take_are_still_shared_between_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scattered_rows: list[int]
) -> None:
    """Without preadv (Windows) the rows still show their pattern, but nothing can use it:
    no pattern is kept, and the two halves of the ids are read on two threads."""
    path = tmp_path / "regular.db"
    freq = _npy(np.linspace(0, 1, 1000))
    rows = [(_npy(np.arange(1000) + i * 1.0), i, freq) for i in range(2000)]
    _write_table(path, 4096, True, rows, 0)
    monkeypatch.setattr(qcsql.sqlite.scatter_read, "AVAILABLE", False)
    threads: set[str] = set()
    real = qcsql.sqlite.blob_pages._read_window

    def noting_thread(*args: Any) -> Any:
        threads.add(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(qcsql.sqlite.blob_pages, "_read_window", noting_thread)
    filled, outs, covered = _fill(path, 1000)
    assert (filled, covered) == (2000, 2000)
    for out, want in zip(outs, _expected(rows, 1000), strict=True):
        np.testing.assert_array_equal(out[:filled], want)
    assert not any(scattered_rows), scattered_rows
    assert len(threads) == 2, threads


# -- whole runs written by QCoDeS, against QCoDeS -------------------------------------------


@pytest.fixture(params=["wal", "delete"])
def journal_copy(request: pytest.FixtureRequest, array_runs: Path, tmp_path: Path) -> Path:
    copy = copy_database(array_runs, tmp_path)
    if request.param == "delete":
        conn = sqlite3.connect(copy)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
    return copy


@pytest.fixture
def rows_from_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    filled: list[int] = []
    real = qcsql.data.results.fill_from_pages

    def counting(*args: Any) -> tuple[int, int]:
        result = real(*args)
        filled.append(result[0])
        return result

    monkeypatch.setattr(qcsql.data.results, "fill_from_pages", counting)
    yield filled


def test_qcodes_array_runs_read_from_pages_like_qcodes(
    journal_copy: Path, rows_from_pages: list[int], scattered_rows: list[int]
) -> None:
    from tests.qcodes_reference import parameter_data_for
    from tests.test_parameter_data_matches_qcodes import assert_same_data

    reference = parameter_data_for(journal_copy)
    with qcsql.open_database(journal_copy) as db:
        for run in db.runs():
            assert_same_data(
                run.get_parameter_data(),
                reference.by_run[(run.run_id, None, None)],
                f"run {run.run_id}",
            )
    # Every row of every tree came from the pages: 1200, 900, then 700 and 700; most of
    # them by scattered reads, after a learning window per tree and thread.
    assert rows_from_pages == [1200, 900, 700, 700]
    assert sum(scattered_rows) > 1500, scattered_rows


def test_start_and_end_read_from_pages_like_qcodes(
    array_runs: Path, tmp_path: Path, rows_from_pages: list[int]
) -> None:
    from tests.qcodes_reference import parameter_data_for
    from tests.test_parameter_data_matches_qcodes import assert_same_data

    copy = copy_database(array_runs, tmp_path)
    ranges = ((1, 1), (2, 700), (650, None))
    reference = parameter_data_for(copy, ranges)
    with qcsql.open_database(copy) as db:
        for run in db.runs():
            for start, end in ranges:
                assert_same_data(
                    run.get_parameter_data(start=start, end=end),
                    reference.by_run[(run.run_id, start, end)],
                    f"run {run.run_id} rows {start}..{end}",
                )
    assert sum(rows_from_pages) > 0
