"""Following a running QCoDeS measurement: nothing lost, nothing twice, the writer never blocked."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import qcsql
from qcsql.cli import main
from tests.helpers import EXAMPLE_DB

pytest.importorskip("qcodes")
WRITER = Path(__file__).with_name("live_writer.py")


@pytest.mark.parametrize("journal", ["DELETE", "WAL"])
def test_follow_a_fast_qcodes_writer(tmp_path: Path, journal: str) -> None:
    database = tmp_path / "live.db"
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(database), journal, "4", "20000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(tmp_path / "home")},
    )
    try:
        first = ""
        while writer.stdout and not first.startswith("run "):  # QCoDeS prints its own line first
            first = writer.stdout.readline()
            assert first, writer.stderr.read() if writer.stderr else "the writer stopped"
        run_id = int(first.split()[1])
        out = io.StringIO()
        status = main(
            [
                "follow",
                str(database),
                "--run",
                str(run_id),
                "-o",
                str(tmp_path / "out"),
                "--json",
                "--poll",
                "0.05",
                "--idle-timeout",
                "60",
            ],
            out=out,
        )
        stdout, stderr = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, stderr
    assert "locked" not in stderr and "commit" not in stderr.lower(), stderr
    written = int(stdout.split()[-1])
    assert written >= 20000 * 3  # several seconds at 20,000 rows per second
    summary = json.loads(out.getvalue())
    assert status == 0 and summary["reason"] == "completed" and summary["rows"] == written
    with qcsql.open_database(database) as db:
        run = db.load_by_id(run_id)
        data = run.get_parameter_data()["y"]
        offline = run.export_hdf5(tmp_path / "offline.nc")
    with h5py.File(summary["live_file"], "r", libver="latest", swmr=True) as live:
        np.testing.assert_array_equal(live["y"]["y"][:], data["y"])
        np.testing.assert_array_equal(live["y"]["x"][:], data["x"])
    np.testing.assert_array_equal(
        data["x"], np.arange(written, dtype=float)
    )  # none lost, none twice
    assert Path(summary["export"]).read_bytes() == offline.read_bytes()


def test_follow_a_finished_run_reads_it_whole(tmp_path: Path) -> None:
    copy = tmp_path / "example.db"
    copy.write_bytes(EXAMPLE_DB.read_bytes())
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(3)
        chunks = list(run.follow(poll_interval=0.01))
        expected = run.get_parameter_data()
    assert chunks[-1].reason == "completed"
    got = chunks[0].data
    for top, tree in expected.items():
        for name, values in tree.items():
            np.testing.assert_array_equal(got[top][name], values)


def test_follow_stops_when_idle(tmp_path: Path) -> None:
    copy = tmp_path / "example.db"
    copy.write_bytes(EXAMPLE_DB.read_bytes())
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(12)  # never completed: its process died
        chunks = list(run.follow(poll_interval=0.01, idle_timeout=0.2))
    assert chunks[-1].reason == "idle" and not chunks[-1].completed
    assert sum(chunk.rows for chunk in chunks) == 5
