"""A sync agent's work on the 10,000,000-point run: its record, and the whole sync.

Issue targets: ``dataset_info`` under 50 ms and under 200 MB peak RSS, a full ``qcsql
sync`` of the database under 200 MB peak RSS (fresh-process probes,
``benchmarks/sync_probe.py``). QCoDeS' side is the eTiKeT agent's way: the run's xarray
dataset for the tags, its netCDF export for the upload. Figures are reported, not
asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import qcsql
from benchmarks.conftest import MEMORY_REPORTS, fresh_process_probe, qcodes_copy
from benchmarks.test_bench_data import NUMERIC_POINTS, numeric_db  # noqa: F401
from benchmarks.test_bench_export import fresh_folders
from qcsql.sync import QCoDeSConfigData, dataset_info
from qcsql.sync.mirror import Mirror

pytest.importorskip("qcodes")


def _probe(which: str, path: Path, job: str) -> None:
    probe = fresh_process_probe("sync_probe", which, str(path), job)
    data_bytes = NUMERIC_POINTS * 16  # the run's two float64 columns
    probe.update(returned_bytes=data_bytes, ratio=probe["peak_growth_bytes"] / data_bytes)
    label = (
        f"{job} of the {NUMERIC_POINTS:,}-point run (peak RSS "
        f"{probe['peak_rss_bytes'] / 2**20:.0f} MiB in all, {probe['seconds']:.3f} s)"
    )
    MEMORY_REPORTS.append((label, probe))


def record_with_qcsql(path: Path) -> Any:
    with qcsql.open_database(path) as db:
        return dataset_info(db.load_by_id(1), QCoDeSConfigData(database_path=path, set_up="b"))


def record_with_qcodes(path: Path) -> set[str]:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(path))
    try:
        dataset = load_by_id(1, conn=conn).to_xarray_dataset()
    finally:
        conn.close()
    return {str(v.attrs.get("long_name") or n) for n, v in dataset.variables.items()}


@pytest.mark.benchmark(group="sync record of the 10M-point run")
def test_record_qcsql(benchmark: Any, numeric_db: Path) -> None:  # noqa: F811
    info = benchmark.pedantic(record_with_qcsql, args=(numeric_db,), rounds=20, iterations=1)
    assert info.tags
    _probe("qcsql", numeric_db, "record")


@pytest.mark.benchmark(group="sync record of the 10M-point run")
def test_record_qcodes(benchmark: Any, numeric_db: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = qcodes_copy(numeric_db, tmp_path / "db")
    tags = benchmark.pedantic(record_with_qcodes, args=(copy,), rounds=1, iterations=1)
    assert tags
    _probe("qcodes", copy, "record")


def sync_with_qcsql(path: Path, folder: Path) -> int:
    config = QCoDeSConfigData(database_path=path, set_up="b")
    with Mirror(config, folder, live=False) as mirror:
        mirror.sync_once()
    return mirror.cursor


def sync_with_qcodes(path: Path, folder: Path) -> set[str]:
    """The eTiKeT agent's upload: the netCDF export, and the dataset for the tags."""
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(path))
    try:
        dataset = load_by_id(1, conn=conn)
        dataset.export("netcdf", path=str(folder))
        xr = dataset.to_xarray_dataset()
    finally:
        conn.close()
    return {str(v.attrs.get("long_name") or n) for n, v in xr.variables.items()}


@pytest.mark.benchmark(group="sync of the 10M-point run")
def test_sync_qcsql(benchmark: Any, numeric_db: Path, tmp_path: Path) -> None:  # noqa: F811
    cursor = benchmark.pedantic(
        sync_with_qcsql, setup=fresh_folders(numeric_db, tmp_path), rounds=3, iterations=1
    )
    assert cursor == 1
    _probe("qcsql", numeric_db, "sync")


@pytest.mark.benchmark(group="sync of the 10M-point run")
def test_sync_qcodes(benchmark: Any, numeric_db: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = qcodes_copy(numeric_db, tmp_path / "db")
    benchmark.pedantic(sync_with_qcodes, args=(copy, tmp_path), rounds=1, iterations=1)
    _probe("qcodes", copy, "sync")
