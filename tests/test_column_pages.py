"""The one-column page reader (qcsql/sqlite/column_pages.py) gives exactly SQLite's values.

Opening a sweep reads only its setpoint: alike leaf pages as strided views, the others
through the general page reader. These tests compare it with SQLite on every database
the tests know, and on a QCoDeS-written run made to have pages of every kind: rowid
varints of one, two and three bytes, whole numbers stored as integers, a block of rows
of another parameter (the tree's top NULL), and id windows that start and end inside
pages.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
import qcsql.sqlite.column_pages
import qcsql.sqlite.pages
from qcsql.data.results import RowRange
from qcsql.data.streams import stream_numeric_trees
from tests.helpers import copy_database

pytest.importorskip("qcodes")
from tests.qcodes_build import new_database, parameters, sweep  # noqa: E402

ROWS_BEFORE, OTHER_ROWS, ROWS_AFTER = 30_000, 2_000, 10_000


@pytest.fixture(scope="module")
def sweep_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run 1: ``v`` against ``x`` (every 1000th ``x`` a whole number, stored as an integer),
    with a block of rows of ``w`` against ``x`` in the middle; run 2: ``v`` against whole
    numbers (stored as integers of 1 to 3 bytes)."""

    path = tmp_path_factory.mktemp("column") / "column.db"
    experiment = new_database(path)
    rng = np.random.default_rng(3)
    try:
        x, v, w = parameters("x", "v", "w")
        measurement = sweep(experiment, "sweep with a block of another parameter", x, v, w)
        with measurement.run() as saver:
            first = np.arange(ROWS_BEFORE) * 1e-3
            saver.add_result((x, first), (v, rng.normal(0, 1, first.size)))
            saver.add_result((x, np.arange(OTHER_ROWS) * 0.5), (w, np.ones(OTHER_ROWS)))
            then = 100 + np.arange(ROWS_AFTER) * 1e-3
            saver.add_result((x, then), (v, rng.normal(0, 1, then.size)))
        integers = sweep(experiment, "sweep of whole numbers", x, v)
        with integers.run() as saver:
            steps = np.arange(-20_000, 20_000) * 3.0  # integers of 3, 2, 1, 2 and 3 bytes
            saver.add_result((x, steps), (v, rng.normal(0, 1, steps.size)))
    finally:
        experiment.conn.close()
    return path


@contextlib.contextmanager
def _general_pages_counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The number of pages each call of the general reader decodes for the column reader."""
    counted: list[int] = []
    real = qcsql.sqlite.column_pages.decode_leaves

    def spy(source: Any, page_bytes: np.ndarray, *args: Any) -> Any:
        counted.append(len(page_bytes))
        return real(source, page_bytes, *args)

    with monkeypatch.context() as patch:
        patch.setattr(qcsql.sqlite.column_pages, "decode_leaves", spy)
        yield counted


@pytest.mark.parametrize("run_id", [1, 2])
def test_a_sweeps_setpoint_is_read_from_strided_pages_exactly(
    sweep_db: Path, run_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Doubles (run 1) and whole numbers SQLite stores as integers of 1 to 3 bytes (2)."""
    with qcsql.open_database(sweep_db) as db:
        run = db.load_by_id(run_id)
        expected = run.get_parameter_data("v")["v"]["x"]
        stream = stream_numeric_trees(run, ["v"])
        assert stream is not None
        with _general_pages_counted(monkeypatch) as general:
            got = np.concatenate(list(stream.column("x")))
    np.testing.assert_array_equal(got, expected)
    assert got.size == (ROWS_BEFORE + ROWS_AFTER if run_id == 1 else 40_000)
    leaves = 40_000 // 100  # cells of 3 numbers: more than 100 a page
    assert 0 < sum(general) < leaves // 4, "alike pages went to the general reader"


@pytest.mark.parametrize(
    ("low", "high"),
    [(0, 50), (7, 16_500), (16_000, 16_400), (29_990, 32_010), (123, 41_999), (31_000, 31_500)],
)
def test_windows_of_ids_inside_pages_give_sqlites_rows(
    sweep_db: Path, low: int, high: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Id windows that start and end inside pages, across the rowid varint's growth from
    two to three bytes, into and out of the block of the other parameter's rows."""
    with qcsql.open_database(sweep_db) as db:
        table = db.load_by_id(1).results_table()
        pieces = []
        for _, window in table.column_windows("x", "v", RowRange(low, high, high - low, False)):
            assert window is not None
            pieces.append(window.values)
        rows = RowRange(low, high, high - low, False)
        through_sqlite = [
            value for chunk in table.chunks(("x",), "v", rows, 1000) for (value,) in chunk
        ]
    got = np.concatenate(pieces) if pieces else np.empty(0)
    np.testing.assert_array_equal(got, np.array(through_sqlite, dtype=np.float64))


def test_every_numeric_setpoint_of_every_database_reads_as_its_tree(any_database: Path) -> None:
    """On every run the tests know: a setpoint read alone equals that column of its tree
    read whole (or both are the same typed error)."""
    with qcsql.open_database(any_database) as db:
        for run in db.runs():
            try:
                graph = run.description.interdependencies
            except qcsql.QcsqlError:
                continue
            for top in graph.top_level_parameters:
                _, setpoints, _ = graph.tree_by_group(top)
                try:
                    stream = stream_numeric_trees(run, [top])
                except qcsql.QcsqlError:
                    continue
                if stream is None:
                    continue
                for setpoint in setpoints:
                    index = stream.tree.columns.index(setpoint)
                    try:
                        whole = [chunk[index] for chunk in stream.chunks()]
                    except qcsql.QcsqlError as error:
                        with pytest.raises(type(error)):
                            list(stream.column(setpoint))
                        continue
                    alone = list(stream.column(setpoint))
                    np.testing.assert_array_equal(
                        np.concatenate(alone) if alone else np.empty(0),
                        np.concatenate(whole) if whole else np.empty(0),
                        err_msg=f"run {run.run_id} {top}/{setpoint}",
                    )


def test_pages_unlike_any_model_are_all_read_by_the_general_reader(
    sweep_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows alternating between two record formats (no page like another): the column is
    still SQLite's, read by the general page reader."""
    copy = copy_database(sweep_db, tmp_path)
    with qcsql.open_database(copy) as db:
        table = db.load_by_id(1).table_name
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f'DELETE FROM "{table}"')
        conn.executemany(
            f'INSERT INTO "{table}" (x, v, w) VALUES (?, ?, ?)',
            [(i * 0.5 + 0.25, float(i % 2 or i), None) for i in range(20_000)],
        )
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(1)
        stream = stream_numeric_trees(run, ["v"])
        assert stream is not None
        with _general_pages_counted(monkeypatch) as general:
            got = np.concatenate(list(stream.column("x")))
    np.testing.assert_array_equal(got, np.arange(20_000) * 0.5 + 0.25)
    assert sum(general) > 20_000 // 250  # no page alike with another: all read the general way
