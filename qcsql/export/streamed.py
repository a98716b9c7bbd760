"""Plans whose data go from the page readers straight into the file, window by window.

QCoDeS' layout of a run usually depends on all of its rows (are the setpoints
unique? on a grid? which values do the levels take?), but for the layouts of
large sweeps it can be decided from the run's declared shapes, its first rows, or
one cheap pass over its setpoints. Each plan here decides what it can up front
and checks the rest while writing: when the rows stop fitting, it raises
:class:`NotStreamable` and :func:`qcsql.export.run.export_run` discards the partial
file and tries the next plan, and finally writes the run from memory
(:func:`qcsql.export.layout.plan_run`). The tests compare every streamed layout with
QCoDeS' own export and with the in-memory plan.

A plan here is data: its ``source`` is a generator of the batches of values it puts
where (:class:`~qcsql.export.layout.Batch`), read window by window as the writer asks
for them; the writer alone touches the file, growing the dimensions the regions reach
past (:func:`qcsql.export.writer.write_plan`). The checks that decide a layout stay
in the generators, which raise as soon as the rows stop fitting it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qcsql.data.streams import (
    ArrayTreeStream,
    NumericTreeStream,
    RowsDiffer,
    stream_array_trees,
    stream_numeric_trees,
)
from qcsql.export.array_grids import Progress, array_grid_plans
from qcsql.export.attributes import DatasetSource, dataset_attrs, variable_attrs
from qcsql.export.keys import (
    as_qcodes_sees,
    each_as_qcodes_sees,
    has_nan,
    has_repeats,
    same_as_qcodes_sees,
)
from qcsql.export.layout import (
    INDEX,
    MULTI_INDEX,
    Batch,
    DatasetPlan,
    NotStreamable,
    Region,
    Variable,
    handed_on,
    plan_dataset,
)
from qcsql.schema.description import qcodes_size, shape_is_sane

__all__ = ["NotStreamable", "Progress", "streamed_plans"]


ARRAY_BYTES_PER_CHUNK = 16 * 1024 * 1024  # of blobs read per window of an array run
PROBE_ROWS = 64  # rows whose own layout decides whether an array run streams
GRID_CELLS = 1 << 28  # larger grids of an interrupted sweep are left to the in-memory plan


def streamed_plans(run: DatasetSource, progress: Progress | None = None) -> Iterator[DatasetPlan]:
    """The plans under which a run's rows could go straight into the file, cheapest
    first; each may still give up while writing (:class:`NotStreamable`), and the caller
    then tries the next, and finally the in-memory plan."""
    tops = run.description.interdependencies.top_level_parameters
    if not tops or not all(_shape_streams(run, top) for top in tops):
        return
    arrays = stream_array_trees(run, tops, ARRAY_BYTES_PER_CHUNK)
    if arrays is not None:
        try:
            chunks = arrays.chunks()
            first = next(chunks, None)
            if first is None:
                return
            plan = _streamed_index_plan(run, list(tops), arrays, first, chunks, progress)
            # the first window's rows read once, by whichever plan streams
            plans = (
                iter([plan])
                if plan is not None
                else array_grid_plans(run, list(tops), arrays, first, chunks, progress)
            )
            del first, plan  # the plan's source holds the window until it is written
            while (plan := next(plans, None)) is not None:
                yield plan
        except RowsDiffer:
            return
        return
    yield from _numeric_plans(run, list(tops), progress)


def _shape_streams(run: DatasetSource, top: str) -> bool:
    """Whether ``top``'s declared shape (if any) leaves its layout to the streamed plans.

    Not where QCoDeS' ``get_parameter_data`` of it may fail: an entry ``int()`` refuses, or
    one numpy cannot reshape to once the product matches the data's size (two negative
    entries, a product that wraps around; a stream only knows the size at its end). A
    product below zero is never a size: QCoDeS never reshapes, and it streams as if the
    shape were any other that does not fit."""
    description = run.description
    if top in description.shape_problems:
        return False
    shape = (description.shapes or {}).get(top)
    return shape is None or shape_is_sane(shape) or qcodes_size(shape) < 0


def _direct_shape(run: DatasetSource, top: str) -> tuple[int, ...] | None:
    """The declared shape QCoDeS' export lays ``top`` out along when its data fill it (see
    :meth:`~qcsql.schema.description.RunDescription.direct_shape`), if every entry is positive;
    else None, and the streamed layouts are those of a run whose shape does not fit. (An
    entry 0 fits only an empty tree, which no grid plan streams.)"""
    shape = run.description.direct_shape(top)
    if shape is None or not shape_is_sane(shape) or 0 in shape:
        return None
    return shape


def _fill(run: DatasetSource, tops: list[str], shape: tuple[int, ...], at_most: int) -> bool:
    """Whether the data of one of ``tops`` fill ``shape`` (each has at most ``at_most``
    rows; they are counted only when the shape is no larger)."""
    size = math.prod(shape)
    if size > at_most:
        return False
    table = run.results_table()
    upto = table.max_id()
    return any(table.locate(top, None, None, upto).rows == size for top in tops)


def _streamed_index_plan(
    run: DatasetSource,
    tops: list[str],
    stream: ArrayTreeStream,
    first: tuple[int, dict[str, npt.NDArray[Any]]],
    chunks: Iterator[tuple[int, dict[str, npt.NDArray[Any]]]],
    progress: Progress | None,
) -> DatasetPlan | None:
    """An array run whose setpoint rows repeat (every sweep of a spectrum analyser, say):
    QCoDeS lays each parameter out flat along ``index``, row after row, which streams
    (several parameters on the same setpoints merge into one such layout). The first
    ``PROBE_ROWS`` rows decide: their own plan must already be that layout (a repeat there
    is a repeat in the whole run), and the run must declare no shape that could reshape it.
    ``first`` is the run's first window, ``chunks`` the rest."""
    if set(tops) & set(run.description.declared_shapes or {}):
        return None
    attrs = dataset_attrs(run)
    setpoints = stream.trees[0].columns[1:]
    if _points_differ(run, setpoints, first[1], PROBE_ROWS):
        return None  # no two of the first rows' points share their setpoints: not along index
    head = {top: {name: first[1][name][:PROBE_ROWS] for name in (top, *setpoints)} for top in tops}
    probe = plan_dataset(run.description, head, attrs)
    if set(probe.dims) != {INDEX} or any(
        v.data.dtype.kind not in "fiucb" for v in probe.variables.values()
    ):
        return None
    variables = {
        name: Variable(name, v.dims, np.empty(0, v.data.dtype), v.attrs, v.is_coord, streamed=True)
        for name, v in probe.variables.items()
    }
    per_row = {name: array.shape[1:] for name, array in first[1].items()}
    if len({per_row[top] for top in tops}) != 1:
        return None  # parameters of different lengths do not share one index
    dtypes = {name: v.data.dtype for name, v in probe.variables.items()}
    total = math.prod(per_row[tops[0]]) * stream.rows
    upto = max(tree.rows.upto_id for tree in stream.trees)

    # One pass over the stream, its first window already read: the plan is written once.
    source = functools.partial(
        _index_batches,
        handed_on(first, chunks),
        tops[0],
        per_row,
        dtypes,
        total,
        upto,
        progress,
    )
    # The size is known from the count, so the datasets are contiguous, as xarray writes.
    return DatasetPlan(dims={INDEX: total}, variables=variables, attrs=attrs, source=source)


def _points_differ(
    run: DatasetSource,
    setpoints: tuple[str, ...],
    data: dict[str, npt.NDArray[Any]],
    rows: int,
) -> bool:
    """Whether the points of the first ``rows`` rows of ``data`` all have different
    setpoints as QCoDeS sees them, shown cheaply: a scalar setpoint takes a different
    value in each row, and an array setpoint holds the same values in each row, all
    different. Then QCoDeS finds no duplicate among them, and lays the run out along its
    setpoints, never along ``index`` (which only a repeat makes; the in-memory plan of the
    rows, which :func:`_streamed_index_plan` otherwise makes to see, costs as much as
    reading them). False when not shown so (NaN, repeats, other setpoints): the plan
    then decides."""
    kinds = {
        name: run.description.interdependencies.parameters[name].paramtype for name in setpoints
    }
    scalars = [name for name in setpoints if kinds[name] == "numeric"]
    arrays = [name for name in setpoints if kinds[name] == "array"]
    if not scalars or not arrays:
        return False
    swept, lines = data[scalars[0]][:rows], data[arrays[0]][:rows]
    if swept.ndim < 2 or not swept.size or swept.shape != lines.shape:
        return False
    values, line = swept.reshape(len(swept), -1)[:, 0], lines[0].reshape(-1)
    if (
        has_nan(values)
        or has_nan(line)
        or not np.array_equal(lines, np.broadcast_to(lines[0], lines.shape))
    ):
        return False
    return all(len(np.unique(as_qcodes_sees(v))) == len(v) for v in (values, line))


def _index_batches(
    chunks: Iterator[tuple[int, dict[str, npt.NDArray[Any]]]],
    top: str,
    per_row: dict[str, tuple[int, ...]],
    dtypes: dict[str, np.dtype[Any]],
    total: int,
    upto: int,
    progress: Progress | None,
) -> Iterator[Batch]:
    """The windows of an array run flat along ``index``, each parameter's and setpoint's
    values, then the index itself; checking that every row has the arrays the first
    rows had (``per_row``, ``dtypes``) and that the run has the ``total`` values counted."""
    position = 0
    for last_id, data in chunks:
        if {name: a.shape[1:] for name, a in data.items()} != per_row:
            raise NotStreamable  # the arrays change shape between rows
        flat = {name: array.reshape(-1) for name, array in data.items()}
        m = len(flat[top])
        if position + m > total:
            raise NotStreamable  # more rows than counted: the file changed meanwhile
        region = (slice(position, position + m),)
        for name, values in flat.items():
            if values.dtype != dtypes[name]:
                raise NotStreamable
            yield Batch(name, region, values)
        yield Batch(INDEX, region, np.arange(position, position + m))
        position += m
        if progress is not None:
            progress(last_id, upto)
    if position != total:
        raise NotStreamable


def _numeric_plans(
    run: DatasetSource, tops: list[str], progress: Progress | None = None
) -> Iterator[DatasetPlan]:
    """Plans of the parameters ``tops`` of a numeric run whose rows can go straight into
    the file.

    Parameters that share their setpoints, row for row (a sweep recording several
    dependents; checked while streaming), are written together; others tree by tree
    (:func:`_tree_by_tree_plans`). First the one-pass layouts: along a
    single setpoint whose values keep rising or falling (so are unique), and a complete
    shaped grid (QCoDeS' direct layout: rows in C order, coordinates from the first line
    along each axis). Then the layouts that need a pass over the setpoints first
    (:func:`_levels_plans`): any other single-setpoint run, interrupted, over-run or
    unshaped sweeps, and runs with repeated setpoints."""
    if not all(_shape_streams(run, top) for top in tops):
        return
    declared = {_direct_shape(run, top) for top in tops}
    stream = stream_numeric_trees(run, tops)
    if stream is None or len(declared) != 1:
        if len(tops) > 1:
            yield from _tree_by_tree_plans(run, tops, progress)
        return
    shape = declared.pop()
    setpoints = tuple(stream.tree.columns[len(tops) :])
    if shape is not None and len(shape) != len(setpoints):
        # QCoDeS' direct layout of data that fill such a shape fails; data that do not fill
        # it are laid out as if no shape fitted
        if _fill(run, tops, shape, stream.rows // stream.tops):
            return
        shape = None
    if not setpoints:
        return
    variables = _variables(run, tops, setpoints, {name: setpoints for name in tops})
    sweep = _Sweep(run, stream, tops, setpoints, shape, variables, progress)
    if len(setpoints) == 1:
        yield _along_setpoint_plan(sweep, True)
    elif shape is not None and math.prod(shape) <= stream.rows // stream.tops:
        yield DatasetPlan(
            dims=dict(zip(setpoints, shape, strict=True)),
            variables=variables,
            attrs=dataset_attrs(run),
            source=functools.partial(_grid_batches, sweep, shape),
        )
    if sweep.off_grid_order:
        return  # placed by their setpoints' values, or refused: in memory
    plan = _line_grid_plan(sweep) if len(setpoints) == 2 else _repeated_early_plan(sweep)
    if plan is not None:
        yield plan
    yield from _levels_plans(sweep)
    if sweep.off_grid_order:
        return
    if len(tops) > 1 and len(setpoints) == 1:
        plan = _outer_merge_plan(run, tops, setpoints[0], progress)
        if plan is not None:
            yield plan


def _tree_by_tree_plans(
    run: DatasetSource, tops: list[str], progress: Progress | None
) -> Iterator[DatasetPlan]:
    """Parameters on different setpoints (a gate leakage on ``x`` beside a current on
    ``(x, y)``, two sweeps of different gates), or declaring different shapes: each tree
    is planned on its own and the plans are merged as QCoDeS' ``xr.merge`` merges their
    datasets where no alignment is needed, that is where dimensions of one name have one
    size and coordinates of one name one set of values (checked while writing). Trees
    that need xarray's outer join are left to the in-memory plan. The trees' first
    plans are tried first; where one gives up, that tree's next plan is tried
    (:func:`_numeric_plans` orders them cheapest first)."""
    candidates = [
        _numeric_plans(run, [top], _tree_progress(progress, index, len(tops)))
        for index, top in enumerate(tops)
    ]
    chosen = [next(plans, None) for plans in candidates]
    while True:
        plans = [plan for plan in chosen if plan is not None]
        if len(plans) < len(chosen):
            return  # a tree with no streamed layout left
        gave_up: list[int] = []
        merged = _merged_plan(plans, dataset_attrs(run), gave_up)
        if merged is None:
            return
        yield merged
        if not gave_up:
            return  # the trees need xarray's outer join, done in memory
        chosen[gave_up[0]] = next(candidates[gave_up[0]], None)  # that tree's next layout


def _tree_progress(progress: Progress | None, index: int, trees: int) -> Progress | None:
    """One tree's progress as a share of the whole run's (the trees written one by one)."""
    if progress is None:
        return None
    report = progress

    def share(done: int, expected: int) -> None:
        report(index * expected + done, trees * expected)

    return share


def _merged_plan(
    plans: list[DatasetPlan], attrs: dict[str, Any], gave_up: list[int]
) -> DatasetPlan | None:
    """The trees' plans as one file: dims and variables in the order xarray's merge lists
    them, a dimension growing only if it grows in every plan that has it. Each variable is
    written by the first plan that has it; later plans' values for it must equal it (as
    QCoDeS' merge compares them), and their growing dimensions must end at its size.
    Where a tree's own plan gives up (its rows do not fit its layout), writing stops and
    the tree's index goes to ``gave_up``."""
    dims: dict[str, int] = {}
    unlimited: set[str] = set()
    for plan in plans:
        for dim, size in plan.dims.items():
            if dim not in dims:
                dims[dim] = size
                if dim in plan.unlimited:
                    unlimited.add(dim)
            elif dim in plan.unlimited:
                continue  # checked while writing
            elif dim in unlimited:
                unlimited.discard(dim)
                dims[dim] = size
            elif dims[dim] != size:
                return None  # xarray aligns the two by an outer join
    variables: dict[str, Variable] = {}
    writer: dict[str, int] = {}
    for index, plan in enumerate(plans):
        for name, variable in plan.variables.items():
            previous = variables.get(name)
            if previous is None:
                variables[name], writer[name] = variable, index
            elif previous.dims != variable.dims or not (previous.streamed and variable.streamed):
                return None
            elif variable.is_coord and not previous.is_coord:
                variables[name] = dataclasses.replace(previous, is_coord=True)

    expected = [plan.expected_rows for plan in plans if plan.expected_rows is not None]
    return DatasetPlan(
        dims=dims,
        variables=variables,
        attrs=attrs,
        source=functools.partial(_merged_batches, plans, dims, unlimited, writer, gave_up),
        unlimited=frozenset(unlimited),
        expected_rows=max(expected) if expected else None,
    )


def _merged_batches(
    plans: list[DatasetPlan],
    dims: dict[str, int],
    unlimited: set[str],
    writer: dict[str, int],
    gave_up: list[int],
) -> Iterator[Batch]:
    """The trees' batches, tree after tree. A variable an earlier tree wrote (a shared
    coordinate) is compared, not written again (the writer checks that its values are
    those already there, as QCoDeS' merge sees them). A dimension growing in a tree must
    not grow past the size another tree gave it, and must end at that size."""
    size = dict(dims)
    settled = set(dims) - unlimited  # sizes no later plan may change
    for index, plan in enumerate(plans):
        if plan.source is None:
            continue
        reached: dict[str, int] = {}
        batches = plan.source()
        while True:
            try:
                batch = next(batches, None)
            except _Misaligned:
                raise
            except (NotStreamable, RowsDiffer):
                gave_up.append(index)
                raise
            if batch is None:
                break
            for dim, end in plan.reach(batch, size).items():
                if dim not in plan.unlimited:
                    continue
                reached[dim] = max(reached.get(dim, 0), end)
                if end > size[dim]:
                    if dim in settled:
                        raise _Misaligned  # longer along it than another tree
                    size[dim] = end  # the writer grows it
            yield batch if writer[batch.variable] == index else batch._replace(compare=True)
            del batch  # not held while the tree's source makes its next batch
        for dim in plan.unlimited:
            if reached.get(dim, 0) != size[dim]:
                raise _Misaligned  # shorter along it than another tree
            settled.add(dim)


class _Misaligned(NotStreamable):
    """The trees' datasets need aligning (xarray's outer join): laid out in memory."""


def _outer_merge_plan(
    run: DatasetSource, tops: list[str], setpoint: str, progress: Progress | None
) -> DatasetPlan | None:
    """Dependents measured at different values of one setpoint: QCoDeS merges their
    datasets with xarray's outer join, the union of the values (sorted, unless every tree
    has the same ones) and NaN where a tree has no row. A first pass reads each tree's
    setpoint values (the coordinate, so memory of its size), the second writes each tree's
    values at their places."""
    streams = [stream_numeric_trees(run, [top]) for top in tops]
    coordinates = []
    for top, stream in zip(tops, streams, strict=True):
        if stream is None:
            return None
        try:
            parts = [columns[1] for columns in _batches(stream.chunks())]
        except RowsDiffer:
            return None
        values = np.concatenate(parts) if parts else np.empty(0)
        if not len(values) and _dtype(run, top) != np.float64:
            return None  # a tree without rows: float64 in QCoDeS' file, whatever the paramtype
        keys = as_qcodes_sees(values)
        if np.isnan(values).any() or len(np.unique(keys)) != len(keys):
            return None  # repeated or NaN setpoints: QCoDeS' merge fails or differs
        coordinates.append(values)
    target = coordinates[0]
    for values in coordinates[1:]:  # as _merge_outer builds it
        if not same_as_qcodes_sees(target, values):
            target = np.union1d(target, values)
    variables = _variables(run, tops, (setpoint,), {name: (setpoint,) for name in tops})

    present = [stream for stream in streams if stream is not None]
    source = functools.partial(
        _outer_merge_batches, tops, present, coordinates, target, setpoint, progress
    )
    dims = {setpoint: len(target)}
    return DatasetPlan(dims=dims, variables=variables, attrs=dataset_attrs(run), source=source)


def _outer_merge_batches(
    tops: list[str],
    streams: list[NumericTreeStream],
    coordinates: list[npt.NDArray[Any]],
    target: npt.NDArray[Any],
    setpoint: str,
    progress: Progress | None,
) -> Iterator[Batch]:
    """Each tree's values at the places of its setpoint values in the union ``target``
    (in one piece where the tree has all of them), then ``target`` itself; checking that
    each tree still has the rows the first pass read."""
    done, expected = 0, sum(len(c) for c in coordinates)
    for top, stream, values in zip(tops, streams, coordinates, strict=True):
        aligned = same_as_qcodes_sees(values, target)
        start = 0
        for columns in _batches(stream.chunks()):
            end = start + len(columns[0])
            if aligned:
                yield Batch(top, (slice(start, end),), columns[0])
            else:
                places = np.searchsorted(target, columns[1])
                order = np.argsort(places, kind="stable")
                for region, part in _runs(places[order], columns[0][order]):
                    yield Batch(top, region, part)
            start = end
            done += len(columns[0])
            if progress is not None:
                progress(done, expected)
        if start != len(values):
            raise NotStreamable  # a tree changed between the passes
    yield Batch(setpoint, (slice(None),), target)


def _runs(
    places: npt.NDArray[np.int64], values: npt.NDArray[Any]
) -> Iterator[tuple[Region, npt.NDArray[Any]]]:
    """``(region, values)`` putting ``values`` at the sorted ``places``, one slice per run
    of consecutive places (HDF5 writes slices fast, scattered points slowly)."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(places) != 1) + 1])
    ends = np.append(starts[1:], len(places))
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        first = int(places[start])
        yield (slice(first, first + end - start),), values[start:end]


def _variables(
    run: DatasetSource,
    tops: list[str],
    setpoints: tuple[str, ...],
    dims: Mapping[str, tuple[str, ...]],
    extra: Mapping[str, Variable] | None = None,
) -> dict[str, Variable]:
    """Empty streamed variables: each parameter over ``dims[parameter]``, each setpoint a
    coordinate over itself unless ``dims`` says otherwise, then ``extra`` (an index), in
    the order QCoDeS' merge of the parameters' datasets lists them: the first parameter's
    dataset (its setpoints after it, or before it when they are data along an index),
    then the other parameters."""
    specs = run.description.paramspecs

    def streamed(name: str, coord: bool) -> Variable:
        own = dims.get(name, (name,))
        empty = np.empty(0, _dtype(run, name))
        return Variable(name, own, empty, variable_attrs(specs[name]), coord, streamed=True)

    first = {tops[0]: streamed(tops[0], False)}
    around = {name: streamed(name, name not in dims) for name in setpoints}
    ordered = (
        {**around, **first} if any(name in dims for name in setpoints) else {**first, **around}
    )
    return {**ordered, **(extra or {}), **{name: streamed(name, False) for name in tops[1:]}}


def _all_floats(variables: Mapping[str, Variable]) -> bool:
    return all(variable.data.dtype == np.float64 for variable in variables.values())


def _dtype(run: DatasetSource, name: str) -> np.dtype[Any]:
    """What QCoDeS' arrays of a scalar parameter hold: floats, complex numbers or text
    (of a tree with rows; without, ``get_parameter_data`` gives float64 arrays)."""
    paramtype = run.description.paramspecs[name].paramtype
    return np.dtype({"complex": np.complex128, "text": object}.get(paramtype, np.float64))


@dataclass(frozen=True)
class _Sweep:
    """Numeric parameters swept together, as the plans of their layouts need them: the
    stream of their rows, their setpoints, the shape they declare, their variables laid
    out over the setpoints (the index layouts make their own) and whom to tell how far
    the writing is."""

    run: DatasetSource
    stream: NumericTreeStream
    tops: list[str]
    setpoints: tuple[str, ...]
    shape: tuple[int, ...] | None
    variables: dict[str, Variable]
    progress: Progress | None
    # Set by a plan of the direct layout that finds the rows do not follow the grid order
    # of their setpoints' values: QCoDeS 0.62 places them by those values (or fails), which
    # only the in-memory plan does, so no later streamed plan is tried.
    off_grid_order: list[str] = dataclasses.field(default_factory=list)


def _along_setpoint_plan(sweep: _Sweep, monotonic: bool) -> DatasetPlan:
    (setpoint,) = sweep.setpoints
    return DatasetPlan(
        dims={setpoint: 0},
        variables=sweep.variables,
        attrs=dataset_attrs(sweep.run),
        source=functools.partial(_along_setpoint_batches, sweep, monotonic),
        unlimited=frozenset({setpoint}),
        expected_rows=sweep.stream.rows,
    )


LINE_CHUNK_VALUES = 1 << 17  # values per HDF5 chunk of a grid growing line by line (1 MiB)


def _line_grid_plan(sweep: _Sweep) -> DatasetPlan | None:
    """A doNd-style sweep of two setpoints, in one pass: line after line the outer
    setpoint holds one value (rising as QCoDeS reads it) while the inner one runs through
    the same distinct values as in the first line. Its rows are unique and fill the grid
    of the sorted levels, QCoDeS' layout of it (when no declared shape lays it out
    directly): each line is a row of that grid, its points in the order of the sorted
    inner values, the outer dimension growing with the lines. The first line is found in
    the first batch; the plan gives up (:class:`NotStreamable`) at the first line that
    breaks the pattern, or at an incomplete last line, and the passes over the levels
    follow (:func:`_levels_plans`)."""
    batches = _batches(sweep.stream.chunks())
    try:
        first = next(batches, None)
    except RowsDiffer:
        return None
    k = len(sweep.tops)
    if first is None:
        return None
    outer, inner = first[k], first[k + 1]
    changes = np.flatnonzero(outer != outer[0])
    if not len(changes) or has_nan(inner) or has_nan(outer[:1]):
        return None  # one line in the first batch (or a NaN): left to the passes
    line = int(changes[0])
    _, order = np.unique(as_qcodes_sees(inner[:line]), return_index=True)
    if len(order) != line:
        return None  # the inner values repeat within a line: not this grid
    x, y = sweep.setpoints
    # The first batch handed on, not held (neither by a chain's arguments nor by a view
    # of its first line) while the later batches are read.
    source = functools.partial(
        _line_grid_batches, sweep, handed_on(first, batches), inner[:line].copy(), order
    )
    del first, outer, inner
    return DatasetPlan(
        dims={x: 0, y: line},
        variables=sweep.variables,
        attrs=dataset_attrs(sweep.run),
        source=source,
        unlimited=frozenset({x}),
        expected_rows=max(1, min(-(-sweep.stream.rows // line), LINE_CHUNK_VALUES // line)),
    )


def _line_grid_batches(
    sweep: _Sweep,
    batches: Iterator[list[npt.NDArray[Any]]],
    first_line: npt.NDArray[Any],
    order: npt.NDArray[np.intp],
) -> Iterator[Batch]:
    """Whole lines of each batch as rows of the grid (a partial line waits for the next
    batch), the outer values beside them; then the inner levels."""
    k, (x, y), progress = len(sweep.tops), sweep.setpoints, sweep.progress
    width = len(first_line)
    lines, done, previous = 0, 0, None
    pending: list[npt.NDArray[Any]] | None = None
    for columns in batches:
        if pending is not None:
            columns = [np.concatenate(pair) for pair in zip(pending, columns, strict=True)]
        whole = len(columns[0]) // width * width
        # A copy of the partial line: a view would keep the whole batch while the next is read.
        pending = [column[whole:].copy() for column in columns] if whole < len(columns[0]) else None
        if not whole:
            continue
        outer = columns[k][:whole].reshape(-1, width)
        if not (outer == outer[:, :1]).all():
            raise NotStreamable  # the outer value changes within a line
        if not (columns[k + 1][:whole].reshape(-1, width) == first_line).all():
            raise NotStreamable  # another inner sequence: not this grid
        values = outer[:, 0]
        keys = as_qcodes_sees(values if previous is None else np.append(previous, values))
        if not (keys[1:] > keys[:-1]).all():
            raise NotStreamable  # not rising as QCoDeS reads it (or NaN)
        previous = values[-1]
        count = len(values)
        region: Region = (slice(lines, lines + count),)
        for top, column in zip(sweep.tops, columns, strict=False):
            yield Batch(top, region, column[:whole].reshape(count, width)[:, order])
        yield Batch(x, region, values)
        lines += count
        done += whole
        del columns, outer, values  # not held while the next batch is read
        if progress is not None:
            progress(done, sweep.stream.rows)
    if pending is not None:
        raise NotStreamable  # an incomplete last line: holes, or a multi-index
    yield Batch(y, (slice(None),), first_line[order])


def _levels_plans(sweep: _Sweep) -> Iterator[DatasetPlan]:
    """The layouts QCoDeS picks from all of a run's setpoints, decided by passes over
    them: a first finds each setpoint's distinct values (as QCoDeS reads them, to 15
    digits) and counts the rows. Repeated setpoints: the flat index layout. Unique ones:
    along the single setpoint in measured order, or a grid of the sorted values (NaN where
    no row landed), or, for unshaped runs whose rows do not fill that grid, cf_xarray's
    compressed multi-index over them; for several setpoints, the second pass (writing)
    finds out whether two rows have the same setpoints, and the index layout follows."""
    stream, setpoints = sweep.stream, sweep.setpoints
    levels = _find_levels(stream)
    if levels is None:
        return
    found, rows, grid = levels.found, levels.rows, levels.shape
    if 0 in grid or math.prod(grid) > GRID_CELLS:
        return
    if len(setpoints) == 1:
        repeated = rows > len(found[0][0])
        if repeated and sweep.shape is not None and tuple(sweep.shape) == (rows,):
            sweep.off_grid_order.extend(setpoints)  # QCoDeS 0.62's direct layout fails
            return
        yield _numeric_index_plan(sweep, rows) if repeated else _along_setpoint_plan(sweep, False)
        return
    # Unique rows are the common case: their layout is written at once, and gives up at
    # the first cell a second row lands in (a pass to look for one first would read the
    # whole run once more); repeated setpoints are then laid out along the index.
    if sweep.run.description.shapes is None and math.prod(grid) != rows:
        yield _multi_index_plan(sweep, levels)
    else:  # cells without a row read as NaN (floats, complex numbers) or "" (text)
        yield _levels_grid_plan(sweep, levels)
    yield _numeric_index_plan(sweep, rows)


def _numeric_index_plan(sweep: _Sweep, rows: int) -> DatasetPlan:
    """Repeated setpoints: the rows in measured order along ``index`` (QCoDeS'
    ``reset_index().to_xarray()``), the setpoints data beside the parameters."""
    run, tops, setpoints = sweep.run, sweep.tops, sweep.setpoints
    index = Variable(INDEX, (INDEX,), np.empty(0, np.int64), {}, True, streamed=True)
    along = {name: (INDEX,) for name in (*tops, *setpoints)}
    variables = _variables(run, tops, setpoints, along, {INDEX: index})

    source = functools.partial(_index_rows_batches, sweep, rows)
    return DatasetPlan(
        dims={INDEX: rows}, variables=variables, attrs=dataset_attrs(run), source=source
    )


def _repeated_early_plan(sweep: _Sweep) -> DatasetPlan | None:
    """A single setpoint whose values repeat within the first batch (a time trace
    recorded again and again): whatever follows, QCoDeS lays the rows out along
    ``index`` in measured order, so they are written in one pass, the index growing with
    them, with no pass over the levels first. Not with a declared shape: rows that fill
    it are laid out directly (where QCoDeS 0.62 fails on the repeat), which only the
    passes over the levels, counting the rows, can tell."""
    if sweep.shape is not None:
        return None
    batches = _batches(sweep.stream.chunks())
    try:
        first = next(batches, None)
    except RowsDiffer:
        return None
    if first is None:
        return None
    keys, _ = _first_of_each_key(first[len(sweep.tops)])
    if len(keys) == len(first[0]):
        return None  # no repeat yet: the passes over the levels decide
    plan = _numeric_index_plan(sweep, 0)
    rows = handed_on(first, batches)
    return dataclasses.replace(
        plan,
        source=functools.partial(_growing_index_batches, sweep, rows),
        unlimited=frozenset({INDEX}),
        # QCoDeS writes each parameter's tree in rows of its own: the index grows by the
        # rows of one tree, and chunks sized for all of them would mostly stay empty.
        expected_rows=-(-sweep.stream.rows // len(sweep.tops)),
    )


def _growing_index_batches(
    sweep: _Sweep, batches: Iterator[list[npt.NDArray[Any]]]
) -> Iterator[Batch]:
    """The rows in measured order along a growing ``index``: parameters and setpoints,
    then the index."""
    names = (*sweep.tops, *sweep.setpoints)
    start = 0
    for columns in batches:
        end = start + len(columns[0])
        region = (slice(start, end),)
        for name, values in zip(names, columns, strict=True):
            yield Batch(name, region, values)
        yield Batch(INDEX, region, np.arange(start, end))
        start = end
        del columns  # not held while the next batch is read
        if sweep.progress is not None:
            sweep.progress(start, sweep.stream.rows)


def _index_rows_batches(sweep: _Sweep, rows: int) -> Iterator[Batch]:
    """The rows in measured order: parameters and setpoints, then the index."""
    names = (*sweep.tops, *sweep.setpoints)
    for start, end, columns in _in_measured_order(sweep, rows):
        region = (slice(start, end),)
        for name, values in zip(names, columns, strict=True):
            yield Batch(name, region, values)
        yield Batch(INDEX, region, np.arange(start, end))


def _levels_grid_plan(sweep: _Sweep, levels: _Levels) -> DatasetPlan:
    """Unique setpoints on a grid of their sorted distinct values: every row written into
    its cell, NaN where no row landed (a sweep that stopped early, ran over, or had no
    shapes)."""
    return DatasetPlan(
        dims=dict(zip(sweep.setpoints, levels.shape, strict=True)),
        variables=sweep.variables,
        attrs=dataset_attrs(sweep.run),
        source=functools.partial(_levels_grid_batches, sweep, levels),
    )


def _levels_grid_batches(sweep: _Sweep, levels: _Levels) -> Iterator[Batch]:
    """Each batch of rows sorted by cell, every run of consecutive cells one piece of the
    C-ordered grid; then each setpoint's levels."""
    tops, shape = sweep.tops, levels.shape
    cells_of = _CellFinder(levels, len(tops))
    for _, _, columns in _in_measured_order(sweep, levels.rows):
        cells = cells_of(columns)
        order = np.argsort(cells, kind="stable")
        cells = cells[order]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(cells) != 1) + 1])
        ends = np.append(starts[1:], len(cells))
        for top, values in zip(tops, columns, strict=False):
            ordered = values[order]
            for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                for region, part in _c_order(ordered[start:end], int(cells[start]), shape):
                    yield Batch(top, region, part)
    yield from _level_batches(sweep, levels)


def _multi_index_plan(sweep: _Sweep, levels: _Levels) -> DatasetPlan:
    """Scattered setpoints of an unshaped run: every setpoint its own dimension of sorted
    distinct values, the parameters in measured order along ``multi_index``, and
    ``multi_index`` each row's flat position in the grid of those values."""
    run, tops, setpoints = sweep.run, sweep.tops, sweep.setpoints
    specs = run.description.paramspecs

    def variable(name: str, dims: tuple[str, ...], dtype: Any, coord: bool) -> Variable:
        attrs = variable_attrs(specs[name]) if name in specs else {"compress": " ".join(setpoints)}
        return Variable(name, dims, np.empty(0, dtype), attrs, coord, streamed=True)

    variables = {  # in the order QCoDeS' merge of the parameters' datasets lists them
        **{name: variable(name, (name,), np.float64, True) for name in setpoints},
        tops[0]: variable(tops[0], (MULTI_INDEX,), _dtype(run, tops[0]), False),
        MULTI_INDEX: variable(MULTI_INDEX, (MULTI_INDEX,), np.int64, True),
        **{name: variable(name, (MULTI_INDEX,), _dtype(run, name), False) for name in tops[1:]},
    }

    dims = {**dict(zip(setpoints, levels.shape, strict=True)), MULTI_INDEX: levels.rows}
    source = functools.partial(_multi_index_batches, sweep, levels)
    return DatasetPlan(dims=dims, variables=variables, attrs=dataset_attrs(run), source=source)


def _multi_index_batches(sweep: _Sweep, levels: _Levels) -> Iterator[Batch]:
    """The parameters in measured order, each row's cell along ``multi_index``; then each
    setpoint's levels."""
    tops = sweep.tops
    cells_of = _CellFinder(levels, len(tops))
    for start, end, columns in _in_measured_order(sweep, levels.rows):
        region = (slice(start, end),)
        for top, values in zip(tops, columns, strict=False):
            yield Batch(top, region, values)
        yield Batch(MULTI_INDEX, region, cells_of(columns))
    yield from _level_batches(sweep, levels)


def _level_batches(sweep: _Sweep, levels: _Levels) -> Iterator[Batch]:
    """Each setpoint's levels, the coordinates of a grid's dimensions."""
    for name, (_, values) in zip(sweep.setpoints, levels.found, strict=True):
        yield Batch(name, (slice(None),), values)


def _in_measured_order(
    sweep: _Sweep, rows: int
) -> Iterator[tuple[int, int, list[npt.NDArray[np.float64]]]]:
    """``(first row, end row, columns)`` of each batch, in measured order, checking that
    the run still has the ``rows`` an earlier pass counted."""
    done, progress = 0, sweep.progress
    for columns in _batches(sweep.stream.chunks()):
        end = done + len(columns[0])
        if end > rows:
            raise NotStreamable  # more rows than the first pass saw: the file changed
        yield done, end, columns
        done = end
        if progress is not None:
            progress(done, rows)
    if done != rows:
        raise NotStreamable


@dataclass(frozen=True)
class _Levels:
    """What a first pass over a sweep found: each setpoint's sorted distinct values as
    QCoDeS reads them (``(keys, first exact value of each)``), and the number of rows."""

    found: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]
    rows: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid of the levels: one dimension per setpoint."""
        return tuple(len(keys) for keys, _ in self.found)


def _find_levels(stream: NumericTreeStream) -> _Levels | None:
    """Each setpoint's sorted distinct values as QCoDeS reads them (their 15-digit keys,
    and the first exact value of each; NaN one value, last), and the number of rows; None
    when the rows cannot be read together, or a setpoint of several is NaN (pandas keeps
    NaN out of the levels of its grids)."""
    k = stream.tops
    setpoints = len(stream.tree.columns) - k
    # Each batch's own levels, in row order; merged once at the end (merging batch by batch
    # would sort every level found so far again for every batch).
    parts: list[list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]] = [[] for _ in range(setpoints)]
    rows = 0
    try:
        for columns in _batches(stream.chunks()):
            rows += len(columns[0])
            for axis, column in enumerate(columns[k:]):
                if setpoints > 1 and np.isnan(column).any():
                    return None  # QCoDeS' grids drop NaN levels (or fail): laid out in memory
                keys, first = _first_of_each_key(column)
                parts[axis].append((keys, column[first]))
    except RowsDiffer:
        return None
    found = []
    for levels in parts:
        keys = np.concatenate([np.empty(0), *(part[0] for part in levels)])
        values = np.concatenate([np.empty(0), *(part[1] for part in levels)])
        keys, first = np.unique(keys, return_index=True)  # the first index: earlier rows win
        found.append((keys, values[first]))
    return _Levels(found, rows)


def _first_of_each_key(
    column: npt.NDArray[Any],
) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
    """The sorted distinct keys of ``column`` as QCoDeS reads its values (15 digits), and
    the index of the first value with each. A sweep repeats few distinct values many
    times: those are found first, and only they are rounded."""
    distinct, first = np.unique(column, return_index=True)
    keys = as_qcodes_sees(distinct)
    if len(keys) < 2 or bool(np.all(keys[1:] > keys[:-1])):
        return keys, first  # every distinct value its own key (rounding keeps the order)
    order = np.lexsort((first, keys))  # by key, then earliest first
    keys, first = keys[order], first[order]
    leading = np.concatenate([[True], keys[1:] != keys[:-1]])
    if keys.dtype.kind == "f":  # NaN is one value, as np.unique counts it
        leading[1:] &= ~(np.isnan(keys[1:]) & np.isnan(keys[:-1]))
    return keys[leading], first[leading]


class _CellFinder:
    """Each row's flat position in the grid of levels, refusing a cell seen before: two
    rows with the same setpoints mean QCoDeS lays the run out along an index instead."""

    def __init__(self, levels: _Levels, k: int) -> None:
        self._found = levels.found
        self._shape = shape = levels.shape
        self._k = k
        self._seen = np.zeros(math.prod(shape), dtype=bool)
        self._count = 0

    def __call__(self, columns: list[npt.NDArray[Any]]) -> npt.NDArray[np.int64]:
        codes = [
            _codes(keys, values, column)
            for (keys, values), column in zip(self._found, columns[self._k :], strict=True)
        ]
        cells: npt.NDArray[np.int64] = np.ravel_multi_index(codes, self._shape).astype(np.int64)
        if np.any(self._seen[cells]):
            raise NotStreamable
        self._seen[cells] = True
        self._count += len(cells)
        if np.count_nonzero(self._seen) != self._count:
            raise NotStreamable  # two rows of this batch in one cell
        return cells


def _codes(
    keys: npt.NDArray[Any], values: npt.NDArray[Any], column: npt.NDArray[Any]
) -> npt.NDArray[np.intp]:
    """Each value's level: the levels' own values (in the order of their keys) are found
    exactly, as a sweep's values mostly are; the others are found by their keys."""
    codes = np.searchsorted(values, column)
    found = codes < len(values)
    found[found] = values[codes[found]] == column[found]
    if not found.all():
        missed = np.flatnonzero(~found)
        codes[missed] = np.searchsorted(keys, as_qcodes_sees(column[missed]))
    return codes


def _along_setpoint_batches(sweep: _Sweep, monotonic: bool) -> Iterator[Batch]:
    """Rows in measured order, the setpoint's dimension growing with them. With
    ``monotonic``, the setpoint's values must keep rising or falling (then they are
    unique) unless the run is complete; without, a first pass has found them unique."""
    stream, tops, shape, progress = sweep.stream, sweep.tops, sweep.shape, sweep.progress
    (setpoint,) = sweep.setpoints
    position, previous = 0, None
    direction: int | None = 0 if monotonic else None
    for columns in _batches(stream.chunks()):
        coordinate = columns[len(tops)]
        if direction is not None:
            direction = _monotonic(coordinate, previous, direction)
            previous = coordinate[-1] if len(coordinate) else previous
            if direction is None and shape is None:
                raise NotStreamable  # no shape can vouch for it: stop writing now
        m = len(coordinate)
        region = (slice(position, position + m),)
        for top, values in zip(tops, columns, strict=False):
            yield Batch(top, region, values)
        yield Batch(setpoint, region, coordinate)
        position += m
        if progress is not None:
            progress(position, stream.rows)
    if monotonic and direction is None:
        # not sure to be unique, not even where the rows fill a declared shape (QCoDeS
        # 0.62's direct layout fails on a repeated value): the next plan counts them
        raise NotStreamable
    if position == 0 and not _all_floats(sweep.variables):
        raise NotStreamable  # no rows: QCoDeS' arrays are float64, whatever the paramtype


def _grid_batches(sweep: _Sweep, shape: tuple[int, ...]) -> Iterator[Batch]:
    """A complete grid of the declared ``shape``: rows in C order, each axis' coordinate
    from the first line along it, written once all rows are in. That is QCoDeS' direct
    layout where every row holds its cell's first-line values and those are distinct along
    each line (QCoDeS 0.62 places each row by its setpoints' values in the order they first
    appear, which is then C order; 0.58 always reshaped): checked as the rows come, and
    where they do not, the run goes to the in-memory plan (``sweep.off_grid_order``)."""
    stream, tops, setpoints, progress = sweep.stream, sweep.tops, sweep.setpoints, sweep.progress
    total = math.prod(shape)
    strides = [math.prod(shape[axis + 1 :]) for axis in range(len(shape))]
    axes = {name: np.empty(size) for name, size in zip(setpoints, shape, strict=True)}
    position = 0
    for columns in _batches(stream.chunks()):
        end = position + len(columns[0])
        if end > total:
            raise NotStreamable  # more rows than the shape: QCoDeS keeps them flat
        for axis, name in enumerate(setpoints):  # coordinate i sits at row i * stride
            steps = np.arange(-(-position // strides[axis]), -(-end // strides[axis]))
            steps = steps[steps < shape[axis]]
            axes[name][steps] = columns[len(tops) + axis][steps * strides[axis] - position]
        for axis, name in enumerate(setpoints):
            line = _first_line_values(axes[name], strides[axis], position, end - position)
            if not each_as_qcodes_sees(columns[len(tops) + axis], line):
                sweep.off_grid_order.append(name)
                raise NotStreamable
        for top, values in zip(tops, columns, strict=False):
            for region, part in _c_order(values, position, shape):
                yield Batch(top, region, part)
        position = end
        if progress is not None:
            progress(position, total)
    if position != total:
        raise NotStreamable  # an incomplete grid: QCoDeS' layout sorts and pads it
    for name, values in axes.items():
        if has_repeats(values):
            sweep.off_grid_order.append(name)  # a value repeated along its own axis
            raise NotStreamable
    for name, values in axes.items():
        yield Batch(name, (slice(None),), values)


def _first_line_values(
    line: npt.NDArray[Any], stride: int, start: int, count: int
) -> npt.NDArray[Any]:
    """The values of one setpoint that rows ``start``.. of a C-ordered grid hold where
    they are in grid order: its ``line`` (along its axis, of ``stride``) each value
    repeated ``stride`` times, cycling, without an index per row."""
    if stride == 1:
        return np.resize(np.roll(line, -(start % len(line))), count)
    first = start // stride
    values = line[np.arange(first, (start + count - 1) // stride + 1) % len(line)]
    skip = start - first * stride
    return np.repeat(values, stride)[skip : skip + count]


def _c_order(
    values: npt.NDArray[Any], start: int, shape: tuple[int, ...]
) -> Iterator[tuple[Region, npt.NDArray[Any]]]:
    """``(region, values)`` putting rows ``start`` .. into a C-ordered grid: a partial
    first line, the full lines (one region for two dimensions), a partial last line."""
    line = shape[-1]
    end = start + len(values)
    offset = 0
    while start < end:
        lead = np.unravel_index(start // line, shape[:-1])
        column = start % line
        if column == 0 and len(shape) == 2 and end - start >= line:
            lines = (end - start) // line
            first = start // line
            count = lines * line
            full: Region = (slice(first, first + lines), slice(None))
            yield full, values[offset : offset + count].reshape(lines, line)
        else:
            count = min(line - column, end - start)
            part: Region = (*(int(i) for i in lead), slice(column, column + count))
            yield part, values[offset : offset + count]
        start += count
        offset += count


def _batches(chunks: Iterator[list[Any]], rows: int = 1 << 20) -> Iterator[list[Any]]:
    """Chunks joined into batches of about ``rows`` rows (8 MiB a column): few, large
    writes into the file, memory still bounded."""
    pending: list[list[Any]] = []
    count = 0
    for chunk in chunks:
        pending.append(chunk)
        count += len(chunk[0])
        del chunk
        if count >= rows:
            # The chunks let go before the batch is handed on, and the batch as soon as
            # the consumer asks for the next: one batch alive while the next is read.
            batch = [np.concatenate(parts) for parts in zip(*pending, strict=True)]
            pending, count = [], 0
            yield batch
            del batch
    if pending:
        yield [np.concatenate(parts) for parts in zip(*pending, strict=True)]


def _monotonic(values: Any, previous: float | None, direction: int) -> int | None:
    """The direction (+1/-1) in which the setpoint values keep strictly rising or falling as
    QCoDeS sees them (15 significant digits); None once they do not."""
    joined = values if previous is None else np.concatenate([[previous], values])
    if len(joined) < 2:
        return direction
    steps = np.diff(joined)
    # The common case in three passes: every step has one sign and, being no smaller than
    # 1e-13 of the largest value (an end value, in a monotonic run), survives the rounding.
    smallest, largest = float(steps.min()), float(steps.max())
    magnitude = max(abs(float(joined[0])), abs(float(joined[-1])))
    if direction >= 0 and smallest > 1e-13 * magnitude:
        return 1
    if direction <= 0 and -largest > 1e-13 * magnitude:
        return -1
    # Steps well above the 15th digit cannot vanish in QCoDeS' rounding: no need to round.
    close = np.abs(steps) <= 1e-13 * np.maximum(np.abs(joined[1:]), np.abs(joined[:-1]))
    if close.any() or not np.all(np.isfinite(steps)):
        steps = np.diff(as_qcodes_sees(joined))
    signs = np.sign(steps)
    if np.isnan(signs).any():
        return None  # a NaN setpoint: neither rising nor falling
    direction = direction or int(signs[0])
    if direction == 0 or np.any(signs != direction):
        return None
    return direction
