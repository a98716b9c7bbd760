"""qcsql converts, exports and formats times as QCoDeS 0.62 does, timestamps included.

QCoDeS 0.62 needs Python 3.12 and the tests run QCoDeS 0.58, so
``tests/fixtures/qcodes062`` holds what 0.62 gave for eleven runs it measured (see its
NOTES.md and gen_reference.py): ``to_xarray_dataset()`` in each ``use_multi_index``
mode, the netCDF exports, ``run_timestamp()`` and ``completed_timestamp()``, or 0.62's
error. Seven of the runs are laid out by 0.62 otherwise than by 0.58 (its direct layout
places values by their setpoints' values, refuses setpoints that are no complete grid
and lays out a shaped parameter without setpoints; inferred values are aligned with a
grid): qcsql follows 0.62 there too. 0.59+
writes the local time with its UTC offset, so the reference holds for the zone it was
made in; these tests set that zone (``TZ``) while they compare. Everything is compared
as the live 0.58 comparisons compare it, and the two timestamp attributes exactly
(those comparisons set them aside).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qcsql
from qcsql.schema.rows import local_time
from tests.helpers import FIXTURES, copy_database

xr = pytest.importorskip("xarray")
pd = pytest.importorskip("pandas")
from tests.test_export_matches_qcodes import ENGINES, assert_same_dataset  # noqa: E402

REFERENCE = FIXTURES / "qcodes062"
RECORDED: dict[str, Any] = json.loads((REFERENCE / "reference.json").read_text())
RUNS: dict[str, dict[str, Any]] = RECORDED["runs"]
# (run, mode) that QCoDeS 0.62 converts; it fails on "always" for a single setpoint
CONVERTED = [
    (int(run_id), mode)
    for run_id, run in RUNS.items()
    for mode, kinds in run["index_kinds"].items()
    if not isinstance(kinds, str)
]


@pytest.fixture
def reference_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The time zone QCoDeS 0.62 was in when it wrote the reference."""
    monkeypatch.setenv("TZ", RECORDED["TZ"])
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def reference_db(tmp_path: Path, reference_zone: None) -> Iterator[qcsql.Database]:
    with qcsql.open_database(copy_database(REFERENCE / "reference.db", tmp_path)) as db:
        yield db


def test_the_reference_is_qcodes_062s_in_a_zone_east_of_utc() -> None:
    """What the rest stands on: QCoDeS 0.62 wrote it, every mode of every run is there
    (a file, or 0.62's error), and the offsets are not +0000."""
    assert RECORDED["qcodes"] == "0.62.0"
    assert len(CONVERTED) == 27
    for run_id, mode in CONVERTED:
        assert (REFERENCE / "datasets" / f"run{run_id}_{mode}.nc").is_file()
    assert {run["run_timestamp"][-5:] for run in RUNS.values()} == {"+0100"}


def _through_a_file(dataset: Any, path: Path) -> Any:
    """The dataset written as the reference was (h5netcdf, a MultiIndex as cf_xarray's
    compress) and read back: a file keeps a one-element list attribute as a scalar."""
    if any(isinstance(index, pd.MultiIndex) for index in dataset.indexes.values()):
        import cf_xarray

        dataset = cf_xarray.coding.encode_multi_index_as_compress(dataset)
    dataset.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path) as read:
        return read.load()


@pytest.mark.parametrize(("run_id", "mode"), CONVERTED)
def test_to_xarray_dataset_is_qcodes_062s(
    reference_db: qcsql.Database, run_id: int, mode: str, tmp_path: Path
) -> None:
    kinds = RUNS[str(run_id)]["index_kinds"][mode]
    where = f"run {run_id} {mode}"
    run = reference_db.load_by_id(run_id)
    with xr.open_dataset(REFERENCE / "datasets" / f"run{run_id}_{mode}.nc") as theirs:
        theirs.load()
    ours = run.to_xarray_dataset(use_multi_index=mode)
    with xr.open_dataset(
        reference_db.path, engine="qcsql", run_id=run_id, use_multi_index=mode
    ) as opened:
        opened.load()
    for dataset, how in ((ours, "to_xarray_dataset"), (opened, "engine")):
        assert {name: type(index).__name__ for name, index in dataset.indexes.items()} == kinds
        for key in ("run_timestamp", "completed_timestamp"):
            assert dataset.attrs[key] == theirs.attrs[key], f"{where} {how}: {key}"
        written = _through_a_file(dataset, tmp_path / f"{how}.nc")
        assert_same_dataset(written, theirs, f"{where} {how}", qcodes_058=False)


# (run, mode) on which QCoDeS 0.62 fails: its error, as reference.json recorded it
FAILED = [
    (int(run_id), mode, kinds)
    for run_id, run in RUNS.items()
    for mode, kinds in run["index_kinds"].items()
    if isinstance(kinds, str)
]
# 0.62's direct layout raises ValueError where the setpoints of a run whose data fill its
# declared shape do not form that grid (0.58 laid them out in measured order)
NOT_A_GRID = "does not define an axis of length"


@pytest.mark.parametrize(
    ("run_id", "mode", "error"), FAILED, ids=[f"{run}-{mode}" for run, mode, _ in FAILED]
)
def test_where_qcodes_062_fails_the_conversion_is_a_typed_error(
    reference_db: qcsql.Database, run_id: int, mode: str, error: str, tmp_path: Path
) -> None:
    """Where 0.62 cannot convert a run, qcsql gives one typed error naming the run: its
    direct layout's ValueError (a shaped run whose setpoints are no complete grid) is a
    :class:`qcsql.DirectLayoutError`, the AssertionError of ``always`` on one setpoint a
    :class:`qcsql.PlanError`; and the export, which 0.62 writes from the same
    conversion, fails the same way without leaving a file."""
    run = reference_db.load_by_id(run_id)
    expected = qcsql.DirectLayoutError if NOT_A_GRID in error else qcsql.PlanError
    with pytest.raises(expected) as raised:
        run.to_xarray_dataset(use_multi_index=mode)
    with pytest.raises(expected):
        xr.open_dataset(reference_db.path, engine="qcsql", run_id=run_id, use_multi_index=mode)
    if expected is qcsql.DirectLayoutError:
        assert raised.value.run_id == run_id
        assert RUNS[str(run_id)]["export"] == error  # 0.62's export fails on it too
        (tmp_path / "out").mkdir()
        with pytest.raises(qcsql.DirectLayoutError):
            run.export_hdf5(tmp_path / "out" / "run.nc")
        assert list((tmp_path / "out").iterdir()) == []


def test_the_reference_records_each_difference_from_qcodes_058() -> None:
    """The runs that show where 0.62 lays a run out differently from 0.58 are there, with
    the results 0.62 gave (the tests of ``test_qcodes058_differences.py`` show 0.58's)."""
    names = {run["name"]: run for run in RUNS.values()}
    assert names["serpentine_2d"]["index_kinds"]["auto"] == {"gate1": "Index", "gate2": "Index"}
    assert names["shaped_without_setpoints"]["index_kinds"]["auto"] == {}
    for name in ("jittered_grid", "back_and_forth_1d"):
        assert NOT_A_GRID in names[name]["export"]
        assert NOT_A_GRID in names[name]["index_kinds"]["auto"]


@pytest.mark.parametrize(
    "run_id", [int(run_id) for run_id, run in RUNS.items() if run["export"].endswith(".nc")]
)
def test_export_is_qcodes_062s(reference_db: qcsql.Database, run_id: int, tmp_path: Path) -> None:
    theirs = REFERENCE / "exports" / RUNS[str(run_id)]["export"]
    ours = reference_db.load_by_id(run_id).export_hdf5(f"{tmp_path}/")
    assert ours.name == theirs.name
    for engine in ENGINES:
        with xr.open_dataset(theirs, engine=engine) as a, xr.open_dataset(ours, engine=engine) as b:
            where = f"run {run_id} ({engine})"
            assert_same_dataset(b.load(), a.load(), where, export_info=True, qcodes_058=False)
            assert b.attrs["run_timestamp"] == a.attrs["run_timestamp"] != ""


def test_run_timestamps_are_qcodes_062s(reference_db: qcsql.Database) -> None:
    """The default format is 0.62's, with the offset; 0.58's format is still asked for
    by passing it, as QCoDeS' own fmt argument takes it."""
    for run_id, expected in RUNS.items():
        run = reference_db.load_by_id(int(run_id))
        assert run.run_timestamp() == expected["run_timestamp"]
        assert run.completed_timestamp() == expected["completed_timestamp"]
        assert run.run_timestamp("%Y-%m-%d %H:%M:%S") == expected["run_timestamp_058_format"]
        assert (
            run.completed_timestamp("%Y-%m-%d %H:%M:%S")
            == expected["completed_timestamp_058_format"]
        )
    assert RUNS["4"]["completed_timestamp"] is None  # the run never completed
    assert RUNS["1"]["run_timestamp"] != RUNS["1"]["completed_timestamp"]


def test_the_sync_record_is_collected_when_run_timestamp_says(
    reference_db: qcsql.Database,
) -> None:
    """The record's ``collected`` (from ``run_timestamp_raw``, as the established agent
    takes it) is the instant and offset the dataset's ``run_timestamp`` names."""
    from qcsql.sync.records import QCoDeSConfigData, dataset_info

    config = QCoDeSConfigData(database_path=reference_db.path, set_up="reference")
    for run_id, expected in RUNS.items():
        record = dataset_info(reference_db.load_by_id(int(run_id)), config)
        assert record.collected.strftime("%Y-%m-%d %H:%M:%S%z") == expected["run_timestamp"]


def _utc(*when: int) -> float:
    import calendar

    return float(calendar.timegm((*when, 0, 0, 0)))


# Winter and summer, and a second either side of the spring and autumn changes of 2026
INSTANTS = [
    _utc(2026, 1, 15, 12, 0, 0) + 0.25,
    _utc(2026, 7, 15, 12, 0, 0) + 0.75,
    _utc(2026, 3, 29, 0, 59, 59),
    _utc(2026, 3, 29, 1, 0, 0),
    _utc(2026, 10, 25, 0, 59, 59),
    _utc(2026, 10, 25, 1, 0, 0),
]


@pytest.mark.requires_qcodes
@pytest.mark.parametrize("raw", INSTANTS)
def test_the_offset_is_the_zones_at_the_runs_instant(reference_zone: None, raw: float) -> None:
    """A summer run carries the summer offset whenever it is read: as QCoDeS 0.58's own
    function gives it when asked for the offset (``time.strftime`` of the local time)."""
    pytest.importorskip("qcodes")
    from qcodes.dataset.sqlite.queries import raw_time_to_str_time

    assert local_time(raw) == raw_time_to_str_time(raw, "%Y-%m-%d %H:%M:%S%z")


def _damaged(tmp_path: Path, column: str, raw: float) -> Path:
    """A copy of the reference with run 1's ``column`` set to ``raw`` by plain sqlite3."""
    import contextlib
    import sqlite3

    path = copy_database(REFERENCE / "reference.db", tmp_path / "damaged")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"UPDATE runs SET {column} = ? WHERE run_id = 1", (raw,))
    return path


@pytest.mark.parametrize("column", ["run_timestamp", "completed_timestamp"])
@pytest.mark.parametrize("raw", [1e18, 1e300, -1e11])
def test_a_time_no_date_can_be_given_for_is_a_typed_error(
    tmp_path: Path, column: str, raw: float
) -> None:
    """QCoDeS 0.62 fails on these (``datetime`` refuses years beyond 1 to 9999 and times
    beyond time_t); qcsql names the run and the column instead of a bare OSError,
    OverflowError or ValueError, and writes no file."""
    with qcsql.open_database(_damaged(tmp_path, column, raw)) as db:
        run = db.load_by_id(1)
        for call in (
            getattr(run, column),
            run.to_xarray_dataset,
            lambda: run.export_hdf5(tmp_path / "out.nc"),
        ):
            with pytest.raises(qcsql.DataDecodeError) as raised:
                call()
            assert (raised.value.run_id, raised.value.column) == (1, column)
            assert raised.value.table == "runs"
    assert not (tmp_path / "out.nc").exists()


@pytest.mark.requires_qcodes
@pytest.mark.parametrize("raw", [1e18, 1e300])
def test_qcodes_058_fails_on_those_times_too(tmp_path: Path, raw: float) -> None:
    """The two that QCoDeS 0.58 cannot format either (``time.localtime``), on a copy.
    (-1e11, year -1199, it formats; 0.62 does not.)"""
    pytest.importorskip("qcodes")
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(_damaged(tmp_path, "run_timestamp", raw)))
    try:
        dataset = load_by_id(1, conn=conn)
        with pytest.raises((OSError, OverflowError, ValueError)):
            dataset.run_timestamp()
        with pytest.raises((OSError, OverflowError, ValueError)):
            dataset.to_xarray_dataset()
    finally:
        conn.close()
