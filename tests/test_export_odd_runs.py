"""Runs built with genuine QCoDeS 0.58 that its own export may not handle: ragged arrays
and NaN setpoints.

Where QCoDeS exports the run, qcsql's file must read the same; where QCoDeS fails,
qcsql's file must still open with xarray and hold every value of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
import qcsql.export.run

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.helpers import NOT_A_GRID  # noqa: E402
from tests.qcodes_build import (  # noqa: E402
    export_where_058_differs,
    new_database,
    parameters,
    qcodes_export,
)
from tests.test_export_matches_qcodes import assert_same_dataset  # noqa: E402


@pytest.fixture(scope="module")
def ragged_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("odd") / "ragged.db"
    experiment = new_database(path, "odd runs")
    gate, freq, signal = parameters("gate", "freq", "signal")
    two = Measurement(exp=experiment, name="ragged over gate and freq")
    two.register_parameter(gate)
    two.register_parameter(freq, paramtype="array")
    two.register_parameter(signal, setpoints=(gate, freq), paramtype="array")
    with two.run() as saver:
        for i in range(4):
            saver.add_result(
                (gate, i), (freq, np.arange(3 + i)), (signal, np.arange(3 + i) * 1.5 + i)
            )
    one = Measurement(exp=experiment, name="ragged over freq")
    one.register_parameter(freq, paramtype="array")
    one.register_parameter(signal, setpoints=(freq,), paramtype="array")
    with one.run() as saver:
        for i in range(3):
            saver.add_result((freq, np.linspace(0, 1, 2 + i)), (signal, np.ones(2 + i) * i))
    experiment.conn.close()
    return path


@pytest.mark.parametrize("run_id", [1, 2])
def test_ragged_runs_export(ragged_db: Path, tmp_path: Path, run_id: int) -> None:
    try:
        theirs: Path | None = qcodes_export(ragged_db, run_id, tmp_path / "qcodes")
    except Exception:  # QCoDeS cannot export every ragged run; ours must still open
        theirs = None
    (tmp_path / "ours").mkdir()
    with qcsql.open_database(ragged_db) as db:
        run = db.load_by_id(run_id)
        ours = run.export_hdf5(tmp_path / "ours")
        data = run.get_parameter_data()
    with xr.open_dataset(ours, engine="h5netcdf") as opened:
        ours_ds = opened.load()
    if theirs is not None:
        with xr.open_dataset(theirs, engine="h5netcdf") as opened:
            assert_same_dataset(ours_ds, opened.load(), f"run {run_id}")
    top = next(iter(data))
    written: Any = ours_ds[top].values
    expected = np.concatenate(list(data[top][top]))
    assert np.count_nonzero(~np.isnan(written)) == expected.size
    assert sorted(written[~np.isnan(written)].tolist()) == sorted(expected.tolist())


@pytest.fixture(scope="module")
def nan_setpoints_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sweeps in which a setpoint was NaN (an instrument that returned NaN): 1-D with
    NaN first, NaN in the middle, NaN twice (a duplicate to pandas, so QCoDeS' index
    layout); shaped 2-D with NaN once on the inner axis, a whole outer line of NaN, NaN
    at one inner value in every line; then the same three 2-D sweeps unshaped."""
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("nan") / "nan_setpoints.db"
    experiment = new_database(path, "NaN setpoints")
    x, y, i = parameters("x", "y", "i")
    nan = float("nan")
    for xs in ([nan, 1.0, 2.0, 3.0], [1.0, nan, 2.0, 3.0], [1.0, nan, 2.0, nan]):
        line = Measurement(exp=experiment, name="1-D")
        line.register_parameter(x)
        line.register_parameter(i, setpoints=(x,))
        with line.run() as saver:
            for n, value in enumerate(xs):
                saver.add_result((x, value), (i, n * 1.5))
    grid = [(a, b) for a in (0.0, 1.0, 2.0) for b in (0.0, 0.5, 1.0, 1.5)]
    sweeps = (
        [(a, nan if (a, b) == (1.0, 0.5) else b) for a, b in grid],
        [(nan if a == 1.0 else a, b) for a, b in grid],
        [(a, nan if b == 0.5 else b) for a, b in grid],
    )
    for shaped in (True, False):
        for points in sweeps:
            sweep = Measurement(exp=experiment, name="2-D")
            sweep.register_parameter(x)
            sweep.register_parameter(y)
            sweep.register_parameter(i, setpoints=(x, y))
            if shaped:
                sweep.set_shapes({"i": (3, 4)})
            with sweep.run() as saver:
                for n, (a, b) in enumerate(points):
                    saver.add_result((x, a), (y, b), (i, n * 1.5))
    experiment.conn.close()
    return path


@pytest.mark.parametrize("run_id", [1, 2, 3, 4, 5, 6])
def test_nan_setpoints_export_like_qcodes(
    nan_setpoints_db: Path, tmp_path: Path, run_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN setpoints that QCoDeS lays out soundly: along the setpoint, along ``index``
    when NaN repeats (pandas counts two NaN as a duplicate), and shaped grids. The 1-D
    runs stream. (Run 4's NaN is a fifth value of a 4-point axis: QCoDeS 0.62's direct
    layout, which qcsql follows, refuses it, 0.58 exports it.)"""
    difference = export_where_058_differs(nan_setpoints_db, run_id, tmp_path)
    if difference is not None:
        assert (run_id, difference) == (4, f"i: {NOT_A_GRID}")
        return
    in_memory: list[int] = []
    real = qcsql.export.run.plan_run
    monkeypatch.setattr(qcsql.export.run, "plan_run", lambda run: in_memory.append(1) or real(run))
    theirs = qcodes_export(nan_setpoints_db, run_id, tmp_path / "qcodes")
    with qcsql.open_database(nan_setpoints_db) as db:
        ours = db.load_by_id(run_id).export_hdf5(tmp_path)
    if run_id <= 3:
        assert not in_memory  # 1-D: along the setpoint, or the index layout
    for engine in ("h5netcdf", "netcdf4"):
        with xr.open_dataset(ours, engine=engine) as b, xr.open_dataset(theirs, engine=engine) as a:
            assert_same_dataset(b.load(), a.load(), f"run {run_id} ({engine})")


@pytest.mark.parametrize("run_id", [7, 8, 9])
def test_nan_setpoints_of_unshaped_grids_keep_every_row(
    nan_setpoints_db: Path, tmp_path: Path, run_id: int
) -> None:
    """Unshaped 2-D sweeps with NaN setpoints. pandas leaves NaN out of its levels, so
    QCoDeS either fails (cf_xarray: 'invalid entry in coordinates array') or, when the
    other levels happen to fill the grid, puts values in cells no row had. qcsql keeps
    NaN as a level: a grid when the levels fill it, else the compressed
    ``multi_index``; every row in its place either way."""
    with qcsql.open_database(nan_setpoints_db) as db:
        run = db.load_by_id(run_id)
        ours = run.export_hdf5(tmp_path)
        data = run.get_parameter_data()["i"]
    with xr.open_dataset(ours, engine="h5netcdf") as opened:
        written = opened.load()
    x, y = written["x"].values, written["y"].values
    places = (_positions(x, data["x"]), _positions(y, data["y"]))
    if written["i"].dims == ("multi_index",):
        flat = np.ravel_multi_index(places, (len(x), len(y)))
        np.testing.assert_array_equal(written["multi_index"].values, flat)
        np.testing.assert_array_equal(written["i"].values, data["i"])
    else:
        assert written["i"].dims == ("x", "y")
        np.testing.assert_array_equal(written["i"].values[places], data["i"])
        assert written["i"].size == len(data["i"])  # no cell without a row


def _positions(levels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where each value sits among the levels, NaN matching NaN."""
    same = (levels[None, :] == values[:, None]) | (
        np.isnan(levels)[None, :] & np.isnan(values)[:, None]
    )
    assert np.all(same.sum(axis=1) == 1)
    return np.argmax(same, axis=1)
