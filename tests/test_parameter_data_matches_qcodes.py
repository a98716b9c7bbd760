"""get_parameter_data returns what QCoDeS 0.58 returns: keys, order, shapes, dtypes, values.

Values are compared with rtol 2e-14 because QCoDeS reads doubles through
SQLite's 15-significant-digit text rendering and qcsql reads them exactly.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from tests.helpers import EXAMPLE_DB, LEGACY

pytest.importorskip("qcodes")
from tests.qcodes_reference import parameter_data_for  # noqa: E402

RTOL = 2e-14


def assert_same_array(ours: np.ndarray, theirs: np.ndarray, where: str) -> None:
    assert ours.dtype == theirs.dtype, f"{where}: dtype {ours.dtype} != {theirs.dtype}"
    assert ours.shape == theirs.shape, f"{where}: shape {ours.shape} != {theirs.shape}"
    if ours.dtype == object:
        for i, (a, b) in enumerate(zip(ours.ravel(), theirs.ravel(), strict=True)):
            if isinstance(b, np.ndarray):
                assert_same_array(np.asarray(a), b, f"{where}[{i}]")
            else:
                assert a == b or (a != a and b != b), f"{where}[{i}]: {a!r} != {b!r}"
    elif ours.dtype.kind in "fc":
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0, equal_nan=True, err_msg=where)
    else:
        np.testing.assert_array_equal(ours, theirs, err_msg=where)


def assert_same_data(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    assert list(ours) == list(theirs), f"{where}: requested parameters differ"
    for top, tree in theirs.items():
        assert list(ours[top]) == list(tree), f"{where}/{top}: columns differ"
        for name, array in tree.items():
            assert_same_array(ours[top][name], array, f"{where}/{top}/{name}")


def test_every_run_reads_like_qcodes(any_database: Path, guard: list[Path]) -> None:
    reference = parameter_data_for(any_database)
    if (0, None, None) in reference.errors:
        pytest.skip(f"QCoDeS cannot open it: {reference.errors[(0, None, None)]}")
    guard.append(any_database)
    compared = 0
    with qcsql.open_database(any_database) as db:
        for run in db.runs():
            key = (run.run_id, None, None)
            if key in reference.errors:
                continue  # QCoDeS itself fails here; tested separately
            if run.description.source == "results_table":
                assert reference.by_run[key] == {}  # QCoDeS sees no parameters in it
                assert_reads_raw_columns(run, any_database)
            else:
                assert_same_data(
                    run.get_parameter_data(), reference.by_run[key], f"run {run.run_id}"
                )
            compared += 1
    assert compared == len(reference.by_run)


def assert_reads_raw_columns(run: qcsql.Run, path: Path) -> None:
    """A run QCoDeS cannot describe (no layouts table): each column, decoded independently."""
    data = run.get_parameter_data()
    with (
        contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)) as conn,
        conn,
    ):
        for name, tree in data.items():
            raw = [
                v
                for (v,) in conn.execute(
                    f'SELECT "{name}" FROM "{run.table_name}" WHERE "{name}" IS NOT NULL ORDER BY id'
                )
            ]
            if isinstance(raw[0] if raw else None, bytes):
                expected = np.array([np.lib.format.read_array(io.BytesIO(b)) for b in raw])
            else:
                expected = np.array(raw, dtype=np.float64)
            np.testing.assert_array_equal(tree[name], expected)


RANGES = ((2, 4), (None, 3), (5, None), (4, 2), (1, 1), (100, 200), (0, 2))


@pytest.mark.parametrize(
    "path",
    [EXAMPLE_DB, LEGACY / "v9_qcodes-0.44.1.db", LEGACY / "v4_qcodes-0.2.1.db"],
    ids=lambda p: p.name,
)
def test_start_and_end_mean_what_they_mean_in_qcodes(path: Path) -> None:
    reference = parameter_data_for(path, RANGES)
    with qcsql.open_database(path) as db:
        for run in db.runs():
            for start, end in RANGES:
                key = (run.run_id, start, end)
                if key in reference.errors:
                    continue
                ours = run.get_parameter_data(start=start, end=end)
                assert_same_data(ours, reference.by_run[key], f"run {run.run_id} [{start}:{end}]")


def test_requested_parameters_and_their_order() -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(3)
        data = run.get_parameter_data("dmm_voltage", "dmm_current")
        assert list(data) == ["dmm_voltage", "dmm_current"]
        with pytest.raises(qcsql.ParameterNotFoundError, match="has no parameter 'nope'"):
            run.get_parameter_data("nope")
