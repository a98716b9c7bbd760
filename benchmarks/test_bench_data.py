"""Reading a run's data: qcsql's get_parameter_data against QCoDeS 0.58's, same files.

Issue targets: a 10,000,000-point 1-D numeric run and 10,000 rows of 1,000-point
arrays each read at least 10x faster than QCoDeS, and the peak memory of reading
within 1.5x the size of the returned arrays (QCoDeS needs about 6x). Memory is
measured in fresh processes (``benchmarks/memory_probe.py``) and reported in the
terminal summary, not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from benchmarks.build_data_dbs import build_array_database, build_numeric_database
from benchmarks.conftest import MEMORY_REPORTS, cached_database, qcodes_copy

pytest.importorskip("qcodes")

NUMERIC_POINTS = int(os.environ.get("QCSQL_BENCH_POINTS", 10_000_000))
ARRAY_ROWS = 10_000


@pytest.fixture(scope="session")
def numeric_db() -> Path:
    return cached_database(
        f"numeric_{NUMERIC_POINTS}.db", lambda p: build_numeric_database(p, NUMERIC_POINTS)
    )


@pytest.fixture(scope="session")
def array_db() -> Path:
    return cached_database(
        f"arrays_{ARRAY_ROWS}x1000.db", lambda p: build_array_database(p, ARRAY_ROWS)
    )


def read_with_qcsql(path: Path) -> dict[str, Any]:
    with qcsql.open_database(path) as db:
        return db.load_by_id(1).get_parameter_data()


def read_with_qcodes(path: Path) -> dict[str, Any]:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(path))
    try:
        return load_by_id(1, conn=conn).get_parameter_data()
    finally:
        conn.close()


def read_bytes_only(path: Path) -> list[np.ndarray]:
    """The floor under any reader of this file on this machine: its bytes into fresh memory,
    one half per core, with nothing parsed or checked. Fresh memory is part of the floor: the
    returned arrays are fresh, and the kernel zeroes every page before the read fills it."""
    size = path.stat().st_size
    starts = (0, size // 2)
    parts = [np.empty(size // 2, np.uint8), np.empty(size - size // 2, np.uint8)]
    with open(path, "rb") as handle, ThreadPoolExecutor(max_workers=2) as pool:
        read = pool.map(lambda part, at: os.preadv(handle.fileno(), [part], at), parts, starts)
        assert list(read) == [len(part) for part in parts]
    return parts


def _same(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    for top, tree in theirs.items():
        for name, array in tree.items():
            assert ours[top][name].shape == array.shape
            np.testing.assert_allclose(ours[top][name], array, rtol=2e-14, atol=0)


def _memory(which: str, path: Path, label: str) -> None:
    project = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_probe", which, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=project,
    )
    MEMORY_REPORTS.append((label, json.loads(result.stdout.strip().splitlines()[-1])))


@pytest.mark.benchmark(group="get_parameter_data, 1-D numeric run")
def test_numeric_qcsql(benchmark: Any, numeric_db: Path) -> None:
    data = benchmark.pedantic(read_with_qcsql, args=(numeric_db,), rounds=3, iterations=1)
    assert data["y"]["y"].shape == (NUMERIC_POINTS,)
    _memory("qcsql", numeric_db, f"{NUMERIC_POINTS:,}-point numeric run")


@pytest.mark.benchmark(group="get_parameter_data, 1-D numeric run")
def test_numeric_qcodes(benchmark: Any, numeric_db: Path, tmp_path: Path) -> None:
    copy = qcodes_copy(numeric_db, tmp_path)
    theirs = benchmark.pedantic(read_with_qcodes, args=(copy,), rounds=1, iterations=1)
    _same(read_with_qcsql(numeric_db), theirs)
    del theirs
    _memory("qcodes", copy, f"{NUMERIC_POINTS:,}-point numeric run")


@pytest.mark.benchmark(group="get_parameter_data, 10,000 x 1,000-point arrays")
def test_arrays_qcsql(benchmark: Any, array_db: Path) -> None:
    data = benchmark.pedantic(  # many rounds: the kernel's page handling makes single ones vary
        read_with_qcsql, args=(array_db,), rounds=40, iterations=1, warmup_rounds=2
    )
    assert data["spectrum"]["spectrum"].shape == (ARRAY_ROWS, 1000)
    _memory("qcsql", array_db, "10,000 x 1,000-point arrays")


@pytest.mark.benchmark(group="get_parameter_data, 10,000 x 1,000-point arrays")
@pytest.mark.skipif(not hasattr(os, "preadv"), reason="the floor is measured with preadv")
def test_arrays_floor(benchmark: Any, array_db: Path) -> None:
    benchmark.pedantic(read_bytes_only, args=(array_db,), rounds=40, iterations=1, warmup_rounds=2)


@pytest.mark.benchmark(group="get_parameter_data, 10,000 x 1,000-point arrays")
def test_arrays_qcodes(benchmark: Any, array_db: Path, tmp_path: Path) -> None:
    copy = qcodes_copy(array_db, tmp_path)
    theirs = benchmark.pedantic(
        read_with_qcodes, args=(copy,), rounds=10, iterations=1, warmup_rounds=1
    )
    _same(read_with_qcsql(array_db), theirs)
    del theirs
    _memory("qcodes", copy, "10,000 x 1,000-point arrays")
