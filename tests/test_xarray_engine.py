"""The ``qcsql`` xarray engine: found by name and by guess, picks runs as QCoDeS does.

Values and layout are compared with QCoDeS in test_xarray_matches_qcodes.py; here the
engine's own contract: which files it claims (QCoDeS databases, not netCDF, HDF5 or
other SQLite files, whose engines are still picked), how a run is named, the typed
error listing the run ids when none is, ``drop_variables``, and that nothing is written.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import qcsql
from qcsql.xarray_engine import QcsqlBackendEntrypoint
from tests.helpers import EXAMPLE_DB, FileState, copy_database

xr = pytest.importorskip("xarray")
from xarray.backends.plugins import guess_engine  # noqa: E402


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return copy_database(EXAMPLE_DB, tmp_path / "db")


def _single_run_database(tmp_path: Path) -> Path:
    """A QCoDeS database with one run, written by QCoDeS itself."""
    pytest.importorskip("qcodes")
    from qcodes.dataset import Measurement

    from tests.qcodes_build import new_database, parameters

    path = tmp_path / "one.db"
    experiment = new_database(path)
    try:
        x, y = parameters("x", "y")
        measurement = Measurement(exp=experiment)
        measurement.register_parameter(x)
        measurement.register_parameter(y, setpoints=(x,))
        with measurement.run() as saver:
            for value in range(5):
                saver.add_result((x, float(value)), (y, value * 2.0))
    finally:
        experiment.conn.close()
    return path


def test_the_engine_is_registered_and_guessed_for_a_qcodes_database(example: Path) -> None:
    assert "qcsql" in xr.backends.list_engines()
    assert guess_engine(str(example)) == "qcsql"
    assert guess_engine(example) == "qcsql"


def test_netcdf_engines_still_open_qcsql_exports(example: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with qcsql.open_database(example) as db:
        exported = [
            db.load_by_id(1).export_hdf5(tmp_path / "out" / f"run{s}") for s in (".nc", ".h5")
        ]
    for path in exported:
        assert not QcsqlBackendEntrypoint().guess_can_open(path)
        assert guess_engine(str(path)) in ("netcdf4", "h5netcdf")
        with xr.open_dataset(path) as opened:
            assert "dmm_current" in opened


def test_other_files_are_not_claimed(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    entry = QcsqlBackendEntrypoint()
    for path in (other, text, tmp_path / "missing.db", tmp_path):
        assert not entry.guess_can_open(path), path
    assert not entry.guess_can_open(object())


def test_several_runs_and_none_named_is_a_typed_error_listing_them(example: Path) -> None:
    with pytest.raises(qcsql.RunNotChosenError, match=r"run_id 1, 2, 3, .*13") as raised:
        xr.open_dataset(example, engine="qcsql")
    assert raised.value.where.path == example
    with pytest.raises(qcsql.RunLookupError, match="one way"):
        xr.open_dataset(example, engine="qcsql", run_id=1, guid="x")
    with pytest.raises(qcsql.RunNotFoundError):
        xr.open_dataset(example, engine="qcsql", run_id=99)


def test_a_database_of_one_run_opens_without_engine_or_run(tmp_path: Path) -> None:
    path = _single_run_database(tmp_path)
    with xr.open_dataset(path) as opened:
        np.testing.assert_array_equal(opened["y"].values, np.arange(5) * 2.0)
        assert list(opened.coords) == ["x"]


def test_runs_are_named_as_qcodes_names_them(example: Path, guard: list[Path]) -> None:
    guard.append(example)
    with qcsql.open_database(example) as db:
        run = db.load_by_id(5)
        expected = run.to_xarray_dataset()
        guid, captured, counter, exp = (
            run.guid,
            run.captured_run_id,
            run.captured_counter,
            run.exp_name,
        )
    for kwargs in (
        {"run_id": 5},
        {"guid": guid},
        {"captured_run_id": captured, "experiment_name": exp},
        {"captured_counter": counter, "experiment_name": exp},
    ):
        with xr.open_dataset(example, engine="qcsql", **kwargs) as opened:
            xr.testing.assert_identical(opened.load(), expected)


def test_drop_variables_leaves_them_out(example: Path) -> None:
    with xr.open_dataset(
        example, engine="qcsql", run_id=3, drop_variables=["dmm_voltage", "nothing"]
    ) as opened:
        assert "dmm_voltage" not in opened.variables
        assert "dmm_current" in opened.variables
    with xr.open_dataset(example, engine="qcsql", run_id=3, drop_variables="dmm_voltage") as one:
        assert "dmm_voltage" not in one.variables


def test_use_multi_index_is_passed_on(example: Path) -> None:
    with xr.open_dataset(example, engine="qcsql", run_id=8, use_multi_index="never") as opened:
        assert set(opened.dims) == {"dac_plunger", "dac_barrier"}
    with pytest.raises(qcsql.PlanError, match="use_multi_index"):
        xr.open_dataset(example, engine="qcsql", run_id=8, use_multi_index="sometimes")


def test_opening_writes_nothing(example: Path) -> None:
    before = FileState.of(example)
    with xr.open_dataset(example, engine="qcsql", run_id=1) as opened:
        opened.load()
    assert FileState.of(example) == before


def test_dataarray_dict_is_each_trees_array_with_the_dataset_attributes(example: Path) -> None:
    with qcsql.open_database(example) as db:
        run = db.load_by_id(3)
        arrays = run.to_xarray_dataarray_dict()
        datasets = run.to_xarray_dataset_dict()
    assert list(arrays) == list(datasets) == ["dmm_current", "dmm_voltage"]
    for name, array in arrays.items():
        xr.testing.assert_equal(array, datasets[name][name])
        assert array.attrs == {**datasets[name][name].attrs, **datasets[name].attrs}


def test_import_qcsql_loads_no_xarray_pandas_or_dask() -> None:
    import subprocess
    import sys

    code = (
        "import sys, qcsql; qcsql.open_database;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'xarray', 'pandas', 'dask'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
