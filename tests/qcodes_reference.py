"""What genuine QCoDeS 0.58 says about a database, computed on a private copy.

QCoDeS upgrades whatever it opens, so it only ever sees a copy. Two kinds of
old file need the help QCoDeS documents before it can open them at all:
schema-v0 files with runs (its 0->1 upgrade needs ``GUID_type =
"explicit_sample"``) and the unreleased '4a' files (``connect(version=4)``,
``fix_version_4a_run_description_bug``, then the remaining upgrades).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import copy_database


@dataclass
class ReferenceRun:
    run_id: int
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ReferenceData:
    """QCoDeS' get_parameter_data for every run and each (start, end) asked for."""

    by_run: dict[tuple[int, int | None, int | None], Any] = field(default_factory=dict)
    errors: dict[tuple[int, int | None, int | None], str] = field(default_factory=dict)


@dataclass
class ReferenceDatabase:
    runs: dict[int, ReferenceRun]
    experiments: list[dict[str, Any]]
    open_error: str | None = None
    needed: str | None = None


def _raw_run_ids(path: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn, conn:
        return [row[0] for row in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]


def _connect_like_a_user(source: Path, folder: Path) -> tuple[Any, str | None]:
    """Connect as a user would, then with QCoDeS' documented help; each try on a fresh copy
    (a failed upgrade leaves the steps before it committed)."""
    import qcodes
    from qcodes.dataset.database_fix_functions import fix_version_4a_run_description_bug
    from qcodes.dataset.sqlite.database import connect
    from qcodes.dataset.sqlite.db_upgrades import perform_db_upgrade

    try:
        return connect(str(copy_database(source, folder / "plain"))), None
    except Exception as first_error:  # QCoDeS raises RuntimeError/KeyError/... here
        first = f"{type(first_error).__name__}: {first_error}"
    components = qcodes.config["GUID_components"]
    saved = components["GUID_type"]
    components["GUID_type"] = "explicit_sample"
    try:
        try:
            copy = copy_database(source, folder / "explicit_sample")
            return connect(str(copy)), f"GUID_type=explicit_sample ({first})"
        except Exception:
            conn = connect(str(copy_database(source, folder / "fix_4a")), version=4)
            fix_version_4a_run_description_bug(conn)
            perform_db_upgrade(conn)
            return conn, f"4a fix ({first})"
    finally:
        components["GUID_type"] = saved


def _links(dataset: Any) -> list[tuple[str, str, str, str]]:
    return [(k.head, k.tail, k.edge_type, k.description) for k in dataset.parent_dataset_links]


def _paramspecs(dataset: Any) -> dict[str, tuple[Any, ...]]:
    return {
        name: (
            spec.type,
            spec.label,
            spec.unit,
            tuple(spec.depends_on_),
            tuple(spec.inferred_from_),
        )
        for name, spec in dataset.paramspecs.items()
    }


def _describe_run(dataset: Any) -> dict[str, Any]:
    interdeps = dataset.description.interdeps
    shapes = dataset.description.shapes
    return {
        "run_id": dataset.run_id,
        "captured_run_id": dataset.captured_run_id,
        "counter": dataset.counter,
        "captured_counter": dataset.captured_counter,
        "guid": dataset.guid,
        "name": dataset.name,
        "exp_id": dataset.exp_id,
        "exp_name": dataset.exp_name,
        "sample_name": dataset.sample_name,
        "table_name": dataset.table_name,
        "run_timestamp_raw": dataset.run_timestamp_raw,
        "completed_timestamp_raw": dataset.completed_timestamp_raw,
        "completed": dataset.completed,
        "number_of_results": dataset.number_of_results,
        "metadata": dict(dataset.metadata),
        "snapshot_raw": dataset.snapshot_raw,
        "parent_dataset_links": _links(dataset),
        "paramspecs": _paramspecs(dataset),
        "top_level_parameters": tuple(p.name for p in interdeps.top_level_parameters),
        "shapes": None
        if shapes is None
        else {k: tuple(int(n) for n in v) for k, v in shapes.items()},
        "pristine": dataset.pristine,
        "parameters": dataset.parameters,
    }


@functools.cache
def reference_for(path: Path) -> ReferenceDatabase:
    """QCoDeS' view of every run of ``path`` (cached per test session)."""
    from qcodes.dataset import load_by_id
    from qcodes.dataset.experiment_container import experiments

    run_ids = _raw_run_ids_of(path)
    with tempfile.TemporaryDirectory(prefix="qcsql-reference-") as folder:
        try:
            conn, needed = _connect_like_a_user(path, Path(folder))
        except Exception as exc:
            return ReferenceDatabase(
                runs={}, experiments=[], open_error=f"{type(exc).__name__}: {exc}"
            )
        try:
            runs: dict[int, ReferenceRun] = {}
            for run_id in run_ids:
                try:
                    runs[run_id] = ReferenceRun(
                        run_id, _describe_run(load_by_id(run_id, conn=conn))
                    )
                except Exception as exc:
                    runs[run_id] = ReferenceRun(run_id, error=f"{type(exc).__name__}: {exc}")
            exps = [
                {
                    "exp_id": exp.exp_id,
                    "name": exp.name,
                    "sample_name": exp.sample_name,
                    "start_time": exp.started_at,
                    "end_time": exp.finished_at,
                    "format_string": exp.format_string,
                }
                for exp in experiments(conn=conn)
            ]
            return ReferenceDatabase(runs=runs, experiments=exps, needed=needed)
        finally:
            conn.close()


def _raw_run_ids_of(path: Path) -> list[int]:
    # The main file alone may hold none of the runs (they are in its -wal): read a copy.
    with tempfile.TemporaryDirectory(prefix="qcsql-ids-") as folder:
        return _raw_run_ids(copy_database(path, Path(folder)))


@functools.cache
def parameter_data_for(
    path: Path, ranges: tuple[tuple[int | None, int | None], ...] = ((None, None),)
) -> ReferenceData:
    """QCoDeS' ``get_parameter_data(start=, end=)`` of every run of ``path``, on a copy."""
    from qcodes.dataset import load_by_id

    reference = ReferenceData()
    run_ids = _raw_run_ids_of(path)
    with tempfile.TemporaryDirectory(prefix="qcsql-reference-") as folder:
        try:
            conn, _ = _connect_like_a_user(path, Path(folder))
        except Exception as exc:
            reference.errors[(0, None, None)] = f"{type(exc).__name__}: {exc}"
            return reference
        try:
            for run_id in run_ids:
                for start, end in ranges:
                    key = (run_id, start, end)
                    try:
                        dataset = load_by_id(run_id, conn=conn)
                        reference.by_run[key] = dataset.get_parameter_data(start=start, end=end)
                    except Exception as exc:
                        reference.errors[key] = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
    return reference
