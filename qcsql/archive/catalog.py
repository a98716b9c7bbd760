"""The catalogue of an archive: every run of every QCoDeS database under some folders.

:func:`build_catalog` walks the given paths (:mod:`qcsql.archive.discover`), opens
each candidate read-only through :class:`~qcsql.database.Database` (so nothing is
written, no descriptor of a database is ever closed under another connection, and a
WAL file copied without its ``-shm`` is read through a private snapshot copy), and
records one :class:`RunEntry` per run, one :class:`FileEntry` per candidate file and
one :class:`~qcsql.archive.discover.Problem` per thing that is not a readable QCoDeS
database. A previous catalogue makes the next one cheap: a file whose size and mtime
(and those of its ``-wal``) are unchanged is not opened again, its entries are reused.

Duplicates (one guid in several places, as ``extract_runs_into_db`` leaves them) are
what the runs' guids say; whether the copies hold the same data is a checksum of the
data (:func:`qcsql.archive.checksum.data_checksum`), computed only for the runs whose
guid occurs more than once, and kept as long as their file is unchanged.
"""

from __future__ import annotations

import base64
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from qcsql.archive.checksum import data_checksum
from qcsql.archive.discover import Problem, discover
from qcsql.database import Database, Run
from qcsql.errors import (
    DatabaseCorruptError,
    DataNotFoundWarning,
    NotQCoDeSError,
    NotSQLiteError,
    QcsqlError,
)
from qcsql.sqlite.connection import side_file

__all__ = [
    "Catalog",
    "Duplicate",
    "FileEntry",
    "RunEntry",
    "build_catalog",
    "catalog_database",
]

FileKind = Literal["qcodes", "problem"]


@dataclass(frozen=True)
class FileEntry:
    """One candidate file as it was when catalogued; ``kind`` says whether it is a QCoDeS
    database (its runs are in the catalogue) or not (its problem is)."""

    path: str
    size: int
    mtime_ns: int
    wal_size: int | None
    wal_mtime_ns: int | None
    kind: FileKind
    schema_version: int | None = None
    journal_mode: str | None = None
    access: str | None = None
    runs: int = 0

    @property
    def stamp(self) -> tuple[int, int, int | None, int | None]:
        return (self.size, self.mtime_ns, self.wal_size, self.wal_mtime_ns)


@dataclass(frozen=True)
class Parameter:
    name: str
    paramtype: str
    unit: str


@dataclass(frozen=True)
class RunEntry:
    """One run of one file: what a lab asks of its archive without opening the file."""

    path: str
    schema_version: int
    journal_mode: str
    run_id: int
    captured_run_id: int | None
    captured_counter: int | None
    guid: str | None  # the stable guid: for schema-v0 runs the one QCoDeS' upgrade gives
    experiment: str | None
    sample: str | None
    name: str | None
    run_timestamp: float | None
    completed_timestamp: float | None
    completed: bool
    number_of_results: int | None
    parameters: tuple[Parameter, ...] | None
    metadata: dict[str, Any]
    data_location: str  # table, raw_data_file, export or nowhere
    data_table: str | None
    data_file: str | None
    data_checksum: str | None = None


@dataclass(frozen=True)
class Duplicate:
    """One guid found in several places; ``same_data`` is None where a copy's data could
    not be read (its checksum is missing)."""

    guid: str
    locations: tuple[tuple[str, int], ...]
    checksums: tuple[str | None, ...]

    @property
    def same_data(self) -> bool | None:
        if any(c is None for c in self.checksums):
            return None
        return len(set(self.checksums)) == 1


@dataclass
class Catalog:
    files: list[FileEntry] = field(default_factory=list)
    runs: list[RunEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    reused_files: int = 0  # unchanged since the previous catalogue: not opened

    def duplicates(self) -> list[Duplicate]:
        by_guid: dict[str, list[RunEntry]] = defaultdict(list)
        for run in self.runs:
            if run.guid is not None:
                by_guid[run.guid].append(run)
        return [
            Duplicate(
                guid,
                tuple((r.path, r.run_id) for r in copies),
                tuple(r.data_checksum for r in copies),
            )
            for guid, copies in sorted(by_guid.items())
            if len(copies) > 1
        ]


def _stamp(path: Path) -> tuple[int, int, int | None, int | None]:
    info = path.stat()
    wal = side_file(path, "-wal")
    try:
        wal_info = wal.stat()
    except OSError:
        return (info.st_size, info.st_mtime_ns, None, None)
    return (info.st_size, info.st_mtime_ns, wal_info.st_size, wal_info.st_mtime_ns)


_PROBLEM_KINDS: dict[type[QcsqlError], str] = {
    NotSQLiteError: "not_sqlite",
    NotQCoDeSError: "not_qcodes",
    DatabaseCorruptError: "corrupt",
}


def _problem_kind(exc: QcsqlError) -> str:
    return next((k for t, k in _PROBLEM_KINDS.items() if isinstance(exc, t)), "unreadable")


def _json_ready(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    return value


def catalog_database(path: Path) -> tuple[FileEntry, list[RunEntry], list[Problem]]:
    """One candidate file: its entry, its runs, and what could not be read. Never raises
    for what the file holds (that is a problem of the catalogue); OSError only for a
    file that vanished between the walk and now."""
    stamp = _stamp(path)
    try:
        db = Database(path)
    except QcsqlError as exc:
        entry = FileEntry(str(path), *stamp, kind="problem")
        return entry, [], [Problem(str(path), _problem_kind(exc), str(exc))]
    problems: list[Problem] = []
    with db:
        try:
            runs = [_run_entry(db, run, problems) for run in db.runs()]
        except QcsqlError as exc:
            entry = FileEntry(str(path), *stamp, kind="problem")
            return entry, [], [Problem(str(path), _problem_kind(exc), str(exc))]
        entry = FileEntry(
            str(path),
            *stamp,
            kind="qcodes",
            schema_version=db.schema_version,
            journal_mode=db.journal_mode,
            access=db.access.value,
            runs=len(runs),
        )
    return entry, runs, problems


def _run_entry(db: Database, run: Run, problems: list[Problem]) -> RunEntry:
    where = str(db.path)
    parameters: tuple[Parameter, ...] | None
    try:
        parameters = tuple(
            Parameter(name, spec.paramtype, spec.unit) for name, spec in run.paramspecs.items()
        )
    except QcsqlError as exc:
        parameters = None
        problems.append(Problem(where, "run_description", str(exc), run.run_id))
    count: int | None
    try:
        count = run.number_of_results
    except QcsqlError as exc:
        count = None
        problems.append(Problem(where, "results_unreadable", str(exc), run.run_id))
    location = db.data.where(run.row)
    return RunEntry(
        path=where,
        schema_version=db.schema_version,
        journal_mode=db.journal_mode,
        run_id=run.run_id,
        captured_run_id=run.captured_run_id,
        captured_counter=run.captured_counter,
        guid=run.stable_guid,
        experiment=run.exp_name,
        sample=run.sample_name,
        name=run.name,
        run_timestamp=run.run_timestamp_raw,
        completed_timestamp=run.completed_timestamp_raw,
        completed=run.completed,
        number_of_results=count,
        parameters=parameters,
        metadata={key: _json_ready(value) for key, value in run.metadata.items()},
        data_location=location.kind,
        data_table=run.table_name if location.kind in ("table", "raw_data_file") else None,
        data_file=location.recorded,
    )


Progress = Callable[[int, int, str], None]


def build_catalog(
    paths: Sequence[str | Path],
    previous: Catalog | None = None,
    *,
    exclude: Iterable[Path] = (),
    progress: Progress | None = None,
) -> Catalog:
    """The catalogue of everything under ``paths``; files unchanged since ``previous``
    (same size and mtime, and the same of their ``-wal``) are not opened again.
    ``progress(files done, files, path)`` is called after each file."""
    found = discover(paths, exclude)
    catalog = Catalog(problems=list(found.problems))
    old_files = {f.path: f for f in previous.files} if previous is not None else {}
    old_runs: dict[str, list[RunEntry]] = defaultdict(list)
    old_problems: dict[str, list[Problem]] = defaultdict(list)
    if previous is not None:
        for run in previous.runs:
            old_runs[run.path].append(run)
        for problem in previous.problems:
            old_problems[problem.path].append(problem)
    for done, path in enumerate(found.files, 1):
        key = str(path)
        old = old_files.get(key)
        try:
            if old is not None and old.stamp == _stamp(path):
                catalog.files.append(old)
                catalog.runs.extend(old_runs[key])
                catalog.problems.extend(old_problems[key])
                catalog.reused_files += 1
            else:
                entry, runs, problems = catalog_database(path)
                catalog.files.append(entry)
                catalog.runs.extend(runs)
                catalog.problems.extend(problems)
        except OSError as exc:
            catalog.problems.append(Problem(key, "unreadable", f"{path}: {exc.strerror or exc}"))
        if progress is not None:
            progress(done, len(found.files), key)
    _add_checksums(catalog)
    return catalog


def _add_checksums(catalog: Catalog) -> None:
    """Checksums of the data of every run whose guid occurs more than once, where the
    catalogue does not have one yet."""
    counts: dict[str, int] = defaultdict(int)
    for run in catalog.runs:
        if run.guid is not None:
            counts[run.guid] += 1
    wanted: dict[str, list[int]] = defaultdict(list)
    for index, run in enumerate(catalog.runs):
        if run.guid is not None and counts[run.guid] > 1 and run.data_checksum is None:
            wanted[run.path].append(index)
    for path, indices in wanted.items():
        try:
            db = Database(path)
        except QcsqlError as exc:
            catalog.problems.append(Problem(path, "checksum_failed", str(exc)))
            continue
        with db:
            for index in indices:
                run = catalog.runs[index]
                try:
                    with warnings.catch_warnings():
                        # Data never stored read as none, as QCoDeS reads them: no warning.
                        warnings.simplefilter("ignore", DataNotFoundWarning)
                        checksum = data_checksum(db.load_by_id(run.run_id))
                except QcsqlError as exc:
                    catalog.problems.append(Problem(path, "checksum_failed", str(exc), run.run_id))
                    continue
                catalog.runs[index] = replace(run, data_checksum=checksum)
