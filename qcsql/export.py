"""Export a run to the xarray-compatible HDF5 (netCDF4) file a QCoDeS export would be.

``qcodes_<captured_run_id>_<guid>.nc`` by default, as QCoDeS names its exports.

Large runs of the common one-dimensional kind (one parameter against one numeric
setpoint) are streamed: the file's structure is written first and the rows go
from the chunked reader straight into it, so memory does not grow with the run.
Everything else is laid out in memory by :func:`qcsql.plan.plan_run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qcsql.parameter_data import stream_numeric_tree
from qcsql.plan import (
    DatasetPlan,
    Variable,
    as_qcodes_sees,
    dataset_attrs,
    plan_run,
    variable_attrs,
)
from qcsql.runs import Run
from qcsql.writer import ExportError, write_plan

__all__ = ["default_file_name", "export_run"]


class _NotStreamable(Exception):
    """The rows turned out not to fit the streamed layout; lay the run out in memory."""


def default_file_name(run: Run) -> str:
    guid = run.stable_guid
    if guid is None:
        raise ExportError(
            f"{run.database.path}, run {run.run_id}: a schema-v0 run that never started has no "
            "guid to name its export after; give a file name",
            path=run.database.path,
            run_id=run.run_id,
        )
    return f"qcodes_{run.captured_run_id}_{guid}.nc"


def _streamed_plan(run: Run) -> DatasetPlan | None:
    """A one-dimensional numeric run, planned without reading its rows into memory.

    QCoDeS lays such a run out along its setpoint, in measured order, when the
    setpoint values are unique (or the run is a complete shaped one); uniqueness is
    checked while streaming (the values must rise or fall monotonically), and a run
    that breaks it is laid out in memory instead."""
    graph = run.description.interdependencies
    if len(graph.top_level_parameters) != 1:
        return None
    top, setpoints, others = graph.tree_by_group(graph.top_level_parameters[0])
    if len(setpoints) != 1 or others:
        return None
    stream = stream_numeric_tree(run, top)
    if stream is None:
        return None
    setpoint = setpoints[0]
    shape = (run.shapes or {}).get(top)
    if shape is not None and len(shape) != 1:
        return None
    needs_unique = shape is None or shape[0] != stream.rows
    specs = run.description.paramspecs
    variables = {
        top: Variable(top, (setpoint,), np.empty(0), variable_attrs(specs[top]), streamed=True),
        setpoint: Variable(
            setpoint, (setpoint,), np.empty(0), variable_attrs(specs[setpoint]), True, True
        ),
    }

    def fill(created: Mapping[str, Any]) -> None:
        position, previous, direction = 0, None, 0
        for values, coordinate in stream.chunks():
            if needs_unique:
                keys = as_qcodes_sees(coordinate)
                if previous is not None:
                    keys = np.concatenate([[previous], keys])
                steps = np.sign(np.diff(keys))
                if len(steps):
                    direction = direction or int(steps[0])
                    if direction == 0 or np.any(steps != direction):
                        raise _NotStreamable
                previous = keys[-1]
            m = len(values)
            created[top][position : position + m] = values
            created[setpoint][position : position + m] = coordinate
            position += m
        if position != stream.rows:
            raise _NotStreamable

    return DatasetPlan(
        dims={setpoint: stream.rows},
        variables=variables,
        attrs=dataset_attrs(run),
        fill=fill,
    )


def export_run(run: Run, path_or_dir: str | Path) -> Path:
    """Write ``run`` as HDF5/netCDF4; a directory gets QCoDeS' default file name."""
    target = Path(path_or_dir).expanduser()
    if target.is_dir():
        target = target / default_file_name(run)
    if not target.parent.is_dir():
        raise ExportError(f"{target}: the folder {target.parent} does not exist", path=target)
    streamed = _streamed_plan(run)
    if streamed is not None:
        try:
            return write_plan(streamed, target)
        except _NotStreamable:
            pass
    return write_plan(plan_run(run), target)
