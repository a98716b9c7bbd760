"""Array runs on a grid: a trace per step of a swept setpoint, streamed a row at a time.

The layout labs measure most with arrays is a spectrum (or a complex IQ trace) of the
same frequencies (times) at every step of one swept scalar setpoint: a
``ParameterWithSetpoints`` registered against ``(power, freq)``. QCoDeS lays it out
as a ``(power, freq)`` grid: without a fitting ``shapes`` entry, through the pandas
index of all ``rows x points`` setpoint pairs, which are unique when every power
is, and so form a grid of the sorted levels; with one, directly, in row order, the
coordinates taken from the first line along each axis. Both are a row of the file
per row of the run, so the rows go straight into it, window by window:

* the direct layout (every parameter declares ``(rows, points)``): row ``i`` of the
  run is row ``i`` of the file, ``power`` the first value of each row, ``freq`` the
  first row's, where every row holds the first row's frequencies and each power
  once (QCoDeS 0.62 places each value by its setpoints' values in the order they
  first appear, which is then row order; others are laid out in memory);
* the grid of sorted levels: one cheap pass reads the scalar setpoint alone (SQLite,
  no blob decoded), its values must be unique as QCoDeS reads them (15 digits); the
  array setpoint must hold the same values in every row, unique too; then each row
  goes to the level of its setpoint value, its points in the order of the sorted
  frequencies.

A plan checks while writing that every row has what the first row and the first pass
promised (the same frequencies, the setpoint value read before, arrays of the same
length and dtype), and gives up with :class:`~qcsql.export.layout.NotStreamable`
otherwise: the run is then laid out in memory, as QCoDeS lays it out whatever it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qcsql.data.streams import ArrayTreeStream
from qcsql.export.attributes import DatasetSource, dataset_attrs
from qcsql.export.keys import as_qcodes_sees, has_nan, has_repeats
from qcsql.export.layout import (
    Batch,
    DatasetPlan,
    NotStreamable,
    Variable,
    handed_on,
    plan_dataset,
)

__all__ = ["Progress", "array_grid_plan"]

Window = tuple[int, dict[str, npt.NDArray[Any]]]  # (last id read, {column: rows})
Progress = Callable[[int, int], None]  # (rows written, rows expected at most)


@dataclass(frozen=True)
class _Rows:
    """Where each row of the run goes in the grid and what the plan promised about it."""

    tops: list[str]
    scalar: str  # the swept scalar setpoint
    axis: str  # the array setpoint
    axis_row: npt.NDArray[Any]  # its values, the same in every row
    points: int
    dtypes: dict[str, np.dtype[Any]]
    positions: npt.NDArray[np.intp] | None  # each row's level (None: row order, direct)
    scalar_values: npt.NDArray[Any] | None  # each row's setpoint value, read beforehand
    order: npt.NDArray[np.intp] | None  # the points in the order of the sorted axis


def array_grid_plan(
    run: DatasetSource,
    tops: list[str],
    stream: ArrayTreeStream,
    first: Window,
    chunks: Iterator[Window],
    progress: Progress | None,
) -> DatasetPlan | None:
    """The streamed plan of array parameters ``tops`` against ``(scalar, array)``
    setpoints laid out as QCoDeS' ``(scalar, array)`` grid, from the run's first window
    (``first``, the rest in ``chunks``); None where the layout is not that grid (repeated
    setpoint values, frequencies that change between rows, other setpoints): the
    in-memory plan decides then."""
    description = run.description
    graph = description.interdependencies
    setpoints = stream.trees[0].columns[1:]
    if len(setpoints) != 2:
        return None
    scalar, axis = setpoints
    kinds = [graph.parameters[name].paramtype for name in (*tops, scalar, axis)]
    if kinds != ["array"] * len(tops) + ["numeric", "array"]:
        return None
    data = first[1]
    axis_rows = data[axis]
    if axis_rows.ndim != 2 or any(data[top].shape != axis_rows.shape for top in tops):
        return None
    if data[scalar].shape != axis_rows.shape or not len(axis_rows):
        return None
    rows, points = stream.rows, axis_rows.shape[1]
    axis_row = axis_rows[0].copy()  # a view would keep the first window for the whole write
    dtypes = {name: array.dtype for name, array in data.items()}
    if any(dtype.kind not in "fiuc" for dtype in dtypes.values()):
        return None

    declared = {description.direct_shape(top) for top in tops}
    if declared == {(rows, points)}:  # QCoDeS' direct layout: row order, first lines
        placed = _Rows(tops, scalar, axis, axis_row, points, dtypes, None, None, None)
        levels = rows
    elif (rows, points) in declared:
        return None  # some parameters laid out directly, others not: left to memory
    else:
        found = _levels(stream, scalar, axis_row, rows, dtypes[scalar])
        if found is None:
            return None
        positions, values, order = found
        placed = _Rows(tops, scalar, axis, axis_row, points, dtypes, positions, values, order)
        levels = rows

    probe = _probe(run, tops, data, setpoints)
    if probe is None or list(probe.dims) != [scalar, axis]:
        return None
    variables = {
        name: Variable(name, v.dims, np.empty(0, v.data.dtype), v.attrs, v.is_coord, streamed=True)
        for name, v in probe.variables.items()
    }
    upto = max(tree.rows.upto_id for tree in stream.trees)
    source = functools.partial(_grid_rows, placed, handed_on(first, chunks), rows, upto, progress)
    return DatasetPlan(
        dims={scalar: levels, axis: points},
        variables=variables,
        attrs=dataset_attrs(run),
        source=source,
    )


def _probe(
    run: DatasetSource,
    tops: list[str],
    data: dict[str, npt.NDArray[Any]],
    setpoints: tuple[str, ...],
) -> DatasetPlan | None:
    """The in-memory plan of the first row, its array setpoint replaced by distinct values:
    the variables of the grid, their order and attributes (the sizes and values come from
    the whole run, and whether it is that grid was decided from it)."""
    _, axis = setpoints
    distinct = np.arange(data[axis].shape[1]).astype(data[axis].dtype)
    sub = {
        top: {
            **{name: data[name][:1] for name in (top, *setpoints)},
            axis: distinct.reshape(1, -1),
        }
        for top in tops
    }
    plan = plan_dataset(run.description, sub, dataset_attrs(run))
    if any(variable.data.dtype.kind not in "fiuc" for variable in plan.variables.values()):
        return None
    return plan


def _levels(
    stream: ArrayTreeStream,
    scalar: str,
    axis_row: npt.NDArray[Any],
    rows: int,
    dtype: np.dtype[Any],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[Any], npt.NDArray[np.intp]] | None:
    """Each row's level of the swept setpoint (its values read alone, in one pass), the
    values read, and the order of the sorted array setpoint; None unless both are unique
    as QCoDeS reads them (else QCoDeS lays the run out along an index) and free of NaN
    (pandas keeps NaN out of its levels)."""
    try:
        values = np.array(stream.scalar_column(scalar), dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        return None  # NULL, text or a blob: the stream's own decoding decides, in memory
    if len(values) != rows or values.ndim != 1:
        return None
    if has_nan(values) or has_nan(axis_row):
        return None
    keys, positions = np.unique(as_qcodes_sees(values), return_inverse=True)
    if len(keys) != rows:
        return None
    axis_keys, order = np.unique(as_qcodes_sees(axis_row), return_index=True)
    if len(axis_keys) != len(axis_row):
        return None
    return positions.reshape(-1), values, order


def _grid_rows(
    placed: _Rows,
    chunks: Iterator[Window],
    rows: int,
    upto: int,
    progress: Progress | None,
) -> Iterator[Batch]:
    """Each window's rows at their levels, runs of consecutive levels one region (a
    sweep in either direction is one region per window); then the coordinates. Checks
    every row against what the plan promised."""
    scalar, axis, tops = placed.scalar, placed.axis, placed.tops
    start = 0
    first_values: list[npt.NDArray[Any]] = []
    for last_id, data in chunks:
        n = len(data[axis])
        if start + n > rows:
            raise NotStreamable  # more rows than counted: the file changed meanwhile
        for name, array in data.items():
            if array.dtype != placed.dtypes[name] or array.shape[1:] != (placed.points,):
                raise NotStreamable  # the arrays change length or dtype between rows
        if not np.array_equal(data[axis], np.broadcast_to(placed.axis_row, data[axis].shape)):
            raise NotStreamable  # other frequencies: not a grid (nor in the direct layout's order)
        swept = data[scalar][:, 0]
        if placed.positions is None:
            if not np.array_equal(
                data[scalar], np.broadcast_to(swept[:, None], data[scalar].shape)
            ):
                raise NotStreamable  # QCoDeS' direct layout places such rows value by value
            first_values.append(swept.copy())  # a view would keep the window's rows
            for top in tops:
                yield Batch(top, (slice(start, start + n),), data[top])
        else:
            assert placed.scalar_values is not None and placed.order is not None
            if not np.array_equal(swept, placed.scalar_values[start : start + n]):
                raise NotStreamable  # not the rows the first pass read
            yield from _at_levels(placed, data, placed.positions[start : start + n])
        start += n
        del data, swept  # not held while the next window is read
        if progress is not None:
            progress(last_id, upto)
    if start != rows:
        raise NotStreamable
    if placed.positions is None:  # direct: coordinates from the first line along each axis
        coordinates = (np.concatenate(first_values), placed.axis_row)
        if any(has_repeats(values) for values in coordinates):
            raise NotStreamable  # not a grid: QCoDeS' (0.62) direct layout fails on it
        yield Batch(scalar, (slice(None),), coordinates[0])
        yield Batch(axis, (slice(None),), coordinates[1])
    else:
        assert placed.scalar_values is not None and placed.order is not None
        levels = np.empty_like(placed.scalar_values)
        levels[placed.positions] = placed.scalar_values
        yield Batch(scalar, (slice(None),), levels)
        yield Batch(axis, (slice(None),), placed.axis_row[placed.order])


def _at_levels(
    placed: _Rows, data: dict[str, npt.NDArray[Any]], positions: npt.NDArray[np.intp]
) -> Iterator[Batch]:
    """One window's rows at their levels, in runs of consecutive levels."""
    assert placed.order is not None
    rising = np.argsort(positions, kind="stable")
    places = positions[rising]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(places) != 1) + 1])
    ends = np.append(starts[1:], len(places))
    identity = bool(np.array_equal(placed.order, np.arange(placed.points)))
    for top in placed.tops:
        values = data[top][rising]
        if not identity:
            values = values[:, placed.order]
        for begin, end in zip(starts.tolist(), ends.tolist(), strict=True):
            level = int(places[begin])
            yield Batch(top, (slice(level, level + end - begin),), values[begin:end])
