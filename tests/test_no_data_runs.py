"""Runs whose data were never written anywhere read and export as QCoDeS 0.58 does.

A ``DataSetInMem`` run keeps no results table in the database: its data are only in the
netCDF export its ``export_info`` names. QCoDeS loads one that was never exported, or
whose export is gone, as a dataset without data and warns ("No raw data stored ...",
"Could not load raw data ..."): ``get_parameter_data`` is ``{}`` whatever it is asked,
and ``export("netcdf")`` writes a file with every dataset attribute and no variable.
qcsql returns the same ``{}`` with a :class:`qcsql.DataNotFoundWarning`, writes the same
file, and its audit reports such a run as ``data_not_found``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import qcsql
from tests.helpers import comparable_description, copy_database, timestamps_set_aside
from tests.qcodes_build import new_database, parameters, qcodes_export

pytestmark = pytest.mark.requires_qcodes
xr = pytest.importorskip("xarray")

NEVER_EXPORTED, EXPORT_GONE, EXPORT_KEPT = 1, 2, 3
NO_DATA = {
    NEVER_EXPORTED: "No raw data stored for dataset",
    EXPORT_GONE: "Could not load raw data for dataset",
}
ASKS: list[tuple[tuple[str, ...], dict[str, int]]] = [
    ((), {}),
    (("y",), {}),
    (("no_such_parameter",), {}),
    ((), {"start": 1, "end": 2}),
]


@pytest.fixture(scope="session")
def inmem_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three ``DataSetInMem`` runs of QCoDeS: never exported, exported and the export
    deleted, exported and the export kept where export_info says."""
    from qcodes.dataset import DataSetType, Measurement

    folder = tmp_path_factory.mktemp("no_data")
    path = folder / "inmem.db"
    experiment = new_database(path)
    x, g, y = parameters("x", "g", "y")
    for run_id in (NEVER_EXPORTED, EXPORT_GONE, EXPORT_KEPT):
        measurement = Measurement(exp=experiment)
        measurement.register_parameter(x)
        measurement.register_parameter(g)
        measurement.register_parameter(y, setpoints=(x, g))
        with measurement.run(dataset_class=DataSetType.DataSetInMem) as saver:
            for i in range(3):
                for j in range(2):
                    saver.add_result((x, i), (g, j), (y, 2.0 * i + j))
        dataset = saver.dataset
        assert dataset.run_id == run_id
        if run_id != NEVER_EXPORTED:
            dataset.export("netcdf", path=str(folder / "exports"))
        if run_id == EXPORT_GONE:
            os.remove(dataset.export_info.export_paths["nc"])
    experiment.conn.close()
    return path


@contextmanager
def qcodes_warns(run_id: int) -> Iterator[None]:
    """QCoDeS warns (a plain UserWarning) when it loads a run without data; anything else
    it warns is not asserted on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if run_id in NO_DATA:
        assert any(NO_DATA[run_id] in str(w.message) for w in caught), caught


def qcodes_parameter_data(path: Path, run_id: int, folder: Path) -> list[Any]:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(copy_database(path, folder)))
    try:
        with qcodes_warns(run_id):
            dataset = load_by_id(run_id, conn=conn)
            assert type(dataset).__name__ == "DataSetInMem"
            return [dataset.get_parameter_data(*names, **kw) for names, kw in ASKS]
    finally:
        conn.close()


@pytest.mark.parametrize("run_id", sorted(NO_DATA))
def test_parameter_data_of_a_run_without_data_is_qcodes(
    inmem_db: Path, tmp_path: Path, run_id: int
) -> None:
    theirs = qcodes_parameter_data(inmem_db, run_id, tmp_path / "qcodes")
    assert theirs == [{}] * len(ASKS)  # the comparison below is with something
    with qcsql.open_database(copy_database(inmem_db, tmp_path / "qcsql")) as db:
        run = db.load_by_id(run_id)
        for (names, kw), expected in zip(ASKS, theirs, strict=True):
            with pytest.warns(qcsql.DataNotFoundWarning, match=f"run {run_id}.*guid {run.guid}"):
                assert run.get_parameter_data(*names, **kw) == expected


def test_the_warning_is_a_qcsql_warning() -> None:
    assert issubclass(qcsql.DataNotFoundWarning, qcsql.QcsqlWarning)
    assert not issubclass(qcsql.DataNotFoundWarning, qcsql.QcsqlError)


def _attrs(dataset: Any) -> dict[str, Any]:
    attrs = dict(dataset.attrs)
    attrs["run_description"] = comparable_description(attrs["run_description"])
    return attrs


@pytest.mark.parametrize("run_id", [NEVER_EXPORTED, EXPORT_GONE, EXPORT_KEPT])
def test_export_is_qcodes_export(inmem_db: Path, tmp_path: Path, run_id: int) -> None:
    """Both files load identically with both engines, every attribute included
    (run_description parsed: QCoDeS builds some of its lists from sets)."""
    with qcodes_warns(run_id):
        theirs = qcodes_export(inmem_db, run_id, tmp_path / "qcodes")
    (tmp_path / "qcsql").mkdir()
    with qcsql.open_database(copy_database(inmem_db, tmp_path / "db")) as db:
        run = db.load_by_id(run_id)
        if run_id in NO_DATA:
            with pytest.warns(qcsql.DataNotFoundWarning):
                ours = run.export_hdf5(tmp_path / "qcsql")
        else:
            ours = run.export_hdf5(tmp_path / "qcsql")
    assert ours.name == theirs.name
    for engine in ("h5netcdf", "netcdf4"):
        with xr.open_dataset(theirs, engine=engine) as t, xr.open_dataset(ours, engine=engine) as o:
            t.load()
            o.load()
            assert (len(t.data_vars) == 0) == (run_id in NO_DATA)
            assert len(t.attrs) >= 15  # every dataset attribute QCoDeS writes
            ours_attrs, theirs_attrs = timestamps_set_aside(_attrs(o), _attrs(t))
            assert ours_attrs == theirs_attrs
            xr.testing.assert_identical(o.drop_attrs(deep=False), t.drop_attrs(deep=False))


def test_audit_reports_runs_without_data(inmem_db: Path, tmp_path: Path) -> None:
    from qcsql.audit import audit

    report = audit(copy_database(inmem_db, tmp_path), deep=True)
    errors = {(f.code, f.run_id) for f in report.findings if f.level == "error"}
    assert errors == {("data_not_found", NEVER_EXPORTED), ("data_not_found", EXPORT_GONE)}


def test_a_dropped_results_table_reads_as_qcodes_reads_it(tmp_path: Path) -> None:
    """QCoDeS loads a run whose results table is missing as a ``DataSetInMem`` with no
    data, whatever wrote it."""
    from qcodes.dataset import Measurement

    path = tmp_path / "plain.db"
    experiment = new_database(path)
    x, y = parameters("x", "y")
    measurement = Measurement(exp=experiment)
    measurement.register_parameter(x)
    measurement.register_parameter(y, setpoints=(x,))
    with measurement.run() as saver:
        for i in range(4):
            saver.add_result((x, i), (y, i * 0.5))
    table = saver.dataset.table_name
    experiment.conn.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f'DROP TABLE "{table}"')
    conn.close()
    theirs = qcodes_parameter_data(path, 1, tmp_path / "qcodes")
    with qcsql.open_database(copy_database(path, tmp_path / "qcsql")) as db:
        with pytest.warns(qcsql.DataNotFoundWarning, match="no raw data stored"):
            assert db.load_by_id(1).get_parameter_data() == theirs[0] == {}


def test_an_unreadable_export_stays_an_error(inmem_db: Path, tmp_path: Path) -> None:
    """An export that is there but is no netCDF file is not a run without data."""
    copy = copy_database(inmem_db, tmp_path)
    with qcsql.open_database(copy) as db:
        recorded = json.loads(str(db.load_by_id(EXPORT_KEPT).metadata["export_info"]))
    recorded = recorded["export_paths"]["nc"]
    bad = tmp_path / "elsewhere" / Path(recorded).name
    bad.parent.mkdir()
    bad.write_bytes(b"not a netCDF file")
    with sqlite3.connect(copy) as conn:
        conn.execute(
            "UPDATE runs SET export_info = ? WHERE run_id = ?",
            (f'{{"export_paths": {{"nc": "{bad}"}}}}', EXPORT_KEPT),
        )
    conn.close()
    with qcsql.open_database(copy) as db:
        with pytest.raises(qcsql.DataElsewhereError, match="cannot read the export"):
            db.load_by_id(EXPORT_KEPT).get_parameter_data()
