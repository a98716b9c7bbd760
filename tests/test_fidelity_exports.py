"""Booleans, and runs read back from their netCDF export, as QCoDeS 0.58 gives them.

* Boolean arrays (the DataSet API stores them; the Measurement API refuses them): xarray
  writes them as int8 with a ``dtype = "bool"`` attribute, and reads them back as bool.
* Runs without results table read from their export (``DataSetInMem``): text is the
  unicode xarray decodes; ``number_of_results`` is QCoDeS' count of every value of every
  array; exporting such a run writes the file's own dataset attributes again (a run
  loaded from another database's export keeps that file's run_id), export_info naming it.

Each run is built with QCoDeS and compared with what QCoDeS reads and exports, on a copy.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from tests.helpers import record_in_memory_plans
from tests.qcodes_suite_runs import Suite, build_suite

pytestmark = pytest.mark.requires_qcodes
xr = pytest.importorskip("xarray")
h5py = pytest.importorskip("h5py")
pytest.importorskip("qcodes")
from tests.test_export_matches_qcodes import ENGINES, assert_same_dataset  # noqa: E402
from tests.test_fidelity import _same_data, qcodes_copy  # noqa: E402

BOOLEANS = ["array bool", "array bool repeated"]
FROM_EXPORT = [
    "in memory text and complex exported",
    "in memory loaded from netcdf",
    "in memory loaded from netcdf booleans",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Suite:
    return build_suite(tmp_path_factory.mktemp("fidelity-exports"), BOOLEANS + FROM_EXPORT)


def _qcodes(built: Suite, label: str, folder: Path) -> tuple[Any, int, Path]:
    """QCoDeS' parameter data, number of results and netCDF export of the run."""
    from qcodes.dataset import load_by_id

    with qcodes_copy(built.path, folder / "db") as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = load_by_id(built.runs[label], conn=conn)
        data, count = dataset.get_parameter_data(), dataset.number_of_results
        dataset.export("netcdf", path=str(folder / "qcodes"))
        return data, count, Path(dataset.export_info.export_paths["nc"])


def _same_files(ours: Path, theirs: Path, where: str) -> None:
    for engine in ENGINES:
        with xr.open_dataset(theirs, engine=engine) as a, xr.open_dataset(ours, engine=engine) as b:
            assert_same_dataset(b.load(), a.load(), f"{where} ({engine})", export_info=True)


@pytest.mark.parametrize("label", BOOLEANS)
def test_boolean_arrays_export_like_qcodes(
    built: Suite, label: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _, theirs = _qcodes(built, label, tmp_path)
    assert data["y"]["y"].dtype == bool  # the case: QCoDeS reads booleans
    in_memory = record_in_memory_plans(monkeypatch)
    with qcsql.open_database(built.path) as db:
        run = db.load_by_id(built.runs[label])
        _same_data(run.get_parameter_data(), data, label)
        ours = run.export_hdf5(tmp_path / "ours.nc")
    assert (in_memory == []) == (label == "array bool repeated"), "streamed only when repeated"
    with h5py.File(theirs) as a, h5py.File(ours) as b:
        assert (b["y"].dtype, b["y"].attrs["dtype"]) == (a["y"].dtype, a["y"].attrs["dtype"])
        assert a["y"].dtype == np.int8
    _same_files(ours, theirs, label)


@pytest.mark.parametrize("label", FROM_EXPORT)
def test_runs_read_from_their_export_like_qcodes(built: Suite, label: str, tmp_path: Path) -> None:
    data, count, theirs = _qcodes(built, label, tmp_path)
    assert count > 0  # the case: QCoDeS found the export
    with qcsql.open_database(built.path) as db:
        run = db.load_by_id(built.runs[label])
        assert run.in_memory
        _same_data(run.get_parameter_data(), data, label)
        assert run.number_of_results == count
        ours = run.export_hdf5(tmp_path / "ours.nc")
    _same_files(ours, theirs, label)


def test_a_run_loaded_from_another_databases_export_keeps_that_files_attributes(
    built: Suite, tmp_path: Path
) -> None:
    """The run is run 1 of the database it was measured in; its row here has another
    run_id, but QCoDeS writes the loaded file's attributes again."""
    label = "in memory loaded from netcdf"
    _, _, theirs = _qcodes(built, label, tmp_path)
    with qcsql.open_database(built.path) as db:
        run = db.load_by_id(built.runs[label])
        assert run.run_id != 1
        ours = run.export_hdf5(tmp_path / "ours.nc")
    with xr.open_dataset(theirs, engine="h5netcdf") as a, xr.open_dataset(ours) as b:
        assert a.attrs["run_id"] == b.attrs["run_id"] == 1
        assert list(a.attrs) == list(b.attrs)
        assert a.attrs["export_info"] == b.attrs["export_info"]
