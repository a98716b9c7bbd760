"""Export files: reproducible bytes, QCoDeS' names, atomic writes, and the CLI."""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path

import h5netcdf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qcsql
import qcsql.export.writer
from qcsql.cli import main
from tests.helpers import EXAMPLE_DB, FIXTURES, copy_database


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
    def refuse(path: object, mode: str = "r", **kwargs: object) -> None:
        # what h5py raises for a folder it may not create files in (tests run as root)
        raise PermissionError(errno.EACCES, "Unable to synchronously create file (...)")

    monkeypatch.setattr(h5netcdf, "File", refuse)
    with qcsql.open_database(EXAMPLE_DB) as db:
        with pytest.raises(qcsql.QcsqlError, match=r"cannot write into .*\(Permission denied\)$"):
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
    from qcsql.export.streamed import _c_order

    total = int(np.prod(shape))
    rows = np.arange(total, dtype=float)
    bounds = sorted({0, total, *(int(c * total) for c in cuts)})
    target = np.full(shape, np.nan)
    for start, end in zip(bounds, bounds[1:], strict=False):
        for region, part in _c_order(rows[start:end], start, shape):
            target[region] = part
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
    assert "run 11" in drawn and "rows" in drawn  # rows: progress within a run
    assert "/2 [" in drawn and "run/s" in drawn  # runs done of the total, and the rate
    assert "run 11 cooldown check second line" in drawn  # a run's name on the bar's one line
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


# -- where an export goes -------------------------------------------------------------------


def test_a_path_without_suffix_that_is_no_folder_is_refused(tmp_path: Path) -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(3)
        with pytest.raises(qcsql.ExportError, match=r"no \.nc, \.h5 or \.hdf5 suffix") as e:
            run.export_hdf5(tmp_path / "exprts")  # a mistyped folder, not a file name
    assert e.value.path == tmp_path / "exprts" and e.value.run_id == 3
    assert f"ending in {os.sep!r} (created)" in str(e.value)
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "notes"
    existing.write_text("keep me")
    with qcsql.open_database(EXAMPLE_DB) as db:
        with pytest.raises(qcsql.ExportError, match="suffix"):
            db.load_by_id(3).export_hdf5(existing)
    assert existing.read_text() == "keep me"


def test_a_path_ending_in_a_separator_is_a_folder_and_is_created(tmp_path: Path) -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(3)
        path = run.export_hdf5(f"{tmp_path / 'new' / 'exports'}{os.sep}")
        assert path == tmp_path / "new" / "exports" / f"qcodes_3_{run.guid}.nc"
        assert path.is_file()
        (tmp_path / "file").write_text("")
        with pytest.raises(qcsql.ExportError, match="names a folder .* but is a file"):
            run.export_hdf5(f"{tmp_path / 'file'}{os.sep}")
        with pytest.raises(qcsql.ExportError, match="cannot create the folder"):
            run.export_hdf5(f"{tmp_path / 'file' / 'below'}{os.sep}")


@pytest.mark.parametrize("name", ["a.nc", "b.h5", "c.hdf5", "D.NC", "x.y.nc"])
def test_a_file_name_with_an_export_suffix_is_the_file(tmp_path: Path, name: str) -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(3)
        reference = run.export_hdf5(tmp_path)
        path = run.export_hdf5(tmp_path / name)
        assert path == tmp_path / name and path.read_bytes() == reference.read_bytes()
        again = run.export_hdf5(str(tmp_path / name))  # replaced, not refused
    assert again == path and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [name, reference.name]
    )


def test_cli_output_is_a_folder_unless_it_names_one_file(tmp_path: Path) -> None:
    def export(*argv: str) -> tuple[int, str]:
        err = io.StringIO()
        return main(["export", str(EXAMPLE_DB), "--quiet", *argv], out=io.StringIO(), err=err), (
            err.getvalue()
        )

    assert export("--run", "3", "-o", str(tmp_path / "plain")) == (0, "")  # created, as always
    assert [p.suffix for p in (tmp_path / "plain").iterdir()] == [".nc"]
    assert export("--run", "3", "-o", str(tmp_path / "one.h5")) == (0, "")
    assert (tmp_path / "one.h5").is_file()
    assert export("--run", "3", "-o", f"{tmp_path / 'dir.nc'}{os.sep}") == (0, "")
    assert (tmp_path / "dir.nc").is_dir()
    status, err = export("--run", "3", "4", "-o", str(tmp_path / "two.nc"))
    assert status == 2 and "exactly one --run" in err and not (tmp_path / "two.nc").exists()


# -- unfinished exports: removed, and never taken for one ---------------------------------


def _partial_of(final: Path, random: str = "k2j_9x0q") -> Path:
    return final.with_name(f".{final.name}.{random}.partial")


def test_the_next_export_removes_only_its_own_leftovers(tmp_path: Path) -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(3)
        final = tmp_path / f"qcodes_3_{run.guid}.nc"
        mine = [_partial_of(final), _partial_of(final, "________")]
        others = [
            _partial_of(final, "k2j_9x0"),  # not mkstemp's 8 characters
            _partial_of(final, "K2J_9X0Q"),  # not its alphabet
            _partial_of(tmp_path / "qcodes_3_other.nc"),  # another target's
            final.with_name(f".{final.name}.k2j_9x0q.partial.bak"),
            final.with_name(f"{final.name}.k2j_9x0q.partial"),  # not hidden
            tmp_path / "notes.partial",
        ]
        for path in mine + others:
            path.write_bytes(b"\x89HDF\r\n\x1a\n unfinished")
        folder_like = _partial_of(final, "d1r00000")
        folder_like.mkdir()  # only regular files are removed
        run.export_hdf5(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([final.name, folder_like.name, *(p.name for p in others)])


def test_a_leftover_that_a_live_writer_holds_is_kept(tmp_path: Path) -> None:
    """Another export of the same target still writing: its file is not pulled away."""
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(3)
        busy = _partial_of(tmp_path / f"qcodes_3_{run.guid}.nc")
        with h5netcdf.File(busy, "w"):  # HDF5 holds its lock while the file is open
            run.export_hdf5(tmp_path)
            assert busy.exists()
        run.export_hdf5(tmp_path)
    assert not busy.exists()


def test_the_cleanup_matches_the_names_the_writer_makes(tmp_path: Path) -> None:
    """The pattern the cleanup removes is the writer's own (mkstemp's), and no other."""
    from qcsql.data.exported import is_partial_name
    from qcsql.export.writer import _leftover_pattern, _temporary_path

    final = tmp_path / "qcodes_1_x.nc"
    for _ in range(200):
        name = _temporary_path(final).name
        assert _leftover_pattern(final).fullmatch(name) and is_partial_name(name)
        assert not _leftover_pattern(tmp_path / "qcodes_1_x.n").fullmatch(name)
    descriptor, made = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=tmp_path)
    os.close(descriptor)
    assert _leftover_pattern(final).fullmatch(Path(made).name)


def test_an_unfinished_export_is_never_read_as_one(tmp_path: Path) -> None:
    """A DataSetInMem run's data are in the export its export_info names; a .partial file
    beside where that export should be (a killed export of it) is not taken for it."""
    import shutil

    from qcsql.audit import audit
    from qcsql.data.exported import read_exported

    folder = tmp_path / "inmem"
    shutil.copytree(FIXTURES / "split" / "inmem", folder)
    (export,) = (folder / "exports").glob("qcodes_2_*.nc")
    with qcsql.open_database(folder / "inmem.db") as db:
        before = db.load_by_id(2).get_parameter_data()
    partial = _partial_of(export)
    export.rename(partial)  # the complete bytes, under an unfinished export's name
    with qcsql.open_database(folder / "inmem.db") as db:  # as QCoDeS: no data, a warning
        with pytest.warns(qcsql.DataNotFoundWarning, match="does not exist"):
            assert db.load_by_id(2).get_parameter_data() == {}
    findings = {(f.code, f.run_id) for f in audit(folder / "inmem.db", deep=True).findings}
    assert ("data_not_found", 2) in findings
    with pytest.raises(ValueError, match="never finished"):
        read_exported(partial)
    partial.rename(export)
    assert read_exported(export).keys() == before.keys()
