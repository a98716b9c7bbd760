"""The dataset the ``qcsql`` xarray engine gives for a run (see :mod:`qcsql.xarray_engine`).

The layout is the export's plan, as for ``to_xarray_dataset()``. Where the plan keeps a
tree's values in row order (the layouts of large runs, :mod:`qcsql.xarray.lazy`), the
variable is a lazy array that reads only the rows an index asks for; the plan is made
from the run's setpoints and, for the values, zero-filled stand-ins that are never
touched (``np.zeros`` maps pages only when written), so the values are not kept after
opening. Any other layout (a grid with holes, text, complex or ragged values) is the
in-memory plan, loaded on open.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from qcsql.data.parameter_data import ParameterData, Tree, read_tree
from qcsql.data.results import ResultsTable, Span
from qcsql.data.streams import stream_numeric_trees
from qcsql.errors import QcsqlError
from qcsql.export.attributes import DatasetSource, dataset_attrs
from qcsql.export.layout import (
    INDEX,
    DatasetPlan,
    MultiIndexUse,
    duplicated_early,
    monotonic_apart,
    plan_dataset,
    plan_run,
)
from qcsql.xarray.convert import dataset_from_plan, range_positions
from qcsql.xarray.lazy import RowsArray, RowSource, TableOpener, in_row_order

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["open_run"]

_LAZY_KINDS = frozenset({"numeric", "array"})


def open_run(
    run: DatasetSource,
    *,
    drop_variables: frozenset[str] = frozenset(),
    use_multi_index: MultiIndexUse = "auto",
    open_table: TableOpener | None = None,
    lazy_coordinates: bool = False,
) -> xr.Dataset:
    """``run`` as ``to_xarray_dataset(use_multi_index=...)`` gives it, without the
    variables named in ``drop_variables`` (names it does not have are ignored); lazy where
    the layout allows and ``open_table`` says how a process opens the run's table. With
    ``lazy_coordinates`` a sweep's setpoint is a lazy coordinate too, without an index
    (xarray builds one, reading it, unless ``create_default_indexes=False``); else it is
    kept from the pass that settles the layout and indexed without a second read."""
    lazy = (
        _lazy_plan(run, use_multi_index, open_table, lazy_coordinates)
        if open_table is not None
        else None
    )
    plan = (
        lazy
        if lazy is not None
        else plan_run(run, use_multi_index=use_multi_index, positions=range_positions)
    )
    dataset = dataset_from_plan(plan, drop_variables)
    dropped = [name for name in drop_variables if name in dataset.variables]
    if dropped:
        dataset = dataset.drop_vars(dropped)
    if lazy is not None:
        _prefer_windows_of_rows(dataset, lazy)
    return dataset


VALUES_PER_CHUNK = 1_000_000  # 8 MB of doubles: the windows ``chunks={}`` gives Dask


def _prefer_windows_of_rows(dataset: xr.Dataset, plan: DatasetPlan) -> None:
    """``chunks={}`` cuts lazy variables along their first axis into windows of whole
    rows of about :data:`VALUES_PER_CHUNK` values, each read by one statement."""
    for name, planned in plan.variables.items():
        if (
            isinstance(planned.data, np.ndarray)
            or name not in dataset.variables
            or name in dataset.xindexes
        ):
            continue
        variable = dataset.variables[name]
        if not variable.ndim:
            continue
        inner = math.prod(variable.shape[1:])
        first = max(1, VALUES_PER_CHUNK // max(inner, 1))
        sizes = zip(variable.dims[1:], variable.shape[1:], strict=True)
        variable.encoding["preferred_chunks"] = {variable.dims[0]: first, **dict(sizes)}


def _lazy_plan(
    run: DatasetSource,
    use_multi_index: MultiIndexUse,
    open_table: TableOpener,
    lazy_coordinates: bool = False,
) -> DatasetPlan | None:
    """The plan with the values of each tree as lazy arrays, or None where a value does not
    stay in row order (or the run has no results table to read rows from)."""
    if run.in_memory:
        return None
    graph = run.description.interdependencies
    tops = list(graph.top_level_parameters)
    trees = [graph.tree_by_group(top) for top in tops]
    if not tops or any(
        graph.parameters[c].paramtype not in _LAZY_KINDS
        for top, _, others in trees
        for c in (top, *others)
    ):
        return None
    try:
        table = run.results_table()
    except QcsqlError:
        return None
    whole: dict[str, npt.NDArray[Any]] = {}  # a setpoint the layout's pass read whole
    settled = _settled_without_values(
        run, table, use_multi_index, open_table, lazy_coordinates, whole
    )
    if settled is not None:
        return settled
    data = _setpoints_only(run, tops, whole) or run.get_parameter_data()
    upto = table.max_id()
    placeholders: list[npt.NDArray[Any]] = []
    sources: list[tuple[RowSource, np.dtype[Any]]] = []
    stand_in: dict[str, dict[str, npt.NDArray[Any]]] = {}
    for top, _, others in trees:
        tree = data.get(top)
        if tree is None:
            return None
        shaped = top in (run.description.declared_shapes or {})
        spans = _spans(table, top, tree[top], graph.parameters[top].paramtype, shaped, upto)
        rows = sum(count for _, _, count in spans)
        stand_in[top] = dict(tree)
        for column in (top, *others):
            values = tree.get(column)
            if values is None:
                continue
            if values.dtype.kind not in "fiu" or rows == 0 or values.size % rows:
                return None
            # Only the column's own values (and the tree's top, which the data layer
            # reads every column of a tree against): the setpoints are coordinates
            # already, and each lazy variable reads just what it holds.
            read = (top,) if column == top else (top, column)
            placeholder = np.zeros(values.shape, values.dtype)
            stand_in[top][column] = placeholder
            placeholders.append(placeholder)
            source = RowSource(
                path=str(run.path_to_db),
                run_id=run.run_id,
                open_table=open_table,
                top=top,
                columns=read,
                kinds=tuple(graph.parameters[c].paramtype for c in read),
                column=column,
                spans=spans,
                rows=rows,
                per_row=values.size // rows,
            )
            sources.append((source, values.dtype))
    del data
    plan = plan_dataset(
        run.description,
        stand_in,
        dataset_attrs(run),
        use_multi_index=use_multi_index,
        positions=range_positions,
    )
    return _with_lazy_values(plan, placeholders, sources)


@dataclass(frozen=True)
class _Rows:
    """What opening found of a tree of one setpoint (or none) without keeping its values:
    its rows, their spans, each column's dtype, values per row and whether the ids are
    dense with its rows (then a column is read alone, without the tree's top), and the
    small stand-in that gives :func:`plan_dataset` the tree's layout."""

    spans: tuple[Span, ...]
    rows: int
    per_row: int
    dtypes: dict[str, np.dtype[Any]]
    stand_in: dict[str, npt.NDArray[Any]]
    along: str = INDEX  # the tree's dimension: ``index``, or a sweep's setpoint
    dense: bool = False
    kept: dict[str, npt.NDArray[Any]] = field(default_factory=dict)  # not lazy


def _settled_without_values(
    run: DatasetSource,
    table: ResultsTable,
    use_multi_index: MultiIndexUse,
    open_table: TableOpener,
    lazy_coordinates: bool,
    whole: dict[str, npt.NDArray[Any]],
) -> DatasetPlan | None:
    """The lazy plan of a run whose trees are each of numbers or of arrays, with one
    setpoint or none and no declared shape, laid out from what settles QCoDeS' layout
    instead of its values: whether a setpoint's values are unique (a sweep: along the
    setpoint, which becomes a coordinate) or repeat (along ``index``: 0..n-1, not held).
    A sweep of numbers is told by its setpoint column, streamed window by window; a repeat
    by the first values; an array run's rows by the lengths of its blobs, which SQLite
    knows without reading them. Several trees are laid out so only when they share no
    parameter and no dimension (then QCoDeS' merge of their datasets is a plain union).
    None where that does not settle it (setpoints unique but not in order, arrays that
    differ in length, trees on one dimension): the run's setpoints are then read whole,
    unless the pass kept the one setpoint of a run of one tree in ``whole``."""
    description = run.description
    graph = description.interdependencies
    upto = table.max_id()
    trees: dict[str, tuple[_Rows, tuple[str, ...]]] = {}
    for first in graph.top_level_parameters:
        top, setpoints, others = graph.tree_by_group(first)
        if others or len(setpoints) > 1 or top in (description.declared_shapes or {}):
            return None
        kinds = {graph.parameters[c].paramtype for c in (top, *setpoints)}
        try:
            if kinds == {"numeric"}:
                alone = len(graph.top_level_parameters) == 1
                found = _numeric_rows(
                    run,
                    table,
                    top,
                    setpoints,
                    upto,
                    keep=not lazy_coordinates,
                    whole=whole,
                    alone=alone,
                )
            elif kinds == {"array"}:
                found = _array_rows(table, top, (top, *setpoints), upto)
            else:
                return None
        except QcsqlError:  # text where numbers belong, say: read whole, as QCoDeS reads it
            return None
        if found is None:
            return None
        trees[top] = (found, (top, *setpoints))
    members = [name for _, columns in trees.values() for name in columns]
    along = [found.along for found, _ in trees.values()]
    if not trees or len(set(members)) != len(members) or len(set(along)) != len(along):
        return None
    plan = plan_dataset(
        description,
        {top: found.stand_in for top, (found, _) in trees.items()},
        dataset_attrs(run),
        use_multi_index=use_multi_index,
    )
    lazy: dict[str, Any] = {}
    for name, variable in plan.variables.items():
        if name == INDEX and variable.dims == (INDEX,):
            continue
        owner = next((top for top, (_, columns) in trees.items() if name in columns), None)
        if owner is None:
            return None
        found = trees[owner][0]
        if variable.dims != (found.along,):
            return None
        if name in found.kept:
            variable.data = found.kept[name]  # in memory already: indexed, not read again
            continue
        alone = name == owner or (found.dense and name != owner)
        read = (name,) if alone else (owner, name)
        source = RowSource(
            path=str(run.path_to_db),
            run_id=run.run_id,
            open_table=open_table,
            top=read[0],
            columns=read,
            kinds=tuple(graph.parameters[c].paramtype for c in read),
            column=name,
            spans=found.spans,
            rows=found.rows,
            per_row=found.per_row,
        )
        lazy[name] = RowsArray(source, (found.rows * found.per_row,), found.dtypes[name])
    if set(lazy) != {name for found, _ in trees.values() for name in found.dtypes}:
        return None
    from xarray.core.indexing import LazilyIndexedArray

    sizes = {found.along: found.rows * found.per_row for found, _ in trees.values()}
    if INDEX in plan.variables:
        plan.variables[INDEX].data = range_positions(sizes[INDEX])
    for name, array in lazy.items():
        plan.variables[name].data = LazilyIndexedArray(array)  # type: ignore[assignment]
    plan.dims = {dim: sizes[dim] for dim in plan.dims}
    return plan


def _numeric_rows(
    run: DatasetSource,
    table: ResultsTable,
    top: str,
    setpoints: Sequence[str],
    upto: int,
    *,
    keep: bool,
    whole: dict[str, npt.NDArray[Any]],
    alone: bool,
) -> _Rows | None:
    """A tree of numbers: a sweep if its setpoint's values rise (or fall) apart, streamed
    window by window (and, to ``keep`` them, copied into one array as they come); along
    ``index`` if it has no setpoint or its first values repeat. Neither (unique values out
    of order, say): None, and where the tree is ``alone`` in its run and its values are
    kept, the pass goes on to the end and leaves the whole setpoint in ``whole``, to lay
    the run out from without reading it again."""
    stand_in = {top: np.zeros(2)}
    dtypes = {name: np.dtype(np.float64) for name in (top, *setpoints)}
    if not setpoints:
        spans = tuple(table.row_spans(top, upto))
        return _Rows(spans, sum(c for _, _, c in spans), 1, dtypes, stand_in)
    stream = stream_numeric_trees(run, [top])
    if stream is None:
        return None
    rows = 0
    early: list[npt.NDArray[Any]] = []
    kept = np.empty(stream.rows if keep else 0)  # an upper bound; pages mapped as filled

    def windows() -> Iterator[npt.NDArray[Any]]:
        nonlocal rows
        for column in stream.column(setpoints[0]):
            if rows < EARLY_VALUES:
                early.append(column[:EARLY_VALUES].copy())
            if keep:
                kept[rows : rows + len(column)] = column
            rows += len(column)
            yield column

    passing = windows()
    if monotonic_apart(passing):
        dense = rows == upto and table.min_id() > 0  # ids 1..upto: all the tree's rows
        spans = ((0, upto, upto),) if dense else tuple(table.row_spans(top, upto))
        stand_in[setpoints[0]] = np.arange(2.0)
        if not keep:
            return _Rows(spans, rows, 1, dtypes, stand_in, setpoints[0], dense)
        del dtypes[setpoints[0]]
        held = {setpoints[0]: kept[:rows]}
        return _Rows(spans, rows, 1, dtypes, stand_in, setpoints[0], dense, kept=held)
    if early and duplicated_early(np.concatenate(early)):
        spans = tuple(table.row_spans(top, upto))
        stand_in[setpoints[0]] = np.zeros(2)
        return _Rows(spans, sum(c for _, _, c in spans), 1, dtypes, stand_in)
    if keep and alone:
        for _ in passing:  # the rest of the setpoint, after the window out of order
            pass
        whole[setpoints[0]] = kept[:rows]
    return None


EARLY_VALUES = 65_536  # of a setpoint, read to find it repeats


def _array_rows(table: ResultsTable, top: str, columns: tuple[str, ...], upto: int) -> _Rows | None:
    """A tree of arrays along ``index``: every row holds each column, each column's blobs
    are of one length (so of the first row's shape and dtype, which rows are decoded to
    check again as they are read), the arrays are flat and of one length, and the
    setpoint's first values repeat (or there is none)."""
    spans, sizes = table.blob_spans(top, columns, upto)
    rows = sum(count for _, _, count in spans)
    if not rows or any(present != rows or least != most for present, least, most in sizes.values()):
        return None
    first = min(rows, 1 + EARLY_VALUES * 8 // max(1, sizes[columns[-1]][1]))
    kinds = tuple("array" for _ in columns)
    head = read_tree(Tree(table, top, columns, kinds, table.rows_at(top, spans, 0, first)))
    shapes = {values.shape for values in head.values()}
    if len(shapes) != 1 or any(v.ndim != 2 or v.dtype.kind not in "fiu" for v in head.values()):
        return None
    per_row = shapes.pop()[1]
    if len(columns) > 1 and not duplicated_early(head[columns[1]].reshape(-1)):
        return None
    return _Rows(
        tuple(spans),
        rows,
        per_row,
        {name: values.dtype for name, values in head.items()},
        {name: np.zeros((1, 2), values.dtype) for name, values in head.items()},
    )


def _setpoints_only(
    run: DatasetSource, tops: list[str], whole: dict[str, npt.NDArray[Any]]
) -> ParameterData | None:
    """The run's data with the values of its one numeric tree as a zero-filled stand-in:
    the setpoints are read window by window (or taken from ``whole``, where a pass read
    them already) and the values dropped as they come, so that opening a large sweep
    never holds its values. None for any other run (several trees, declared shapes,
    other kinds): it is read whole."""
    graph = run.description.interdependencies
    if len(tops) != 1 or tops[0] in (run.description.declared_shapes or {}):
        return None
    top, setpoints, others = graph.tree_by_group(tops[0])
    if others or any(graph.parameters[c].paramtype != "numeric" for c in (top, *setpoints)):
        return None
    if setpoints and set(whole) == set(setpoints):
        rows = len(whole[setpoints[0]])
        return {top: {top: np.zeros(rows, dtype=np.float64), **whole}}
    stream = stream_numeric_trees(run, [top])
    if stream is None:
        return None
    columns = [np.empty(stream.rows, dtype=np.float64) for _ in setpoints]  # an upper bound
    filled = 0
    for chunk in stream.chunks():
        rows = len(chunk[0])
        for target, values in zip(columns, chunk[1:], strict=True):
            target[filled : filled + rows] = values
        filled += rows
    tree = {top: np.zeros(filled, dtype=np.float64)}
    tree.update((name, column[:filled]) for name, column in zip(setpoints, columns, strict=True))
    return {top: tree}


def _spans(
    table: ResultsTable, top: str, values: npt.NDArray[Any], kind: str, shaped: bool, upto: int
) -> tuple[Span, ...]:
    """Where the rows of ``top``'s tree are. When every id 1..max holds a row and the tree
    read has as many rows, they are all the tree's: one span, without counting the rows
    of ``top`` (which reads every record). A number is one value per row; an array tree
    not reshaped to a declared shape has one line per row."""
    rows = (
        values.size
        if kind == "numeric"
        else values.shape[0]
        if values.ndim == 2 and not shaped
        else None
    )
    if rows == upto and table.count_rows() == upto:
        return ((0, upto, upto),)
    return tuple(table.row_spans(top, upto))


def _with_lazy_values(
    plan: DatasetPlan,
    placeholders: list[npt.NDArray[Any]],
    sources: list[tuple[RowSource, np.dtype[Any]]],
) -> DatasetPlan | None:
    """Each stand-in's variable replaced by its lazy array; None unless every stand-in's
    column is a variable of the plan in row order (a grid with holes, for one, copies its
    values elsewhere: such a run is loaded instead)."""
    from xarray.core.indexing import LazilyIndexedArray

    found: dict[str, Any] = {}
    for variable in plan.variables.values():
        if isinstance(variable.data, np.ndarray):
            number = in_row_order(variable.data, placeholders)
            if number is not None:
                source, dtype = sources[number]
                array = RowsArray(source, variable.data.shape, dtype)
                found[variable.name] = LazilyIndexedArray(array)
    if {source.column for source, _ in sources} != set(found):
        return None
    for name, array in found.items():
        plan.variables[name].data = array
    return plan
