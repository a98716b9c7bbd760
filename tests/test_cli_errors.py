"""The command line's contract, failure by failure: data on stdout, one line per error on
stderr (``qcsql <command>: error: ...``), exit 0 ok / 1 error / 2 usage / 128+N after
signal N, never a traceback without ``--debug``, and never a half-written export.

The signal tests run ``python -m qcsql`` in a subprocess on a run QCoDeS 0.58 wrote.
Most pause the export once its ``.partial`` file exists (a wrapper around h5netcdf's
``create_variable`` that sleeps, :data:`PAUSED_CLI`), so the signal arrives mid-write
every time, not when a race is won; one sends it to an unpatched export.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

import qcsql
from qcsql.cli import main
from tests.helpers import EXAMPLE_DB, PROJECT, FileState, copy_database
from tests.qcodes_build import new_database, parameters, sweep

SWEEP_ROWS = 20_000
WAIT = 60.0  # seconds a subprocess may take to get somewhere; reached only on failure

# python -c PAUSED_CLI READY PAUSE ARGV...: `python -m qcsql ARGV...`, but the first
# variable an export creates is followed by a pause of PAUSE seconds, announced by
# creating the file READY: the export's .partial file exists and is open for writing.
# The signal dispositions a terminal gives a program are set first (a CI runner may
# start its children with SIGINT or SIGHUP ignored, which the CLI rightly respects),
# unless QCSQL_TEST_IGNORE names one to leave ignored, as nohup does.
PAUSED_CLI = """
import os, runpy, signal, sys, time
import h5netcdf
for name in ("SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
ignored = os.environ.get("QCSQL_TEST_IGNORE")
if ignored:
    signal.signal(getattr(signal, ignored), signal.SIG_IGN)
ready, pause = sys.argv[1], float(sys.argv[2])
create_variable = h5netcdf.File.create_variable
def paused(self, *args, **kwargs):
    created = create_variable(self, *args, **kwargs)
    if not os.path.exists(ready):
        open(ready, "w").close()
        time.sleep(pause)
    return created
h5netcdf.File.create_variable = paused
sys.argv = ["qcsql", *sys.argv[3:]]
runpy.run_module("qcsql", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="session")
def sweep_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 1-D sweep of two dependents, written by QCoDeS 0.58 (run 1)."""
    pytest.importorskip("qcodes")

    path = tmp_path_factory.mktemp("sweep") / "sweep.db"
    experiment = new_database(path, "signals")
    x, y, z = parameters("x", "y", "z")
    measurement = sweep(experiment, "sweep", x, y, z)
    with measurement.run() as saver:
        xs = np.linspace(-1.0, 1.0, SWEEP_ROWS)
        for chunk in np.array_split(np.arange(SWEEP_ROWS), 4):
            saver.add_result((x, xs[chunk]), (y, np.sin(xs[chunk])), (z, np.cos(xs[chunk])))
    experiment.conn.close()
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``qcsql argv`` run in process, with qcsql's
    warnings shown as a command-line program shows them (pytest makes them errors)."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("default", category=qcsql.QcsqlWarning)
        status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def error_lines(err: str, command: str) -> list[str]:
    """The stderr lines, each of which must be an error or warning line of ``command``."""
    lines = err.splitlines()
    for line in lines:
        assert re.match(rf"qcsql {command}: (error|warning|usage error): \S", line), line
    return [line for line in lines if line.startswith(f"qcsql {command}: error: ")]


def _copy(tmp_path: Path) -> Path:
    return copy_database(EXAMPLE_DB, tmp_path / "db")


def _damage(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for statement in statements:
            conn.execute(statement)


def _damage_runs_1_and_5(path: Path) -> None:
    """Run 1: text in a numeric column; run 5: a blob that is not .npy."""
    with qcsql.open_database(path) as db:
        one, five = db.load_by_id(1), db.load_by_id(5)
        numeric = next(p for p in one.paramspecs.values() if p.paramtype == "numeric").name
        array = next(p for p in five.paramspecs.values() if p.paramtype == "array").name
    _damage(
        path,
        f'UPDATE "{one.table_name}" SET "{numeric}" = \'left\' WHERE id = 2',
        f'UPDATE "{five.table_name}" SET "{array}" = X\'93\'',
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial" in p.name)


# -- export: one line per failing run ------------------------------------------------------


def test_export_all_prints_each_failing_run_as_one_line_on_stderr(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    _damage_runs_1_and_5(copy)
    status, out, err = cli("export", str(copy), "--all", "-o", str(tmp_path / "out"))
    assert status == 1
    errors = error_lines(err, "export")
    assert len(errors) == len(err.splitlines()) == 2, err
    assert re.search(r"\brun 1\b.*'left'", errors[0]) and re.search(r"\brun 5\b", errors[1])
    lines = out.splitlines()
    exported = [line for line in lines if re.fullmatch(r"run \d+: .*\.nc \([\d,]+ bytes\)", line)]
    assert len(exported) == 11 and len(lines) == 12
    assert lines[-1].startswith("exported 11 of 13 runs") and lines[-1].endswith("2 failed")
    for message in (line.split(": error: ", 1)[1] for line in errors):
        assert message not in out
    assert "FAILED" not in out and "Traceback" not in out + err
    assert len(list((tmp_path / "out").glob("*.nc"))) == 11
    assert _leftovers(tmp_path / "out") == []


def test_export_all_json_keeps_the_failures_in_the_summary(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    _damage_runs_1_and_5(copy)
    status, out, err = cli("export", str(copy), "--all", "-o", str(tmp_path / "out"), "--json")
    assert status == 1
    summary = json.loads(out)
    assert [item["run_id"] for item in summary["failed"]] == [1, 5]
    assert summary["files"] == 11 and summary["runs"] == 13
    assert [item["error_type"] for item in summary["failed"]] == ["DataDecodeError"] * 2
    errors = error_lines(err, "export")
    assert len(errors) == len(err.splitlines()) == 2
    for message in (line.split(": error: ", 1)[1] for line in errors):
        assert message not in out  # the messages are on stderr only


def test_export_goes_on_past_a_run_that_does_not_exist(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    status, out, err = cli("export", str(EXAMPLE_DB), "--run", "1", "999", "2", "-o", str(out_dir))
    assert status == 1
    (error,) = error_lines(err, "export")
    assert "999" in error and len(err.splitlines()) == 1
    assert len(list(out_dir.glob("qcodes_1_*.nc"))) == len(list(out_dir.glob("qcodes_2_*.nc"))) == 1
    assert out.splitlines()[-1].startswith("exported 2 of 3 runs")


# -- folders that cannot be made ---------------------------------------------------------


@pytest.mark.parametrize("command", ["follow", "export"])
def test_output_folder_that_cannot_be_created(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "live"  # root may write anywhere, but not below a regular file
    run = ["--run", "1"]
    status, out, err = cli(command, str(EXAMPLE_DB), *run, "-o", str(target), "--quiet")
    assert (status, out) == (1, "")
    (error,) = error_lines(err, command)
    assert str(target) in error and "cannot create" in error and len(err.splitlines()) == 1
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["follow", "export"])
def test_output_folder_that_is_a_file_is_a_usage_error(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    status, out, err = cli(command, str(EXAMPLE_DB), "--run", "1", "-o", str(blocker))
    assert (status, out) == (2, "")
    assert re.fullmatch(rf"qcsql {command}: usage error: .*a_file is a file.*\n", err)
    assert blocker.read_text() == "not a folder"


def test_follow_that_goes_idle_says_so_on_stderr(tmp_path: Path) -> None:
    status, out, err = cli(
        "follow", str(EXAMPLE_DB), "--run", "12", "-o", str(tmp_path / "live"),
        "--idle-timeout", "0.05", "--poll", "0.01", "--quiet", "--json",
    )  # fmt: skip
    assert status == 1
    summary = json.loads(out)
    assert (summary["run_id"], summary["reason"], summary["rows"]) == (12, "idle", 5)
    (error,) = error_lines(err, "follow")
    assert "run 12" in error and "did not complete" in error


# -- usage, help, unexpected errors, warnings -----------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["info"],
        ["export", str(EXAMPLE_DB)],
        ["export", str(EXAMPLE_DB), "-o", "x"],
        ["export", str(EXAMPLE_DB), "--all", "-o", "x.nc"],
        ["show", str(EXAMPLE_DB), "seven"],
        ["runs", str(EXAMPLE_DB), "--start"],
        ["follow", str(EXAMPLE_DB), "-o", "x"],
    ],
    ids=lambda argv: " ".join(Path(a).name for a in argv) or "nothing",
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(*argv)
    assert (status, out) == (2, "")
    assert re.fullmatch(r"qcsql( \w+)?: usage error: \S[^\n]*\n", err), err
    assert capsys.readouterr() == ("", "")  # nothing went around ``out``/``err``
    assert list(tmp_path.iterdir()) == []


def test_help_is_data_on_out() -> None:
    status, out, err = cli("export", "--help")
    assert (status, err) == (0, "") and out.startswith("usage: qcsql export")


def test_an_unexpected_exception_is_one_line_and_debug_adds_the_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(qcsql.Database, "summary", broken)
    status, out, err = cli("info", str(EXAMPLE_DB))
    assert (status, out) == (1, "")
    assert (
        err
        == "qcsql info: error: internal error: RuntimeError: a bug (--debug shows the traceback)\n"
    )
    status, out, err = cli("info", str(EXAMPLE_DB), "--debug")
    assert status == 1 and err.startswith("Traceback") and "RuntimeError: a bug" in err
    assert err.splitlines()[-1].startswith("qcsql info: error: internal error")


def test_an_os_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: object) -> None:
        raise PermissionError(13, "Permission denied", "/somewhere/file")

    monkeypatch.setattr(qcsql.Database, "summary", refused)
    assert cli("info", str(EXAMPLE_DB)) == (
        1,
        "",
        "qcsql info: error: /somewhere/file: Permission denied\n",
    )


def test_a_message_with_line_breaks_is_still_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run name may hold line breaks, and messages quote names."""

    def failing(self: object) -> None:
        raise qcsql.RunNotFoundError("no run named 'cooldown check\nsecond line\r\nthird'")

    monkeypatch.setattr(qcsql.Database, "summary", failing)
    assert cli("info", str(EXAMPLE_DB)) == (
        1,
        "",
        "qcsql info: error: no run named 'cooldown check second line third'\n",
    )


def test_a_warning_is_one_line_and_the_data_still_come(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    _damage(copy, "PRAGMA user_version = 99")
    status, out, err = cli("info", str(copy))
    assert status == 0 and "schema version:" in out
    assert re.fullmatch(r"qcsql info: warning: .*schema version 99 is newer[^\n]*\n", err), err
    with warnings.catch_warnings():  # python -W error: the warning is the failure
        warnings.simplefilter("error", qcsql.QcsqlWarning)
        out_, err_ = io.StringIO(), io.StringIO()
        assert main(["info", str(copy)], out=out_, err=err_) == 1
    assert out_.getvalue() == "" and re.fullmatch(
        r"qcsql info: error: [^\n]*99[^\n]*\n", err_.getvalue()
    )


def test_show_of_an_unreadable_snapshot_warns_on_stderr(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    _damage(copy, "UPDATE runs SET snapshot = '[1, 2' WHERE run_id = 3")
    status, out, err = cli("show", str(copy), "3")
    assert status == 0 and "snapshot: unreadable" in out and "parameters:" in out
    assert re.fullmatch(r"qcsql show: warning: .*run 3[^\n]*\n", err), err
    assert err.split(": warning: ", 1)[1].strip() not in out


def test_an_unhealthy_audit_is_a_report_on_stdout_and_one_line_on_stderr() -> None:
    status, out, err = cli("audit", str(EXAMPLE_DB))
    assert status == 1 and "no_rows" in out
    (error,) = error_lines(err, "audit")
    assert "not healthy" in error and len(err.splitlines()) == 1


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "PYTHONUNBUFFERED"])
def test_a_closed_pipe_is_not_an_error(buffered: bool) -> None:
    """``qcsql runs db --json | head -0``: the reader left; no message, exit 0. Buffered
    (the default) is the case that used to fail, in the interpreter's flush at exit."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "qcsql", "runs", str(EXAMPLE_DB), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=PROJECT,
        env=env,
    )
    assert process.stdout is not None
    process.stdout.close()  # before the child has written anything (it is still importing)
    _, err = process.communicate(timeout=WAIT)
    assert (process.returncode, err.decode()) == (0, "")


# -- signals -------------------------------------------------------------------------------


def _start_paused(
    tmp_path: Path, argv: list[str], pause: float = WAIT, ignore: str | None = None
) -> tuple[subprocess.Popen[str], Path]:
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    if ignore:
        env["QCSQL_TEST_IGNORE"] = ignore
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, str(ready), str(pause), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
        env=env,
    )
    deadline = time.monotonic() + WAIT
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the export never paused: {process.communicate()}")
        time.sleep(0.01)
    return process, ready


@pytest.mark.requires_qcodes
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name
)
def test_a_signal_mid_export_removes_the_partial_file(
    sweep_db: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    copy = copy_database(sweep_db, tmp_path / "db")
    before = FileState.of(copy)
    out_dir = tmp_path / "out"
    process, _ = _start_paused(tmp_path, ["export", str(copy), "--run", "1", "-o", str(out_dir)])
    assert len(_leftovers(out_dir)) == 1  # the signal comes while the file is being written
    process.send_signal(signum)
    out, err = process.communicate(timeout=WAIT)
    assert list(out_dir.iterdir()) == []  # no .partial, and no final file either
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert err == f"qcsql export: error: interrupted by {signum.name}\n"
    assert out == ""  # the run was not written: no data, no summary
    assert FileState.of(copy) == before


@pytest.mark.requires_qcodes
def test_sigterm_of_an_unpatched_export_leaves_only_complete_files(
    sweep_db: Path, tmp_path: Path
) -> None:
    """No pause: the same run exported over and over, SIGTERM as soon as a .partial is seen."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "qcsql", "export", str(sweep_db), "--quiet", "-o", str(out_dir),
         "--run", *["1"] * 500],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT,
    )  # fmt: skip
    deadline = time.monotonic() + WAIT
    while not _leftovers(out_dir):
        assert process.poll() is None and time.monotonic() < deadline, "never saw a .partial"
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=WAIT)
    assert _leftovers(out_dir) == []
    assert (process.returncode, err) == (143, "qcsql export: error: interrupted by SIGTERM\n")
    assert "exported" not in out  # interrupted before the summary
    assert len(out.splitlines()) < 500  # and stopped there: the signal was not lost
    for path in out_dir.iterdir():  # the exports that finished before the signal
        with h5py.File(path, "r") as handle:
            assert handle["y"].shape == (SWEEP_ROWS,)


@pytest.mark.requires_qcodes
def test_nohup_keeps_sighup_ignored(sweep_db: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    process, _ = _start_paused(
        tmp_path, ["export", str(sweep_db), "--run", "1", "-o", str(out_dir)], 0.5, "SIGHUP"
    )
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=WAIT)
    assert (process.returncode, err) == (0, "")
    (written,) = out_dir.iterdir()
    with h5py.File(written, "r") as handle:
        assert handle["y"].shape == (SWEEP_ROWS,)


@pytest.mark.requires_qcodes
def test_the_leftover_of_a_killed_export_goes_with_the_next_export(
    sweep_db: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    process, _ = _start_paused(
        tmp_path, ["export", str(sweep_db), "--run", "1", "-o", str(out_dir)]
    )
    process.kill()  # SIGKILL: nothing can clean up
    process.communicate(timeout=WAIT)
    (leftover,) = _leftovers(out_dir)
    final = re.fullmatch(r"\.(.+\.nc)\.[a-z0-9_]{8}\.partial", leftover)
    assert final is not None
    other = out_dir / f".{final[1].replace('.nc', '_other.nc')}.abcd1234.partial"
    other.write_bytes(b"another export's leftover")
    with qcsql.open_database(sweep_db) as db:
        assert db.runs() and [r.run_id for r in db.runs()] == [1]
    status, out, err = cli("export", str(sweep_db), "--run", "1", "-o", str(out_dir), "--quiet")
    assert (status, err) == (0, "")
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([final[1], other.name])
    assert other.read_bytes() == b"another export's leftover"  # not this target's: kept


def _live_rows(folder: Path) -> int | None:
    """Rows in the live file a running ``follow`` writes (read as SWMR readers do)."""
    try:
        (live,) = folder.glob("*.live.h5")
        with h5py.File(live, "r", libver="latest", swmr=True) as handle:
            return int(handle["dmm_current"]["dmm_current"].shape[0])
    except (ValueError, OSError, KeyError):  # not there, or not laid out yet
        return None


def test_sigterm_while_following_closes_the_live_file(tmp_path: Path) -> None:
    """Run 12 never completes: ``follow`` polls until SIGTERM ends it, cleanly."""
    out_dir = tmp_path / "live"
    process = subprocess.Popen(
        [sys.executable, "-m", "qcsql", "follow", str(EXAMPLE_DB), "--run", "12", "--quiet",
         "--poll", "0.01", "-o", str(out_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT,
    )  # fmt: skip
    deadline = time.monotonic() + WAIT
    while _live_rows(out_dir) != 5:  # all its rows are in: it is polling for more
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=WAIT)
    assert (process.returncode, out, err) == (
        143,
        "",
        "qcsql follow: error: interrupted by SIGTERM\n",
    )
    (live,) = out_dir.iterdir()
    with h5py.File(live, "r") as handle:  # closed properly: it opens, with its rows
        assert handle["dmm_current"]["dmm_current"].shape == (5,)


@contextlib.contextmanager
def _handlers(**handlers: object) -> Iterator[None]:
    previous = {name: signal.getsignal(getattr(signal, name)) for name in handlers}
    try:
        for name, handler in handlers.items():
            signal.signal(getattr(signal, name), handler)  # type: ignore[arg-type]
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)  # type: ignore[arg-type]


def test_main_installs_handlers_only_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def mine(signum: int, frame: object) -> None:
        raise AssertionError("never delivered")

    seen = []
    real = qcsql.Database.summary

    def spy(self: qcsql.Database) -> object:
        seen.append({name: signal.getsignal(getattr(signal, name)) for name in NAMES})
        seen.append({"unraisablehook": sys.unraisablehook})
        return real(self)

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
    monkeypatch.setattr(qcsql.Database, "summary", spy)
    hook = sys.unraisablehook
    with _handlers(SIGINT=signal.default_int_handler, SIGTERM=mine, SIGHUP=signal.SIG_IGN):
        assert cli("info", str(EXAMPLE_DB))[0] == 0
        after = {name: signal.getsignal(getattr(signal, name)) for name in NAMES}
    assert after == {
        "SIGINT": signal.default_int_handler,
        "SIGTERM": mine,
        "SIGHUP": signal.SIG_IGN,  # ignored (nohup): never touched
    }
    assert sys.unraisablehook is hook
    during, hooks = seen
    assert during["SIGHUP"] is signal.SIG_IGN
    assert during["SIGINT"] == during["SIGTERM"] and callable(during["SIGTERM"])
    assert during["SIGTERM"] not in (mine, signal.default_int_handler)
    assert hooks["unraisablehook"] is not hook
    with _handlers(SIGINT=mine):  # a host program's own SIGINT handler is left alone
        seen.clear()
        assert cli("info", str(EXAMPLE_DB))[0] == 0
        assert seen[0]["SIGINT"] is mine


def test_main_in_another_thread_installs_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    results: list[tuple[int, str, str]] = []
    thread = threading.Thread(target=lambda: results.append(cli("runs", str(EXAMPLE_DB))))
    thread.start()
    thread.join(WAIT)
    ((status, out, err),) = results
    assert (status, err) == (0, "") and "gate_map" in out
    assert signal.getsignal(signal.SIGTERM) is before
