"""Sync records in bounded memory: tags from the run description, never from the rows.

The tags a record carries for a run's variables must be those of the file the export
writes (every variable holding a parameter: ``long_name``, else its name), for every run
the tests know, and getting them must not read a single row of the results table.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import warnings
from pathlib import Path

import h5py
import pytest

import qcsql
from qcsql.sync import QCoDeSConfigData, SnapshotMetadataWarning, dataset_info
from qcsql.sync.qh_meta import qh_meta_of
from tests.helpers import EXAMPLE_DB, copy_database
from tests.qcodes_suite_runs import Suite, build_suite
from tests.test_export_streaming import two_spectra_db  # noqa: F401 - a fixture


def _file_tags(path: Path) -> set[str]:
    """``long_name`` (else name) of every variable of an exported file that holds a
    parameter (QCoDeS gives those, and only those, a ``paramtype``)."""
    tags = set()
    with h5py.File(path, "r") as handle:
        for name, item in handle.items():
            if isinstance(item, h5py.Dataset) and "paramtype" in item.attrs:
                long_name = item.attrs.get("long_name", "")
                if isinstance(long_name, bytes):
                    long_name = long_name.decode()
                tags.add(str(long_name) or name)
    return tags


def _meta_tags(run: qcsql.Run) -> set[str]:
    try:
        meta = qh_meta_of(run.snapshot)
    except (qcsql.QcsqlError, ValueError):
        return set()
    return set(meta.tags) if meta is not None else set()


def test_tags_are_those_of_the_exported_file(any_database: Path, tmp_path: Path) -> None:
    config = QCoDeSConfigData(database_path=any_database, set_up="rack")
    compared = started = 0
    with qcsql.open_database(any_database) as db, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damaged runs and missing data warn, as in QCoDeS
        for run in db.runs():
            if not run.started:
                continue
            started += 1
            try:
                exported = run.export_hdf5(tmp_path / f"{run.run_id}.nc")
            except qcsql.QcsqlError:
                continue  # a run QCoDeS cannot export either
            info = dataset_info(run, config)
            assert info.tags == frozenset(_file_tags(exported) | _meta_tags(run)), run
            compared += 1
    assert compared or not started, "no run was compared: the test would pass vacuously"


def test_dataset_info_reads_no_results_rows(
    traced_statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No statement names a results table and the page readers are never asked: the
    record of a run of ten million rows costs what that of ten rows does."""
    import qcsql.data.parameter_data
    import qcsql.sqlite.pages

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("dataset_info read results rows")

    monkeypatch.setattr(qcsql.data.parameter_data, "read_parameter_data", refuse)
    monkeypatch.setattr(qcsql.sqlite.pages, "PageReader", refuse, raising=False)
    config = QCoDeSConfigData(database_path=EXAMPLE_DB, set_up="rack")
    with qcsql.open_database(EXAMPLE_DB) as db:
        runs = [r for r in db.runs() if r.started and r.table_name]
        assert runs
        traced_statements.clear()
        for run in runs:
            info = dataset_info(run, config)
            assert info.tags
    assert traced_statements, "the trace saw nothing: the test would pass vacuously"
    tables = {run.table_name for run in runs}
    naming = [s for s in traced_statements if any(str(t) in s for t in tables)]
    assert naming == []


def test_a_snapshot_without_qh_meta_is_a_debug_line_not_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = QCoDeSConfigData(database_path=EXAMPLE_DB, set_up="rack")
    with qcsql.open_database(EXAMPLE_DB) as db, warnings.catch_warnings():
        warnings.simplefilter("error", SnapshotMetadataWarning)
        run = next(r for r in db.runs() if r.started)
        with caplog.at_level(logging.DEBUG, logger="qcsql.sync"):
            dataset_info(run, config)
    assert any("no qh_meta instrument" in r.getMessage() for r in caplog.records)


def test_a_malformed_qh_meta_still_warns(tmp_path: Path) -> None:
    path = copy_database(EXAMPLE_DB, tmp_path)
    snapshot = '{"station": {"instruments": {"qh_meta": {"parameters": {"tags": 3}}}}}'
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE runs SET snapshot = ? WHERE run_id = 1", (snapshot,))
    config = QCoDeSConfigData(database_path=path, set_up="rack")
    with qcsql.open_database(path) as db:
        with pytest.warns(SnapshotMetadataWarning, match="malformed"):
            dataset_info(db.load_by_id(1), config)


def test_snapshot_attributes_are_the_instrument_settings_qcodes_recorded(tmp_path: Path) -> None:
    """``<instrument>.<parameter>`` (and ``.<submodule>.``) = value and unit, as QCoDeS
    recorded them in the run's snapshot (read back with QCoDeS on a copy)."""
    pytest.importorskip("qcodes")
    import json
    import shutil

    from qcodes.dataset import Measurement, load_by_id
    from qcodes.dataset.sqlite.database import connect
    from qcodes.instrument_drivers.mock_instruments import (
        DummyChannelInstrument,
        DummyInstrument,
    )
    from qcodes.station import Station

    from tests.qcodes_build import new_database

    path = tmp_path / "lab.db"
    experiment = new_database(path)
    dac = DummyInstrument("dac", gates=["ch1", "ch2"])
    fridge = DummyChannelInstrument("fridge")
    try:
        dac.ch1(0.25)
        fridge.A.temperature(0.012)
        station = Station(dac, fridge)
        measurement = Measurement(exp=experiment, name="settings", station=station)
        measurement.register_parameter(dac.ch1)
        measurement.register_parameter(dac.ch2, setpoints=(dac.ch1,))
        with measurement.run() as saver:
            saver.add_result((dac.ch1, 0.25), (dac.ch2, 1.0))
    finally:
        dac.close()
        fridge.close()
        Station.default = None
    experiment.conn.close()
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    conn = connect(str(copy))
    try:
        instruments = json.loads(load_by_id(1, conn=conn).snapshot_raw)["station"]["instruments"]
    finally:
        conn.close()
    ch1 = instruments["dac"]["parameters"]["ch1"]
    temperature = instruments["fridge"]["submodules"]["A"]["parameters"]["temperature"]
    with qcsql.open_database(path) as db:
        run = db.load_by_id(1)
        off = dataset_info(run, QCoDeSConfigData(database_path=path, set_up="rack"))
        dac_only = dataset_info(
            run,
            QCoDeSConfigData(database_path=path, set_up="rack", snapshot_instruments=("dac",)),
        )
        every = dataset_info(
            run, QCoDeSConfigData(database_path=path, set_up="rack", snapshot_instruments=())
        )
    assert not any("." in key for key in off.attributes)
    assert dac_only.attributes["dac.ch1"] == f"{ch1['value']} {ch1['unit']}" == "0.25 V"
    assert not any(key.startswith("fridge.") for key in dac_only.attributes)
    assert every.attributes["fridge.A.temperature"] == (
        f"{temperature['value']} {temperature['unit']}"
    )
    assert set(dac_only.attributes) < set(every.attributes)
    assert {"Gate ch1", "Gate ch2"} <= every.tags  # the measured parameters' labels


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Suite:
    pytest.importorskip("qcodes")
    return build_suite(tmp_path_factory.mktemp("qcodes-suite"))


def test_tags_with_the_export_are_every_variable_and_coordinate_of_its_file(
    suite: Suite, tmp_path: Path
) -> None:
    """The agent's keywords: ``long_name``, else the name, of every variable and coordinate
    of the dataset, as xarray opens the file the export wrote: the layout's ``index`` and
    ``multi_index`` included, for every kind of run QCoDeS' own tests write."""
    xr = pytest.importorskip("xarray")
    config = QCoDeSConfigData(database_path=suite.path, set_up="rack")
    compared, layout_coordinates = 0, set()
    with qcsql.open_database(suite.path) as db, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, run_id in suite.runs.items():
            run = db.load_by_id(run_id)
            if not run.started:
                continue
            try:
                info = dataset_info(run, config, export_to=tmp_path / f"{run_id}.nc")
            except qcsql.QcsqlError:
                continue  # a run QCoDeS cannot export either
            assert info.data_file is not None
            with xr.open_dataset(info.data_file, engine="h5netcdf") as dataset:
                names = {str(v.attrs.get("long_name") or n) for n, v in dataset.variables.items()}
            assert info.tags == frozenset(names | _meta_tags(run)), label
            assert dataset_info(run, config, exported=info.data_file).tags == info.tags
            layout_coordinates |= names & {"index", "multi_index"}
            compared += 1
    assert compared > 50 and layout_coordinates == {"index", "multi_index"}


def test_tags_with_the_export_of_a_layout_side_by_side_are_its_names(
    two_spectra_db: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Spectra whose frequencies differ cannot be merged (QCoDeS' own export fails): the
    export lays each tree out on its own, its index and setpoints renamed ``<name>__<P>``;
    the tags with the export are those names where no ``long_name`` says otherwise."""
    xr = pytest.importorskip("xarray")
    config = QCoDeSConfigData(database_path=two_spectra_db, set_up="rack")
    with qcsql.open_database(two_spectra_db) as db:
        info = dataset_info(db.load_by_id(2), config, export_to=tmp_path / "2.nc")
    assert info.data_file is not None
    with xr.open_dataset(info.data_file, engine="h5netcdf") as dataset:
        assert {"freq__mag", "index__mag", "index__phase"} <= set(dataset.variables)
        names = {str(v.attrs.get("long_name") or n) for n, v in dataset.variables.items()}
    assert info.tags == frozenset(names) and {"index__mag", "index__phase"} <= info.tags
