"""The variables of ``to_xarray_dataset()`` are listed in QCoDeS' in-memory order.

That order is not the file's (h5netcdf writes dimension scales first): each tree's
dataset lists its variables as xarray builds it (``xr.Dataset(data_vars, coords)`` for
the direct layout, ``multi_index`` and its levels first for a multi-index), then
``xr.merge`` lists them as they first appear, moving the index coordinates of a tree
reindexed by the outer join to its front. Runs built here by QCoDeS itself, so that the
cases hold without the corpus.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import qcsql

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")


def _database(tmp_path: Path) -> Path:
    from qcodes.dataset import Measurement

    from tests.qcodes_build import new_database, parameters

    path = tmp_path / "order.db"
    experiment = new_database(path)
    try:
        x, y, a, b, c = parameters("x", "y", "a", "b", "c")
        # run 1: two dependents of x measured at different x (the outer join realigns)
        measurement = Measurement(exp=experiment)
        measurement.register_parameter(x)
        measurement.register_parameter(a, setpoints=(x,))
        measurement.register_parameter(b, setpoints=(x,))
        with measurement.run() as saver:
            for value in range(4):
                saver.add_result((x, float(value)), (a, value * 2.0))
            for value in range(2, 6):
                saver.add_result((x, float(value)), (b, value * 3.0))
        # run 2: a 2D grid declared by its shape (direct layout) beside one off it
        measurement = Measurement(exp=experiment)
        measurement.register_parameter(x)
        measurement.register_parameter(y)
        measurement.register_parameter(a, setpoints=(x, y))
        measurement.register_parameter(c, setpoints=(y, x))
        measurement.set_shapes({"a": (2, 3)})
        with measurement.run() as saver:
            for i in range(2):
                for j in range(3):
                    saver.add_result((x, float(i)), (y, float(j)), (a, i + j * 0.5))
            for i, j in ((0, 0), (1, 2), (2, 1)):
                saver.add_result((y, float(j)), (x, float(i)), (c, i - j * 0.5))
        # run 3: one tree off the grid without shapes (a multi-index), with an inferred
        # parameter
        measurement = Measurement(exp=experiment)
        measurement.register_parameter(x)
        measurement.register_parameter(y)
        measurement.register_parameter(a, setpoints=(x, y))
        measurement.register_parameter(b, basis=(a,))
        with measurement.run() as saver:
            for i, j in ((0, 0), (1, 2), (2, 1)):
                saver.add_result((x, float(i)), (y, float(j)), (a, i + j * 0.5), (b, i * 1.0))
    finally:
        experiment.conn.close()
    return path


@pytest.mark.parametrize("use_multi_index", ["auto", "always", "never"])
def test_variables_are_listed_as_qcodes_lists_them(tmp_path: Path, use_multi_index: str) -> None:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    path = _database(tmp_path)
    theirs: dict[int, list[list[str]]] = {}
    conn = connect(str(path))
    try:
        for run_id in (1, 2, 3):
            dataset = load_by_id(run_id, conn=conn)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    merged = dataset.to_xarray_dataset(use_multi_index=use_multi_index)
                    trees = dataset.to_xarray_dataset_dict(use_multi_index=use_multi_index)
                except Exception:
                    continue  # QCoDeS refuses it ("always" on one setpoint)
            theirs[run_id] = [list(merged.variables)] + [list(t.variables) for t in trees.values()]
    finally:
        conn.close()
    assert theirs, "QCoDeS converts none of the runs"
    with qcsql.open_database(path) as db:
        for run_id, expected in theirs.items():
            run = db.load_by_id(run_id)
            merged = run.to_xarray_dataset(use_multi_index=use_multi_index)
            trees = run.to_xarray_dataset_dict(use_multi_index=use_multi_index)
            ours = [list(merged.variables)] + [list(t.variables) for t in trees.values()]
            assert ours == expected, f"run {run_id}"
            with xr.open_dataset(
                path, engine="qcsql", run_id=run_id, use_multi_index=use_multi_index
            ) as opened:
                assert list(opened.variables) == expected[0], f"run {run_id} engine"
