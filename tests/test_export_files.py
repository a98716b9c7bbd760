"""Export files: reproducible bytes, QCoDeS' names, atomic writes, and the CLI."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import h5netcdf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qcsql
import qcsql.export.writer
from qcsql.cli import main
from tests.helpers import EXAMPLE_DB, copy_database


def test_same_run_twice_gives_the_same_bytes(tmp_path: Path, guard: list[Path]) -> None:
    guard.append(EXAMPLE_DB)
    with qcsql.open_database(EXAMPLE_DB) as db:
        for run in db.runs():
            first = run.export_hdf5(tmp_path / f"a{run.run_id}.nc")
            second = run.export_hdf5(tmp_path / f"b{run.run_id}.nc")
            assert first.read_bytes() == second.read_bytes(), f"run {run.run_id}"


def test_default_name_is_qcodes_name(tmp_path: Path) -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(3)
        path = run.export_hdf5(tmp_path)
    assert path.name == f"qcodes_{run.captured_run_id}_{run.guid}.nc"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize(
    "failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_failed_or_interrupted_export_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    real = h5netcdf.File.create_variable
    calls = []

    def fail_on_second(self: object, *args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 2:
            raise failure
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(h5netcdf.File, "create_variable", fail_on_second)
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(1)
        if isinstance(failure, OSError):
            with pytest.raises(qcsql.QcsqlError, match="No space left"):
                run.export_hdf5(tmp_path)
        else:
            with pytest.raises(KeyboardInterrupt):
                run.export_hdf5(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(qcsql.export.writer.tempfile, "mkstemp", refuse)
    with qcsql.open_database(EXAMPLE_DB) as db:
        with pytest.raises(qcsql.QcsqlError, match="cannot write into .*Permission denied"):
            db.load_by_id(1).export_hdf5(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder(tmp_path: Path) -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        with pytest.raises(qcsql.QcsqlError, match="does not exist"):
            db.load_by_id(1).export_hdf5(tmp_path / "nope" / "x.nc")


def test_cli_exports_all_runs(tmp_path: Path, guard: list[Path]) -> None:
    copy = copy_database(EXAMPLE_DB, tmp_path / "db")
    guard.append(copy)
    out = tmp_path / "out"
    out.mkdir()
    stdout = io.StringIO()
    assert main(["export", str(copy), "--all", "-o", str(out), "--json"], out=stdout) == 0
    summary = json.loads(stdout.getvalue())
    files = sorted(p.name for p in out.iterdir())
    assert summary["runs"] == summary["files"] == len(files) == 13
    assert summary["bytes"] == sum((out / f).stat().st_size for f in files)
    assert not summary["failed"]


def test_cli_export_usage_errors(tmp_path: Path) -> None:
    err = io.StringIO()
    assert main(["export", str(EXAMPLE_DB), "-o", str(tmp_path)], err=err) == 2
    assert "--run ID" in err.getvalue()
    assert (
        main(["export", str(EXAMPLE_DB), "--run", "999", "-o", str(tmp_path)], err=io.StringIO())
        == 1
    )


@settings(max_examples=100, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple),
    cuts=st.lists(st.floats(0, 1), max_size=5),
)
def test_streamed_grid_rows_land_in_c_order(shape: tuple[int, ...], cuts: list[float]) -> None:
    """Rows written in arbitrary batches end up where reshape(shape) puts them."""
    from qcsql.export.streamed import _write_c_order

    total = int(np.prod(shape))
    rows = np.arange(total, dtype=float)
    bounds = sorted({0, total, *(int(c * total) for c in cuts)})
    target = np.full(shape, np.nan)
    for start, end in zip(bounds, bounds[1:], strict=False):
        _write_c_order(target, rows[start:end], start, shape, shape[-1])
    np.testing.assert_array_equal(target, rows.reshape(shape))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert (
        main(
            ["export", str(EXAMPLE_DB), "--run", "11", "12", "-o", str(tmp_path / "a")],
            out=io.StringIO(),
        )
        == 0
    )
    drawn = terminal.getvalue()
    assert "\r[" in drawn and "run 11" in drawn and "rows" in drawn  # rows: progress within a run
    quiet = _Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    assert (
        main(
            ["export", str(EXAMPLE_DB), "--run", "11", "-o", str(tmp_path / "b"), "--quiet"],
            out=io.StringIO(),
        )
        == 0
    )
    assert quiet.getvalue() == ""
    piped = io.StringIO()  # not a terminal: silent too
    monkeypatch.setattr("sys.stderr", piped)
    assert (
        main(
            ["export", str(EXAMPLE_DB), "--run", "11", "-o", str(tmp_path / "c")], out=io.StringIO()
        )
        == 0
    )
    assert piped.getvalue() == ""
