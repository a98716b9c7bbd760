"""Live follow: delay from a QCoDeS commit to the rows being in qcsql's live HDF5 file.

A genuine QCoDeS 0.58 measurement writes 20,000 rows/s in a subprocess (commit every
50 ms) while ``Run.follow`` polls every 50 ms and appends to a ``LiveFile``; for each
commit the delay is the time until the live file held its rows. Issue target: p95 < 1 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from benchmarks.conftest import LATENCY_REPORTS
from qcsql.sync.live_file import LiveFile

pytest.importorskip("qcodes")
WRITER = Path(__file__).resolve().parent.parent / "tests" / "live_writer.py"


def follow_writer(
    folder: Path, journal: str, seconds: float = 5, rate: float = 20000
) -> list[float]:
    database = folder / "live.db"
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(database), journal, str(seconds), str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(folder / "home")},
    )
    line = ""
    while writer.stdout and not line.startswith("run "):
        line = writer.stdout.readline()
        assert line, "the writer stopped"
    seen: list[tuple[int, float]] = []
    live = LiveFile(folder / "live.h5")
    with qcsql.open_database(database) as db:
        run = db.load_by_id(int(line.split()[1]))
        for chunk in run.follow(poll_interval=0.05, idle_timeout=30):
            live.append(chunk.data, {})
            seen.append((live.rows.get("y", 0), time.time()))
    live.close()
    _, stderr = writer.communicate(timeout=60)
    assert "locked" not in stderr, stderr
    commits = [
        tuple(map(float, row.split()))
        for row in (database.with_suffix(".db.commits")).read_text().split("\n")
        if row
    ]
    rows_seen = np.array([rows for rows, _ in seen])
    times_seen = np.array([at for _, at in seen])
    delays = []
    for rows, committed_at in commits:
        if rows == 0:
            continue
        first = np.searchsorted(rows_seen, rows)  # rows only grow
        delays.append(float(times_seen[first] - committed_at))
    return delays


@pytest.mark.parametrize("journal", ["WAL", "DELETE"])
def test_live_follow_latency(benchmark: Any, tmp_path: Path, journal: str) -> None:
    delays = benchmark.pedantic(follow_writer, args=(tmp_path, journal), rounds=1, iterations=1)
    LATENCY_REPORTS.append((journal, delays))
    benchmark.extra_info.update(
        median_delay_s=float(np.median(delays)), p95_delay_s=float(np.percentile(delays, 95))
    )
