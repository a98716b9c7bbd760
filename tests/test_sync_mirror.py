"""``qcsql sync``: a folder mirroring a database, equal to ``qcsql export`` and
``dataset_info`` run by run, updated when runs change, repaired after a crash."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import qcsql
from qcsql.cli import main
from qcsql.sync import QCoDeSConfigData, dataset_info
from qcsql.sync.mirror import DATA_NAME, RECORD_NAME, STATE_NAME, Mirror, SyncEvent
from tests.helpers import EXAMPLE_DB, copy_database, fixture_databases
from tests.qcodes_build import new_database, parameters

WRITER = Path(__file__).with_name("live_writer.py")


def _config(path: Path, **attributes: str) -> QCoDeSConfigData:
    return QCoDeSConfigData(database_path=path, set_up="rack", static_attributes=attributes)


def _cli_export(database: Path, run_id: int, folder: Path) -> bytes:
    """``qcsql export DB --run ID`` of the run: the bytes its file holds."""
    out = folder / f"export-{run_id}"
    assert (
        main(
            ["export", str(database), "--run", str(run_id), "-o", str(out)],
            out=io.StringIO(),
            err=io.StringIO(),
        )
        == 0
    )
    (written,) = out.iterdir()
    return written.read_bytes()


def _records_equal_dataset_info(
    record: dict[str, Any], run: qcsql.Run, config: QCoDeSConfigData, exported: Path
) -> None:
    info = dataset_info(run, config, exported=exported).model_dump(
        mode="json", exclude={"data_file"}
    )
    info["tags"] = sorted(info["tags"])
    assert {k: record[k] for k in info} == info
    assert record["source"] == {
        "database": str(run.path_to_db.resolve()),
        "run_id": run.run_id,
        "guid": run.stable_guid,
    }


def _check_mirror(database: Path, folder: Path, config: QCoDeSConfigData, scratch: Path) -> int:
    """Every run the state calls synced has exactly its two files, the data file byte for
    byte ``qcsql export`` of the run, the record ``dataset_info`` and the file's sha256."""
    state = json.loads((folder / STATE_NAME).read_text())
    checked = 0
    with qcsql.open_database(database) as db, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for run_id, entry in state["runs"].items():
            if entry["status"] not in ("complete", "incomplete"):
                continue
            run = db.load_by_id(int(run_id))
            run_folder = folder / str(run.stable_guid)
            assert sorted(p.name for p in run_folder.iterdir()) == [RECORD_NAME, DATA_NAME]
            data = (run_folder / DATA_NAME).read_bytes()
            assert data == _cli_export(database, run.run_id, scratch), run
            record = json.loads((run_folder / RECORD_NAME).read_text())
            _records_equal_dataset_info(record, run, config, run_folder / DATA_NAME)
            assert record["sha256"] == entry["sha256"]
            assert record["sha256"] == hashlib.sha256(data).hexdigest()
            assert record["status"] == ("complete" if run.completed else "incomplete")
            checked += 1
    return checked


def _xy_measurement(path: Path, name: str) -> tuple[Any, Any, Any, Any]:
    """A new QCoDeS database with a y(x) measurement: (experiment, measurement, x, y)."""
    from qcodes.dataset import Measurement

    experiment = new_database(path)
    x, y = parameters("x", "y")
    measurement = Measurement(exp=experiment, name=name)
    measurement.register_parameter(x)
    measurement.register_parameter(y, setpoints=(x,))
    return experiment, measurement, x, y


@pytest.mark.parametrize("database", fixture_databases(), ids=lambda p: p.name)
def test_the_sync_of_a_fixture_is_its_export_and_its_records(
    database: Path, tmp_path: Path, guard: list[Path]
) -> None:
    guard.append(database)
    config = _config(database, lab="QDev")
    events: list[SyncEvent] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Mirror(config, tmp_path / "mirror", idle_timeout=0.2, on_event=events.append) as m:
            m.sync_once(0.05)
    failed = [e for e in events if e.action == "failed"]
    checked = _check_mirror(database, tmp_path / "mirror", config, tmp_path)
    with qcsql.open_database(database) as db:
        started = [r for r in db.runs() if r.started]
    assert checked + len(failed) == len(started)
    assert checked or not started


def test_a_second_sync_rewrites_nothing_and_new_attributes_rewrite_only_records(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "mirror"
    with Mirror(_config(EXAMPLE_DB), folder, idle_timeout=0.2) as mirror:
        mirror.sync_once(0.05)
    files = {p: p.stat() for p in folder.rglob("*") if p.is_file() and p.name != STATE_NAME}
    events: list[SyncEvent] = []
    with Mirror(_config(EXAMPLE_DB), folder, on_event=events.append) as mirror:
        mirror.sync_once(0.05)
    assert events == []
    assert {p: p.stat() for p in files} == files  # nothing rewritten
    config = _config(EXAMPLE_DB, lab="QDev")
    with Mirror(config, folder, on_event=events.append) as mirror:
        mirror.sync_once(0.05)
    assert events and {e.action for e in events} == {"updated"}
    for path, before in files.items():
        after = path.stat()
        if path.name == DATA_NAME:
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        else:
            assert json.loads(path.read_text())["attributes"]["lab"] == "QDev"
    _check_mirror(EXAMPLE_DB, folder, config, tmp_path)


# -- crash and restart ------------------------------------------------------------------------


def _sync_command(database: Path, folder: Path) -> list[str]:
    return [
        sys.executable, "-m", "qcsql", "sync", str(database), "--to", str(folder),
        "--set-up", "rack", "--watch", "--interval", "0.1", "--idle-timeout", "2",
    ]  # fmt: skip


def _pragmas(path: Path) -> tuple[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute(
            "PRAGMA user_version"
        ).fetchone()[0]


def _start_writer(
    database: Path, journal: str, env: dict[str, str], seconds: float = 1.5
) -> subprocess.Popen[str]:
    """The QCoDeS writer of a sequence of runs (tests/live_writer.py), once its first run
    has started (the database exists then); its sweeps take ``seconds`` each."""
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(database), journal, str(seconds), "20000", "sequence"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert writer.stdout is not None
    line = ""
    while not line.startswith("run "):
        line = writer.stdout.readline()
        if not line:
            writer.kill()
            raise AssertionError(writer.communicate()[1] or "the writer stopped")
    return writer


TRACING_SITE = """
# Imported by every Python process started with this folder on its PYTHONPATH: the
# statements each sqlite3 connection to a file sends go, one JSON line each, to a file
# of the process's own (line-buffered: a SIGKILL loses no whole line).
import json, os, sqlite3
_trace = open(os.path.join(os.environ["QCSQL_TEST_TRACE"], f"{os.getpid()}.jsonl"), "a",
              buffering=1)
_connect = sqlite3.connect

def _traced_connect(database, *args, **kwargs):
    connection = _connect(database, *args, **kwargs)
    if database != ":memory:":
        connection.set_trace_callback(lambda statement: _trace.write(json.dumps(statement) + "\\n"))
    return connection

sqlite3.connect = _traced_connect
"""


def _traced_env(env: dict[str, str], folder: Path) -> dict[str, str]:
    """``env`` for a process whose SQLite statements are traced into ``folder`` (a
    ``sitecustomize`` on its PYTHONPATH: nothing in qcsql knows of it)."""
    site = folder / "site"
    site.mkdir(parents=True)
    (site / "sitecustomize.py").write_text(TRACING_SITE)
    path = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "QCSQL_TEST_TRACE": str(folder)}


def _wait_until_reading(process: subprocess.Popen[str], folder: Path) -> None:
    """Until ``process`` (traced into ``folder``) sent its first statement: a kill while
    Python starts would test nothing of the sync."""
    trace = folder / f"{process.pid}.jsonl"
    deadline = time.monotonic() + 60
    while not (trace.exists() and trace.stat().st_size) and process.poll() is None:
        assert time.monotonic() < deadline, "the sync never read the database"
        time.sleep(0.01)


def _traced_statements(folder: Path) -> dict[str, list[str]]:
    """The statements each traced process sent, by process id."""
    return {
        trace.stem: [json.loads(line) for line in trace.read_text().splitlines()]
        for trace in folder.glob("*.jsonl")
    }


@pytest.mark.parametrize("journal", ["WAL", "DELETE"])
def test_sigkill_at_random_moments_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, journal: str
) -> None:
    """A genuine QCoDeS writer in another process writes a sequence of runs while
    ``qcsql sync --watch`` runs beside it and is killed with SIGKILL twice at random
    moments, then restarted; at the end every run has exactly its two files, an SWMR
    reader of the live files found in each only rows of the run, in order, none twice,
    and all of them in the last, and every statement each sync sent only read."""
    pytest.importorskip("qcodes")
    from tests.test_read_only import READING_STATEMENT

    database = tmp_path / "soak.db"
    folder = tmp_path / "mirror"
    stop = tmp_path / "stop"
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    sync_env = _traced_env(env, tmp_path / "trace")
    reader = _start_reader(folder, stop)
    writer = _start_writer(database, journal, env, seconds=3)
    rng = random.Random()
    syncs: list[subprocess.Popen[str]] = []
    messages: list[str] = []  # the syncs' stderr: one line per run, no error but the last
    try:
        before = _pragmas(database)
        for _ in range(2):
            syncs.append(subprocess.Popen(_sync_command(database, folder), env=sync_env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True))  # fmt: skip
            _wait_until_reading(syncs[-1], tmp_path / "trace")
            time.sleep(rng.uniform(0.1, 2.0))
            syncs[-1].send_signal(signal.SIGKILL)
            messages.extend(syncs[-1].communicate()[1].splitlines())
        syncs.append(subprocess.Popen(_sync_command(database, folder), env=sync_env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
        stdout, stderr = writer.communicate(timeout=60)
        assert writer.returncode == 0, stderr
        assert "locked" not in stderr and "commit" not in stderr.lower(), stderr
        runs = int(stdout.split()[-1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                state = json.loads((folder / STATE_NAME).read_text())
                if len(state["runs"]) == runs and all(  # the interrupted run: incomplete
                    e["status"] in ("complete", "incomplete") for e in state["runs"].values()
                ):
                    break
            time.sleep(0.1)
        syncs[-1].send_signal(signal.SIGTERM)
        messages.extend(syncs[-1].communicate(timeout=30)[1].splitlines())
        stop.touch()
        report = json.loads(reader.communicate(timeout=30)[0])
    finally:
        for process in (writer, reader, *syncs):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert messages and all(
        line.startswith("qcsql sync: run ") or line == "qcsql sync: error: interrupted by SIGTERM"
        for line in messages
    ), messages
    assert _pragmas(database) == before == (journal.lower(), before[1])
    statements = _traced_statements(tmp_path / "trace")
    assert set(statements) <= {str(sync.pid) for sync in syncs}
    # (a sync killed while Python starts sends nothing; the last one surely does)
    assert statements[str(syncs[-1].pid)], "the trace saw nothing: the test would pass vacuously"
    writing = {s for sent in statements.values() for s in sent if not READING_STATEMENT.match(s)}
    assert writing == set()
    state = json.loads((folder / STATE_NAME).read_text())
    assert len(state["runs"]) == runs and state["cursor"] == runs
    assert sorted(p.name for p in folder.iterdir() if p.name != STATE_NAME) == sorted(
        e["guid"] for e in state["runs"].values()
    )
    assert _check_mirror(database, folder, _config(database), tmp_path) == runs
    _check_live_files(report, database)


# -- bad input ------------------------------------------------------------------------------


def _cli_sync(*words: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["sync", *words], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_an_unwritable_folder_is_one_error_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    status, _, err = _cli_sync(str(EXAMPLE_DB), "--to", str(blocker / "mirror"), "--set-up", "x")
    assert status == 1 and len(err.splitlines()) == 1
    assert err.startswith("qcsql sync: error: ") and "cannot create the folder" in err


def test_a_bad_attribute_and_a_bad_database_are_one_error_line(tmp_path: Path) -> None:
    status, _, err = _cli_sync(str(EXAMPLE_DB), "--to", str(tmp_path), "--set-up", "x",
                               "--attribute", "novalue")  # fmt: skip
    assert status == 1 and err.count("\n") == 1 and "KEY=VALUE" in err
    status, _, err = _cli_sync(str(tmp_path / "none.db"), "--to", str(tmp_path), "--set-up", "x")
    assert status == 1 and err.count("\n") == 1 and "does not exist" in err


def test_a_database_replaced_during_watch_stops_the_sync(tmp_path: Path) -> None:
    database = copy_database(EXAMPLE_DB, tmp_path / "db")
    with Mirror(_config(database), tmp_path / "mirror", live=False) as mirror:
        mirror.poll()
        other = copy_database(EXAMPLE_DB, tmp_path / "other")
        os.replace(other, database)
        with pytest.raises(qcsql.SyncError, match="replaced"):
            mirror.poll()
        database.unlink()
        with pytest.raises(qcsql.SyncError, match="gone"):
            mirror.poll()


def test_a_database_copied_over_the_synced_one_is_refused(tmp_path: Path) -> None:
    """Same path, same inode, other runs (``cp new.db lab.db``): the guids tell."""
    database = copy_database(EXAMPLE_DB, tmp_path / "db")
    with Mirror(_config(database), tmp_path / "mirror", live=False) as mirror:
        mirror.poll()
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(
            "UPDATE runs SET guid = 'aaaaaaaa-0000-0000-0000-000000000000' WHERE run_id = 2"
        )
    with pytest.raises(qcsql.SyncError, match="run 2: has guid aaaaaaaa"):
        with Mirror(_config(database), tmp_path / "mirror", live=False) as mirror:
            mirror.poll()


def test_a_deleted_run_keeps_its_files(tmp_path: Path) -> None:
    database = copy_database(EXAMPLE_DB, tmp_path / "db")
    folder = tmp_path / "mirror"
    events: list[SyncEvent] = []
    with Mirror(_config(database), folder, live=False, on_event=events.append) as mirror:
        mirror.poll()
        with qcsql.open_database(database) as db:
            guid = db.load_by_id(2).guid
        with contextlib.closing(sqlite3.connect(database)) as conn, conn:
            conn.execute("DELETE FROM runs WHERE run_id = 2")
        events.clear()
        mirror.poll()
        mirror.poll()
    assert [(e.action, e.run_id) for e in events] == [("deleted", 2)]
    assert sorted(p.name for p in (folder / str(guid)).iterdir()) == [RECORD_NAME, DATA_NAME]
    assert json.loads((folder / STATE_NAME).read_text())["runs"]["2"]["status"] == "deleted"


@pytest.mark.parametrize("damage", [b"", b'{"format": 1, "runs": ', b"[1, 2]", b"\xff\xfe"])
def test_a_corrupted_state_is_resynced_without_rewriting_what_is_right(
    tmp_path: Path, damage: bytes
) -> None:
    folder = tmp_path / "mirror"
    with Mirror(_config(EXAMPLE_DB), folder, idle_timeout=0.2) as mirror:
        mirror.sync_once(0.05)
    files = {p: p.stat() for p in folder.rglob(DATA_NAME)}
    (folder / STATE_NAME).write_bytes(damage)
    status, _, err = _cli_sync(str(EXAMPLE_DB), "--to", str(folder), "--set-up", "rack",
                               "--quiet", "--idle-timeout", "0.2")  # fmt: skip
    assert status == 0
    assert len(err.splitlines()) == 1 and "sync state is damaged" in err, err
    assert {p: p.stat() for p in files} == files
    _check_mirror(EXAMPLE_DB, folder, _config(EXAMPLE_DB), tmp_path)


def test_a_folder_of_another_database_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mirror"
    with Mirror(_config(EXAMPLE_DB), folder, live=False) as mirror:
        mirror.poll()
    other = copy_database(EXAMPLE_DB, tmp_path / "other")
    status, _, err = _cli_sync(str(other), "--to", str(folder), "--set-up", "x")
    assert status == 1 and err.count("\n") == 1 and "give each database its own folder" in err


def test_no_live_stops_before_an_incomplete_newest_run(tmp_path: Path) -> None:
    pytest.importorskip("qcodes")
    path = tmp_path / "lab.db"
    experiment, measurement, x, y = _xy_measurement(path, "done")
    with measurement.run() as saver:
        saver.add_result((x, 1), (y, 2))
    folder = tmp_path / "mirror"
    with measurement.run() as saver:  # still measuring while the sync looks
        saver.add_result((x, 1), (y, 2))
        saver.flush_data_to_database(block=True)
        with Mirror(_config(path), folder, live=False) as mirror:
            mirror.poll()
            assert mirror.cursor == 1
        events: list[SyncEvent] = []
        with Mirror(_config(path), folder, on_event=events.append) as mirror:
            mirror.poll()
            assert [(e.action, e.run_id) for e in events] == [("live", 2)]
            saver.add_result((x, 2), (y, 3))
    with Mirror(_config(path), folder, on_event=events.append) as mirror:
        mirror.sync_once(0.05)
    experiment.conn.close()
    assert [(e.action, e.run_id, e.status) for e in events][-1] == ("synced", 2, "complete")
    assert _check_mirror(path, folder, _config(path), tmp_path) == 2


SWMR_READER = """
import glob, json, os, sys, time
import h5py
folder, stop = sys.argv[1], sys.argv[2]
files = []  # every live file seen, by when first seen: guid, values of each column, ended
held = {}  # inode -> (index in files, open handle): kept open until the file is gone
broken = []  # a column that did not grow from what was seen before

def look(index, handle):
    entry = files[index]
    for top, group in handle.items():
        for column, dataset in group.items():
            dataset.refresh()
            values = dataset[:].tolist()
            before = entry["trees"].setdefault(top, {}).get(column, [])
            if values[: len(before)] != before:
                broken.append([entry["guid"], top, column, len(before), len(values)])
            entry["trees"][top][column] = values

def inode_of(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None

while True:
    stopping = os.path.exists(stop)
    for path in glob.glob(os.path.join(folder, "*", "measured_data.live.hdf5")):
        if inode_of(path) in held:
            continue
        try:
            handle = h5py.File(path, "r", libver="latest", swmr=True)
        except (OSError, ValueError):
            continue  # being created: next time
        inode = os.fstat(handle.id.get_vfd_handle()).st_ino
        if inode in held:
            handle.close()
            continue
        files.append({"guid": os.path.basename(os.path.dirname(path)), "trees": {},
                      "ended": False})
        held[inode] = (len(files) - 1, handle, path)
    for inode, (index, handle, path) in list(held.items()):
        gone = inode_of(path) != inode  # removed or replaced: what it holds is final
        try:
            look(index, handle)
        except (OSError, KeyError, ValueError):
            continue  # the writer was killed mid-write: next time
        if gone or stopping:
            files[index]["ended"] = gone
            handle.close()
            del held[inode]
    if stopping:
        break
    time.sleep(0.01)
print(json.dumps({"files": files, "broken": broken}))
"""


def _start_reader(folder: Path, stop: Path) -> subprocess.Popen[str]:
    """An SWMR reader (another process) of every live file that appears in ``folder``
    until ``stop`` exists: it keeps each open until the sync removes or replaces it, and
    reads it once more then (an open file outlives its name), so it sees all the file
    ever held."""
    return subprocess.Popen(
        [sys.executable, "-c", SWMR_READER, str(folder), str(stop)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _check_live_files(report: dict[str, Any], database: Path) -> int:
    """Every live file held only rows of the database, in order, none twice (each column
    a prefix of the run's), and the last live file of each run held all of them when the
    sync removed it (the record turned complete after that). The runs checked."""
    import numpy as np

    assert report["broken"] == []
    assert report["files"], "the reader saw no live file: the test would pass vacuously"
    last: dict[str, dict[str, Any]] = {}
    with qcsql.open_database(database) as db, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = {run.guid: run for run in db.runs()}
        data = {
            guid: runs[guid].get_parameter_data() for guid in {f["guid"] for f in report["files"]}
        }
        for live in report["files"]:
            for top, columns in live["trees"].items():
                for column, values in columns.items():
                    expected = data[live["guid"]][top][column].reshape(-1)
                    assert len(values) <= len(expected), (live["guid"], top, column)
                    np.testing.assert_array_equal(values, expected[: len(values)])
            last[live["guid"]] = live
        for guid, live in last.items():
            assert live["ended"], f"run {runs[guid].run_id}: its last live file is still there"
            for top, columns in data[guid].items():
                for column, expected in columns.items():
                    held = live["trees"][top][column]
                    assert len(held) == expected.size, (runs[guid].run_id, top, column)
    return len(last)


@pytest.mark.parametrize("journal", ["WAL", "DELETE"])
def test_the_sync_beside_a_writer_only_reads_and_live_files_only_grow(
    tmp_path: Path, journal: str, traced_statements: list[str]
) -> None:
    """The mirror loop in this process (its statements traced) while QCoDeS writes a
    sequence of runs in another, and an SWMR reader in a third watches every live file:
    only reading statements, live files that only ever grow by rows of the database."""
    pytest.importorskip("qcodes")
    from tests.test_read_only import READING_STATEMENT

    database = tmp_path / "soak.db"
    folder = tmp_path / "mirror"
    folder.mkdir()
    stop = tmp_path / "stop"
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    writer = _start_writer(database, journal, env)
    watcher = _start_reader(folder, stop)
    try:
        config = _config(database)
        with Mirror(config, folder, idle_timeout=2) as mirror:
            while writer.poll() is None:
                mirror.poll()
                time.sleep(0.05)
            mirror.sync_once(0.05)
        stdout, stderr = writer.communicate(timeout=60)
        stop.touch()
        report = json.loads(watcher.communicate(timeout=30)[0])
    finally:
        for process in (writer, watcher):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert writer.returncode == 0, stderr
    assert "locked" not in stderr and "commit" not in stderr.lower(), stderr
    assert (
        traced_statements and [s for s in traced_statements if not READING_STATEMENT.match(s)] == []
    )
    _check_live_files(report, database)
    assert _check_mirror(database, folder, config, tmp_path) == int(stdout.split()[-1])


def test_snapshot_attributes_from_the_command_line(tmp_path: Path) -> None:
    status, _, _ = _cli_sync(str(EXAMPLE_DB), "--to", str(tmp_path / "m"), "--set-up", "x",
                             "--quiet", "--idle-timeout", "0.2", "--snapshot-attributes", "dac")  # fmt: skip
    assert status == 0
    config = QCoDeSConfigData(database_path=EXAMPLE_DB, set_up="x", snapshot_instruments=("dac",))
    _check_mirror(EXAMPLE_DB, tmp_path / "m", config, tmp_path)
    records = [json.loads(p.read_text()) for p in (tmp_path / "m").rglob(RECORD_NAME)]
    assert records and all("dac.plunger" in r["attributes"] for r in records)
    assert not any(key.startswith("dmm.") for r in records for key in r["attributes"])


def test_a_run_started_after_a_later_one_is_synced_when_it_starts(tmp_path: Path) -> None:
    """QCoDeS may create a run, measure another and only then start the first: the sync
    passes it by (it is not the newest), and takes it up once it has started."""
    pytest.importorskip("qcodes")
    from qcodes.dataset import new_data_set
    from qcodes.dataset.descriptions.dependencies import InterDependencies_
    from qcodes.parameters import ParamSpecBase

    path = tmp_path / "lab.db"
    experiment, measurement, x, y = _xy_measurement(path, "measured first")
    early = new_data_set("created first", exp_id=experiment.exp_id, conn=experiment.conn)
    with measurement.run() as saver:
        saver.add_result((x, 1), (y, 2))
    folder = tmp_path / "mirror"
    events: list[SyncEvent] = []
    with Mirror(_config(path), folder, on_event=events.append) as mirror:
        mirror.poll()
        assert [(e.action, e.run_id) for e in events] == [("synced", 2)] and mirror.cursor == 2
        spec = ParamSpecBase("t", "numeric")
        early.set_interdependencies(InterDependencies_(standalones=(spec,)))
        early.mark_started()
        early.add_results([{"t": 1.5}])
        early.mark_completed()
        mirror.poll()
    experiment.conn.close()
    assert [(e.action, e.run_id) for e in events] == [("synced", 2), ("synced", 1)]
    assert _check_mirror(path, folder, _config(path), tmp_path) == 2


def test_watch_stops_with_one_line_when_the_database_is_replaced(tmp_path: Path) -> None:
    database = copy_database(EXAMPLE_DB, tmp_path / "db")
    folder = tmp_path / "mirror"
    command = [sys.executable, "-m", "qcsql", "sync", str(database), "--to", str(folder),
               "--set-up", "x", "--watch", "--interval", "0.05", "--no-live", "--quiet"]  # fmt: skip
    sync = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while (
            not (folder / STATE_NAME).exists()
            or json.loads((folder / STATE_NAME).read_text())["cursor"] < 12
        ):
            assert time.monotonic() < deadline and sync.poll() is None
            time.sleep(0.05)
        os.replace(copy_database(EXAMPLE_DB, tmp_path / "other"), database)
        _, err = sync.communicate(timeout=30)
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.wait()
    assert sync.returncode == 1
    assert err.count("\n") == 1 and err.startswith("qcsql sync: error: ") and "replaced" in err
