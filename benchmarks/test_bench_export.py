"""Exporting a run to netCDF/HDF5: qcsql's export_hdf5 against QCoDeS 0.58's export("netcdf").

Issue targets: a 10,000,000-point numeric run at least 15x faster with peak RSS under
150 MB (QCoDeS: about 2.3 GB); 10,000 x 1,000-point arrays at least 10x faster. Peak
RSS growth is measured in fresh processes and reported, not asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import qcsql
from benchmarks.conftest import MEMORY_REPORTS, fresh_process_probe, qcodes_copy
from benchmarks.test_bench_data import ARRAY_ROWS, NUMERIC_POINTS, array_db, numeric_db  # noqa: F401

pytest.importorskip("qcodes")


def export_with_qcsql(path: Path, out: Path) -> Path:
    with qcsql.open_database(path) as db:
        return db.load_by_id(1).export_hdf5(out)


def fresh_folders(source: Path, root: Path) -> Any:
    """A pytest-benchmark ``setup``: every round exports into a new, empty folder, as a sync
    agent does, so that no round pays for replacing the previous round's file."""
    rounds = iter(range(1_000_000))

    def setup() -> tuple[tuple[Path, Path], dict[str, Any]]:
        folder = root / f"round-{next(rounds)}"
        folder.mkdir()
        return (source, folder), {}

    return setup


def export_with_qcodes(path: Path, out: Path) -> None:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(path))
    try:
        load_by_id(1, conn=conn).export("netcdf", path=str(out))
    finally:
        conn.close()


def probe_export(which: str, path: Path) -> dict[str, Any]:
    """``memory_probe.py``'s report of one export of ``path`` in a fresh process."""
    return fresh_process_probe("memory_probe", which, str(path), "export")


def _memory(which: str, path: Path, label: str) -> None:
    MEMORY_REPORTS.append((f"export, {label}", probe_export(which, path)))


@pytest.mark.benchmark(group="export, 1-D numeric run")
def test_export_numeric_qcsql(benchmark: Any, numeric_db: Path, tmp_path: Path) -> None:  # noqa: F811
    path = benchmark.pedantic(
        export_with_qcsql, setup=fresh_folders(numeric_db, tmp_path), rounds=3, iterations=1
    )
    assert path.stat().st_size > NUMERIC_POINTS * 16
    _memory("qcsql", numeric_db, f"{NUMERIC_POINTS:,}-point numeric run")


@pytest.mark.benchmark(group="export, 1-D numeric run")
def test_export_numeric_qcodes(benchmark: Any, numeric_db: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = qcodes_copy(numeric_db, tmp_path / "db")
    benchmark.pedantic(export_with_qcodes, args=(copy, tmp_path), rounds=1, iterations=1)
    _memory("qcodes", copy, f"{NUMERIC_POINTS:,}-point numeric run")


@pytest.mark.benchmark(group="export, 10,000 x 1,000-point arrays")
def test_export_arrays_qcsql(benchmark: Any, array_db: Path, tmp_path: Path) -> None:  # noqa: F811
    benchmark.pedantic(
        export_with_qcsql,
        setup=fresh_folders(array_db, tmp_path),
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    _memory("qcsql", array_db, "10,000 x 1,000-point arrays")


@pytest.mark.benchmark(group="export, 10,000 x 1,000-point arrays")
def test_export_arrays_qcodes(benchmark: Any, array_db: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = qcodes_copy(array_db, tmp_path / "db")
    benchmark.pedantic(export_with_qcodes, args=(copy, tmp_path), rounds=1, iterations=1)
    _memory("qcodes", copy, "10,000 x 1,000-point arrays")


def wal_copy_a_viewer_read(source: Path, folder: Path) -> Path:
    """A WAL-mode copy of ``source`` beside the empty ``-wal`` and the ``-shm`` that a
    viewer's plain read-only open leaves behind (SQLite does not remove them when the
    last connection is read-only): the state of many lab databases between measurements."""
    import contextlib
    import shutil
    import sqlite3

    folder.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copyfile(source, folder / source.name))
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    with contextlib.closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as viewer:
        viewer.execute("SELECT count(*) FROM runs").fetchone()
    assert copy.with_name(copy.name + "-wal").stat().st_size == 0
    return copy


def wal_copy_without_shm(source: Path, folder: Path) -> Path:
    """A WAL-mode copy of ``source`` whose results are all in its ``-wal`` (every
    dependent value changed there, as a measurement's commits leave them before a
    checkpoint), copied with the ``-wal`` but without ``-shm``, as archives hold them:
    qcsql reads it through a private snapshot copy."""
    import contextlib
    import shutil
    import sqlite3

    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    live = Path(shutil.copyfile(source, work / source.name))
    with contextlib.closing(sqlite3.connect(live, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        for (table,) in conn.execute("SELECT result_table_name FROM runs").fetchall():
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            conn.execute(f'UPDATE "{table}" SET "{columns[-1]}" = "{columns[-1]}" + 0.5')
        copy = folder / source.name
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{live}{suffix}", f"{copy}{suffix}")
    shutil.rmtree(work)
    assert copy.with_name(copy.name + "-wal").stat().st_size > 0
    return copy


WAL_FILES = {
    "viewers_empty_wal": wal_copy_a_viewer_read,
    "wal_copy_without_shm": wal_copy_without_shm,
}


@pytest.mark.benchmark(group="export, 1-D numeric run")
@pytest.mark.parametrize("kind", list(WAL_FILES))
def test_export_numeric_qcsql_from_a_wal_file(
    benchmark: Any,
    kind: str,
    numeric_db: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The numeric run in WAL files as labs keep them: beside the empty ``-wal`` a
    viewer left (the pages read under a snapshot), and copied with a full ``-wal`` but
    without ``-shm`` (read through a private snapshot copy, checkpointed so that its pages
    are read directly; the copy of the file and its ``-wal`` is part of the time)."""
    copy = WAL_FILES[kind](numeric_db, tmp_path / "db")
    path = benchmark.pedantic(
        export_with_qcsql, setup=fresh_folders(copy, tmp_path), rounds=3, iterations=1
    )
    assert path.stat().st_size > NUMERIC_POINTS * 16
