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
from qcsql.export.naming import default_file_name
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
        with qcsql.open_database(database) as db:
            live_name = default_file_name(db.load_by_id(run_id)).removesuffix(".nc") + ".live.h5"
        reader = subprocess.Popen(  # another process watching the live file grow (SWMR)
            [sys.executable, "-c", SWMR_READER, str(tmp_path / "out" / live_name)],
            stdout=subprocess.PIPE,
            text=True,
        )
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
        sizes_seen = [int(n) for n in reader.communicate(timeout=120)[0].split()]
    finally:
        for process in (writer, reader):
            if process.poll() is None:
                process.kill()
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
    assert len(set(sizes_seen)) > 3 and max(sizes_seen) <= written  # it grew while being read


SWMR_READER = """
import os, sys, time
import h5py
path, sizes, deadline = sys.argv[1], [], time.time() + 60
while time.time() < deadline and not (sizes and sizes[-1] == -1):
    if not os.path.exists(path):
        time.sleep(0.02)
        continue
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as live:
            rows = live["y"]["y"]
            while time.time() < deadline:
                rows.refresh()
                sizes.append(rows.shape[0])
                if len(sizes) > 20 and len(set(sizes[-20:])) == 1:
                    sizes.append(-1)  # no growth for a while: the run is over
                    break
                time.sleep(0.05)
    except (OSError, KeyError):
        time.sleep(0.02)
print(" ".join(str(n) for n in sizes if n >= 0))
"""


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
