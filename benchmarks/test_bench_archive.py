"""A lab's archive (tests/archive_builder.py, 341 databases): the catalogue against
listing the same runs with QCoDeS 0.58 on copies, a second catalogue of the unchanged
archive, and exporting every run of 100 databases with 1 and 2 processes and on a local
Dask cluster of 2 workers.

Issue targets: the catalogue at least 20x faster than QCoDeS; the second run under 10% of
the first; the speed-up of 2 jobs over 1 reported (the machine has 2 cores).
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from benchmarks.conftest import EXTRA_REPORTS, fresh_process_probe
from qcsql.archive import build_catalog, read_catalog, write_catalog
from qcsql.archive.fanout import export_tasks, plan_exports
from tests.archive_builder import ArchiveManifest, build_archive, restore_permissions

pytest.importorskip("qcodes")

COPIES = 6
EXPORT_DATABASES = int(os.environ.get("QCSQL_BENCH_EXPORT_DATABASES", "100"))
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveManifest]:
    manifest = build_archive(tmp_path_factory.mktemp("bench-archive") / "root", COPIES)
    assert len(manifest.qcodes_files) >= 300
    yield manifest
    restore_permissions(manifest)


def _collected(*arguments: Any) -> Any:
    """A round's set-up that runs a full garbage collection first (untimed), as timeit
    and pyperf keep the collector out of their timings. This pytest process holds
    QCoDeS, xarray, pandas and pytest, about 135,000 objects: a full collection takes
    75-95 ms here, and without this one catalogue in three would pay one, for objects
    that are not its own (the command line's process holds none of them, see
    ``test_catalog_in_a_fresh_process``). QCoDeS' round gets the same."""

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        gc.collect()
        return arguments, {}

    return setup


def _without_checksums(root: Path) -> int:
    return len(build_catalog([root], checksums=False).runs)


def _catalogue(root: Path, target: Path, jobs: int = 1) -> int:
    """What ``qcsql catalog ROOT -o TARGET`` does: the previous catalogue read, the new one
    built and written, its runs counted (for the command's summary line)."""
    previous = read_catalog(target)
    catalog = build_catalog([root], previous, exclude=[target], jobs=jobs)
    write_catalog(catalog, target, previous)
    return catalog.run_count()


def _connect(copy: Path, fresh: Path) -> Any:
    """QCoDeS' connect, with the help it documents for schema-v0 files with runs."""
    import qcodes
    from qcodes.dataset.sqlite.database import connect

    try:
        return connect(str(copy))
    except Exception:
        components = qcodes.config["GUID_components"]
        saved, components["GUID_type"] = components["GUID_type"], "explicit_sample"
        try:
            return connect(str(fresh))
        finally:
            components["GUID_type"] = saved


def _list_with_qcodes(copies: list[tuple[Path, Path]]) -> int:
    from qcodes.dataset import load_by_id

    listed: list[tuple[Any, ...]] = []
    for copy, fresh in copies:
        try:
            conn = _connect(copy, fresh)
        except Exception:
            continue  # QCoDeS cannot open it (the catalogue reports why)
        try:
            run_ids = [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]
            for run_id in run_ids:
                try:
                    ds = load_by_id(run_id, conn=conn)
                    listed.append(
                        (ds.guid, ds.name, ds.run_timestamp_raw, ds.completed_timestamp_raw)
                        + (ds.captured_run_id, ds.number_of_results, ds.completed, ds.paramspecs)
                    )
                except Exception:
                    continue
        finally:
            conn.close()
    return len(listed)


def _sqlite_floor(files: list[Path], scratch: Path) -> int:
    """The least any reader must do for the catalogue's rows, in plain sqlite3 with
    minimal queries and no checks: per QCoDeS file, its runs joined with their
    experiments (descriptions included), the layouts and dependencies of a file without
    descriptions, one count per results table. Files are opened ``immutable`` (no
    locking at all), and a WAL file with a ``-wal`` is read from a copy of the two, as
    anything must that reads its committed data without creating its ``-shm``."""
    listed = 0
    for path in files:
        target = path
        if Path(f"{path}-wal").exists():
            target = scratch / path.name
            shutil.copyfile(path, target)
            shutil.copyfile(f"{path}-wal", f"{target}-wal")
        mode = "ro" if target != path else "ro&immutable=1"
        conn = sqlite3.connect(f"file:{quote(str(target))}?mode={mode}", uri=True)
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
            rows = conn.execute(
                "SELECT * FROM runs LEFT JOIN experiments USING (exp_id) ORDER BY run_id"
            ).fetchall()
            columns = [c[1] for c in conn.execute("PRAGMA table_info(runs)")]
            if "run_description" not in columns:
                conn.execute("SELECT * FROM layouts").fetchall()
                conn.execute("SELECT * FROM dependencies").fetchall()
            table = columns.index("result_table_name")
            for row in rows:
                if row[table] in tables:
                    conn.execute(f'SELECT count(*) FROM "{row[table]}"').fetchone()
            listed += len(rows)
        except sqlite3.Error:
            pass  # a damaged file: the catalogue reports it
        finally:
            conn.close()
        if target != path:
            target.unlink()
            Path(f"{target}-wal").unlink()
    return listed


def _copies(manifest: ArchiveManifest, folder: Path) -> list[tuple[Path, Path]]:
    """Two copies of every QCoDeS file (QCoDeS upgrades what it opens; the second for a
    retry with its documented v0 help), made before the clock starts."""
    if folder.exists():
        shutil.rmtree(folder)
    pairs = []
    for index, path in enumerate(manifest.qcodes_files):
        pair = []
        for kind in ("a", "b"):
            target = folder / kind / str(index) / path.name
            target.parent.mkdir(parents=True)
            for suffix in ("", "-wal"):
                if Path(f"{path}{suffix}").exists():
                    shutil.copyfile(f"{path}{suffix}", f"{target}{suffix}")
            pair.append(target)
        pairs.append((pair[0], pair[1]))
    return pairs


@pytest.mark.benchmark(group="catalogue of the archive (341 databases)")
def test_catalog_qcodes(benchmark: Any, archive: ArchiveManifest, tmp_path: Path) -> None:
    made: list[list[tuple[Path, Path]]] = []

    def copies() -> tuple[tuple[list[tuple[Path, Path]]], dict[str, Any]]:
        made.append(_copies(archive, tmp_path / "copies"))
        gc.collect()  # every round of either side starts after a full collection
        return (made[-1],), {}

    listed = benchmark.pedantic(_list_with_qcodes, setup=copies, rounds=1, iterations=1)
    assert listed > 3000
    TIMES["qcodes listing"] = benchmark.stats.stats.mean
    # The same listing again, now that QCoDeS has upgraded the copies: QCoDeS' cost of
    # listing alone, without the one-off upgrade of old files its connect makes.
    started = time.perf_counter()
    assert _list_with_qcodes(made[-1]) == listed
    TIMES["qcodes listing, upgraded"] = time.perf_counter() - started
    EXTRA_REPORTS.append(
        f"QCoDeS' listing of the archive: {TIMES['qcodes listing']:.1f} s on fresh copies "
        f"(its connect upgrades old files), {TIMES['qcodes listing, upgraded']:.1f} s on "
        "the copies it had upgraded"
    )


@pytest.mark.benchmark(group="catalogue of the archive (341 databases), no checksums")
def test_catalog_sqlite_floor(benchmark: Any, archive: ArchiveManifest, tmp_path: Path) -> None:
    files = archive.qcodes_files
    listed = benchmark.pedantic(_sqlite_floor, args=(files, tmp_path), rounds=3, iterations=1)
    assert listed > 3000
    TIMES["sqlite floor"] = benchmark.stats.stats.mean


def _against_qcodes(variant: str, stats: Any, *, floor: bool = False) -> None:
    """A variant of the catalogue against QCoDeS' listing measured in the same session."""
    if "qcodes listing" in TIMES:
        theirs = TIMES["qcodes listing"]
        upgraded = TIMES["qcodes listing, upgraded"]
        EXTRA_REPORTS.append(
            f"catalogue of the archive {variant}: mean {stats.mean:.2f} s, fastest "
            f"{stats.min:.2f} s -> {theirs / stats.mean:.1f}x / {theirs / stats.min:.1f}x "
            f"faster than QCoDeS' listing on fresh copies ({theirs:.1f} s), "
            f"{upgraded / stats.mean:.1f}x than on upgraded copies ({upgraded:.1f} s)"
        )
    if floor and "sqlite floor" in TIMES:
        least = TIMES["sqlite floor"]
        EXTRA_REPORTS.append(
            f"catalogue of the archive {variant}: {stats.mean / least:.2f}x the time of "
            f"plain sqlite3 reading the same rows ({least:.2f} s)"
        )


@pytest.mark.benchmark(group="catalogue of the archive (341 databases)")
def test_catalog_qcsql(benchmark: Any, archive: ArchiveManifest, tmp_path: Path) -> None:
    target = tmp_path / "catalog.db"

    def first() -> tuple[tuple[Path, Path], dict[str, Any]]:
        target.unlink(missing_ok=True)
        gc.collect()  # see _collected
        return (archive.root, target), {}

    # A warm-up round first, as QCoDeS' listing runs after its import (the archive's
    # fixture imports it): the process's first catalogue also imports what it uses
    # lazily (SQLAlchemy's SQLite dialect, the page readers), 0.1-0.15 s here.
    runs = benchmark.pedantic(_catalogue, setup=first, rounds=5, iterations=1, warmup_rounds=1)
    TIMES["catalog first"] = benchmark.stats.stats.mean
    assert runs > 3000
    _against_qcodes("with checksums", benchmark.stats.stats)


@pytest.mark.benchmark(
    group="catalogue in a fresh process: the whole probe (start, imports, warm-up, 5 + 5 catalogues)"
)
def test_catalog_in_a_fresh_process(
    benchmark: Any, archive: ArchiveManifest, tmp_path: Path
) -> None:
    """``qcsql catalog`` as the command line runs it: in a process of its own, after a
    warm-up catalogue (``benchmarks/catalog_probe.py``), beside QCoDeS' listing of this
    session. The rounds are timed in that process (the summary line); the benchmark row
    is the whole probe."""
    arguments = ("catalog_probe", str(archive.root), str(tmp_path), "5")
    report = benchmark.pedantic(fresh_process_probe, args=arguments, rounds=1, iterations=1)
    assert report["runs"] > 3000
    first, second = report["first"], report["second"]
    summary = (
        f"catalogue of the archive in a fresh process (5 rounds): first run mean "
        f"{statistics.mean(first):.3f} s, median {statistics.median(first):.3f} s, fastest "
        f"{min(first):.3f} s; second run median {statistics.median(second) * 1e3:.0f} ms = "
        f"{statistics.median(second) / statistics.median(first):.1%} of the first's median"
    )
    if "qcodes listing" in TIMES:
        theirs = TIMES["qcodes listing"]
        summary += (
            f"; {theirs / statistics.mean(first):.1f}x / {theirs / statistics.median(first):.1f}x"
            f" / {theirs / min(first):.1f}x (mean / median / fastest) faster than QCoDeS' "
            f"listing ({theirs:.1f} s)"
        )
    EXTRA_REPORTS.append(summary)


@pytest.mark.benchmark(group="catalogue of the archive (341 databases), no checksums")
def test_catalog_without_checksums(benchmark: Any, archive: ArchiveManifest) -> None:
    runs = benchmark.pedantic(
        _without_checksums, setup=_collected(archive.root), rounds=5, warmup_rounds=1
    )
    assert runs > 3000
    _against_qcodes("without checksums", benchmark.stats.stats, floor=True)


@pytest.mark.benchmark(group="catalogue of the archive (341 databases), --jobs 2")
def test_catalog_two_processes(benchmark: Any, archive: ArchiveManifest, tmp_path: Path) -> None:
    target = tmp_path / "catalog.db"

    def first() -> tuple[tuple[Path, Path, int], dict[str, Any]]:
        target.unlink(missing_ok=True)
        return (archive.root, target, 2), {}

    runs = benchmark.pedantic(_catalogue, setup=first, rounds=3, iterations=1)
    assert runs > 3000
    _against_qcodes("with --jobs 2", benchmark.stats.stats)


@pytest.mark.benchmark(group="catalogue of the unchanged archive, second run")
def test_catalog_unchanged_qcsql(benchmark: Any, archive: ArchiveManifest, tmp_path: Path) -> None:
    target = tmp_path / "catalog.db"
    _catalogue(archive.root, target)
    runs = benchmark.pedantic(
        _catalogue, setup=_collected(archive.root, target), rounds=5, iterations=1
    )
    assert runs > 3000
    second = benchmark.stats.stats.mean
    if "catalog first" in TIMES:
        EXTRA_REPORTS.append(
            f"catalogue, second run of the unchanged archive: {second * 1e3:.0f} ms = "
            f"{second / TIMES['catalog first']:.1%} of the first ({TIMES['catalog first']:.2f} s)"
        )


def _timed_process(*arguments: str, bytecode: Path) -> float:
    """The wall time of ``python arguments...`` in a fresh process, its modules' bytecode
    cached in ``bytecode`` (as a package installed by pip has its modules compiled, even
    where the environment says PYTHONDONTWRITEBYTECODE, as this machine's does)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(bytecode)
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, capture_output=True, env=env)
    return time.perf_counter() - started


@pytest.mark.benchmark(group="qcsql catalog as a command, fresh processes")
def test_catalog_command(benchmark: Any, archive: ArchiveManifest, tmp_path: Path) -> None:
    """``qcsql catalog`` as a user runs it, a process each, first and second run, beside
    the floor of any second run: the interpreter starting and importing what the command
    needs (its own command line, the catalogue, orjson). The benchmark row is the first."""
    target = tmp_path / "catalog.db"
    command = ("-m", "qcsql", "catalog", "--quiet", str(archive.root), "-o", str(target))
    floor_code = "import qcsql.cli, qcsql.archive, orjson"
    bytecode = tmp_path / "bytecode"
    _timed_process(*command, bytecode=bytecode)  # warm the file cache, compile the modules

    def first() -> tuple[tuple[str, ...], dict[str, Any]]:
        target.unlink(missing_ok=True)
        return command, {"bytecode": bytecode}

    benchmark.pedantic(_timed_process, setup=first, rounds=5, iterations=1)
    seconds = [_timed_process(*command, bytecode=bytecode) for _ in range(5)]
    floor = [_timed_process("-c", floor_code, bytecode=bytecode) for _ in range(5)]
    first_run = statistics.median(benchmark.stats.stats.data)
    second_run = statistics.median(seconds)
    EXTRA_REPORTS.append(
        f"qcsql catalog as a command (medians of 5 processes): first run {first_run:.2f} s, "
        f"second run {second_run * 1e3:.0f} ms = {second_run / first_run:.1%} of the first; "
        f"floor (python -c {floor_code!r}) {statistics.median(floor) * 1e3:.0f} ms"
    )


def _export_all(databases: list[Path], folder: Path, jobs: int, client: Any = None) -> int:
    plan = plan_exports(databases, folder)
    outcomes = list(export_tasks(plan.tasks, jobs=jobs, client=client))
    assert all(o.ok for o in outcomes), [o.message for o in outcomes if not o.ok][:3]
    return len(outcomes)


def _export_databases(archive: ArchiveManifest) -> list[Path]:
    return archive.qcodes_files[:EXPORT_DATABASES]


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.nc"))}


@pytest.mark.parametrize("jobs", [1, 2, "dask"])
def test_export_100_databases(
    benchmark: Any, archive: ArchiveManifest, tmp_path_factory: pytest.TempPathFactory, jobs: Any
) -> None:
    benchmark.group = f"export --all of {EXPORT_DATABASES} databases"
    databases = _export_databases(archive)
    folder = tmp_path_factory.mktemp("exports") / str(jobs)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        _fresh(folder)
        return (), {}

    if jobs == "dask":
        pytest.importorskip("dask.distributed")
        from qcsql.archive.fanout import dask_client

        with dask_client("local", 2) as client:
            client.run(lambda: None)  # the workers are up before the clock starts
            runs = benchmark.pedantic(
                lambda: _export_all(databases, folder, 1, client), setup=setup, rounds=1
            )
    else:
        runs = benchmark.pedantic(
            lambda: _export_all(databases, folder, jobs), setup=setup, rounds=1
        )
    TIMES[f"export {jobs}"] = benchmark.stats.stats.mean
    TIMES["export runs"] = runs
    if jobs == 1:
        TIMES["files"] = _files(folder)  # type: ignore[assignment]
    else:  # byte-identical to the serial export? (reported, so that the timings still show)
        serial: dict[str, bytes] = TIMES["files"]  # type: ignore[assignment]
        written = _files(folder)
        assert set(written) == set(serial)
        differing = sorted(name for name in written if written[name] != serial[name])
        EXTRA_REPORTS.append(
            f"export with {jobs!r}: {len(written) - len(differing)} of {len(written)} files "
            f"byte-identical to the serial export"
            + (f"; differing: {differing[:3]}" if differing else "")
        )
    if jobs == "dask" and "export 1" in TIMES:
        started = time.strftime("%H:%M")
        for variant in (2, "dask"):
            if f"export {variant}" in TIMES:
                EXTRA_REPORTS.append(
                    f"export --all of {EXPORT_DATABASES} databases ({runs} runs), "
                    f"{'--jobs 2' if variant == 2 else '--dask local, 2 workers'} over --jobs 1: "
                    f"{TIMES['export 1'] / TIMES[f'export {variant}']:.2f}x "
                    f"({TIMES['export 1']:.1f} s -> {TIMES[f'export {variant}']:.1f} s, at {started})"
                )
