"""Build a lab's archive for the catalogue and fan-out tests and benchmarks.

    python -m tests.archive_builder /tmp/archive --copies 6     # >= 300 databases

The archive is a tree of folders (labs, years, cooldowns) holding byte-for-byte copies
of every database the tests know (the legacy fixtures of every schema version, the
example database, and ``../shared/corpus`` when it is there, WAL files with their
``-wal`` and without ``-shm``), under varied names and extensions; runs copied into
new files with QCoDeS 0.58's ``extract_runs_into_db`` (same guid, new run_id); a
read-only folder; an unreadable folder; a symbolic-link loop; and files that are not
QCoDeS databases: netCDF exports, plain SQLite files, an empty and a text file named
``.db``. :func:`build_archive` returns what it put where (:class:`ArchiveManifest`),
so tests know every QCoDeS file's source without trusting the catalogue.

Folders it made read-only or unreadable are made writable again by
:func:`restore_permissions`, which tests call before their temporary folder goes.
The benchmark copy (``--copies 6``) holds 341 QCoDeS databases (with ../shared/corpus).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import (
    EXAMPLE_DB,
    copy_database,
    corpus_databases,
    fixture_databases,
    plain_sqlite,
    side_files,
)

__all__ = ["ArchiveManifest", "build_archive", "restore_permissions", "small_sources"]

NAMES = ("{stem}.db", "{stem}.sqlite", "{stem}", "{stem}.DB")


@dataclass
class ArchiveManifest:
    root: Path
    databases: dict[Path, Path] = field(default_factory=dict)  # archive file -> source
    extracted: dict[Path, tuple[Path, tuple[int, ...]]] = field(default_factory=dict)
    not_qcodes: list[Path] = field(default_factory=list)
    read_only_folder: Path | None = None
    unreadable_folder: Path | None = None
    loop: Path | None = None

    @property
    def qcodes_files(self) -> list[Path]:
        return sorted([*self.databases, *self.extracted])


def small_sources() -> list[Path]:
    """The sources of the tests' archive: every schema version (the legacy fixtures),
    the example database, and the corpus' WAL files that come without their -shm."""
    return _sources(with_corpus=False) + [p for p in corpus_databases() if side_files(p)]


def _sources(with_corpus: bool) -> list[Path]:
    sources = fixture_databases()
    if with_corpus:
        sources += corpus_databases()
    return sources


def _copy_as(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    for item in [source, *side_files(source)]:
        copied = target.with_name(target.name + item.name[len(source.name) :])
        shutil.copyfile(item, copied)
        os.chmod(copied, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    return target


def _extract(source: Path, scratch: Path, target: Path, run_ids: tuple[int, ...]) -> None:
    """QCoDeS 0.58's ``extract_runs_into_db`` from a copy (QCoDeS may touch its source)."""
    from qcodes.dataset import extract_runs_into_db

    copy = copy_database(source, scratch / f"source-{target.parent.name}-{target.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    extract_runs_into_db(str(copy), str(target), *run_ids)


def build_archive(
    root: Path, copies: int = 1, *, sources: list[Path] | None = None
) -> ArchiveManifest:
    """Build the archive under ``root`` (created); ``copies`` copies of every source
    (default: every database the tests know)."""
    root = root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    manifest = ArchiveManifest(root)
    sources = sources if sources is not None else _sources(with_corpus=True)
    for copy_index in range(copies):
        for index, source in enumerate(sources):
            stem = source.name.removesuffix(".db")
            lab = f"lab{(index + copy_index) % 3}"
            folder = root / lab / f"{2018 + copy_index % 6}" / f"cooldown{index % 4}"
            name = NAMES[(index + copy_index) % len(NAMES)].format(stem=stem)
            if copy_index:
                name = f"c{copy_index}_{name}"
            manifest.databases[_copy_as(source, folder / name)] = source

    scratch = root.parent / f".{root.name}-scratch"
    scratch.mkdir(exist_ok=True)
    try:
        # Runs copied between files by QCoDeS: same guid, new run_id in the new file.
        extracted = root / "lab0" / "extracted"
        for run_ids in ((1, 2), (3,), (5, 7), (1, 3, 9)):
            target = extracted / f"extract_{'_'.join(map(str, run_ids))}.db"
            _extract(EXAMPLE_DB, scratch, target, run_ids)
            manifest.extracted[target] = (EXAMPLE_DB, run_ids)
    finally:
        shutil.rmtree(scratch)

    odd = root / "lab1" / "misc"
    odd.mkdir(parents=True, exist_ok=True)
    manifest.not_qcodes += [
        plain_sqlite(odd / "notes.db"),
        plain_sqlite(odd / "instrument_log.sqlite"),
        _write(odd / "empty.db", b""),
        _write(odd / "readme.db", b"this is not a database\n"),
        _write(odd / "short.db", b"SQLite format 3\x00 but cut short"),
    ]
    import qcsql

    with qcsql.open_database(EXAMPLE_DB) as db:
        for run in db.runs()[:2]:
            manifest.not_qcodes.append(run.export_hdf5(odd / f"export_{run.run_id}.nc"))

    read_only = root / "lab2" / "archived_readonly"
    first = sources[-1]
    manifest.databases[_copy_as(first, read_only / first.name)] = first
    read_only.chmod(0o555)
    manifest.read_only_folder = read_only

    unreadable = root / "lab2" / "locked"
    unreadable.mkdir(parents=True, exist_ok=True)
    _write(unreadable / "hidden.db", b"")
    unreadable.chmod(0)
    manifest.unreadable_folder = unreadable

    loop = root / "lab1" / "loop"
    loop.symlink_to(root / "lab1")
    manifest.loop = loop
    return manifest


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def restore_permissions(manifest: ArchiveManifest) -> None:
    """Make the folders the archive made read-only or unreadable writable again."""
    for folder in (manifest.read_only_folder, manifest.unreadable_folder):
        if folder is not None and folder.exists():
            folder.chmod(0o755)


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--copies", type=int, default=6)
    args = parser.parse_args()
    manifest = build_archive(args.root, args.copies)
    print(
        f"{manifest.root}: {len(manifest.qcodes_files)} QCoDeS databases, "
        f"{len(manifest.not_qcodes)} other files"
    )
