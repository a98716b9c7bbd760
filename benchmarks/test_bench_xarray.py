"""xarray and Dask: qcsql's to_xarray_dataset and its engine beside QCoDeS 0.58, same files.

Issue targets, on the 10,000,000-point 1-D run and the 10,000 x 1,000-point array run:
``to_xarray_dataset()`` at least 10x faster than QCoDeS' with at most 1.5x the dataset's
size in peak RSS growth; ``xr.open_dataset(engine="qcsql")`` under 0.5 s and 30 MB; a
1,000-element slice under 20 ms; ``mean()`` with chunks of 1,000,000 under 200 MB peak
RSS. Times here, peak RSS in fresh processes (``benchmarks/memory_probe.py``), reported
in the terminal summary, not asserted.

    pytest benchmarks/test_bench_xarray.py --benchmark-only
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import qcsql
from benchmarks.conftest import MEMORY_REPORTS, fresh_process_probe, qcodes_copy
from benchmarks.test_bench_data import NUMERIC_POINTS, array_db, numeric_db  # noqa: F401

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")

RUNS = {
    "numeric": ("y", f"{NUMERIC_POINTS:,}-point numeric run"),
    "arrays": ("spectrum", "10,000 x 1,000-point arrays"),
}


FIXTURES = {"numeric": "numeric_db", "arrays": "array_db"}


def _memory(which: str, path: Path, job: str, label: str) -> None:
    report = fresh_process_probe("memory_probe", which, str(path), job)
    MEMORY_REPORTS.append((f"{job}, {label}", report))


def qcsql_to_xarray(path: Path) -> Any:
    with qcsql.open_database(path) as db:
        return db.load_by_id(1).to_xarray_dataset()


def qcodes_to_xarray(path: Path) -> Any:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(path))
    try:
        return load_by_id(1, conn=conn).to_xarray_dataset()
    finally:
        conn.close()


# qcsql gets one warm-up round: its first call pays the first-use set-up of xarray and pandas
# (imported, not yet used) that QCoDeS' single round, run after it, no longer pays.
@pytest.mark.benchmark(group="to_xarray_dataset, 1-D numeric run")
def test_to_xarray_numeric_qcsql(benchmark: Any, numeric_db: Path) -> None:  # noqa: F811
    dataset = benchmark.pedantic(
        qcsql_to_xarray, args=(numeric_db,), rounds=3, iterations=1, warmup_rounds=1
    )
    assert dataset.sizes["x"] == NUMERIC_POINTS
    _memory("qcsql", numeric_db, "xarray", RUNS["numeric"][1])


@pytest.mark.benchmark(group="to_xarray_dataset, 1-D numeric run")
def test_to_xarray_numeric_qcodes(benchmark: Any, numeric_db: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = qcodes_copy(numeric_db, tmp_path / "db")
    benchmark.pedantic(qcodes_to_xarray, args=(copy,), rounds=1, iterations=1)
    _memory("qcodes", copy, "xarray", RUNS["numeric"][1])


@pytest.mark.benchmark(group="to_xarray_dataset, 10,000 x 1,000-point arrays")
def test_to_xarray_arrays_qcsql(benchmark: Any, array_db: Path) -> None:  # noqa: F811
    benchmark.pedantic(qcsql_to_xarray, args=(array_db,), rounds=3, iterations=1, warmup_rounds=1)
    _memory("qcsql", array_db, "xarray", RUNS["arrays"][1])


@pytest.mark.benchmark(group="to_xarray_dataset, 10,000 x 1,000-point arrays")
def test_to_xarray_arrays_qcodes(benchmark: Any, array_db: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = qcodes_copy(array_db, tmp_path / "db")
    benchmark.pedantic(qcodes_to_xarray, args=(copy,), rounds=1, iterations=1)
    _memory("qcodes", copy, "xarray", RUNS["arrays"][1])


def _open(path: Path, **options: Any) -> Any:
    return xr.open_dataset(path, engine="qcsql", run_id=1, **options)


@pytest.mark.parametrize("kind", list(RUNS))
def test_open_dataset(benchmark: Any, kind: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(FIXTURES[kind])
    benchmark.group = f"xr.open_dataset(engine='qcsql'), {RUNS[kind][1]}"
    benchmark.pedantic(_open, args=(path,), rounds=3, iterations=1, warmup_rounds=1)
    _memory("qcsql", path, "open", RUNS[kind][1])
    # Beside it: xarray's own engines opening qcsql's netCDF export of the same run.
    _memory("qcsql", path, "open_h5netcdf", RUNS[kind][1])
    _memory("qcsql", path, "open_netcdf4", RUNS[kind][1])


@pytest.mark.parametrize("kind", list(RUNS))
def test_open_dataset_lazy_coordinates(
    benchmark: Any, kind: str, request: pytest.FixtureRequest
) -> None:
    """``lazy_coordinates=True, create_default_indexes=False``: nothing held, no index."""
    path = request.getfixturevalue(FIXTURES[kind])
    benchmark.group = f"xr.open_dataset(engine='qcsql', lazy coordinates), {RUNS[kind][1]}"
    options = {"lazy_coordinates": True, "create_default_indexes": False}
    benchmark.pedantic(_open, args=(path,), kwargs=options, rounds=3, iterations=1)
    _memory("qcsql", path, "open_lazy", RUNS[kind][1])
    _memory("qcsql", path, "mean_lazy", RUNS[kind][1])


@pytest.mark.parametrize("kind", list(RUNS))
def test_slice_of_1000(benchmark: Any, kind: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(FIXTURES[kind])
    name = RUNS[kind][0]
    benchmark.group = f"1,000-element slice of an opened run, {RUNS[kind][1]}"
    with _open(path) as opened:
        variable = opened[name]
        middle = variable.shape[0] // 2
        values = benchmark(lambda: variable[middle : middle + 1000].values)
    assert len(values) == 1000


def _chunked_mean(path: Path, label: str) -> None:
    _memory("qcsql", path, "mean", label)


@pytest.mark.parametrize("kind", list(RUNS))
def test_chunked_mean(benchmark: Any, kind: str, request: pytest.FixtureRequest) -> None:
    """A fresh process opens the run with ``chunks={}`` and computes the mean with Dask;
    timed whole (imports included), peak RSS growth of the open and mean reported."""
    pytest.importorskip("dask")
    path = request.getfixturevalue(FIXTURES[kind])
    benchmark.group = f"mean() with chunks of 1,000,000 (fresh process), {RUNS[kind][1]}"
    benchmark.pedantic(_chunked_mean, args=(path, RUNS[kind][1]), rounds=1, iterations=1)
