"""The catalogue of an archive: every run of every QCoDeS database under some folders.

:func:`build_catalog` walks the given paths (:mod:`qcsql.archive.discover`), reads each
candidate file (:mod:`qcsql.archive.scan`) and records one
:class:`~qcsql.archive.entries.RunEntry` per run, one
:class:`~qcsql.archive.entries.FileEntry` per candidate file and one
:class:`~qcsql.archive.discover.Problem` per thing that is not a readable QCoDeS
database. A previous catalogue makes the next one cheap: a file whose size and mtime
(and those of its ``-wal``) are unchanged is not opened again, its entries are reused;
an archive in which nothing changed is not even read for its database readers, whose
import (:mod:`qcsql.archive.scan`) costs a fresh process more than such a catalogue.

Duplicates (one guid in several places, as ``extract_runs_into_db`` leaves them) are
what the runs' guids say; whether the copies hold the same data is a checksum of the
data (:func:`qcsql.archive.checksum.run_checksum`), computed only for the runs whose
guid occurs more than once, and kept as long as their file is unchanged. Byte-for-byte
copies of a file (:mod:`qcsql.archive.copies`) are read once.

Reading files and computing checksums are fan-out tasks (:mod:`qcsql.archive.fanout`):
``jobs`` local processes or a Dask client read the files side by side, and the
catalogue is the same as a serial one (entries in walk order).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qcsql.archive.copies import byte_groups
from qcsql.archive.discover import Discovery, Problem, discover
from qcsql.archive.entries import (
    Catalog,
    FileEntry,
    RunEntry,
    Stamp,
    stamp_of,
    with_changes,
)

if TYPE_CHECKING:
    from dask.distributed import Client

    from qcsql.archive.checksum import ByContent

__all__ = ["Progress", "build_catalog"]

Scanned = tuple["FileEntry | None", list["RunEntry"], list[Problem]]
Progress = Callable[[int, int, str], None]


def build_catalog(
    paths: Sequence[str | Path],
    previous: Catalog | None = None,
    *,
    exclude: Iterable[Path] = (),
    progress: Progress | None = None,
    jobs: int = 1,
    client: Client | None = None,
    checksums: bool = True,
) -> Catalog:
    """The catalogue of everything under ``paths``; files unchanged since ``previous``
    (same size and mtime, and the same of their ``-wal``) are not opened again, and
    where nothing changed at all the new catalogue shares ``previous``'s entries (its
    runs unread where they are still in its file, see :attr:`Catalog.stored_runs`).
    ``checksums=False`` leaves out the checksums of duplicated runs' data (their cost
    grows with the data of every duplicated run; the rest only with the runs).
    ``progress(files done, files, path)`` is called after each file. Files are read in
    ``jobs`` local processes, or on the workers of a ``dask.distributed`` ``client``
    (see :mod:`qcsql.archive.fanout`)."""
    found = discover(paths, exclude)
    # As the walk found the files: the files read below are stamped again as they are read.
    stamps = {
        key: stamp_of(found.stats[key], found.stats.get(key + "-wal"))
        for key in map(str, found.files)
    }
    unchanged = _unchanged(previous, found, stamps, checksums)
    if unchanged is not None:
        return unchanged
    scanned: dict[str, Scanned] = {}
    old_files = {f.path: f for f in previous.files} if previous is not None else {}
    old_runs: dict[str, list[RunEntry]] = defaultdict(list)
    if previous is not None:
        for run in previous.runs:
            old_runs[run.path].append(run)
    old_problems = _problems_by_file(previous)
    reused = 0
    for key, stamp in stamps.items():
        old = old_files.get(key)
        if old is not None and old.stamp == stamp:
            scanned[key] = (old, old_runs[key], old_problems[key])
            reused += 1
    # Byte-for-byte copies of a file (backups) are read once: the first of each group is
    # scanned, the others get its entries under their own names (see _as_copy).
    labels: dict[str, str] = {}
    copies = byte_groups(
        [(key, stamp[0], stamp[2]) for key, stamp in stamps.items() if key not in scanned],
        labels,
        found.stats,
    )
    done = len(found.files) - sum(1 + len(others) for others in copies.values())

    def scan(paths: list[str]) -> Iterator[str]:
        nonlocal done
        if not paths:
            return
        # The database readers are imported only now that some file must be read.
        from qcsql.archive.fanout import run_tasks
        from qcsql.archive.scan import scan_task

        for outcome in run_tasks(scan_task, [(p, None) for p in paths], jobs=jobs, client=client):
            scanned[outcome.database] = (
                outcome.payload
                if outcome.ok
                else (None, [], [Problem(outcome.database, "unreadable", str(outcome.message))])
            )
            done += 1
            if progress is not None:
                progress(done, len(found.files), outcome.database)
            yield outcome.database

    again: list[str] = []
    for first in scan(list(copies)):
        for copy in copies[first]:
            copied = _as_copy(scanned[first], stamps[first], copy, stamps[copy])
            if copied is None:
                again.append(copy)  # read it itself
                continue
            scanned[copy] = copied
            done += 1
            if progress is not None:
                progress(done, len(found.files), copy)
    for _ in scan(again):
        pass
    catalog = Catalog(problems=list(found.problems), reused_files=reused)
    for path in found.files:  # in walk order, whatever order the tasks finished in
        entry, runs, problems = scanned[str(path)]
        if entry is not None:
            catalog.files.append(entry)
        catalog.runs.extend(runs)
        catalog.problems.extend(problems)
    if checksums:
        _add_checksums(catalog, jobs, client, labels, found.stats)
    return catalog


def _unchanged(
    previous: Catalog | None, found: Discovery, stamps: dict[str, Stamp], checksums: bool
) -> Catalog | None:
    """The catalogue of an archive in which nothing changed since ``previous``: the same
    files in the same walk order with the same stamps, and no checksum left to compute.
    It is what the full path below would build from ``previous`` (its entries, its
    problems regrouped behind the walk's), found without reading its runs: where they
    are still stored (:attr:`Catalog.stored_runs`), the new catalogue shares them."""
    if previous is None or [entry.path for entry in previous.files] != list(stamps):
        return None  # ``stamps`` holds every file found, in walk order
    if any(stamps[entry.path] != entry.stamp for entry in previous.files):
        return None
    if checksums and previous.duplicate_counts().lacking_checksums:
        return None
    old_problems = _problems_by_file(previous)
    problems = list(found.problems)
    for entry in previous.files:
        problems.extend(old_problems[entry.path])
    stored = previous.stored_runs
    return Catalog(
        list(previous.files),
        None if stored is not None else list(previous.runs),
        problems,
        reused_files=len(previous.files),
        stored_runs=stored,
    )


def _problems_by_file(previous: Catalog | None) -> dict[str, list[Problem]]:
    """The problems of ``previous`` by the path they name: those of a file unchanged since
    go with its entries into the next catalogue."""
    by_path: dict[str, list[Problem]] = defaultdict(list)
    for problem in previous.problems if previous is not None else ():
        by_path[problem.path].append(problem)
    return by_path


def _as_copy(scanned: Scanned, stamp: Stamp, copy: str, copy_stamp: Stamp) -> Scanned | None:
    """The catalogue entries of ``copy``, a byte-for-byte copy of the file ``scanned``
    (its stamp when it was hashed ``stamp``): those of the file under the copy's name and
    stamp. None where they could depend on more than the bytes: a file with problems
    (their messages name it), with runs whose data live in other files (found relative
    to its folder), or that changed between its hashing and its reading."""
    entry, runs, problems = scanned
    if entry is None or entry.kind != "qcodes" or problems or entry.stamp != stamp:
        return None
    if any(run.data_location not in ("table", "nowhere") for run in runs):
        return None
    size, mtime_ns, wal_size, wal_mtime_ns = copy_stamp
    copied = with_changes(
        entry,
        path=copy,
        size=size,
        mtime_ns=mtime_ns,
        wal_size=wal_size,
        wal_mtime_ns=wal_mtime_ns,
    )
    return copied, [with_changes(run, path=copy) for run in runs], []


def _add_checksums(
    catalog: Catalog,
    jobs: int,
    client: Client | None,
    labels: dict[str, str],
    side_files: Container[str],
) -> None:
    """Checksums of the data of every run whose guid occurs more than once, where the
    catalogue does not have one yet. Files that are byte-for-byte copies of each other
    (:func:`_identical_files`) are read once: the checksums of one are the others'.
    Entries get their checksums in copies (:func:`~qcsql.archive.entries.with_changes`): those taken over from a
    previous catalogue are the caller's."""
    counts: dict[str, int] = defaultdict(int)
    for run in catalog.runs:
        if run.guid is not None:
            counts[run.guid] += 1
    wanted: dict[str, dict[int, int]] = defaultdict(dict)  # path -> run_id -> index
    for index, run in enumerate(catalog.runs):
        if run.guid is not None and counts[run.guid] > 1 and run.data_checksum is None:
            wanted[run.path][run.run_id] = index
    if not wanted:
        return
    from qcsql.archive.checksum import ByContent  # the database readers: see scan()

    copies = _identical_files(catalog.files, wanted, labels, side_files)
    read = [path for path in wanted if path in copies]
    known = ByContent()  # this catalogue's checksums by the tables' content
    leftover = _read_checksums(catalog, wanted, read, copies, jobs, client, known)
    # Copies whose original could not be read are read themselves (their problems are theirs).
    _read_checksums(catalog, wanted, leftover, {}, jobs, client, known)


def _read_checksums(
    catalog: Catalog,
    wanted: dict[str, dict[int, int]],
    paths: list[str],
    copies: dict[str, list[str]],
    jobs: int,
    client: Client | None,
    known: ByContent,
) -> list[str]:
    """Checksum tasks for ``paths``, each result given to the file and to its byte-for-byte
    ``copies`` too; returns the copies that did not get every checksum they want.
    ``known`` goes to every task (:func:`~qcsql.archive.scan.checksum_task`)."""
    if not paths:
        return []
    from qcsql.archive.fanout import run_tasks  # the database readers: see scan()
    from qcsql.archive.scan import checksum_task

    tasks = []
    for path in paths:
        run_ids = set(wanted[path]).union(*(wanted[copy] for copy in copies.get(path, ())))
        # The same run_id in a byte-for-byte copy is the same run in the same table.
        tables: dict[int, tuple[int, str, int | None]] = {}
        for copy in (path, *copies.get(path, ())):
            for run_id, at in wanted[copy].items():
                run = catalog.runs[at]
                if run.data_location == "table" and run.data_table is not None:
                    tables.setdefault(run_id, (run_id, run.data_table, run.number_of_results))
        tasks.append((path, None, tuple(sorted(run_ids)), tuple(sorted(tables.values())), known))
    got: dict[str, set[int]] = defaultdict(set)
    for outcome in run_tasks(checksum_task, tasks, jobs=jobs, client=client):
        if not outcome.ok:
            catalog.problems.append(
                Problem(outcome.database, "checksum_failed", str(outcome.message))
            )
            continue
        for run_id, result in outcome.payload.items():
            if isinstance(result, Problem):
                if run_id in wanted[outcome.database]:
                    catalog.problems.append(result)
                continue
            for path in (outcome.database, *copies.get(outcome.database, ())):
                index = wanted[path].get(run_id)
                if index is not None:
                    catalog.runs[index] = with_changes(catalog.runs[index], data_checksum=result)
                    got[path].add(run_id)
    return [
        copy
        for path in paths
        for copy in copies.get(path, ())
        if not set(wanted[copy]) <= got[copy]
    ]


def _identical_files(
    files: Sequence[FileEntry],
    wanted: dict[str, dict[int, int]],
    labels: dict[str, str],
    side_files: Container[str],
) -> dict[str, list[str]]:
    """The files of ``wanted`` grouped by their bytes
    (:func:`~qcsql.archive.copies.byte_groups`; ``labels`` holds the groups the scan
    found)."""
    return byte_groups(
        [(entry.path, entry.size, entry.wal_size) for entry in files if entry.path in wanted],
        labels,
        side_files,
    )
