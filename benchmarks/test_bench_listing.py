"""Listing every run (guid, name, timestamps, metadata): qcsql.runs() against QCoDeS 0.58.

Issue target: at least 15x faster on 2,000 runs with 50 KB snapshots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import qcsql
from benchmarks.build_listing_db import build_listing_database
from benchmarks.conftest import cached_database, qcodes_copy

pytest.importorskip("qcodes")

N_RUNS = 2000


@pytest.fixture(scope="session")
def listing_db() -> Path:
    return cached_database(
        f"listing_{N_RUNS}runs_50kB.db", lambda p: build_listing_database(p, N_RUNS, 50)
    )


def list_with_qcsql(path: Path) -> list[tuple[Any, ...]]:
    with qcsql.open_database(path) as db:
        return [
            (r.guid, r.name, r.run_timestamp_raw, r.completed_timestamp_raw, r.metadata)
            for r in db.runs()
        ]


def list_with_qcodes(path: Path) -> list[tuple[Any, ...]]:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(path))
    try:
        run_ids = [row[0] for row in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]
        listed = []
        for run_id in run_ids:
            ds = load_by_id(run_id, conn=conn)
            listed.append(
                (ds.guid, ds.name, ds.run_timestamp_raw, ds.completed_timestamp_raw, ds.metadata)
            )
        return listed
    finally:
        conn.close()


@pytest.mark.benchmark(group="list 2000 runs, 50 KB snapshots")
def test_listing_qcsql(benchmark: Any, listing_db: Path) -> None:
    listed = benchmark(list_with_qcsql, listing_db)
    assert len(listed) == N_RUNS


@pytest.mark.benchmark(group="list 2000 runs, 50 KB snapshots")
def test_listing_qcodes(benchmark: Any, listing_db: Path, tmp_path: Path) -> None:
    copy = qcodes_copy(listing_db, tmp_path)
    listed = benchmark.pedantic(list_with_qcodes, args=(copy,), rounds=3, iterations=1)
    assert listed == list_with_qcsql(listing_db)
