"""The attributes QCoDeS writes: of every variable and of the dataset.

Also what the export layer reads of a run for them (:class:`DatasetSource`):
``qcsql.Run`` is one; the protocol keeps the export layer below the public facade.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from qcsql.data.source import RunSource
from qcsql.errors import Where
from qcsql.schema.description import ParamSpec, RunDescription
from qcsql.schema.rows import Link, MetadataValue, RunRow, local_time

__all__ = ["DatasetSource", "dataset_attrs", "run_description_json", "variable_attrs"]


class DatasetSource(RunSource, Protocol):
    """A run with everything QCoDeS writes as dataset attributes (each member's
    docstring names the attribute it becomes)."""

    @property
    def row(self) -> RunRow:
        """The run's columns as stored: ``name`` (``ds_name``), ``sample_name`` and
        ``exp_name``, ``captured_run_id`` (also in the file's name) and
        ``captured_counter``, and the two times, raw (-1 when None) and formatted."""
        ...

    @property
    def snapshot_raw(self) -> str | None:
        """``snapshot``, the stored text as it is (``"null"`` when there is none)."""
        ...

    @property
    def stable_guid(self) -> str | None:
        """``guid``; for schema-v0 runs the one QCoDeS' upgrade would give them."""
        ...

    @property
    def metadata(self) -> dict[str, MetadataValue]:
        """One attribute per tag, after QCoDeS' own attributes."""
        ...

    @property
    def parent_dataset_links(self) -> list[Link]:
        """``parent_dataset_links``, as a JSON list of JSON objects."""
        ...

    @property
    def in_memory(self) -> bool:
        """Whether the file holds no results table for the run (a ``DataSetInMem`` run)."""
        ...

    @property
    def exported_attrs(self) -> dict[str, Any] | None:
        """For a run without results table whose export is there, that file's dataset
        attributes as QCoDeS re-exports them; None otherwise."""
        ...


def _paramspec_dict(spec: ParamSpec) -> dict[str, Any]:
    """QCoDeS' ``ParamSpec._to_dict()``."""
    return {
        "name": spec.name,
        "paramtype": spec.paramtype,
        "label": spec.label,
        "unit": spec.unit,
        "inferred_from": list(spec.inferred_from),
        "depends_on": list(spec.depends_on),
    }


def variable_attrs(spec: ParamSpec) -> dict[str, Any]:
    """The attributes QCoDeS gives the variable of a parameter (plus CF's units/long_name)."""
    return {**_paramspec_dict(spec), "units": spec.unit, "long_name": spec.label}


def run_description_json(description: RunDescription) -> str:
    """The run description as QCoDeS re-serialises it into exports (version 3)."""
    graph = description.interdependencies
    legacy = [_paramspec_dict(spec) for spec in graph.legacy_paramspecs()]
    payload = {
        "version": 3,
        "interdependencies": {"paramspecs": legacy},
        "interdependencies_": {
            "parameters": {n: p.model_dump() for n, p in graph.parameters.items()},
            "dependencies": {k: list(v) for k, v in graph.dependencies.items()},
            "inferences": {k: list(v) for k, v in graph.inferences.items()},
            "standalones": list(graph.standalones),
        },
        "shapes": None
        if description.declared_shapes is None
        else {k: list(v) for k, v in description.declared_shapes.items()},
    }
    return json.dumps(payload)


def dataset_attrs(run: DatasetSource) -> dict[str, Any]:
    """The dataset attributes QCoDeS writes, in its order (metadata tags last).

    QCoDeS exports a run loaded from its export (in-memory and metadata-only runs) by
    writing that file's dataset again: its attributes are the file's, not the run's row
    (they differ for a run loaded from another database's export), except export_info."""
    exported = run.exported_attrs if run.in_memory else None
    if exported is not None:
        return exported
    runs = Where(run.path_to_db, run.run_id, table="runs")
    row = run.row
    links = [
        json.dumps(
            {"head": k.head, "tail": k.tail, "edge_type": k.edge_type, "description": k.description}
        )
        for k in run.parent_dataset_links
    ]
    attrs: dict[str, Any] = {
        "ds_name": row.name,
        "sample_name": row.sample_name,
        "exp_name": row.exp_name,
        "snapshot": run.snapshot_raw or "null",
        "guid": run.stable_guid,
        "run_timestamp": (
            local_time(row.run_timestamp_raw, where=runs.at(column="run_timestamp")) or ""
        ),
        "completed_timestamp": (
            local_time(row.completed_timestamp_raw, where=runs.at(column="completed_timestamp"))
            or ""
        ),
        "captured_run_id": row.captured_run_id,
        "captured_counter": row.captured_counter,
        "run_id": run.run_id,
        "run_description": run_description_json(run.description),
        "parent_dataset_links": json.dumps(links),
        "run_timestamp_raw": row.run_timestamp_raw if row.run_timestamp_raw is not None else -1,
        "completed_timestamp_raw": (
            row.completed_timestamp_raw if row.completed_timestamp_raw is not None else -1
        ),
    }
    attrs.update(run.metadata)
    return attrs
