"""Test helpers shared by several test modules (not fixtures, so they can be imported)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
PROJECT = TESTS.parent
FIXTURES = TESTS / "fixtures"
EXAMPLE_DB = FIXTURES / "example" / "example.db"
LEGACY = FIXTURES / "legacy"
CORPUS = (PROJECT.parent / "shared" / "corpus").resolve()
if not CORPUS.is_dir():  # a CI clone has shared/ beside the repository, as here
    CORPUS = (PROJECT / ".." / ".." / "shared" / "corpus").resolve()


def corpus_databases() -> list[Path]:
    return sorted(CORPUS.glob("*.db")) if CORPUS.is_dir() else []


def fixture_databases() -> list[Path]:
    found = sorted(LEGACY.glob("*.db"))
    if EXAMPLE_DB.exists():
        found.append(EXAMPLE_DB)
    return found


def all_databases() -> list[Path]:
    return fixture_databases() + corpus_databases()


def side_files(path: Path) -> list[Path]:
    return [p for p in (path.with_name(path.name + s) for s in ("-wal", "-shm")) if p.exists()]


def copy_database(source: Path, folder: Path) -> Path:
    """Copy a database and its -wal into ``folder``, writable, keeping the names."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    for item in [source, *side_files(source)]:
        copied = folder / item.name
        shutil.copyfile(item, copied)
        os.chmod(copied, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    return target


@dataclass(frozen=True)
class FileState:
    """Everything that must not change: content, mtime, user_version, the folder's file set."""

    sha256: str
    wal_sha256: str | None
    mtime_ns: int
    user_version: int
    folder_listing: tuple[str, ...]

    @classmethod
    def of(cls, path: Path) -> FileState:
        data = path.read_bytes()
        wal = path.with_name(path.name + "-wal")
        return cls(
            sha256=hashlib.sha256(data).hexdigest(),
            wal_sha256=hashlib.sha256(wal.read_bytes()).hexdigest() if wal.exists() else None,
            mtime_ns=path.stat().st_mtime_ns,
            user_version=int.from_bytes(data[60:64], "big"),
            folder_listing=tuple(sorted(os.listdir(path.parent))),
        )


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def plain_sqlite(path: Path) -> Path:
    """An SQLite file that is not a QCoDeS database."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    return path


def comparable_description(text: str) -> Any:
    """A run_description JSON parsed, with the lists QCoDeS builds from sets (standalones,
    and the legacy paramspecs of version-0 runs) sorted: their order is hash-dependent."""
    parsed = json.loads(text)
    parsed["interdependencies_"]["standalones"].sort()
    parsed["interdependencies"]["paramspecs"].sort(key=lambda spec: spec["name"])
    return parsed


def record_in_memory_plans(monkeypatch: Any) -> list[int]:
    """The run ids qcsql's export lays out with its in-memory plan from now on (a run it
    streams never gets there): the list grows as exports fall back to that plan."""
    import qcsql.export.run

    in_memory: list[int] = []
    real_plan = qcsql.export.run.plan_run

    def plan(run: Any) -> Any:
        in_memory.append(run.run_id)
        return real_plan(run)

    monkeypatch.setattr(qcsql.export.run, "plan_run", plan)
    return in_memory


# qcsql writes these as QCoDeS 0.59+ does; QCoDeS 0.58, the tests' live reference, not.
TIMESTAMP_ATTRIBUTES = ("run_timestamp", "completed_timestamp")
_UTC_OFFSET = re.compile(r"[+-]\d{4}")
SET_ASIDE = "<compared with QCoDeS 0.62 in test_qcodes062_reference.py>"


def timestamps_set_aside(
    ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """qcsql's dataset attributes (or run fields) and QCoDeS 0.58's, with
    ``run_timestamp`` and ``completed_timestamp`` set aside: qcsql follows QCoDeS 0.59+,
    the local time with its UTC offset, 0.58 the local time alone; 0.62's own values
    are compared in full elsewhere. Each of ours must still be 0.58's followed by an
    offset (or 0.58's itself, where both come from a file 0.58 wrote; or both empty);
    the pair is then replaced by one placeholder, so that everything else, the order
    of the attributes included, is still compared."""
    ours, theirs = dict(ours), dict(theirs)
    for key in TIMESTAMP_ATTRIBUTES:
        if key not in ours or key not in theirs:
            continue  # a missing one shows in the comparison that follows
        mine, reference = ours[key], theirs[key]
        if isinstance(mine, str) and isinstance(reference, str) and reference:
            offset = mine.removeprefix(reference)
            assert mine == reference or (
                mine.startswith(reference) and _UTC_OFFSET.fullmatch(offset)
            ), f"{key}: {mine!r} is not QCoDeS 0.58's {reference!r} with a UTC offset"
        else:
            assert mine == reference, f"{key}: {mine!r} != {reference!r}"
        ours[key] = theirs[key] = SET_ASIDE
    return ours, theirs


# QCoDeS 0.62 lays some runs out differently from 0.58 (qcsql follows 0.62, whose own
# results for such runs are compared in test_qcodes062_reference.py): the live 0.58
# comparisons set those runs aside with the difference named, never silently.
SHAPED_WITHOUT_SETPOINTS = "a declared shape without setpoints"
PLACED_BY_VALUE = "shaped rows out of the grid order of their setpoints' values"
NOT_A_GRID = "shaped rows whose setpoints form no complete grid of the shape"
INFERRED_ALIGNED = "inferred values on a grid whose rows are not in its sorted order"


def layout_differs_from_058(run: Any, use_multi_index: str = "auto") -> str | None:
    """Which of QCoDeS 0.58's layouts of ``run`` (a qcsql Run) differs from 0.62's for
    ``use_multi_index``, named as ``"<parameter>: <difference>"``; None where they agree.

    Decided here from the run's declared shapes, its trees and its
    ``get_parameter_data`` alone (pandas' factorize and MultiIndex, not qcsql's layout
    code), by 0.62's rules (``exporters/export_to_xarray.py``): data that fill their
    parameter's declared shape are laid out directly, unless ``always``; 0.62 places each
    value there by its setpoints' values in the order they first appear (0.58: rows in
    measured order), fails where they form no complete grid, and lays out a parameter
    without setpoints along ``<name>_dim_<axis>`` (0.58 fails); through the index, 0.62
    aligns inferred values with a complete grid's sorted cells (0.58: measured order)."""
    import numpy as np
    import pandas as pd

    graph = run.description.interdependencies
    shapes = run.description.declared_shapes or {}
    if not shapes and not any(
        len(graph.tree_by_group(top)[1]) > 1 and graph.tree_by_group(top)[2]
        for top in graph.top_level_parameters
    ):
        return None  # no direct layout, no inferred values on a grid: nothing to read
    for name, tree in run.get_parameter_data().items():
        _, setpoints, others = graph.tree_by_group(name)
        direct = name in shapes and tree[name].shape == shapes[name]
        if direct and use_multi_index != "always":
            if not setpoints:
                return f"{name}: {SHAPED_WITHOUT_SETPOINTS}"
            shape = tree[name].shape
            if len(setpoints) != len(shape) or (len(shape) > 1 and 0 in shape):
                continue  # both fail (0.58 finds no first line along an empty axis)
            destination = np.zeros(tree[name].size, dtype=np.int64)
            for axis, setpoint in enumerate(setpoints):
                codes, uniques = pd.factorize(
                    _as_qcodes_reads(tree[setpoint].ravel()), use_na_sentinel=False
                )
                if len(uniques) != shape[axis]:
                    return f"{name}: {NOT_A_GRID}"
                destination = destination * shape[axis] + codes
            if len(np.unique(destination)) != destination.size:
                return f"{name}: {NOT_A_GRID}"
            if not np.array_equal(destination, np.arange(destination.size)):
                return f"{name}: {PLACED_BY_VALUE}"
            continue
        inferred = [o for o in others if o in tree and o not in setpoints]
        levels = [s for s in setpoints if s in tree]
        if use_multi_index == "always" or not inferred or len(levels) < 2:
            continue
        index = pd.MultiIndex.from_arrays([_as_qcodes_reads(_flat(tree[s])) for s in levels])
        on_grid = np.prod([len(level) for level in index.levels]) == len(index)
        if index.is_unique and on_grid and not index.is_monotonic_increasing:
            return f"{name}: {INFERRED_ALIGNED}"
    return None


def _as_qcodes_reads(values: Any) -> Any:
    """Floats as QCoDeS reads them, through SQLite's text of 15 significant digits (here
    Python's own formatting, not qcsql's rounding): 0.1 + 0.2 and 0.3 are one value for
    QCoDeS, while qcsql's ``get_parameter_data`` keeps the stored doubles."""
    import numpy as np

    if values.dtype.kind != "f":
        return values
    return np.array([float(f"{value:.15g}") for value in values.tolist()], dtype=values.dtype)


def _flat(values: Any) -> Any:
    import numpy as np

    if values.dtype == object:
        try:
            return np.concatenate(list(values))
        except ValueError:
            return values.ravel()
    return values.ravel()


@contextlib.contextmanager
def unless_qcodes_058_differs(run: Any, difference: str | None) -> Any:
    """Around a comparison of qcsql's result for ``run`` with QCoDeS 0.58's: where
    ``difference`` (:func:`layout_differs_from_058` of the run) names one, the comparison
    is set aside, and it must fail (an ``AssertionError``, or qcsql's
    ``DirectLayoutError`` where 0.58 lays the run out), which is 0.58's other result,
    unless 0.58 fails on the run (the comparisons accept qcsql's layout there);
    elsewhere it stands as it is."""
    from qcsql import DirectLayoutError

    if difference is None:
        yield
        return
    try:
        yield
    except (AssertionError, DirectLayoutError):
        return  # set aside: 0.58 gives the other result, 0.62's is compared elsewhere
    if difference.endswith(SHAPED_WITHOUT_SETPOINTS):
        return  # 0.58 fails: the comparisons accept qcsql's layout where QCoDeS fails
    raise AssertionError(f"run {run.run_id}: {difference}, yet qcsql gives QCoDeS 0.58's result")


class TracedStatements(list[str]):
    """Statements to the user's files; those to qcsql's private copies beside them."""

    def __init__(self) -> None:
        super().__init__()
        self.to_private_copies: list[str] = []


def first_arguments_recorded(monkeypatch: Any, owner: Any, name: str) -> list[Any]:
    """The first argument of every call of ``owner.name`` from here on (the function
    still runs): which files a catalogue opened, which descriptors were looked at."""
    calls: list[Any] = []
    real = getattr(owner, name)

    def recording(first: Any, *arguments: Any, **keywords: Any) -> Any:
        calls.append(first)
        return real(first, *arguments, **keywords)

    monkeypatch.setattr(owner, name, recording)
    return calls
