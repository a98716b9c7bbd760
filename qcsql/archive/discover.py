"""Finding the candidate database files under the folders and files of an archive.

A QCoDeS database is recognised by what it holds (the SQLite header, then the tables
QCoDeS creates), never by its extension: labs name them ``.db``, ``.sqlite``, after
the cooldown, or not at all. So every regular file under the given paths is a
candidate, except SQLite's own side files (``-wal``, ``-shm``, ``-journal``), which
belong to the database beside them. Whether a candidate is a QCoDeS database is
decided when it is opened (:mod:`qcsql.archive.catalog`), through the read-only
connection layer, so that its header is read through the process's kept descriptor
(:mod:`qcsql.sqlite.descriptors`) and never through one opened and closed here.

The walk follows symbolic links, because archives are often stitched together from
links to file servers, but visits each folder and each file once (by device and
inode): a link back to a folder above it (a loop) and a folder that cannot be listed
are reported as :class:`Problem` s and the walk goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from qcsql.sqlite.files import side_file

__all__ = ["SIDE_FILE_SUFFIXES", "Discovery", "Problem", "discover", "is_side_file"]

# SQLite's files beside a database: parts of it, never databases of their own.
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Problem:
    """Something in the archive that is not a readable QCoDeS database, or a run of one
    that could not be catalogued: ``kind`` is a stable word for scripts, ``message`` a
    sentence for people that names the path."""

    path: str
    kind: str
    message: str
    run_id: int | None = None


@dataclass
class Discovery:
    """The candidate files in walk order (by name within each folder, links last), and
    what stopped the walk somewhere. ``stats`` holds, by path, what the walk learnt of
    every candidate and of each SQLite side file beside one (a side file not there was
    not there): a catalogue compares these with its previous one, and looks for a
    ``-shm`` or ``-journal`` here, instead of asking the file system again."""

    files: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    stats: dict[str, os.stat_result] = field(default_factory=dict)


def is_side_file(path: Path) -> bool:
    return path.name.endswith(SIDE_FILE_SUFFIXES)


def discover(paths: Iterable[str | Path], exclude: Iterable[Path] = ()) -> Discovery:
    """Every candidate file under ``paths`` (files and folders, recursively), each once.

    ``exclude`` are files never to list (the catalogue being written, for one). Paths are
    absolute but not resolved: a file is listed under the name it was found by.
    """
    found = Discovery()
    excluded = {_identity(p) for p in exclude if p.exists()}
    seen_files: set[tuple[int, int]] = set(excluded)
    seen_folders: set[tuple[int, int]] = set()
    for given in paths:
        path = Path(given).expanduser().absolute()
        try:
            info = path.stat()
        except FileNotFoundError:
            kind = "broken_link" if path.is_symlink() else "not_found"
            found.problems.append(Problem(str(path), kind, f"{path}: no such file or folder"))
            continue
        except OSError as exc:
            found.problems.append(Problem(str(path), "unreadable", f"{path}: {_reason(exc)}"))
            continue
        if stat.S_ISDIR(info.st_mode):
            _walk(path, (), found, seen_files, seen_folders)
            continue
        _add_file(path, info, found, seen_files)
        for suffix in SIDE_FILE_SUFFIXES:  # not listed with a folder: looked for
            side = side_file(path, suffix)
            try:
                found.stats[str(side)] = side.stat()
            except OSError:
                pass
    return found


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _add_file(
    path: Path, info: os.stat_result, found: Discovery, seen: set[tuple[int, int]]
) -> None:
    if not stat.S_ISREG(info.st_mode):
        return  # sockets, FIFOs and devices are no databases
    if is_side_file(path):
        found.stats[str(path)] = info  # part of the database beside it
        return
    key = (info.st_dev, info.st_ino)
    if key in seen:
        return  # the same file by a second name (a link): listed once
    seen.add(key)
    found.files.append(path)
    found.stats[str(path)] = info


def _walk(
    folder: Path,
    ancestors: tuple[tuple[int, int], ...],
    found: Discovery,
    seen_files: set[tuple[int, int]],
    seen_folders: set[tuple[int, int]],
) -> None:
    """Depth first; ``ancestors`` are the folders above, to tell a loop from a second way in."""
    key = _identity(folder)
    if key in ancestors:
        found.problems.append(
            Problem(
                str(folder),
                "symlink_loop",
                f"{folder}: a symbolic link loop (leads back to a folder above it); not followed",
            )
        )
        return
    if key in seen_folders:
        return  # reached twice through links: walked once
    seen_folders.add(key)
    try:
        with os.scandir(folder) as listing:
            # Real names before links, so that a file or folder reached both ways is
            # listed under its own name.
            entries = sorted(listing, key=lambda entry: (entry.is_symlink(), entry.name))
    except OSError as exc:
        found.problems.append(
            Problem(str(folder), "unreadable_folder", f"{folder}: cannot list it ({_reason(exc)})")
        )
        return
    inner = (*ancestors, key)
    for entry in entries:
        path = Path(entry.path)
        try:
            info = entry.stat()  # follows links
        except FileNotFoundError:
            if entry.is_symlink():
                found.problems.append(
                    Problem(str(path), "broken_link", f"{path}: a symbolic link to nothing")
                )
            continue  # else removed meanwhile
        except OSError as exc:
            kind = "symlink_loop" if exc.errno == errno.ELOOP else "unreadable"
            found.problems.append(Problem(str(path), kind, f"{path}: {_reason(exc)}"))
            continue
        if stat.S_ISDIR(info.st_mode):
            _walk(path, inner, found, seen_files, seen_folders)
        else:
            _add_file(path, info, found, seen_files)
