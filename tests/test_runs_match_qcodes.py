"""Every run's metadata equals what QCoDeS 0.58 reports on a copy of the same file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import qcsql
from tests.helpers import copy_database

pytest.importorskip("qcodes")
from tests.qcodes_reference import reference_for  # noqa: E402


def _ours(run: qcsql.Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "captured_run_id": run.captured_run_id,
        "counter": run.counter,
        "captured_counter": run.captured_counter,
        "guid": run.guid,
        "name": run.name,
        "exp_id": run.exp_id,
        "exp_name": run.exp_name,
        "sample_name": run.sample_name,
        "table_name": run.table_name,
        "run_timestamp_raw": run.run_timestamp_raw,
        "completed_timestamp_raw": run.completed_timestamp_raw,
        "completed": run.completed,
        "number_of_results": run.number_of_results,
        "metadata": run.metadata,
        "snapshot_raw": run.snapshot_raw,
        "parent_dataset_links": [
            (link.head, link.tail, link.edge_type, link.description)
            for link in run.parent_dataset_links
        ],
        "paramspecs": {
            name: (spec.paramtype, spec.label, spec.unit, spec.depends_on, spec.inferred_from)
            for name, spec in run.paramspecs.items()
        },
        "top_level_parameters": run.description.interdependencies.top_level_parameters,
        "shapes": run.shapes,
        "pristine": not run.started,
        "parameters": run.parameters,
    }


def _expected(theirs: dict[str, Any], schema_version: int) -> dict[str, Any]:
    expected = dict(theirs)
    if schema_version == 0:
        expected["guid"] = None  # QCoDeS invents guids when it upgrades a v0 copy
    if expected["pristine"]:
        expected["parameters"] = None  # QCoDeS derives it; the column is NULL
    return expected


def _compare_description(ours: dict[str, Any], run: qcsql.Run) -> dict[str, Any]:
    """Files older than the layouts table: QCoDeS sees no parameters, qcsql reads the columns."""
    if run.description.source == "results_table":
        ours = dict(ours, paramspecs={}, top_level_parameters=())
    return ours


def test_every_run_matches_qcodes(any_database: Path, tmp_path: Path, guard: list[Path]) -> None:
    reference = reference_for(any_database)
    if reference.open_error is not None:
        pytest.skip(f"QCoDeS 0.58 cannot open this file: {reference.open_error}")
    copy = copy_database(any_database, tmp_path / "writable")
    guard.append(copy)
    with qcsql.open_database(copy) as db:
        runs = {run.run_id: run for run in db.runs()}
        assert sorted(runs) == sorted(reference.runs)
        compared = 0
        for run_id, theirs in reference.runs.items():
            ours = _compare_description(_ours(runs[run_id]), runs[run_id])
            if theirs.error is not None:
                continue  # QCoDeS cannot load it; qcsql still must (checked by computing `ours`)
            assert ours == _expected(theirs.fields, db.schema_version), f"run {run_id}"
            compared += 1
            assert _compare_description(_ours(db.load_by_id(run_id)), runs[run_id]) == ours
            if ours["guid"] is not None:
                assert db.load_by_guid(ours["guid"]).run_id == run_id
        experiments = [
            {
                "exp_id": e.exp_id,
                "name": e.name,
                "sample_name": e.sample_name,
                "start_time": e.start_time,
                "end_time": e.end_time,
                "format_string": e.format_string,
            }
            for e in db.experiments()
        ]
        assert experiments == reference.experiments
    assert compared == sum(1 for r in reference.runs.values() if r.error is None)


def test_runs_listing_equals_loading_one_by_one(any_database: Path, guard: list[Path]) -> None:
    guard.append(any_database)
    with qcsql.open_database(any_database) as db:
        listed = db.runs()
        for run in listed:
            loaded = db.load_by_id(run.run_id)
            assert (loaded.guid, loaded.name, loaded.metadata) == (run.guid, run.name, run.metadata)
        if listed:
            middle = listed[len(listed) // 2].run_id
            assert [r.run_id for r in db.runs(start_run_id=middle)] == [
                r.run_id for r in listed if r.run_id >= middle
            ]
