"""Runs built with genuine QCoDeS 0.58 that its own export may not handle: ragged arrays.

Where QCoDeS exports the run, qcsql's file must read the same; where QCoDeS fails,
qcsql's file must still open with xarray and hold every value of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.qcodes_build import new_database, parameters, qcodes_export  # noqa: E402
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
