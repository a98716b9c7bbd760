"""``qcsql sync --watch`` over time: a Database kept from poll to poll sees what writers
change (new metadata columns, commits made while it looked away), live files end holding
every row or are removed, and ``qcsql follow`` and the sync share one follow loop."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import qcsql
import qcsql.sync.live_follow
from qcsql.cli import main
from qcsql.sync.live_file import LiveFile
from qcsql.sync.mirror import DATA_NAME, LIVE_NAME, RECORD_NAME, STATE_NAME, Mirror, SyncEvent
from tests.qcodes_build import new_database, parameters
from tests.test_sync_mirror import _check_mirror, _config, _xy_measurement

pytestmark = pytest.mark.requires_qcodes


def _two_runs(path: Path) -> None:
    """A closed QCoDeS database (WAL, as QCoDeS makes it, no writer connected: qcsql
    reads it immutable) with two small completed runs and no metadata column."""
    from qcodes.dataset import Measurement

    experiment = new_database(path)
    x, y = parameters("x", "y")
    for name in ("first", "second"):
        measurement = Measurement(exp=experiment, name=name)
        measurement.register_parameter(x)
        measurement.register_parameter(y, setpoints=(x,))
        with measurement.run() as saver:
            for value in range(5):
                saver.add_result((x, value), (y, value))
    experiment.conn.close()


def _add_metadata(path: Path, run_id: int, key: str, value: str) -> None:
    """QCoDeS' own ``add_metadata``, from a connection opened and closed for it (as plottr
    does): its ``-wal`` comes and goes between two of the sync's reads."""
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(path))
    try:
        load_by_id(run_id, conn=conn).add_metadata(key, value)
    finally:
        conn.close()


def test_a_database_kept_open_sees_commits_of_a_writer_that_came_and_went(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lab.db"
    _two_runs(path)
    with qcsql.open_database(path) as db:
        assert db.access is qcsql.Access.IMMUTABLE
        assert len(db.runs()) == 2
        with sqlite3.connect(path) as conn:  # a writer: connects, commits, leaves
            conn.execute("UPDATE runs SET name = 'renamed' WHERE run_id = 2")
        conn.close()
        assert not (tmp_path / "lab.db-wal").exists()
        assert db.runs()[1].name == "renamed"


def test_watch_sees_a_star_on_a_database_without_the_column_within_one_poll(
    tmp_path: Path,
) -> None:
    """``inspectr_tag`` does not exist when the watch starts; QCoDeS' ``add_metadata``
    adds the column and stars run 1: the next poll rewrites run 1's record (ranking +1)
    and not its data file, which stays the export of the run before the star (QCoDeS
    would write the tag as an attribute too; a flag must not re-upload the data); run
    2's files are not touched. Another tag afterwards is data: the file is rewritten,
    byte for byte ``qcsql export`` of the run again."""
    path = tmp_path / "lab.db"
    _two_runs(path)
    with qcsql.open_database(path) as db:
        assert "inspectr_tag" not in db.metadata_columns
        guid = str(db.load_by_id(1).guid)
    folder = tmp_path / "mirror"
    config = _config(path)
    events: list[SyncEvent] = []
    polls: list[dict[Path, int]] = []

    data_before_star: list[bytes] = []

    def after_poll() -> bool:
        polls.append({p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()})
        if len(polls) == 1:
            events.clear()
            data_before_star.append((folder / guid / DATA_NAME).read_bytes())
            _add_metadata(path, 1, "inspectr_tag", "star")
        elif len(polls) == 2:
            _add_metadata(path, 1, "analysis", "fit done")
        return len(polls) == 3

    with Mirror(config, folder, on_event=events.append) as mirror:
        mirror.watch(0, stop=after_poll)
    assert [(e.action, e.run_id) for e in events] == [("updated", 1), ("updated", 1)]
    before, after_star, after_tag = polls
    changed = {p.relative_to(folder) for p in after_star if after_star[p] != before.get(p)}
    assert changed == {Path(guid, RECORD_NAME), Path(STATE_NAME)}
    changed = {p.relative_to(folder) for p in after_tag if after_tag[p] != after_star.get(p)}
    assert changed == {Path(guid, RECORD_NAME), Path(guid, DATA_NAME), Path(STATE_NAME)}
    assert (folder / guid / DATA_NAME).read_bytes() != data_before_star[0]
    assert json.loads((folder / guid / RECORD_NAME).read_text())["ranking"] == 1
    _check_mirror(path, folder, config, tmp_path)


def _running(path: Path) -> tuple[Any, Any, Any, Any]:
    """A QCoDeS run being measured (its DataSaver context entered): (saver, x, y, exit)."""
    _experiment, measurement, x, y = _xy_measurement(path, "live")
    runner = measurement.run()
    saver = runner.__enter__()
    saver.add_result((x, 1), (y, 2))
    saver.flush_data_to_database(block=True)
    return saver, x, y, runner


def test_a_run_deleted_while_followed_leaves_no_live_file_nor_record(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"
    saver, _x, _y, runner = _running(path)
    folder = tmp_path / "mirror"
    events: list[SyncEvent] = []
    try:
        with Mirror(_config(path), folder, on_event=events.append) as mirror:
            mirror.poll()
            mirror.poll()  # the follow's first step: the live file
            run_folder = folder / str(saver.dataset.guid)
            assert sorted(p.name for p in run_folder.iterdir()) == [RECORD_NAME, LIVE_NAME]
            with sqlite3.connect(path) as conn:
                conn.execute("DELETE FROM runs WHERE run_id = 1")
            conn.close()
            mirror.poll()
    finally:
        with contextlib.suppress(AssertionError):  # QCoDeS cannot complete a deleted run
            runner.__exit__(None, None, None)
        saver.dataset.conn.close()
    assert [(e.action, e.run_id) for e in events] == [("live", 1), ("deleted", 1)]
    assert list(run_folder.iterdir()) == []


def test_a_followed_run_whose_export_fails_leaves_no_live_file_nor_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lab.db"
    saver, _x, _y, runner = _running(path)
    folder = tmp_path / "mirror"
    events: list[SyncEvent] = []
    with Mirror(_config(path), folder, on_event=events.append) as mirror:
        mirror.poll()
        mirror.poll()  # the follow's first step: the live file
        run_folder = folder / str(saver.dataset.guid)
        assert (run_folder / LIVE_NAME).exists()
        runner.__exit__(None, None, None)  # completed: the next poll exports it

        def fail(run: qcsql.Run, *args: object, **kwargs: object) -> Path:
            raise qcsql.ExportError(f"run {run.run_id}: cannot be exported", run_id=run.run_id)

        monkeypatch.setattr(qcsql.Run, "export_hdf5", fail)
        mirror.poll()
    saver.dataset.conn.close()
    assert [(e.action, e.status) for e in events] == [("live", "live"), ("failed", "failed")]
    assert list(run_folder.iterdir()) == []
    assert json.loads((folder / STATE_NAME).read_text())["runs"]["1"]["status"] == "failed"


@pytest.mark.parametrize("state_saved", [True, False], ids=["state says live", "state lags"])
def test_a_run_completed_while_the_sync_was_down_gets_a_live_file_with_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_saved: bool
) -> None:
    """A sync was killed while following a run (its state saying so, or killed before
    the state was saved: only the live file and record say so), and the run completed
    meanwhile: the next sync follows it from row 1 into a new live file, and its record
    turns complete only after that file held every row of the run."""
    path = tmp_path / "lab.db"
    saver, x, y, runner = _running(path)
    folder = tmp_path / "mirror"
    killed = Mirror(_config(path), folder)  # never closed: as if killed while following
    killed.poll()
    killed.poll()
    assert (folder / str(saver.dataset.guid) / LIVE_NAME).exists()
    if not state_saved:
        state = json.loads((folder / STATE_NAME).read_text())
        state.update(cursor=0, runs={})
        (folder / STATE_NAME).write_text(json.dumps(state))
    for value in range(2, 50):
        saver.add_result((x, value), (y, 2 * value))
    runner.__exit__(None, None, None)
    saver.dataset.conn.close()
    closed: list[tuple[Path, dict[str, int]]] = []
    close = LiveFile.close

    def recording_close(self: LiveFile) -> None:
        closed.append((self.path, dict(self.rows)))
        close(self)

    monkeypatch.setattr(LiveFile, "close", recording_close)
    events: list[SyncEvent] = []
    with Mirror(_config(path), folder, on_event=events.append) as mirror:
        mirror.sync_once(0.01)
    assert [(e.action, e.status) for e in events] == [("live", "live")] * (not state_saved) + [
        ("synced", "complete")
    ]
    assert [rows for live, rows in closed if live.name == LIVE_NAME] == [{"y": 49}]
    _check_mirror(path, folder, _config(path), tmp_path)


def test_qcsql_follow_and_the_sync_step_the_same_follow_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lab.db"
    saver, _x, _y, runner = _running(path)
    runner.__exit__(None, None, None)
    saver.dataset.conn.close()
    stepped: list[Path] = []
    step = qcsql.sync.live_follow.LiveFollow.step

    def counting_step(self: qcsql.sync.live_follow.LiveFollow) -> bool:
        stepped.append(self.path)
        return step(self)

    monkeypatch.setattr(qcsql.sync.live_follow.LiveFollow, "step", counting_step)
    out = io.StringIO()
    assert main(["follow", str(path), "--run", "1", "-o", str(tmp_path / "f")], out=out) == 0
    assert "1 rows followed, completed" in out.getvalue()
    assert stepped and all(p.parent == tmp_path / "f" for p in stepped)
    stepped.clear()
    with Mirror(_config(path), tmp_path / "mirror", on_event=lambda e: None) as mirror:
        # The state says the run is live (a sync killed while following it).
        mirror.poll()
    state = json.loads((tmp_path / "mirror" / STATE_NAME).read_text())
    state["runs"]["1"]["status"] = "live"
    (tmp_path / "mirror" / STATE_NAME).write_text(json.dumps(state))
    with Mirror(_config(path), tmp_path / "mirror") as mirror:
        mirror.poll()
    assert stepped and all(p.name == LIVE_NAME for p in stepped)
