"""Array runs whose setpoint rows repeat are streamed into QCoDeS' flat ``index`` layout,
window by window, and the files equal QCoDeS' own exports; a run that stops fitting
that layout part-way is written from memory instead, with the same result."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
import qcsql.export
import qcsql.plan
from tests.helpers import copy_database

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.test_export_matches_qcodes import ENGINES, assert_same_dataset  # noqa: E402


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records, per export, whether the streamed index plan was taken and completed."""
    events: list[str] = []
    real_plan = qcsql.export._streamed_index_plan
    real_memory = qcsql.export.plan_run

    def plan(*args: Any) -> Any:
        found = real_plan(*args)
        events.append("streamed" if found is not None else "not streamable")
        return found

    def memory(run: Any) -> Any:
        events.append("in memory")
        return real_memory(run)

    monkeypatch.setattr(qcsql.export, "_streamed_index_plan", plan)
    monkeypatch.setattr(qcsql.export, "plan_run", memory)
    monkeypatch.setattr(qcsql.export, "ARRAY_BYTES_PER_CHUNK", 64 * 1024)  # many windows
    return events


def _qcodes_export(path: Path, run_id: int, folder: Path) -> Path:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(copy_database(path, folder / "db")))
    try:
        dataset = load_by_id(run_id, conn=conn)
        dataset.export("netcdf", path=str(folder))
        return Path(dataset.export_info.export_paths["nc"])
    finally:
        conn.close()


def test_repeated_sweeps_stream_and_equal_qcodes(
    array_runs: Path, tmp_path: Path, streamed: list[str]
) -> None:
    theirs = _qcodes_export(array_runs, 1, tmp_path / "qcodes")
    progress: list[tuple[int, int]] = []
    with qcsql.open_database(array_runs) as db:
        run = db.load_by_id(1)
        ours = run.export_hdf5(
            tmp_path, progress=lambda done, total: progress.append((done, total))
        )
    assert streamed == ["streamed"]  # no fallback to memory
    assert len(progress) > 10 and progress[-1][0] == progress[-1][1]
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    for engine in ENGINES:
        with xr.open_dataset(theirs, engine=engine) as a, xr.open_dataset(ours, engine=engine) as b:
            assert dict(b.sizes) == {"index": 1200 * 700}
            assert_same_dataset(b.load(), a.load(), f"streamed spectra ({engine})")


def test_unique_setpoint_rows_are_not_streamed(
    array_runs: Path, tmp_path: Path, streamed: list[str]
) -> None:
    """Spectra over a gate: every (gate, freq) pair is new, so QCoDeS builds a grid."""
    theirs = _qcodes_export(array_runs, 2, tmp_path / "qcodes")
    with qcsql.open_database(array_runs) as db:
        ours = db.load_by_id(2).export_hdf5(tmp_path)
    assert streamed == ["not streamable", "in memory"]
    with xr.open_dataset(theirs, engine="h5netcdf") as a, xr.open_dataset(ours) as b:
        assert_same_dataset(b.load(), a.load(), "spectra over a gate")


def test_a_run_that_changes_shape_midway_is_written_from_memory(
    array_runs: Path, tmp_path: Path, streamed: list[str]
) -> None:
    """The first windows stream; a later row with a shorter array makes the stream give
    up, and the file is the one the in-memory plan writes (no partial file is left)."""
    copy = copy_database(array_runs, tmp_path / "db")
    with sqlite3.connect(copy) as conn:
        table = conn.execute("SELECT result_table_name FROM runs WHERE run_id = 1").fetchone()[0]
        blob = conn.execute(f'SELECT spectrum FROM "{table}" WHERE id = 900').fetchone()[0]
        header = blob[: len(blob) - 700 * 8].replace(b"(700,)", b"(699,)")
        conn.execute(
            f'UPDATE "{table}" SET spectrum = ?, freq = ? WHERE id = 900',
            (header + blob[len(header) : -8], header + bytes(699 * 8)),
        )
    conn.close()
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(1)
        ours = run.export_hdf5(tmp_path / "ours.nc")
        expected = qcsql.plan.plan_run(run)
    assert streamed == ["streamed", "in memory"]
    assert not list(tmp_path.glob("*.partial"))
    with xr.open_dataset(ours, engine="h5netcdf") as b:
        assert dict(b.sizes) == dict(expected.dims)
        for name, variable in expected.variables.items():
            np.testing.assert_array_equal(b[name].values, variable.data)
