"""Sync records of runs written by genuine QCoDeS 0.58 with a QHMetaData in the Station."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest

import qcsql
from qcsql.sync import QCoDeSConfigData, SnapshotMetadataWarning, dataset_info, runs_after
from tests.helpers import EXAMPLE_DB, plain_sqlite, write_file
from tests.qcodes_build import new_database

pytest.importorskip("qcodes")
xr = pytest.importorskip("xarray")

NAME = "gate map\nafter the second cooldown\nfridge at 12 mK"


@pytest.fixture(scope="module")
def synced_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qcodes.dataset import Measurement
    from qcodes.parameters import Parameter
    from qcodes.station import Station

    from qcsql.qcodes_metadata import QHMetaData

    path = tmp_path_factory.mktemp("sync") / "lab.db"
    experiment = new_database(path, "cooldown 7", sample="chip B3")
    meta = QHMetaData(
        static_tags=["BF1", "cooldown 7"], static_attributes={"fridge": "BF1", "operator": "ann"}
    )
    station = Station(meta)
    x = Parameter("x", label="Gate", unit="V", set_cmd=None, get_cmd=None)
    y = Parameter("y", label="", unit="A", set_cmd=None, get_cmd=None)

    def measure(name: str, tag: str | None, with_station: bool = True) -> None:
        measurement = Measurement(
            exp=experiment, name=name, station=station if with_station else None
        )
        measurement.register_parameter(x)
        measurement.register_parameter(y, setpoints=(x,))
        with measurement.run() as saver:
            for value in range(4):
                saver.add_result((x, value), (y, value * 1e-9))
            if tag is not None:
                saver.dataset.add_metadata("inspectr_tag", tag)

    meta.add_tags("gate map", "BF1")
    meta.add_attributes({"operator": "bob"}, temperature_mK={"value": 12, "unit": "mK"})
    measure(NAME, "star")
    meta.reset()
    measure("pinch-off", "cross")
    Station.default = None  # or QCoDeS snapshots the last station anyway
    measure("no station", None, with_station=False)
    meta.close()
    experiment.conn.close()
    return path


def _config(path: Path) -> QCoDeSConfigData:
    return QCoDeSConfigData(
        database_path=str(path),
        set_up="BF1 rack",
        static_attributes={"lab": "QDev", "fridge": "from config"},
    )


def _qcodes_tags(path: Path, run_id: int, folder: Path) -> set[str]:
    """long_name (else name) of every variable of QCoDeS' own dataset of the run (on a copy)."""
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    copy = folder / "copy.db"
    copy.write_bytes(path.read_bytes())
    conn = connect(str(copy))
    try:
        dataset = load_by_id(run_id, conn=conn).to_xarray_dataset()
    finally:
        conn.close()
    return {str(v.attrs.get("long_name") or name) for name, v in dataset.variables.items()}


def test_record_of_a_tagged_multiline_run(synced_db: Path, tmp_path: Path) -> None:
    config = _config(synced_db)
    with qcsql.open_database(synced_db) as db:
        run = db.load_by_id(1)
        info = dataset_info(run, config, export_to=tmp_path)
    assert info.alt_uid == run.guid
    assert info.name == "gate map"
    assert info.description == (
        f"database : lab.db | run ID : 1 | GUID : {run.guid} | exp name : cooldown 7"
        "\n\nafter the second cooldown\nfridge at 12 mK"
    )
    assert info.collected == datetime.fromtimestamp(run.run_timestamp_raw, tz=timezone.utc)
    assert info.tags == frozenset(
        _qcodes_tags(synced_db, 1, tmp_path) | {"BF1", "cooldown 7", "gate map"}
    )
    assert info.attributes == {
        "sample": "chip B3",
        "set-up": "BF1 rack",
        "lab": "QDev",
        "fridge": "BF1",  # qh_meta's static attribute overrides the config's
        "operator": "bob",  # a dynamic attribute overrides the static one
        "temperature_mK": "12",
    }
    assert list(info.attributes)[:2] == ["sample", "set-up"]
    assert info.ranking == 1
    assert info.data_file is not None and info.data_file.exists()
    with xr.open_dataset(info.data_file, engine="h5netcdf") as exported:
        assert exported.attrs["guid"] == run.guid


def test_reset_keeps_static_metadata_and_cross_ranks_down(synced_db: Path, tmp_path: Path) -> None:
    with qcsql.open_database(synced_db) as db:
        info = dataset_info(db.load_by_id(2), _config(synced_db))
    assert info.ranking == -1
    assert info.tags == frozenset(_qcodes_tags(synced_db, 2, tmp_path) | {"BF1", "cooldown 7"})
    assert info.attributes["operator"] == "ann" and "temperature_mK" not in info.attributes
    assert info.description.endswith("exp name : cooldown 7")


def test_run_without_qh_meta_syncs_without_a_warning(synced_db: Path, tmp_path: Path) -> None:
    import warnings

    with qcsql.open_database(synced_db) as db, warnings.catch_warnings():
        warnings.simplefilter("error", SnapshotMetadataWarning)  # most stations have none
        info = dataset_info(db.load_by_id(3), _config(synced_db))
    assert info.ranking == 0
    assert info.tags == frozenset(_qcodes_tags(synced_db, 3, tmp_path))
    assert info.attributes == {
        "sample": "chip B3",
        "set-up": "BF1 rack",
        "lab": "QDev",
        "fridge": "from config",
    }


def test_malformed_snapshot_warns(synced_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "broken.db"
    copy.write_bytes(synced_db.read_bytes())
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("UPDATE runs SET snapshot = '{\"station\": ' WHERE run_id = 1")
    with qcsql.open_database(copy) as db:
        with pytest.warns(SnapshotMetadataWarning, match="not valid JSON"):
            info = dataset_info(db.load_by_id(1), _config(copy))
    assert info.attributes["fridge"] == "from config"


def test_new_runs_since_the_last_synced_one(synced_db: Path) -> None:
    with qcsql.open_database(synced_db) as db:
        first = db.load_by_id(1)
        assert [r.run_id for r in runs_after(db, None)] == [1, 2, 3]
        assert [r.run_id for r in runs_after(db, first.guid)] == [2, 3]
        assert runs_after(db, db.load_by_id(3).guid) == []
        with pytest.raises(qcsql.RunNotFoundError, match="replaced since the last sync"):
            runs_after(db, "00000000-0000-0000-0000-000000000000")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "missing.db", "does not exist"),
        (lambda d: d, "is not a file"),
        (lambda d: write_file(d / "data.sqlite", EXAMPLE_DB.read_bytes()), "does not end in .db"),
        (lambda d: write_file(d / "notes.db", b"not a database" * 10), "not an SQLite"),
        (lambda d: plain_sqlite(d / "other.db"), "not a QCoDeS"),
    ],
)
def test_config_validation(tmp_path: Path, make: Any, words: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=words):
        QCoDeSConfigData(database_path=make(tmp_path), set_up="x")


def test_config_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "lab.db").write_bytes(EXAMPLE_DB.read_bytes())
    config = QCoDeSConfigData(database_path="~/lab.db", set_up="x")
    assert config.database_path == tmp_path / "lab.db" and config.static_attributes == {}


def test_qh_meta_rules_and_station_yaml(tmp_path: Path) -> None:
    from qcodes.station import Station

    from qcsql.qcodes_metadata import QHMetaData

    with pytest.raises(ValueError, match="must be called 'qh_meta'"):
        QHMetaData(name="meta")
    config = tmp_path / "station.yaml"
    config.write_text(
        "instruments:\n"
        "  qh_meta:\n"
        "    type: qcsql.qcodes_metadata.QHMetaData\n"
        "    init:\n"
        "      static_tags: [BF1, BF1, magnet]\n"
        "      static_attributes: {fridge: BF1}\n"
    )
    station = Station(config_file=str(config))
    meta = station.load_instrument("qh_meta")
    try:
        assert isinstance(meta, QHMetaData)
        meta.add_tags("magnet", "sweep")
        meta.add_attributes(fridge="BF2")
        snapshot = station.snapshot()["instruments"]["qh_meta"]["parameters"]
        assert snapshot["tags"]["value"] == ["BF1", "magnet", "sweep"]
        assert snapshot["attributes"]["value"] == {"fridge": "BF2"}
        meta.reset()
        assert meta.tags() == ["BF1", "magnet"] and meta.attributes() == {"fridge": "BF1"}
    finally:
        meta.close()


def test_import_qcsql_does_not_import_the_qcodes_instrument() -> None:
    import subprocess
    import sys

    code = "import sys, qcsql, qcsql.sync; print('qcsql.qcodes_metadata' in sys.modules, 'qcodes' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_show_prints_the_qh_meta_tags_the_sync_record_carries(
    synced_db: Path, tmp_path: Path
) -> None:
    """``qcsql show`` and the sync record read the snapshot's qh_meta the same way; the
    tags are QCoDeS' own snapshot values, read back with QCoDeS' json on a copy."""
    import io
    import json
    import shutil

    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    from qcsql.cli import main

    copy = tmp_path / "copy.db"
    shutil.copyfile(synced_db, copy)
    conn = connect(copy)
    try:
        snapshot = json.loads(load_by_id(1, conn=conn).snapshot_raw)
    finally:
        conn.close()
    tags = snapshot["station"]["instruments"]["qh_meta"]["parameters"]["tags"]["value"]
    out = io.StringIO()
    assert main(["show", str(synced_db), "1"], out=out, err=io.StringIO()) == 0
    assert f"  qh_meta tags: {[str(t) for t in tags]}" in out.getvalue().splitlines()
