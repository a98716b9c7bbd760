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
from tests.test_export_matches_qcodes import assert_same_dataset  # noqa: E402


@pytest.fixture(scope="module")
def ragged_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qcodes.dataset import (
        Measurement,
        initialise_or_create_database_at,
        load_or_create_experiment,
    )
    from qcodes.parameters import Parameter

    path = tmp_path_factory.mktemp("odd") / "ragged.db"
    initialise_or_create_database_at(str(path))
    experiment = load_or_create_experiment("odd runs", sample_name="s")
    gate = Parameter("gate", set_cmd=None, get_cmd=None)
    freq = Parameter("freq", set_cmd=None, get_cmd=None)
    signal = Parameter("signal", set_cmd=None, get_cmd=None)
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


def _qcodes_export(path: Path, run_id: int, folder: Path) -> Path | str:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(path))
    try:
        dataset = load_by_id(run_id, conn=conn)
        dataset.export("netcdf", path=str(folder))
        return Path(dataset.export_info.export_paths["nc"])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


@pytest.mark.parametrize("run_id", [1, 2])
def test_ragged_runs_export(ragged_db: Path, tmp_path: Path, run_id: int) -> None:
    copy = tmp_path / "copy.db"
    copy.write_bytes(ragged_db.read_bytes())
    theirs = _qcodes_export(copy, run_id, tmp_path / "qcodes")
    (tmp_path / "ours").mkdir()
    with qcsql.open_database(ragged_db) as db:
        run = db.load_by_id(run_id)
        ours = run.export_hdf5(tmp_path / "ours")
        data = run.get_parameter_data()
    with xr.open_dataset(ours, engine="h5netcdf") as opened:
        ours_ds = opened.load()
    if isinstance(theirs, Path):
        with xr.open_dataset(theirs, engine="h5netcdf") as opened:
            assert_same_dataset(ours_ds, opened.load(), f"run {run_id}")
    top = next(iter(data))
    written: Any = ours_ds[top].values
    expected = np.concatenate(list(data[top][top]))
    assert np.count_nonzero(~np.isnan(written)) == expected.size
    assert sorted(written[~np.isnan(written)].tolist()) == sorted(expected.tolist())
