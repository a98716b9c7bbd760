"""Export a run to the xarray-compatible HDF5 (netCDF4) file a QCoDeS export would be.

``qcodes_<captured_run_id>_<guid>.nc`` by default, as QCoDeS names its exports.

Large runs of the common one-dimensional kind (one parameter against one numeric
setpoint) are streamed: the file's structure is written first and the rows go
from the chunked reader straight into it, so memory does not grow with the run.
Everything else is laid out in memory by :func:`qcsql.plan.plan_run`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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
    setpoint values are unique (or the run is a complete shaped one). The rows go into
    a growing (unlimited) dimension, so they need not be counted first; uniqueness is
    checked on the way (the values must rise or fall monotonically), and a run that
    needs it but breaks it is laid out in memory instead."""
    graph = run.description.interdependencies
    if len(graph.top_level_parameters) != 1:
        return None
    top, setpoints, others = graph.tree_by_group(graph.top_level_parameters[0])
    if len(setpoints) != 1 or others:
        return None
    shape = (run.shapes or {}).get(top)
    if shape is not None and len(shape) != 1:
        return None
    stream = stream_numeric_tree(run, top)
    if stream is None:
        return None
    setpoint = setpoints[0]
    specs = run.description.paramspecs
    variables = {
        top: Variable(top, (setpoint,), np.empty(0), variable_attrs(specs[top]), streamed=True),
        setpoint: Variable(
            setpoint, (setpoint,), np.empty(0), variable_attrs(specs[setpoint]), True, True
        ),
    }

    def fill(created: Mapping[str, Any], grow: Callable[[str, int], None]) -> None:
        position, previous = 0, None
        direction: int | None = 0
        for values, coordinate in _batches(stream.chunks()):
            if direction is not None:
                direction = _monotonic(coordinate, previous, direction)
                previous = coordinate[-1] if len(coordinate) else previous
            m = len(values)
            grow(setpoint, position + m)
            created[top][position : position + m] = values
            created[setpoint][position : position + m] = coordinate
            position += m
        complete_shape = shape is not None and shape[0] == position
        if direction is None and not complete_shape:
            raise _NotStreamable  # duplicated setpoints: QCoDeS uses an index layout

    return DatasetPlan(
        dims={setpoint: 0},
        variables=variables,
        attrs=dataset_attrs(run),
        fill=fill,
        unlimited=frozenset({setpoint}),
    )


def _batches(chunks: Iterator[tuple[Any, Any]], rows: int = 1 << 20) -> Iterator[tuple[Any, Any]]:
    """Chunks joined into batches of about ``rows`` rows (16 MiB for two columns): few,
    large writes into the file, memory still bounded."""
    pending: list[tuple[Any, Any]] = []
    count = 0
    for chunk in chunks:
        pending.append(chunk)
        count += len(chunk[0])
        if count >= rows:
            yield np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending])
            pending, count = [], 0
    if pending:
        yield np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending])


def _monotonic(values: Any, previous: float | None, direction: int) -> int | None:
    """The direction (+1/-1) in which the setpoint values keep strictly rising or falling as
    QCoDeS sees them (15 significant digits); None once they do not."""
    joined = values if previous is None else np.concatenate([[previous], values])
    if len(joined) < 2:
        return direction
    steps = np.diff(joined)
    # Steps well above the 15th digit cannot vanish in QCoDeS' rounding: no need to round.
    close = np.abs(steps) <= 1e-13 * np.maximum(np.abs(joined[1:]), np.abs(joined[:-1]))
    if close.any() or not np.all(np.isfinite(steps)):
        steps = np.diff(as_qcodes_sees(joined))
    signs = np.sign(steps)
    direction = direction or int(signs[0])
    if direction == 0 or np.any(signs != direction):
        return None
    return direction


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
