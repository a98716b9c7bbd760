"""A lab's archive: the catalogue lists what QCoDeS 0.58 lists from copies of its files,
every other file as a problem, the duplicates its guids show, and changes nothing; the
fan-out writes what a serial export writes and reports a failing task without losing
the others."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
import qcsql.archive.checksum
import qcsql.archive.copies
import qcsql.archive.scan
import qcsql.audit
import qcsql.sqlite.connection
import qcsql.sqlite.files
from qcsql.archive import (
    build_catalog,
    catalog_database,
    catalog_records,
    discover,
    read_catalog,
    write_catalog,
)
from qcsql.archive.checksum import ByContent, run_checksum, run_checksums, table_checksums
from qcsql.archive.entries import with_changes
from qcsql.archive.fanout import (
    CHUNK_RUNS,
    Outcome,
    export_one,
    export_tasks,
    plan_exports,
    run_tasks,
)
from qcsql.cli import main
from qcsql.errors import DatabaseReadError, QcsqlError
from qcsql.sqlite.files import side_file
from tests.archive_builder import ArchiveManifest, build_archive, restore_permissions, small_sources
from tests.helpers import (
    EXAMPLE_DB,
    LEGACY,
    copy_database,
    corpus_databases,
    first_arguments_recorded,
    plain_sqlite,
)
from tests.test_read_only import READING_STATEMENT

pytest.importorskip("qcodes")
from tests.qcodes_build import new_database, parameters, sweep  # noqa: E402
from tests.qcodes_reference import reference_for  # noqa: E402


def _tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` (not following links): sha256 and mtime."""
    state = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            state[str(path)] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
        state[folder] = ("folder", 0)
    return state


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveManifest]:
    manifest = build_archive(tmp_path_factory.mktemp("archive") / "root", sources=small_sources())
    yield manifest
    restore_permissions(manifest)


@pytest.fixture(scope="module")
def catalogued(archive: ArchiveManifest) -> Iterator[qcsql.archive.Catalog]:
    before = _tree_state(archive.root)
    catalog = build_catalog([archive.root])
    assert _tree_state(archive.root) == before  # not a byte, not an mtime, no side file
    yield catalog


@pytest.fixture(scope="module", params=["small", "full"])
def listed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ArchiveManifest, qcsql.archive.Catalog]]:
    """An archive and its catalogue, for the comparisons with QCoDeS: the tests' small
    archive, and the benchmark's (six copies of every database the tests know: 341
    QCoDeS databases with ../shared/corpus), every file hashed before and after."""
    if request.param == "small":
        yield request.getfixturevalue("archive"), request.getfixturevalue("catalogued")
        return
    manifest = build_archive(tmp_path_factory.mktemp("full-archive") / "root", 6)
    try:
        if corpus_databases():
            assert len(manifest.qcodes_files) >= 300
        before = _tree_state(manifest.root)
        catalog = build_catalog([manifest.root])
        assert _tree_state(manifest.root) == before
        yield manifest, catalog
    finally:
        restore_permissions(manifest)


def _qcodes_runs(path: Path) -> dict[int, dict[str, Any]] | None:
    reference = reference_for(path)
    if reference.open_error is not None:
        return None
    return {run_id: run.fields for run_id, run in reference.runs.items() if run.error is None}


def test_the_catalogue_lists_the_runs_qcodes_lists(
    listed: tuple[ArchiveManifest, qcsql.archive.Catalog],
) -> None:
    archive, catalogued = listed
    ours: dict[str, dict[int, Any]] = defaultdict(dict)
    for run in catalogued.runs:
        ours[run.path][run.run_id] = run
    compared = 0
    for path in archive.qcodes_files:
        theirs = _qcodes_runs(path)
        entries = ours[str(path)]
        if theirs is None:
            continue  # QCoDeS cannot open it; the catalogue still lists it (checked below)
        assert set(theirs) <= set(entries), path
        for run_id, fields in theirs.items():
            entry = entries[run_id]
            got = (
                entry.captured_run_id,
                entry.captured_counter,
                entry.exp_name,
                entry.sample_name,
                entry.name,
                entry.run_timestamp_raw,
                entry.completed_timestamp_raw,
                entry.completed,
                entry.number_of_results,
                entry.metadata,
            )
            expected = (
                fields["captured_run_id"],
                fields["captured_counter"],
                fields["exp_name"],
                fields["sample_name"],
                fields["name"],
                fields["run_timestamp_raw"],
                fields["completed_timestamp_raw"],
                fields["completed"],
                fields["number_of_results"],
                fields["metadata"],
            )
            assert got == expected, (path, run_id)
            if entry.schema_version > 0:  # QCoDeS invents guids when it upgrades a v0 copy
                assert entry.guid == fields["guid"], (path, run_id)
            if fields["paramspecs"]:  # prototype files: QCoDeS sees no parameters at all
                assert {p.name: (p.paramtype, p.unit) for p in entry.parameters or ()} == {
                    name: (spec[0], spec[2]) for name, spec in fields["paramspecs"].items()
                }
            compared += 1
    assert compared > 100
    schema_versions = {f.schema_version for f in catalogued.files if f.kind == "qcodes"}
    assert set(range(10)) <= schema_versions
    listed = {Path(f.path) for f in catalogued.files if f.kind == "qcodes"}
    assert listed == set(archive.qcodes_files)
    wal_copies = [p for p in archive.qcodes_files if Path(f"{p}-wal").exists()]
    if wal_copies:  # the corpus' WAL files, copied without -shm: read through a snapshot copy
        accesses = {f.path: f.access for f in catalogued.files}
        assert {accesses[str(p)] for p in wal_copies} == {qcsql.Access.SNAPSHOT_COPY.value}


def test_every_file_that_is_not_a_qcodes_database_is_a_problem(
    listed: tuple[ArchiveManifest, qcsql.archive.Catalog],
) -> None:
    archive, catalogued = listed
    problems = {Path(p.path): p.kind for p in catalogued.problems if p.run_id is None}
    expected = {path: problems.get(path) for path in archive.not_qcodes}
    assert None not in expected.values()
    assert problems[archive.loop] == "symlink_loop"  # type: ignore[index]
    if os.geteuid() != 0:  # root lists any folder
        assert problems[archive.unreadable_folder] == "unreadable_folder"  # type: ignore[index]
    else:
        assert archive.unreadable_folder / "hidden.db" in problems  # type: ignore[operator]
    assert set(problems) - set(expected) <= {
        archive.loop,
        archive.unreadable_folder,
        archive.unreadable_folder / "hidden.db",  # type: ignore[operator]
    }
    assert not any(str(p.path).endswith(("-wal", "-shm", "-journal")) for p in catalogued.problems)


def test_duplicates_are_what_qcodes_guids_show(
    listed: tuple[ArchiveManifest, qcsql.archive.Catalog],
) -> None:
    archive, catalogued = listed
    by_guid: dict[str, set[tuple[str, int]]] = defaultdict(set)
    # QCoDeS invents the guids of a v0 file as it upgrades each copy: those files are
    # compared by everything but their guids (test_the_catalogue_lists_the_runs_qcodes_lists).
    v0 = {str(path) for path, source in archive.databases.items() if source.name.startswith("v0_")}
    for path in archive.qcodes_files:
        theirs = _qcodes_runs(path)
        if theirs is None or str(path) in v0:
            continue
        for run_id, fields in theirs.items():
            if fields["guid"] is not None:
                by_guid[fields["guid"]].add((str(path), run_id))
    expected = {guid: places for guid, places in by_guid.items() if len(places) > 1}
    found = {
        d.guid: {place for place in d.locations if place[0] not in v0}
        for d in catalogued.duplicates()
    }
    assert {g: found.get(g) for g in expected} == expected
    extracted = {str(p) for p in archive.extracted}
    shared = [d for d in catalogued.duplicates() if any(p in extracted for p, _ in d.locations)]
    assert len(shared) >= 5
    # Every copy is a copy (extract_runs_into_db rounds to 15 digits; the checksum too).
    assert {d.same_data for d in catalogued.duplicates()} == {True}
    checksummed = {(r.path, r.run_id) for r in catalogued.runs if r.data_checksum is not None}
    assert checksummed == {place for d in catalogued.duplicates() for place in d.locations}


def test_the_checksum_tells_different_data_apart(tmp_path: Path) -> None:
    """Two files with the same guid but one value changed: not the same data."""
    first = copy_database(EXAMPLE_DB, tmp_path / "a")
    second = copy_database(EXAMPLE_DB, tmp_path / "b")
    with qcsql.open_database(second) as db:
        run = db.load_by_id(3)
        table = run.table_name
        column = next(n for n, s in run.paramspecs.items() if s.paramtype == "numeric")
    with contextlib.closing(sqlite3.connect(second)) as conn, conn:
        changed = conn.execute(f'UPDATE "{table}" SET "{column}" = "{column}" + 1e-9 WHERE id = 5')
        assert changed.rowcount == 1
    catalog = build_catalog([first, second])
    same = {d.locations[0][1]: d.same_data for d in catalog.duplicates()}
    assert same[3] is False
    assert all(v for run_id, v in same.items() if run_id != 3)


def _rewritten(path: Path, run_id: int, change: str) -> None:
    """Change run ``run_id``'s results table in ``path`` (a copy of ours) as ``change``
    says, with plain SQL: what QCoDeS' copies never do, or do without changing the data."""
    with qcsql.open_database(path) as db:
        run = db.load_by_id(run_id)
        table = str(run.table_name)
        column = next(n for n, s in run.paramspecs.items() if s.paramtype == "numeric")
    q = qcsql.sqlite.files.quote_identifier
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        declared = [(row[1], row[2]) for row in conn.execute(f"PRAGMA table_info({q(table)})")]
        ids = [r[0] for r in conn.execute(f"SELECT id FROM {q(table)} ORDER BY id LIMIT 2")]
        first, second = ids
        value = conn.execute(f"SELECT {q(column)} FROM {q(table)} WHERE id = ?", (first,))
        (stored,) = value.fetchone()
        if change == "columns in another order":
            others = [(n, t) for n, t in declared if n != "id"][::-1]
            names = ", ".join(q(n) for n, _ in others)
            conn.execute(
                "CREATE TABLE reordered (id INTEGER PRIMARY KEY, "
                + ", ".join(f"{q(n)} {t}" for n, t in others)
                + ")"
            )
            conn.execute(
                f"INSERT INTO reordered (id, {names}) SELECT id, {names} FROM {q(table)} "
                "ORDER BY id"
            )
            conn.execute(f"DROP TABLE {q(table)}")
            conn.execute(f"ALTER TABLE reordered RENAME TO {q(table)}")
        elif change == "ids renumbered, rows in the same order":
            conn.execute(f"UPDATE {q(table)} SET id = id + 1000000")
        elif change in ("beyond the 15th digit", "at the 15th digit"):
            new = (
                float(np.nextafter(stored, np.inf))
                if change.startswith("beyond")
                else (stored * (1 + 1e-13) if stored else 1e-300)
            )
            conn.execute(f"UPDATE {q(table)} SET {q(column)} = ? WHERE id = ?", (new, first))
        elif change == "two rows swapped":
            rows = conn.execute(
                f"SELECT * FROM {q(table)} WHERE id IN (?, ?) ORDER BY id", (first, second)
            ).fetchall()
            assert rows[0][1:] != rows[1][1:]
            conn.execute(f"DELETE FROM {q(table)} WHERE id IN (?, ?)", (first, second))
            marks = ", ".join("?" * len(rows[0]))
            conn.execute(f"INSERT INTO {q(table)} VALUES ({marks})", (first, *rows[1][1:]))
            conn.execute(f"INSERT INTO {q(table)} VALUES ({marks})", (second, *rows[0][1:]))
        elif change == "a row deleted":
            conn.execute(f"DELETE FROM {q(table)} WHERE id = ?", (second,))
        else:
            raise AssertionError(change)


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ("columns in another order", True),
        ("ids renumbered, rows in the same order", True),
        ("beyond the 15th digit", True),
        ("at the 15th digit", False),
        ("two rows swapped", False),
        ("a row deleted", False),
    ],
)
def test_what_same_data_means(tmp_path: Path, change: str, same: bool) -> None:
    """Two copies of a run hold the same data when their results tables hold, under the
    same column names, the same values row by row in id order, numbers as QCoDeS reads
    them (15 significant digits); neither the columns' order nor the ids count."""
    first = copy_database(EXAMPLE_DB, tmp_path / "a")
    second = copy_database(EXAMPLE_DB, tmp_path / "b")
    _rewritten(second, 3, change)
    catalog = build_catalog([first, second])
    found = {d.locations[0][1]: d.same_data for d in catalog.duplicates()}
    assert found[3] is same
    assert all(v for run_id, v in found.items() if run_id != 3)
    assert not catalog.problems


def test_checksums_read_only_the_results_tables(
    tmp_path: Path, traced_statements: list[str]
) -> None:
    """The checksums of runs whose data are in their file's results tables (as the
    catalogue found them) read those tables and the rows of the schema that name them
    (one statement a file, for their content, see ``ByContent``), nothing else of the
    file: neither its runs again, nor a table's columns by a statement of their own.
    The second file is a copy of the first but for one run: its other tables are the
    first's byte for byte, and are not read again."""
    first = copy_database(EXAMPLE_DB, tmp_path / "a")
    second = copy_database(EXAMPLE_DB, tmp_path / "b")
    _rewritten(second, 3, "at the 15th digit")
    listed = build_catalog([first, second], checksums=False)
    traced_statements.clear()
    catalog = build_catalog([first, second])
    assert [r.data_checksum is not None for r in catalog.runs] == [True] * len(catalog.runs)
    listings = [s for s in traced_statements if "FROM runs LEFT OUTER JOIN" in s]
    assert len(listings) == 2  # one per file, by the scan
    assert [s for s in traced_statements if "table_info" in s] == ['PRAGMA table_info("runs")'] * 2
    schema = [s for s in traced_statements if s.startswith("SELECT name, rootpage, sql FROM")]
    assert len(schema) == 2
    hashed = [s for s in traced_statements if s.startswith("SELECT id, * FROM")]
    assert len(hashed) == len(catalog.runs) // 2 + 1
    assert [r.run_id for r in listed.runs] == [r.run_id for r in catalog.runs]


def test_tables_of_equal_content_are_read_once_and_get_the_checksums_read_alone(
    archive: ArchiveManifest, catalogued: qcsql.archive.Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checksums known by the content of a table (its schema text and the bytes of its
    b-tree leaves) are those of every table read by itself: the archive catalogued with
    nothing known by content gives the same checksums, reading more tables."""
    hashed = first_arguments_recorded(monkeypatch, qcsql.archive.checksum, "_read_table")
    assert build_catalog([archive.root]).runs == catalogued.runs
    read_knowing = len(hashed)

    class Forgetful(ByContent):
        def add(self, content: bytes, checksum: str) -> None:
            pass

    hashed.clear()
    monkeypatch.setattr(qcsql.archive.checksum, "ByContent", Forgetful)
    assert build_catalog([archive.root]).runs == catalogued.runs
    assert 0 < read_knowing < len(hashed)


def _one_blob_table(path: Path, blob: bytes) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute('CREATE TABLE "results-1-1" (id INTEGER PRIMARY KEY, x BLOB)')
        conn.execute('INSERT INTO "results-1-1" (x) VALUES (?)', (blob,))
    return path


def test_a_table_whose_cells_spill_into_overflow_pages_is_not_known_by_its_leaves(
    tmp_path: Path,
) -> None:
    """A value too large for its leaf page continues on overflow pages, which the leaf
    names by number: two tables whose leaves are the same bytes may still differ there,
    so their content is never taken from the leaves."""
    blob = bytes(range(256)) * 64  # 16 KiB: four pages' worth
    first = _one_blob_table(tmp_path / "a.db", blob)
    second = _one_blob_table(tmp_path / "b.db", blob[:-1] + b"\x00")
    known = ByContent()
    found = []
    for path in (first, second):
        connection = qcsql.sqlite.connection.ReadOnlyConnection(path)
        try:
            found.append(table_checksums(connection, [(1, "results-1-1")], known=known)[1])
            assert found[-1] == table_checksums(connection, [(1, "results-1-1")])[1]
        finally:
            connection.close()
    assert found[0] != found[1]
    assert known.checksums == {}


def test_checksums_are_known_by_content_only_if_no_commit_came_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table's content is keyed from its pages, then the table read for its checksum:
    the checksum is kept under that key only where the file did not change in between
    (a writer's commit), else it could be another content's."""
    path = copy_database(EXAMPLE_DB, tmp_path / "a")
    tables = [(1, "results-1-1"), (3, "results-1-3")]
    connection = qcsql.sqlite.connection.ReadOnlyConnection(path)
    try:
        known = ByContent()
        found = table_checksums(connection, tables, known=known)
        assert (
            set(known.checksums.values()) == set(found.values()) and len(set(found.values())) == 2
        )
        versions = iter(range(10))
        monkeypatch.setattr(qcsql.archive.checksum, "_file_version", lambda _: next(versions))
        known = ByContent()
        assert table_checksums(connection, tables, known=known)
        assert known.checksums == {}
    finally:
        connection.close()


def test_row_counts_of_a_rollback_journal_file_let_a_writer_commit_between_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results tables of a rollback-journal file are counted a statement each, sent
    together: between two of them no read lock of ours is held, so a writer commits
    without waiting (it would fail at once here, with no busy timeout)."""
    path = copy_database(LEGACY / "v6_qcodes-0.4.0.db", tmp_path / "db")
    assert path.read_bytes()[18] == 1  # rollback journal
    real = qcsql.archive.scan._count_statement
    commits: list[int] = []

    def writing_between(tables: Any) -> str:
        with contextlib.closing(sqlite3.connect(path, timeout=0)) as writer, writer:
            writer.execute("UPDATE experiments SET name = name")
        commits.append(len(tables))
        return real(tables)

    monkeypatch.setattr(qcsql.archive.scan, "_count_statement", writing_between)
    catalog = build_catalog([path], checksums=False)
    assert not catalog.problems
    assert commits == [1] * len(catalog.runs) and len(commits) > 2


def test_byte_identical_copies_are_read_once_for_their_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backups: the checksums of a file's byte-for-byte copies are those of the file, read
    once; a copy made by QCoDeS (other bytes, same data) is read itself, and agrees."""
    first = copy_database(EXAMPLE_DB, tmp_path / "a")
    backup = copy_database(EXAMPLE_DB, tmp_path / "b")
    extracted = tmp_path / "c" / "extracted.db"
    extracted.parent.mkdir()
    from qcodes.dataset import extract_runs_into_db

    extract_runs_into_db(str(copy_database(EXAMPLE_DB, tmp_path / "scratch")), str(extracted), 3)
    read: list[str] = []
    real_task = qcsql.archive.scan.checksum_task

    def recorded(path: str, run_id: None, *arguments: Any) -> Outcome:
        read.append(path)
        return real_task(path, run_id, *arguments)

    monkeypatch.setattr(qcsql.archive.scan, "checksum_task", recorded)
    catalog = build_catalog([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert sorted(read) == sorted([str(first), str(extracted)])
    with qcsql.open_database(first) as db:
        expected = {run.run_id: run_checksum(db, run) for run in db.runs()}
    by_place = {(r.path, r.run_id): r.data_checksum for r in catalog.runs}
    assert {run_id: by_place[str(backup), run_id] for run_id in expected} == expected
    assert {run_id: by_place[str(first), run_id] for run_id in expected} == expected
    assert by_place[str(extracted), 1] == expected[3]
    assert {d.same_data for d in catalog.duplicates()} == {True}


def test_the_catalogue_file_and_its_second_run(
    archive: ArchiveManifest,
    catalogued: qcsql.archive.Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "catalog.db"
    write_catalog(catalogued, target)
    again = read_catalog(target)
    assert again is not None
    assert (again.files, again.runs, again.problems) == (
        catalogued.files,
        catalogued.runs,
        catalogued.problems,
    )
    with contextlib.closing(sqlite3.connect(target)) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == len(catalogued.runs)
        assert conn.execute("SELECT count(*) FROM duplicates").fetchone()[0] == len(
            catalogued.duplicates()
        )
    opened = first_arguments_recorded(monkeypatch, qcsql.archive.scan, "catalog_database")
    stored = read_catalog(target)
    assert stored is not None and stored.stored_runs is not None
    unchanged = build_catalog([archive.root], stored)
    assert opened == []
    assert unchanged.reused_files == len(unchanged.files)
    # Nothing changed: the runs were not read back, the new catalogue shares them.
    assert stored.stored_runs is not None and unchanged.stored_runs is stored.stored_runs
    written = target.stat().st_mtime_ns
    os.utime(target, ns=(written - 10**9, written - 10**9))
    write_catalog(unchanged, target, stored)  # nothing differs: the file is left as it is
    assert target.stat().st_mtime_ns == written - 10**9
    assert unchanged.stored_runs is not None  # still not read
    os.utime(target, ns=(written, written))  # as it was read (a changed mtime is refused)
    assert unchanged.run_count() == len(catalogued.runs)
    assert unchanged.duplicate_counts() == catalogued.duplicate_counts()
    assert (unchanged.files, unchanged.runs, unchanged.problems) == (
        catalogued.files,
        catalogued.runs,
        catalogued.problems,
    )
    assert build_catalog([archive.root], again) == unchanged  # the same from runs in memory
    changed = archive.qcodes_files[0]
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    try:
        rebuilt = build_catalog([archive.root], again)
    finally:
        os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert opened == [changed]
    write_catalog(rebuilt, target, again)  # a file's stamp changed: written again
    assert target.stat().st_mtime_ns != written - 10**9
    assert read_catalog(target) is not None and read_catalog(target).files == rebuilt.files  # type: ignore[union-attr]


def test_stored_runs_are_counted_as_the_runs_themselves(
    catalogued: qcsql.archive.Catalog, tmp_path: Path
) -> None:
    """SQLite's counts of a stored catalogue's runs and duplicates (what ``qcsql catalog``
    prints for an unchanged archive, without reading the runs) are those of the runs:
    with copies whose data differ and copies without a checksum among them."""
    runs = list(catalogued.runs)
    copies: dict[str, list[int]] = defaultdict(list)
    for at, run in enumerate(runs):
        if run.data_checksum is not None and run.guid is not None:
            copies[run.guid].append(at)
    twice = next(c for c in copies.values() if len(c) == 2)
    thrice = next(c for c in copies.values() if len(c) >= 3)
    runs[twice[0]] = with_changes(runs[twice[0]], data_checksum="0" * 64)  # they differ now
    # Three copies, one not read, two differing: whether all are the same is unknown.
    runs[thrice[-1]] = with_changes(runs[thrice[-1]], data_checksum="1" * 64)
    runs[thrice[-2]] = with_changes(runs[thrice[-2]], data_checksum=None)
    changed = qcsql.archive.Catalog(catalogued.files, runs, catalogued.problems)
    counts = changed.duplicate_counts()
    assert counts.differing >= 1 and counts.lacking_checksums >= 1
    assert counts.guids == len(changed.duplicates())
    for catalog in (catalogued, changed, build_catalog([], checksums=False)):
        target = write_catalog(catalog, tmp_path / f"catalog-{id(catalog)}.db")
        stored = read_catalog(target)
        assert stored is not None
        assert stored.duplicate_counts() == catalog.duplicate_counts()
        assert stored.run_count() == len(catalog.runs)
        assert stored.stored_runs is not None  # counted, not read
        assert stored.runs == catalog.runs


def test_a_stored_catalogue_written_over_since_it_was_read_is_not_mixed_in(
    catalogued: qcsql.archive.Catalog, tmp_path: Path
) -> None:
    """A catalogue read back reads its runs later from the same file: if another
    catalogue was written over it meanwhile, asking for the runs is one clear error
    naming the file, never the runs of the other catalogue under these files."""
    target = write_catalog(catalogued, tmp_path / "catalog.db")
    stored = read_catalog(target)
    assert stored is not None
    write_catalog(qcsql.archive.Catalog(), target)
    with pytest.raises(DatabaseReadError, match="catalogue was replaced") as raised:
        _ = stored.runs
    assert str(target) in str(raised.value)
    assert isinstance(raised.value, QcsqlError)


def test_stored_runs_shared_by_threads_are_read_once(
    catalogued: qcsql.archive.Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalogue read back and shared by threads reads its runs once, whichever thread
    asks first, and every thread gets that one list."""
    import threading
    import time

    stored = read_catalog(write_catalog(catalogued, tmp_path / "catalog.db"))
    assert stored is not None and stored.stored_runs is not None
    store_class = type(stored.stored_runs)
    real_load = store_class.load
    loads: list[int] = []

    def slow_load(self: Any) -> list[Any]:
        loads.append(threading.get_ident())
        time.sleep(0.05)  # every thread asks while the first is still reading
        return real_load(self)

    monkeypatch.setattr(store_class, "load", slow_load)
    got: list[list[Any]] = []
    threads = [threading.Thread(target=lambda: got.append(stored.runs)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert len(got) == 8 and all(runs is got[0] for runs in got)
    assert got[0] == catalogued.runs


def test_an_unchanged_archive_is_catalogued_without_importing_the_database_readers(
    archive: ArchiveManifest, catalogued: qcsql.archive.Catalog, tmp_path: Path
) -> None:
    """``qcsql catalog`` of an archive in which nothing changed compares sizes and mtimes
    with its catalogue file and prints its counts: in a fresh process it imports neither
    SQLAlchemy nor numpy nor pydantic (a fifth of a second together, more than such a
    catalogue takes), nor reads a run back. A changed file does bring them in."""
    target = write_catalog(catalogued, tmp_path / "catalog.db")
    probe = (
        "import sys, io\n"
        "from qcsql.cli import main\n"
        "out = io.StringIO()\n"
        f"status = main(['catalog', {str(archive.root)!r}, '-o', {str(target)!r}, '--quiet'],"
        " out=out, err=sys.stderr)\n"
        "heavy = sorted(m for m in ('sqlalchemy', 'numpy', 'pydantic') if m in sys.modules)\n"
        "print(status, heavy, out.getvalue().strip())\n"
    )

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        return done.stdout

    printed = run()
    assert printed.startswith("0 [] ")
    files = len(catalogued.files)
    assert f"{len(catalogued.runs)} runs" in printed
    assert f"({files} files unchanged since the last catalogue)" in printed
    assert f"{catalogued.duplicate_counts().guids} guids in several places" in printed
    changed = archive.qcodes_files[0]
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    try:
        printed = run()
    finally:
        os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert printed.startswith("0 ['numpy', 'pydantic', 'sqlalchemy'] ")
    assert f"({files - 1} files unchanged since the last catalogue)" in printed


def test_a_catalogue_is_never_written_over_another_file(tmp_path: Path) -> None:
    database = copy_database(EXAMPLE_DB, tmp_path / "db")
    plain = plain_sqlite(tmp_path / "plain.db")
    before = {p: p.read_bytes() for p in (database, plain)}
    for target in (database, plain):
        err = io.StringIO()
        status = main(["catalog", str(LEGACY), "-o", str(target)], out=io.StringIO(), err=err)
        assert status == 1 and "is not a qcsql catalogue" in err.getvalue()
    assert {p: p.read_bytes() for p in before} == before


def test_catalog_cli_json_lines(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["catalog", str(LEGACY), "--json"], out=out, err=io.StringIO()) == 0
    import orjson

    records = [orjson.loads(line) for line in out.getvalue().splitlines()]
    catalog = build_catalog([LEGACY])
    assert records == [orjson.loads(orjson.dumps(r)) for r in catalog_records(catalog)]
    assert {r["type"] for r in records} >= {"file", "run"}
    assert not list(tmp_path.iterdir())  # --json alone writes no catalogue


def test_discovery_lists_each_file_once(tmp_path: Path) -> None:
    database = copy_database(EXAMPLE_DB, tmp_path / "data")
    (tmp_path / "data" / "again.db").symlink_to(database)  # a second name: listed once
    (tmp_path / "link_to_data").symlink_to(tmp_path / "data")  # a second way in: walked once
    (tmp_path / "data" / "x.db-journal").write_bytes(b"")
    found = discover([tmp_path])
    assert [p.name for p in found.files] == ["example.db"]
    assert found.problems == []


def _export(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["export", *argv, "--quiet"], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.nc"))}


def test_export_with_two_jobs_writes_what_a_serial_export_writes(
    archive: ArchiveManifest, tmp_path: Path
) -> None:
    inputs = [str(p) for p in sorted(archive.extracted)] + [str(archive.root / "lab0")]
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    before = _tree_state(archive.root)
    assert _export([*inputs, "--all", "-o", str(serial)])[0] == 0
    status, out, err = _export([*inputs, "--all", "-o", str(parallel), "--jobs", "2"])
    assert status == 0, err
    assert _tree_state(archive.root) == before
    written = _files(serial)
    assert len(written) > 50
    assert _files(parallel) == written
    # and each database's files are what the single-database export writes
    one = tmp_path / "one"
    assert _export([str(EXAMPLE_DB), "--all", "-o", str(one)])[0] == 0
    assert _export([str(EXAMPLE_DB), "--all", "-o", str(tmp_path / "one2"), "--jobs", "2"])[0] == 0
    assert _files(one) == _files(tmp_path / "one2")


def test_export_on_a_local_dask_cluster_writes_what_a_serial_export_writes(
    tmp_path: Path,
) -> None:
    pytest.importorskip("dask.distributed")
    serial, on_dask = tmp_path / "serial", tmp_path / "dask"
    inputs = [str(EXAMPLE_DB), str(LEGACY)]
    assert _export([*inputs, "--all", "-o", str(serial)])[0] == 0
    status, _, err = _export(
        [*inputs, "--all", "-o", str(on_dask), "--dask", "local", "--jobs", "2"]
    )
    assert status == 0, err
    assert _files(on_dask) == _files(serial) and len(_files(serial)) > 20


def test_a_damaged_database_is_reported_and_every_other_run_exported(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    good = copy_database(EXAMPLE_DB, folder / "good")
    bad_blob = copy_database(LEGACY / "v9_qcodes-0.44.1.db", folder / "bad_blob")
    with qcsql.open_database(bad_blob) as db:
        victim = next(
            r
            for r in db.runs()
            if r.number_of_results and "array" in {s.paramtype for s in r.paramspecs.values()}
        )
        table = victim.table_name
        column = next(n for n, s in victim.paramspecs.items() if s.paramtype == "array")
    with contextlib.closing(sqlite3.connect(bad_blob)) as conn, conn:
        conn.execute(f'UPDATE "{table}" SET "{column}" = X\'93\'')
    truncated = copy_database(LEGACY / "v8_qcodes-0.11.0.db", folder / "truncated")
    truncated.write_bytes(truncated.read_bytes()[:300])
    status, out, err = _export([str(folder), "--all", "-o", str(tmp_path / "out"), "--jobs", "2"])
    assert status == 1
    lines = err.splitlines()
    assert any(str(truncated) in line for line in lines)
    assert any(str(bad_blob) in line and f"run {victim.run_id}" in line for line in lines)
    assert all(line.startswith("qcsql export: ") for line in lines)
    with qcsql.open_database(good) as db:
        good_runs = len(db.runs())
    with qcsql.open_database(bad_blob) as db:
        other_runs = len(db.runs()) - 1
    assert out.count(f"{good}, run ") == good_runs
    assert out.count(f"{bad_blob}, run ") == other_runs


def _fails_on_run_2(database: str, run_id: int, folder: str) -> Outcome:
    if run_id == 2:
        raise RuntimeError("a bug in one task")
    return export_one(database, run_id, folder)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_task_that_dies_is_one_failure(tmp_path: Path, jobs: int) -> None:
    tasks = [(str(EXAMPLE_DB), run_id, str(tmp_path)) for run_id in (1, 2, 3)]
    outcomes = {o.run_id: o for o in run_tasks(_fails_on_run_2, tasks, jobs=jobs)}
    assert outcomes[1].ok and outcomes[3].ok
    assert not outcomes[2].ok and outcomes[2].error_type == "RuntimeError"
    assert str(EXAMPLE_DB) in (outcomes[2].message or "") and "run 2" in (outcomes[2].message or "")


def test_export_tasks_open_a_database_once_per_chunk_and_write_what_export_one_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_exports([EXAMPLE_DB, LEGACY / "v9_qcodes-0.44.1.db"], tmp_path / "chunked")
    opened: list[str] = []
    real_open = qcsql.open_database

    def counted(path: str | Path) -> qcsql.Database:
        opened.append(str(path))
        return real_open(path)

    monkeypatch.setattr(qcsql.archive.fanout, "open_database", counted)
    outcomes = list(export_tasks(plan.tasks))
    assert [(o.database, o.run_id) for o in outcomes] == [
        (t.database, t.run_id) for t in plan.tasks
    ]
    assert all(o.ok for o in outcomes), [o.message for o in outcomes if not o.ok]
    size = max(1, min(CHUNK_RUNS, len(plan.tasks) // 4))
    per_database: dict[str, int] = defaultdict(int)
    for task in plan.tasks:
        per_database[task.database] += 1
    assert len(opened) == sum(-(-n // size) for n in per_database.values()) < len(plan.tasks)
    one_by_one = tmp_path / "one_by_one"
    for task in plan.tasks:
        folder = one_by_one / Path(task.folder).relative_to(tmp_path / "chunked")
        assert export_one(task.database, task.run_id, str(folder)).ok
    assert _files(tmp_path / "chunked") == _files(one_by_one)


def test_an_export_chunk_that_dies_is_a_failure_of_each_of_its_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_exports([EXAMPLE_DB], tmp_path)
    real_chunk = qcsql.archive.fanout.export_chunk

    def dies_with_run_2(
        database: str, first: int, run_ids: tuple[int, ...], folder: str
    ) -> Outcome:
        if 2 in run_ids:
            raise RuntimeError("worker lost")
        return real_chunk(database, first, run_ids, folder)

    monkeypatch.setattr(qcsql.archive.fanout, "export_chunk", dies_with_run_2)
    outcomes = {o.run_id: o for o in export_tasks(plan.tasks)}
    assert set(outcomes) == {t.run_id for t in plan.tasks}
    failed = {run_id for run_id, o in outcomes.items() if not o.ok}
    assert 2 in failed and len(failed) < len(outcomes)
    for run_id in failed:
        message = outcomes[run_id].message or ""
        assert f"{EXAMPLE_DB}, run {run_id}:" in message and "worker lost" in message
        assert outcomes[run_id].error_type == "RuntimeError"


def test_audit_of_several_databases(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = main(["audit", str(LEGACY), "--jobs", "2", "--json"], out=out, err=err)
    import orjson

    reports = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(r["path"] for r in reports) == sorted(str(p) for p in LEGACY.glob("*.db"))
    unhealthy = [r for r in reports if not r["healthy"]]
    assert status == (1 if unhealthy else 0)
    assert len(err.getvalue().splitlines()) == len(unhealthy)


def test_audit_archive_opens_each_database_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files of a folder are opened by their audit tasks alone; one that is not a QCoDeS
    database is left out, unless named, which is a failure, as before."""
    folder = tmp_path / "lab"
    good = copy_database(EXAMPLE_DB, folder / "a")
    old = copy_database(LEGACY / "v8_qcodes-0.11.0.db", folder / "b")
    notes = plain_sqlite(folder / "notes.db")
    opened: list[str] = []
    real_open = qcsql.open_database

    def counted(path: str | Path) -> qcsql.Database:
        opened.append(str(path))
        return real_open(path)

    monkeypatch.setattr(qcsql.audit, "open_database", counted)
    monkeypatch.setattr(qcsql.archive.fanout, "open_database", counted)
    outcomes = list(qcsql.audit.audit_archive([folder]))
    assert sorted(o.database for o in outcomes) == sorted([str(good), str(old)])
    assert all(o.ok and o.payload.runs_checked > 0 for o in outcomes)
    assert sorted(opened) == sorted([str(good), str(old), str(notes)])
    expected = {o.database: o.payload for o in outcomes}
    assert expected[str(good)] == qcsql.audit.audit(good)
    named = list(qcsql.audit.audit_archive([notes]))
    assert [(o.ok, o.error_type) for o in named] == [(False, "NotQCoDeSError")]
    assert str(notes) in (named[0].message or "")


def _scans_recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the catalogue opens from here on, in order."""
    opened: list[str] = []
    real = qcsql.archive.scan.scan_task

    def recorded(path: str, run_id: None = None) -> Outcome:
        opened.append(path)
        return real(path, run_id)

    monkeypatch.setattr(qcsql.archive.scan, "scan_task", recorded)
    return opened


def test_byte_identical_files_are_scanned_once_and_catalogued_as_each_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backups: of files with the same bytes (and -wal) one is opened, the others get its
    entries under their own names and stamps, exactly what opening each gives; a damaged
    file's copies are opened each (their problems name them), as is a file that differs."""
    wal = [copy_database(EXAMPLE_DB, tmp_path / f"wal{i}") for i in range(3)]
    old = [
        copy_database(LEGACY / "v2_qcodes-0.2.1-upgraded-from-v0.db", tmp_path / f"v2{i}")
        for i in range(2)
    ]
    damaged = []
    for index in range(2):
        target = copy_database(LEGACY / "v6_qcodes-0.4.0.db", tmp_path / f"bad{index}")
        with target.open("r+b") as file:
            file.seek(2 * 1024)  # into the schema's page: SQLite cannot read the file
            file.write(b"\xff" * 512)
        damaged.append(target)
    other = copy_database(EXAMPLE_DB, tmp_path / "other")
    _rewritten(other, 3, "at the 15th digit")  # same size, other bytes
    opened = _scans_recorded(monkeypatch)
    catalog = build_catalog([tmp_path], checksums=False)
    assert sorted(opened) == sorted(map(str, [wal[0], old[0], *damaged, other]))
    expected = [catalog_database(path) for path in sorted([*wal, *old, *damaged, other])]
    assert catalog.files == [entry for entry, _, _ in expected]
    assert catalog.runs == [run for _, runs, _ in expected for run in runs]
    assert catalog.problems == [p for _, _, problems in expected for p in problems]
    assert {p.path for p in catalog.problems} == set(map(str, damaged))
    with_checksums = build_catalog([tmp_path])
    same = {(d.guid, d.same_data) for d in with_checksums.duplicates()}
    assert len({guid for guid, _ in same}) == len(same)  # one answer a guid
    assert {flag for _, flag in same} == {True, False}


def test_a_catalogue_read_by_two_processes_is_the_serial_one(
    archive: ArchiveManifest, catalogued: qcsql.archive.Catalog
) -> None:
    parallel = build_catalog([archive.root], jobs=2)
    assert (parallel.files, parallel.runs, parallel.problems) == (
        catalogued.files,
        catalogued.runs,
        catalogued.problems,
    )


def test_only_reading_statements_reach_the_archive(
    archive: ArchiveManifest,
    traced_statements: list[str],
    tmp_path: Path,
) -> None:
    """The catalogue's bulk reads, its checksums, and exports in this process send only
    reading statements to the files (the trace of tests/conftest.py)."""
    catalog = build_catalog([archive.root])
    assert any(r.data_checksum for r in catalog.runs)
    list(run_tasks(export_one, [(str(EXAMPLE_DB), 3, str(tmp_path))]))
    statements = set(traced_statements)
    assert any("count(*)" in s for s in statements) and any("WHERE id >" in s for s in statements)
    assert [s for s in statements if not READING_STATEMENT.match(s)] == []


def test_catalog_cli_reuses_its_catalogue(tmp_path: Path) -> None:
    target = tmp_path / "catalog.db"
    outputs = []
    for _ in range(2):
        out, err = io.StringIO(), io.StringIO()
        assert main(["catalog", str(LEGACY), "-o", str(target)], out=out, err=err) == 0
        assert err.getvalue() == ""
        outputs.append(out.getvalue())
    stored = read_catalog(target)
    assert stored is not None
    files = len(stored.files)
    assert files > len(list(LEGACY.glob("*.db")))  # the fixtures' scripts are files too
    assert "(0 files unchanged since the last catalogue)" in outputs[0]
    assert f"({files} files unchanged since the last catalogue)" in outputs[1]
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.db"]  # no partial, no journal


def test_checksums_of_a_file_round_together_yet_equal_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksums of several runs of a file, their numbers rounded together across
    windows and runs, are those computed run by run with every window rounded at once;
    windows with text after windows of numbers alone keep their order in the digests."""
    from qcodes.dataset import Measurement

    path = tmp_path / "mixed.db"
    experiment = new_database(path, "checksums")
    x, y, label = parameters("x", "y", "label")
    numbers = Measurement(exp=experiment, name="numbers")
    numbers.register_parameter(x)
    numbers.register_parameter(y, setpoints=(x,))
    with numbers.run() as saver:
        for step in range(40):
            saver.add_result((x, step / 7), (y, (step * 0.1 + 0.2) ** 0.5))
    mixed = Measurement(exp=experiment, name="numbers, then text")
    mixed.register_parameter(x)
    mixed.register_parameter(y, setpoints=(x,))
    mixed.register_parameter(label, setpoints=(x,), paramtype="text")
    with mixed.run() as saver:
        for step in range(30):
            saver.add_result((x, step / 3), (y, step * 0.1 + 0.2))
        for step in range(30):
            saver.add_result((x, step / 11), (label, f"point {step}"))
    experiment.conn.close()
    monkeypatch.setattr(qcsql.archive.checksum, "WINDOW", 8)  # numbers-only and text windows
    with qcsql.open_database(path) as db:
        runs = db.runs()
        together = run_checksums(db, runs)
        monkeypatch.setattr(qcsql.archive.checksum, "DEFERRED_VALUES", 1)  # at once, as before
        one_by_one = {run.run_id: run_checksum(db, run) for run in runs}
        monkeypatch.setattr(qcsql.archive.checksum, "DEFERRED_VALUES", 50)  # flushed midway
        midway = run_checksums(db, runs)
    assert together == one_by_one == midway
    assert len(set(one_by_one.values())) == 2


@pytest.fixture(scope="module")
def large_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rollback-journal file with one run of two trees (rows of one tree have the
    other's column NULL), integers and floats, large enough to be hashed from its pages."""
    path = tmp_path_factory.mktemp("large") / "large.db"
    experiment = new_database(path, "pages")
    x, y, z = parameters("x", "y", "z")
    measurement = sweep(experiment, "two trees", x, y, z)
    with measurement.run() as saver:
        for step in range(1500):
            saver.add_result((x, step), (y, (step * 0.1 + 0.2) ** 0.5))
            saver.add_result((x, step / 7), (z, -step))
    experiment.conn.execute("PRAGMA journal_mode = DELETE")
    experiment.conn.close()
    return path


@pytest.mark.parametrize("change", ["none", "a text value", "a row of NULLs", "a blob"])
def test_checksums_from_pages_are_those_read_through_sqlite(
    large_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A large table of numbers is hashed from its pages: the same checksum as its rows
    read through SQLite, windows and all; a table the page reader would read otherwise
    than SQLite (text, which it reads as the number it spells; a row of NULLs, which it
    skips; a blob) is read through SQLite."""
    path = copy_database(large_run, tmp_path / "copy")
    with qcsql.open_database(path) as db:
        (run,) = db.runs()
        table = str(run.table_name)
    q = qcsql.sqlite.files.quote_identifier
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        if change == "a text value":
            conn.execute(f"UPDATE {q(table)} SET y = 'nan' WHERE id = 1001")
        elif change == "a row of NULLs":
            conn.execute(f"INSERT INTO {q(table)} (id) VALUES (NULL)")
        elif change == "a blob":
            conn.execute(f"UPDATE {q(table)} SET z = x'00' WHERE id = 2")
    assert path.read_bytes()[18] == 1  # rollback journal: its pages can be read
    decoded: list[int] = []
    real = qcsql.archive.checksum.read_numeric_window

    def spy(*arguments: Any, **options: Any) -> Any:
        window = real(*arguments, **options)
        decoded.append(0 if window is None else window.rows)
        return window

    monkeypatch.setattr(qcsql.archive.checksum, "read_numeric_window", spy)
    monkeypatch.setattr(qcsql.archive.checksum, "WINDOW", 700)  # windows across leaf pages
    with qcsql.open_database(path) as db:
        (run,) = db.runs()
        from_pages = run_checksums(db, [run])
        monkeypatch.setattr(qcsql.archive.checksum, "PAGES_FROM_ROWS", 10**9)
        through_sqlite = run_checksums(db, [run])
    assert from_pages == through_sqlite
    rows = 3001 if change == "a row of NULLs" else 3000
    if change == "none":
        assert sum(decoded) == rows
    else:
        assert 0 in decoded or sum(decoded) < rows  # it gave up
    with qcsql.open_database(large_run) as db:
        (run,) = db.runs()
        assert (run_checksums(db, [run]) == from_pages) is (change == "none")


def test_a_damaged_results_table_is_named_though_tables_are_counted_together(
    tmp_path: Path,
) -> None:
    """Row counts are read a few tables a statement; where one of them is damaged, the
    file's problem still names that table (and its file), as a count per table did."""
    from qcodes.dataset import Measurement

    path = tmp_path / "three.db"
    experiment = new_database(path, "counts")
    x, y = parameters("x", "y")
    for name in ("first", "second", "third"):
        measurement = Measurement(exp=experiment, name=name)
        measurement.register_parameter(x)
        measurement.register_parameter(y, setpoints=(x,))
        with measurement.run() as saver:
            for step in range(2000):  # several pages a table
                saver.add_result((x, step), (y, step * 0.5))
    experiment.conn.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        table, root = conn.execute(
            "SELECT name, rootpage FROM sqlite_master WHERE type = 'table' AND name IN "
            "(SELECT result_table_name FROM runs WHERE name = 'second')"
        ).fetchone()
    with path.open("r+b") as file:  # the table's root page is no b-tree page any more
        file.seek((root - 1) * page_size)
        file.write(b"\x63" * 8)
    catalog = build_catalog([path], checksums=False)
    assert [(p.path, p.kind) for p in catalog.problems] == [(str(path), "corrupt")]
    assert catalog.problems[0].message.startswith(f"{qcsql.Where(path, None, table)}: ")


@pytest.mark.parametrize("given", ["folder", "files"])
def test_a_copy_with_a_journal_or_shm_beside_it_is_opened_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """A rollback journal beside a file can change what SQLite reads of that file alone
    (a hot journal), and a ``-shm`` beside a file and its ``-wal`` says a writer may be
    changing them: same bytes do not make such a file another's copy. The same whether
    the walk listed the folder or was given the files."""
    source = LEGACY / "v2_qcodes-0.2.1-upgraded-from-v0.db"
    copies = [copy_database(source, tmp_path / f"copy{i}") for i in range(6)]
    side_file(copies[2], "-journal").touch()
    for at in (3, 4, 5):
        side_file(copies[at], "-wal").touch()  # a rollback file ignores it; its size counts
    side_file(copies[4], "-shm").touch()
    opened = _scans_recorded(monkeypatch)
    build_catalog([tmp_path] if given == "folder" else copies, checksums=False)
    assert sorted(opened) == sorted(map(str, [copies[0], copies[2], copies[3], copies[4]]))


def test_files_are_grouped_by_every_byte_of_the_file_and_its_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``same_bytes`` compares chunk by chunk (small chunks here, so files span many):
    files equal but for their last byte, or for their -wal, or with a -wal the other
    lacks, are told apart; equal ones are grouped, in the order given."""
    monkeypatch.setattr(qcsql.archive.copies, "LEAST_CHUNK", 64)
    monkeypatch.setattr(qcsql.archive.copies, "FILE_CHUNK", 64)
    payload = bytes(range(256)) * 40

    def write(name: str, data: bytes, wal: bytes | None = None) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        if wal is not None:
            side_file(path, "-wal").write_bytes(wal)
        return path

    a = write("a.db", payload)
    b = write("b.db", payload)
    last = write("last.db", payload[:-1] + b"\x00")
    first_of_wal = write("w1.db", payload, wal=b"frames" * 50)
    same_wal = write("w2.db", payload, wal=b"frames" * 50)
    other_wal = write("w3.db", payload, wal=b"frameS" * 50)
    missing = tmp_path / "gone.db"
    files = [a, last, first_of_wal, b, missing, same_wal, other_wal]
    assert qcsql.archive.copies.same_bytes(files) == [
        [a, b],
        [last],
        [first_of_wal, same_wal],
        [missing],
        [other_wal],
    ]


def test_checksums_take_integers_as_their_floats_and_never_text_for_a_number(
    tmp_path: Path,
) -> None:
    """Whichever way a window is read (numbers alone, numbers and NULLs, text among them),
    an integer hashes as the float it equals, and text never as the number it spells."""
    path = tmp_path / "plain.db"
    tables = {
        "floats": [(1.0, 2.5), (3.0, 4.25)],
        "integers": [(1, 2.5), (3, 4.25)],
        "text": [("1", 2.5), (3, 4.25)],
        "nulls": [(None, 2.5), (3, 4.25)],
        "nulls_again": [(None, 2.5), (3.0, 4.25)],
    }
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for name, rows in tables.items():
            conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, x, y)")
            conn.executemany(f"INSERT INTO {name} (x, y) VALUES (?, ?)", rows)
    connection = qcsql.sqlite.connection.ReadOnlyConnection(path)
    try:
        found = qcsql.archive.checksum.table_checksums(connection, list(enumerate(tables, start=1)))
    finally:
        connection.close()
    floats, integers, text, nulls, nulls_again = (found[at] for at in range(1, 6))
    assert floats == integers
    assert text not in (floats, nulls)
    assert nulls == nulls_again != floats


def test_checksums_added_to_a_previous_catalogue_leave_its_entries_as_they_were(
    archive: ArchiveManifest, catalogued: qcsql.archive.Catalog, tmp_path: Path
) -> None:
    """Entries taken over from the previous catalogue belong to the caller: the checksums
    a new catalogue adds are in new entries, the previous ones unchanged; and the result
    is the catalogue built from nothing."""
    previous = build_catalog([archive.root], checksums=False)
    before = [run.data_checksum for run in previous.runs]
    assert set(before) == {None}
    again = build_catalog([archive.root], previous)
    assert [run.data_checksum for run in previous.runs] == before
    assert again.runs == catalogued.runs
    assert any(run.data_checksum is not None for run in again.runs)
    # The same from that catalogue read back from its file: nothing changed in the
    # archive, yet its checksums are missing, so they are computed.
    stored = read_catalog(write_catalog(previous, tmp_path / "catalog.db"))
    assert stored is not None and stored.duplicate_counts().lacking_checksums > 0
    assert build_catalog([archive.root], stored).runs == catalogued.runs
