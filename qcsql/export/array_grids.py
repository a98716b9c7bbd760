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
  frequencies;
* a sweep, the same grid without that pass: where the first window's setpoint values
  keep rising (or falling), each a step apart that QCoDeS' 15 digits keep, row ``i``
  goes to level ``i`` (or ``rows - 1 - i``), checked window by window as the rows come.
  Where a later row breaks the sweep the plan gives up, and the plan of sorted levels
  is tried next (:func:`array_grid_plans`).

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
    monotonic_apart,
    plan_dataset,
)

__all__ = ["Progress", "array_grid_plans"]

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
    sweep: int = 0  # +1 (-1): a sweep, row i at level i (rows - 1 - i); 0: not one


def array_grid_plans(
    run: DatasetSource,
    tops: list[str],
    stream: ArrayTreeStream,
    first: Window,
    chunks: Iterator[Window],
    progress: Progress | None,
) -> Iterator[DatasetPlan]:
    """The streamed plans of array parameters ``tops`` against ``(scalar, array)``
    setpoints laid out as QCoDeS' ``(scalar, array)`` grid, from the run's first window
    (``first``, the rest in ``chunks``): the sweep's, where the first window's setpoint
    values keep rising or falling, then (should a later row break the sweep) that of the
    sorted levels, which reads the run again. No plan where the layout is not that grid
    (repeated setpoint values, frequencies that change between rows, other setpoints):
    the in-memory plan decides then."""
    found = _array_grid_plan(run, tops, stream, (first, chunks), progress, sweep=True)
    del first, chunks  # the plan's source holds the first window until it is written
    if found is None:
        return
    plan, swept = found
    yield plan
    if not swept:
        return
    again = stream.chunks()  # the rows stopped sweeping: read from the first again
    window = next(again, None)
    if window is None:
        return
    found = _array_grid_plan(run, tops, stream, (window, again), progress, sweep=False)
    del window, again
    if found is not None:
        yield found[0]


def _array_grid_plan(
    run: DatasetSource,
    tops: list[str],
    stream: ArrayTreeStream,
    windows: tuple[Window, Iterator[Window]],
    progress: Progress | None,
    *,
    sweep: bool,
) -> tuple[DatasetPlan, bool] | None:
    """The grid's plan (see :func:`array_grid_plans`; ``windows``: the first window read
    and the iterator of the rest) and whether it is a sweep's (only where ``sweep`` allows
    one)."""
    first, chunks = windows
    del windows  # the plan's source alone holds the first window once it is made
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
    elif sweep and (direction := _sweeping(data[scalar][:, 0])) and not has_nan(axis_row):
        order = _axis_order(axis_row)
        if order is None:
            return None
        placed = _Rows(tops, scalar, axis, axis_row, points, dtypes, None, None, order, direction)
        levels = rows
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
    plan = DatasetPlan(
        dims={scalar: levels, axis: points},
        variables=variables,
        attrs=dataset_attrs(run),
        source=source,
    )
    return plan, bool(placed.sweep)


def _sweeping(values: npt.NDArray[Any], previous: npt.NDArray[Any] | None = None) -> int:
    """+1 (-1) where ``values`` (after ``previous``, the values before them) keep rising
    (falling), each step wider than QCoDeS' 15 digits can close: then they are unique as
    QCoDeS reads them and sorted as its levels are, or reversed. 0 otherwise, and for fewer
    than two values."""
    joined = values if previous is None else np.concatenate([previous, values])
    if len(joined) < 2 or not monotonic_apart([joined]):
        return 0
    return 1 if joined[1] > joined[0] else -1


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
    order = _axis_order(axis_row)
    if order is None:
        return None
    return positions.reshape(-1), values, order


def _axis_order(axis_row: npt.NDArray[Any]) -> npt.NDArray[np.intp] | None:
    """The order of the sorted array setpoint (QCoDeS' levels along it), None unless its
    values are unique as QCoDeS reads them (free of NaN: the caller checks)."""
    axis_keys, order = np.unique(as_qcodes_sees(axis_row), return_index=True)
    return order if len(axis_keys) == len(axis_row) else None


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
    first_values: list[npt.NDArray[Any]] = []  # each row's setpoint value, where not read before
    for last_id, data in chunks:
        n = len(data[axis])
        if start + n > rows:
            raise NotStreamable  # more rows than counted: the file changed meanwhile
        for name, array in data.items():
            if array.dtype != placed.dtypes[name] or array.shape[1:] != (placed.points,):
                raise NotStreamable  # the arrays change length or dtype between rows
        direct = placed.positions is None and not placed.sweep
        if not _same_rows(data[axis], placed.axis_row):
            raise NotStreamable  # other frequencies: not a grid (nor in the direct layout's order)
        swept = data[scalar][:, 0]
        if direct:
            if not np.array_equal(
                data[scalar], np.broadcast_to(swept[:, None], data[scalar].shape)
            ):
                raise NotStreamable  # QCoDeS' direct layout places such rows value by value
            first_values.append(swept.copy())  # a view would keep the window's rows
            for top in tops:
                yield Batch(top, (slice(start, start + n),), data[top])
        elif placed.sweep:
            if _sweeping(swept, first_values[-1][-1:] if first_values else None) != placed.sweep:
                raise NotStreamable  # no longer a sweep: the levels' plan reads them first
            first_values.append(swept.copy())
            offsets = np.arange(start, start + n)
            yield from _at_levels(placed, data, offsets if placed.sweep > 0 else rows - 1 - offsets)
        else:
            assert placed.positions is not None and placed.scalar_values is not None
            if not np.array_equal(swept, placed.scalar_values[start : start + n]):
                raise NotStreamable  # not the rows the first pass read
            yield from _at_levels(placed, data, placed.positions[start : start + n])
        start += n
        del data, swept  # not held while the next window is read
        if progress is not None:
            progress(last_id, upto)
    if start != rows:
        raise NotStreamable
    if placed.positions is None and not placed.sweep:  # direct: the first line along each axis
        coordinates = (np.concatenate(first_values), placed.axis_row)
        if any(has_repeats(values) for values in coordinates):
            raise NotStreamable  # not a grid: QCoDeS' (0.62) direct layout fails on it
        yield Batch(scalar, (slice(None),), coordinates[0])
        yield Batch(axis, (slice(None),), coordinates[1])
    elif placed.sweep:  # the setpoint's values are its levels, sorted, or the other way round
        assert placed.order is not None
        values = np.concatenate(first_values)
        yield Batch(scalar, (slice(None),), values if placed.sweep > 0 else values[::-1].copy())
        yield Batch(axis, (slice(None),), placed.axis_row[placed.order])
    else:
        assert placed.scalar_values is not None and placed.order is not None
        levels = np.empty_like(placed.scalar_values)
        levels[placed.positions] = placed.scalar_values
        yield Batch(scalar, (slice(None),), levels)
        yield Batch(axis, (slice(None),), placed.axis_row[placed.order])


def _same_rows(rows: npt.NDArray[Any], row: npt.NDArray[Any]) -> bool:
    """Whether every one of ``rows`` holds ``row``'s values (as ``np.array_equal`` compares
    them, without a broadcast copy of ``row``)."""
    return rows.shape[1:] == row.shape and bool((rows == row).all())


def _at_levels(
    placed: _Rows, data: dict[str, npt.NDArray[Any]], positions: npt.NDArray[np.intp]
) -> Iterator[Batch]:
    """One window's rows at their levels, in runs of consecutive levels (one region, and
    no copy, where they come in the levels' order, as a sweep's do)."""
    assert placed.order is not None
    if len(positions) > 1 and np.all(np.diff(positions) == -1):  # a falling sweep
        positions, data = positions[::-1], {name: array[::-1] for name, array in data.items()}
    if np.all(np.diff(positions) == 1):
        rising: npt.NDArray[np.intp] | slice = slice(None)
        places = positions
    else:
        rising = np.argsort(positions, kind="stable")
        places = positions[rising]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(places) != 1) + 1])
    ends = np.append(starts[1:], len(places))
    identity = bool(np.array_equal(placed.order, np.arange(placed.points)))
    for top in placed.tops:
        values = data[top][rising]  # a copy unless a slice
        if not identity:
            values = values[:, placed.order]
        for begin, end in zip(starts.tolist(), ends.tolist(), strict=True):
            level = int(places[begin])
            yield Batch(top, (slice(level, level + end - begin),), values[begin:end])
