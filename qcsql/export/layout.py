"""What a run's netCDF/HDF5 file holds: dimensions, variables and attributes.

A format-neutral middle between decoding and writing (as xarray's backends
have): :func:`plan_dataset` turns a run's ``get_parameter_data`` arrays into the
structure QCoDeS' ``to_xarray_dataset()`` builds and its netCDF export writes,
with numpy only (no pandas, no xarray), and the writer just writes the plan.

The rules are QCoDeS 0.62's (``exporters/export_to_xarray.py``; where 0.58's
differ, it is said), per requested parameter P:

* *direct*: P's data has exactly its declared ``shapes`` entry: one dimension
  per setpoint, along each the setpoint's distinct values in the order they first
  appear, every value placed at the cell of its setpoints' values (an error where
  they do not form that complete grid); without setpoints, dimensions
  ``P_dim_0``... (0.58: the rows reshaped in measured order, coordinates from the
  first line along each axis; no setpoints, an error);
* otherwise through the (pandas) index of P's setpoints: none -> an ``index``
  dimension; unique and one setpoint -> that setpoint, in row order; unique and
  on a grid (or with ``shapes``) -> one dimension per setpoint with its sorted
  unique values and NaN where no row exists; unique, off the grid, no shapes ->
  a ``multi_index``, written as cf_xarray's compression by gathering;
  duplicated setpoints -> an ``index`` dimension with the setpoints as data;

inferred parameters of P's tree go along its dimensions, each value in its row's
cell (0.58: reshaped in measured order, which differs where the rows are not in
the grid's sorted order); then the per-parameter results are merged (outer join
on equal names), and the attributes of every variable and of the dataset are
QCoDeS'.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict

import numpy as np
import numpy.typing as npt

from qcsql.data.parameter_data import ParameterData
from qcsql.data.streams import text_as_objects
from qcsql.errors import DataDecodeError, DirectLayoutError, PlanError
from qcsql.export.attributes import DatasetSource, dataset_attrs, variable_attrs
from qcsql.export.keys import (
    as_qcodes_sees,
    each_as_qcodes_sees,
    has_repeats,
    same_as_qcodes_sees,
)
from qcsql.schema.description import InterDependencies, ParamSpec, RunDescription

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11

__all__ = [
    "Batch",
    "DatasetPlan",
    "MULTI_INDEX_USES",
    "MultiIndexUse",
    "NotStreamable",
    "PlanError",
    "Positions",
    "Selection",
    "Region",
    "Variable",
    "duplicated_early",
    "flattened",
    "handed_on",
    "monotonic_apart",
    "parameter_names",
    "plan_dataset",
    "plan_run",
    "plan_trees",
]

INDEX, MULTI_INDEX = "index", "multi_index"

MultiIndexUse = Literal["auto", "always", "never"]
MULTI_INDEX_USES: tuple[MultiIndexUse, ...] = ("auto", "always", "never")


@dataclass
class Variable:
    """One netCDF variable: a coordinate (``is_coord``) or a data variable."""

    name: str
    dims: tuple[str, ...]
    data: npt.NDArray[Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    is_coord: bool = False
    streamed: bool = False


Region = tuple[slice | int, ...]  # where in a variable a batch of values goes


class Batch(NamedTuple):
    """Values for one ``region`` of one variable of a plan's file. With ``compare``, the
    values are not written but checked against those already there, as QCoDeS' merge
    compares a coordinate two datasets share (see ``streamed._merged_plan``)."""

    variable: str
    region: Region
    values: npt.NDArray[Any]
    compare: bool = False


class NotStreamable(Exception):
    """The rows turned out not to fit the streamed layout; lay the run out in memory."""


def handed_on(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    """``first`` (a window or batch a plan has read already), then ``rest``; nothing here
    keeps ``first`` once the consumer lets go of it (``itertools.chain([first], rest)``
    would, through its arguments, for the whole write)."""
    held = [first]
    del first
    yield held.pop()
    yield from rest


@dataclass
class DatasetPlan:
    """Dimensions (ordered), variables (ordered) and dataset attributes of one file.

    Variables whose ``data`` is an empty placeholder (``streamed``) get their values from
    ``source`` after the file's structure is written, batch by batch, so a large run
    never has to be in memory at once. ``source()`` gives a fresh iterator of
    :class:`Batch` each time it is called (a merged plan may be written again with one
    tree's layout replaced); the writer writes each batch where its region says, grows an
    ``unlimited`` dimension to the end of a region reaching past it, and refuses (with
    :class:`NotStreamable`) a region reaching past a fixed dimension. A source gives up by
    raising :class:`NotStreamable` (or ``RowsDiffer``) while it is iterated: the rows do
    not fit its layout after all, and the partial file is discarded."""

    dims: dict[str, int]
    variables: dict[str, Variable]
    attrs: dict[str, Any]
    source: Callable[[], Iterator[Batch]] | None = None
    unlimited: frozenset[str] = frozenset()
    expected_rows: int | None = None  # along the unlimited dims: sizes their HDF5 chunks
    # The order of the variables in QCoDeS' in-memory dataset where it is not the file's
    # (``variables``): the xarray conversion lists them so, the writer ignores it.
    memory_order: tuple[str, ...] | None = None

    def reach(self, batch: Batch, sizes: Mapping[str, int]) -> dict[str, int]:
        """How far ``batch``'s region reaches along each dimension of its variable (an
        open slice reaches the dimension's current size, in ``sizes``)."""
        dims = self.variables[batch.variable].dims
        ends: dict[str, int] = {}
        for dim, index in zip(dims, batch.region, strict=False):
            if isinstance(index, slice):
                ends[dim] = sizes[dim] if index.stop is None else index.stop
            else:
                ends[dim] = index + 1
        for dim in dims[len(batch.region) :]:
            ends[dim] = sizes[dim]
        return ends

    @property
    def coords(self) -> list[Variable]:
        return [v for v in self.variables.values() if v.is_coord]


@dataclass
class _Part:
    """The dataset of one requested parameter, before merging (``direct``: laid out along
    its declared shape)."""

    dims: dict[str, int] = field(default_factory=dict)
    variables: dict[str, Variable] = field(default_factory=dict)
    direct: bool = False

    def memory_order(self) -> list[str]:
        """The order of the variables in QCoDeS' dataset of this parameter, which xarray
        builds differently from the file's: the direct layout's ``xr.Dataset(data_vars,
        coords)`` lists the data variables, then the setpoint axes, then the other
        coordinates; a multi-index dataset lists ``multi_index`` and its levels first.
        The other layouts (``DataFrame.to_xarray``) list them as the file does."""
        names = list(self.variables)
        compressed = self.variables.get(MULTI_INDEX)
        if compressed is not None and "compress" in compressed.attrs:
            first = [MULTI_INDEX, *compressed.attrs["compress"].split()]
            return first + [n for n in names if n not in first]
        if self.direct:
            axes = [
                n for n in names if self.variables[n].dims == (n,) and self.variables[n].is_coord
            ]
            data = [n for n in names if not self.variables[n].is_coord]
            return data + axes + [n for n in names if n not in axes and n not in data]
        return names

    def add(self, name: str, dims: tuple[str, ...], data: npt.NDArray[Any], *, coord: bool) -> None:
        for dim, size in zip(dims, data.shape, strict=True):
            self.dims.setdefault(dim, size)
        self.variables[name] = Variable(name, dims, data, is_coord=coord)


def flattened(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Ravel; ragged object arrays (one array per row) are concatenated, as QCoDeS does."""
    if array.dtype == object:
        try:
            return np.concatenate(list(array))
        except ValueError:
            return array.ravel()
    return array.ravel()


def _direct(description: RunDescription, name: str, sub: Mapping[str, npt.NDArray[Any]]) -> _Part:
    """QCoDeS 0.62's direct layout of ``name``'s tree, whose data fill its declared shape:
    each value placed by its setpoints' values (:func:`_grid_order`), or, for a parameter
    without setpoints, the data as they are along ``{name}_dim_{axis}``."""
    graph = description.interdependencies
    _, setpoints, others = graph.tree_by_group(name)
    shape = sub[name].shape
    size = math.prod(shape)
    for member, values in sub.items():
        if values.size != size:
            raise DirectLayoutError(
                f"{member!r} holds {values.size} values where the declared shape {shape} of "
                f"{name!r} holds {size}: QCoDeS' direct layout of its tree fails"
            )
    if not setpoints:
        return _direct_without_setpoints(name, others, sub, shape)
    if len(shape) != len(setpoints):
        raise DirectLayoutError(
            f"the data of {name!r} have its declared shape {shape}, {len(shape)} axes, but "
            f"{name!r} has {len(setpoints)} setpoints ({', '.join(setpoints)}): "
            "QCoDeS' direct layout of it fails"
        )
    axes, order = _grid_order(name, setpoints, sub, shape)
    placed = {
        member: values.reshape(shape) if order is None else values.reshape(-1)[order].reshape(shape)
        for member, values in sub.items()
    }
    try:
        return _direct_part(graph, name, setpoints, others, placed, axes)
    except (IndexError, ValueError) as exc:  # an inferred parameter QCoDeS cannot place
        raise DirectLayoutError(
            f"the tree of {name!r} cannot be laid out along its declared shape {shape} ({exc})"
        ) from exc


def _direct_without_setpoints(
    name: str, others: Sequence[str], sub: Mapping[str, npt.NDArray[Any]], shape: tuple[int, ...]
) -> _Part:
    """A parameter without setpoints whose data fill its declared shape: QCoDeS 0.62 keeps
    the data (and its tree's other members) as they are, along dimensions of its own,
    ``{name}_dim_0``, ``{name}_dim_1``..., without coordinates (0.58 fails on it)."""
    part = _Part(direct=True)
    dims = tuple(f"{name}_dim_{axis}" for axis in range(len(shape)))
    for member in (name, *others):
        if member in sub:
            part.add(member, dims, sub[member].reshape(shape), coord=False)
    return part


def _grid_order(
    name: str,
    setpoints: Sequence[str],
    sub: Mapping[str, npt.NDArray[Any]],
    shape: tuple[int, ...],
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.intp] | None]:
    """Each setpoint's axis coordinate and where the rows go in the declared ``shape``, as
    QCoDeS 0.62 places them: along axis k the distinct values of setpoint k (as QCoDeS
    reads them) in the order they first appear, each row at the cell of its setpoints'
    values. ``None`` as the order when the rows are in that order already (the usual
    sweep, nested loops in C order: then the coordinates are the first line along each
    axis, as QCoDeS 0.58 takes them, and the data stay as they are); else the
    permutation that puts them there (a serpentine scan, loops nested the other way
    round). :class:`DirectLayoutError` where the setpoints do not form a complete grid of
    the shape, one row per cell, on which QCoDeS 0.62 fails (0.58 reshaped the rows in
    measured order whatever their setpoints)."""
    flat = {setpoint: sub[setpoint].reshape(-1) for setpoint in setpoints}
    lines = _first_lines(flat, shape)
    if lines is not None:
        return lines, None
    size = math.prod(shape)
    destination = np.zeros(size, dtype=np.intp)
    axes: dict[str, npt.NDArray[Any]] = {}
    for axis, setpoint in enumerate(setpoints):
        values = flat[setpoint]
        try:
            _, first, inverse = np.unique(
                as_qcodes_sees(values), return_index=True, return_inverse=True, equal_nan=True
            )
        except TypeError as exc:  # text beside numbers: no order to sort them in
            raise DirectLayoutError(f"{setpoint!r} cannot be sorted ({exc})") from exc
        if len(first) != shape[axis]:
            raise DirectLayoutError(
                f"{setpoint!r} takes {len(first)} distinct values where axis {axis} of the "
                f"declared shape {shape} of {name!r} has {shape[axis]}: its setpoints do not "
                "form that grid, and QCoDeS' (0.62) direct layout of it fails"
            )
        seen = np.argsort(first, kind="stable")
        axes[setpoint] = values[first[seen]]
        codes = np.empty(len(first), dtype=np.intp)
        codes[seen] = np.arange(len(first))
        destination = destination * shape[axis] + codes[inverse.reshape(-1)]
    if np.bincount(destination, minlength=size).max(initial=1) != 1:
        raise DirectLayoutError(
            f"the setpoints of {name!r} ({', '.join(setpoints)}) put two rows in one cell of "
            f"its declared shape {shape} and leave another empty: they do not form a "
            "complete grid, and QCoDeS' (0.62) direct layout of it fails"
        )
    return axes, np.argsort(destination, kind="stable")


def _first_lines(
    flat: Mapping[str, npt.NDArray[Any]], shape: tuple[int, ...]
) -> dict[str, npt.NDArray[Any]] | None:
    """The first line along each axis of the setpoints (``flat``, in axis order) if every
    row holds the values of its cell's first lines and the values along each line are
    distinct (as QCoDeS reads them): then the rows are in the grid order QCoDeS 0.62
    places them in, and nothing moves. None otherwise. Compared block by block, so that
    a large shaped run needs no temporary of its size."""
    size = math.prod(shape)
    if not size:
        return None
    strides = [math.prod(shape[axis + 1 :]) for axis in range(len(shape))]
    lines: dict[str, npt.NDArray[Any]] = {}
    for (setpoint, values), stride, length in zip(flat.items(), strides, shape, strict=True):
        line = values[: stride * length : stride]
        if line.dtype.kind not in "fiuc" or has_repeats(line):
            return None
        lines[setpoint] = line
    step = max(1, _ROWS_PER_BLOCK // strides[0])  # leading indices a block compares
    for axis, (setpoint, values) in enumerate(flat.items()):
        grid = values.reshape(shape)
        along = [1] * len(shape)
        along[axis] = shape[axis]
        expected = np.broadcast_to(lines[setpoint].reshape(along), shape)
        for start in range(0, shape[0], step):
            block = slice(start, start + step)
            if not each_as_qcodes_sees(grid[block].reshape(-1), expected[block].reshape(-1)):
                return None
    return lines


def _direct_part(
    graph: InterDependencies,
    name: str,
    setpoints: Sequence[str],
    others: Sequence[str],
    sub: Mapping[str, npt.NDArray[Any]],
    axes: Mapping[str, npt.NDArray[Any]],
) -> _Part:
    """The direct layout of the tree's data ``sub``, already in grid order, along the
    setpoints' ``axes``."""
    part = _Part(direct=True)
    part.add(name, tuple(setpoints), sub[name], coord=False)
    for other in others:
        if other in axes or other not in sub:
            continue
        related = graph.tree(other)
        if name in related:
            part.add(other, tuple(setpoints), sub[other], coord=False)
        else:
            kept = [s for s in setpoints if s in related]
            picked = sub[other][tuple(slice(None) if s in related else 0 for s in setpoints)]
            part.add(other, tuple(kept), picked, coord=True)
    for setpoint, values in axes.items():
        part.add(setpoint, (setpoint,), values, coord=True)
    return part


def _through_index(
    description: RunDescription,
    name: str,
    sub: Mapping[str, npt.NDArray[Any]],
    use_multi_index: MultiIndexUse = "auto",
    positions: Positions | None = None,
    owned: bool = False,
) -> _Part:
    """The dataset of ``name``'s tree laid out through the index of its setpoints. With
    ``owned`` (``sub`` is a dict nothing else needs), each setpoint column is let go once
    its codes are known and a grid whose rows come in its order is ``name``'s own array
    reshaped: the plan then needs little more memory than the data it is given."""
    graph = description.interdependencies
    _, setpoints, _ = graph.tree_by_group(name)
    levels = [s for s in setpoints if s in sub]
    values = text_as_objects(flattened(sub[name]))
    columns = [text_as_objects(flattened(sub[s])) for s in levels]
    part = _Part()
    if not levels:
        part.add(name, (INDEX,), values, coord=False)
        part.add(INDEX, (INDEX,), (positions or _arange)(len(values)), coord=True)
        return _with_inferred(description, name, sub, part)
    # A sweep in measured order is settled without rounding or sorting.
    sweep = len(columns) == 1 and _strictly_monotonic_apart(columns[0])
    factors = None if sweep else _factors(columns)
    if factors is None and not sweep:
        # df.reset_index().to_xarray(): setpoints become data along `index`
        for level, column in zip(levels, columns, strict=True):
            part.add(level, (INDEX,), column, coord=False)
        part.add(name, (INDEX,), values, coord=False)
        part.add(INDEX, (INDEX,), (positions or _arange)(len(values)), coord=True)
        return _with_inferred(description, name, sub, part)
    if len(levels) == 1:
        if use_multi_index == "always":
            raise PlanError(
                f"{name!r} has one setpoint ({levels[0]}): it has no multi-index to lay "
                "out along, and QCoDeS' use_multi_index='always' fails on it too; use "
                "'auto' or 'never'"
            )
        part.add(name, (levels[0],), values, coord=False)
        part.add(levels[0], (levels[0],), columns[0], coord=True)
        return _with_inferred(description, name, sub, part)
    assert factors is not None  # more than one setpoint: never a sweep
    sorted_levels, codes = map(list, zip(*factors, strict=True))
    del factors, columns
    if owned:
        _let_go(sub, levels)
    on_grid = math.prod(len(level) for level in sorted_levels) == len(values)
    if (not on_grid and description.shapes is None and use_multi_index == "auto") or (
        use_multi_index == "always"
    ):
        # cf_xarray's compression by gathering: each level its own dimension of sorted
        # unique values, and multi_index the flat grid position of each row.
        for level, unique_values in zip(levels, sorted_levels, strict=True):
            part.add(level, (level,), unique_values, coord=True)
        flat_position = np.ravel_multi_index(codes, tuple(len(lv) for lv in sorted_levels))
        part.add(name, (MULTI_INDEX,), values, coord=False)
        part.add(MULTI_INDEX, (MULTI_INDEX,), flat_position.astype(np.int64), coord=True)
        part.variables[MULTI_INDEX].attrs["compress"] = " ".join(levels)
        return _with_inferred(description, name, sub, part)
    shape = tuple(len(level) for level in sorted_levels)
    holes = math.prod(shape) > len(values)
    in_order = not holes and _in_grid_order(codes, shape)
    if owned and in_order:
        grid = values.reshape(shape)
    else:
        grid = _into_cells(_holding(values.dtype, shape, holes=holes), codes, values)
        del values
        if owned:
            _let_go(sub, [name])
    part.add(name, tuple(levels), grid, coord=False)
    for level, unique_values in zip(levels, sorted_levels, strict=True):
        part.add(level, (level,), unique_values, coord=True)
    if in_order or holes:  # inferred values fit only a complete grid, then in row order
        del codes
        return _with_inferred(description, name, sub, part)
    return _with_inferred(
        description,
        name,
        sub,
        part,
        lambda flat: _into_cells(np.empty(shape, flat.dtype), codes, flat),
    )


def _into_cells(
    grid: npt.NDArray[Any], codes: Sequence[npt.NDArray[Any]], values: npt.NDArray[Any]
) -> npt.NDArray[Any]:
    """``values`` (one a row) put into the cells of ``grid`` their rows' level ``codes``
    name, block by block; ``grid``, filled."""
    cells = grid.reshape(-1)
    for start in range(0, len(values), _ROWS_PER_BLOCK):
        end = start + _ROWS_PER_BLOCK
        cells[_flat_positions(codes, grid.shape, start, end)] = values[start:end]
    return grid


Factors = list[tuple[npt.NDArray[Any], npt.NDArray[np.integer[Any]]]]
# What holds 0..n-1 along ``index``: numbers for a file; the xarray conversion gives a
# pandas RangeIndex instead (as QCoDeS has), so that a large run is not n integers more.
Positions = Callable[[int], npt.NDArray[Any]]


def _arange(size: int) -> npt.NDArray[Any]:
    return np.arange(size, dtype=np.int64)


def _factors(columns: Sequence[npt.NDArray[Any]]) -> Factors | None:
    """Each setpoint column's levels and codes (:func:`_levels`) if no two rows have the
    same setpoint values (as QCoDeS sees the values); None if two have.

    The keys of each column are computed once, for the uniqueness test and the levels
    alike, and the rows are compared through their codes (one integer per row), with no
    loop over the rows. Repeated sweeps repeat their setpoints early, so a prefix is
    checked first: a duplicate there settles it without factorizing the whole run."""
    if not all(column.dtype.kind in "fiub" for column in columns):
        keys = [as_qcodes_sees(column) for column in columns]
        if len(set(zip(*(key.tolist() for key in keys), strict=True))) != len(keys[0]):
            return None
        return [_levels(column) for column in columns]
    prefix = min(len(columns[0]), _DUPLICATE_PROBE)
    if prefix < len(columns[0]) and _has_duplicate_rows(
        [as_qcodes_sees(column[:prefix]) for column in columns]
    ):
        return None
    factors = [_levels(column) for column in columns]
    return None if _codes_repeat(factors, len(columns[0])) else factors


def _codes_repeat(factors: Factors, rows: int) -> bool:
    """Whether two rows have the same codes in every column: counted in the grid of the
    levels where that grid is no larger than twice the rows, else by sorting each row's
    flat grid position (or, for a grid beyond int64, the codes themselves)."""
    sizes = tuple(len(levels) for levels, _ in factors)
    if not rows:
        return False
    if len(sizes) == 1:
        return sizes[0] < rows
    cells = math.prod(sizes)
    codes = [code for _, code in factors]
    if cells >= 2**62:
        return _has_duplicate_rows(codes)
    if _in_grid_order(codes, sizes):
        return False
    if cells <= 2 * rows:  # a flag per cell, the rows' positions block by block
        taken = np.zeros(cells, dtype=bool)
        for start in range(0, rows, _ROWS_PER_BLOCK):
            flat = _flat_positions(codes, sizes, start, start + _ROWS_PER_BLOCK)
            flat.sort()
            if np.any(flat[1:] == flat[:-1]) or taken[flat].any():
                return True
            taken[flat] = True
        return False
    flat = np.ravel_multi_index(codes, sizes)
    flat.sort()
    return bool(np.any(flat[1:] == flat[:-1]))


def _in_grid_order(codes: Sequence[npt.NDArray[Any]], sizes: tuple[int, ...]) -> bool:
    """Whether the rows' flat grid positions rise strictly (no two rows in one cell, the
    rows in the grid's order), block by block."""
    last = -1
    for start in range(0, len(codes[0]), _ROWS_PER_BLOCK):
        flat = _flat_positions(codes, sizes, start, start + _ROWS_PER_BLOCK)
        if flat[0] <= last or np.any(flat[1:] <= flat[:-1]):
            return False
        last = int(flat[-1])
    return True


def _let_go(sub: Mapping[str, Any], names: Iterable[str]) -> None:
    """Drop ``names`` from a tree's data the plan owns, so that their arrays are freed
    once the plan holds no other reference to them."""
    assert isinstance(sub, dict)
    for name in names:
        sub.pop(name, None)


def _flat_positions(
    codes: Sequence[npt.NDArray[Any]], sizes: tuple[int, ...], start: int, end: int
) -> npt.NDArray[np.intp]:
    """The flat grid positions of rows ``start``..``end`` from their codes."""
    return np.ravel_multi_index([code[start:end] for code in codes], sizes)


_DUPLICATE_PROBE = 65_536
_GAPS_PER_PASS = 1 << 20


def _strictly_monotonic_apart(column: npt.NDArray[Any]) -> bool:
    """Whether the floats rise (or fall) strictly, each step wider than two units of the
    15th significant digit: then no two of them are one value as QCoDeS reads them (its
    rounding keeps their order, and values a step apart cannot round to one decimal)."""
    if column.dtype.kind != "f" or len(column) < 2:
        return False
    return monotonic_apart(
        column[start : start + _GAPS_PER_PASS] for start in range(0, len(column), _GAPS_PER_PASS)
    )


def monotonic_apart(windows: Iterable[npt.NDArray[Any]]) -> bool:
    """:func:`_strictly_monotonic_apart` of the column the ``windows`` make one after the
    other (they do not overlap), for a column read window by window and not kept. NaN,
    infinities and a column of fewer than two values fail."""
    direction = 0.0
    last: npt.NDArray[Any] | None = None
    for window in windows:
        if window.dtype.kind != "f":
            return False
        if not len(window):
            continue
        for part in (window[:1] if last is None else np.concatenate((last, window[:1])), window):
            if len(part) < 2:
                continue
            if not direction:
                direction = 1.0 if part[1] > part[0] else -1.0
            if not _steps_apart(part, direction):
                return False
        last = window[-1:]
    return bool(direction)


def _steps_apart(part: npt.NDArray[Any], direction: float) -> bool:
    """Whether each step of ``part`` goes ``direction`` by more than two units of the 15th
    significant digit of the larger of its two values. The narrowest step is compared
    with the largest magnitude first (four passes, most sweeps pass there); only where
    that fails is each step compared with its own values."""
    gaps = np.diff(part)
    narrowest = float(gaps.min()) if direction > 0 else -float(gaps.max())
    largest = max(abs(float(part.max())), abs(float(part.min())))
    if narrowest > 2e-14 * largest:  # False for NaN and infinities: they are looked at below
        return True
    gaps *= direction
    bound = 2e-14 * np.maximum(np.abs(part[1:]), np.abs(part[:-1]))
    return bool(np.all(gaps > bound))  # NaN and infinities fail here


def duplicated_early(column: npt.NDArray[Any]) -> bool:
    """Whether two of the first values of one setpoint are one value as QCoDeS reads them:
    then its tree is laid out along ``index`` (a sweep repeated, the same array of
    setpoints in every row), whatever the rest of its rows hold."""
    return _has_duplicate_rows([as_qcodes_sees(column[:_DUPLICATE_PROBE])])


def _has_duplicate_rows(keys: Sequence[npt.NDArray[Any]]) -> bool:
    order = np.lexsort(keys[::-1]) if len(keys) > 1 else np.argsort(keys[0], kind="stable")
    same = np.ones(len(order) - 1, dtype=bool) if len(order) else np.zeros(0, dtype=bool)
    for key in keys:
        ordered = key[order]
        equal = ordered[1:] == ordered[:-1]
        if ordered.dtype.kind in "fc":  # pandas counts two NaN setpoints as a duplicate
            equal |= np.isnan(ordered[1:]) & np.isnan(ordered[:-1])
        same &= equal
    return bool(same.any())


def _levels(column: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[np.integer[Any]]]:
    """Sorted unique values (as pandas' MultiIndex levels) and each row's code; a level
    stands for all exact values QCoDeS would read as one, and keeps the first of them.

    Float columns go block by block, so that no temporary the size of the column is made
    besides the codes, which are as narrow as the levels allow (a setpoint of a large run
    has far fewer levels than rows: two bytes a row up to 32,768 levels). Each block's
    keys are computed once: a block of few distinct keys keeps them, with each row's code
    among them (in the column's codes), and its codes are mapped to the column's levels
    once all blocks are seen; a block of many (off any grid) keeps nothing and has its
    keys computed again, so that what is kept stays a fraction of the column."""
    if column.dtype.kind != "f" or len(column) <= _ROWS_PER_BLOCK:
        keys = as_qcodes_sees(column)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        return column[first], inverse.reshape(-1)
    blocks = range(0, len(column), _ROWS_PER_BLOCK)
    # a kept block's own codes fit: it has at most _ROWS_PER_BLOCK // _KEPT_FRACTION keys
    codes: npt.NDArray[np.integer[Any]] = np.empty(len(column), dtype=np.int16)
    kept: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]] | None] = []
    distinct = _Distinct()
    for start in blocks:
        block = codes[start : start + _ROWS_PER_BLOCK]
        found, at, inverse = np.unique(
            as_qcodes_sees(column[start : start + len(block)]),
            return_index=True,
            return_inverse=True,
        )
        distinct.add(found)
        if len(found) <= len(block) // _KEPT_FRACTION:
            block[:] = inverse.reshape(-1)
            kept.append((found, at))
        else:
            kept.append(None)
    levels = distinct.sorted()
    if len(levels) > 2**15:
        codes = codes.astype(np.int32 if len(levels) < 2**31 else np.intp)
    first = np.full(len(levels), -1, dtype=np.intp)
    for start, found_at in zip(blocks, kept, strict=True):
        block = codes[start : start + _ROWS_PER_BLOCK]
        if found_at is None:
            block[:] = _codes_among(levels, as_qcodes_sees(column[start : start + len(block)]))
            found_codes, at = np.unique(block, return_index=True)
        else:
            found_codes = _codes_among(levels, found_at[0])
            block[:] = found_codes[block]
            at = found_at[1]
        new = first[found_codes] < 0
        first[found_codes[new]] = start + at[new]
    return column[first], codes


class _Distinct:
    """The sorted distinct keys of a column's blocks, with one NaN at the end if any
    (np.unique's). Blocks are merged in once the pending ones hold as many keys as the
    merged ones, so that a column of mostly distinct keys is not sorted again for every
    block."""

    def __init__(self) -> None:
        self._merged: npt.NDArray[np.float64] = np.empty(0, dtype=np.float64)
        self._pending: list[npt.NDArray[np.float64]] = []
        self._count = 0

    def add(self, found: npt.NDArray[np.float64]) -> None:
        self._pending.append(found)
        self._count += len(found)
        if self._count >= max(len(self._merged), _ROWS_PER_BLOCK):
            self._merge()

    def _merge(self) -> None:
        merged = np.unique(np.concatenate([self._merged, *self._pending]))
        nan = np.isnan(merged)  # NaN keys may stay apart in np.unique: one is kept
        self._merged = np.concatenate([merged[~nan], merged[nan][:1]])
        self._pending, self._count = [], 0

    def sorted(self) -> npt.NDArray[np.float64]:
        self._merge()
        return self._merged


def _codes_among(
    levels: npt.NDArray[np.float64], keys: npt.NDArray[np.float64]
) -> npt.NDArray[np.intp]:
    """The code of each key among ``levels`` (:class:`_Distinct`'s), NaN the last one."""
    nan = bool(len(levels)) and bool(np.isnan(levels[-1]))
    codes = np.searchsorted(levels[: len(levels) - int(nan)], keys)
    codes[np.isnan(keys)] = len(levels) - 1
    return codes


_ROWS_PER_BLOCK = 1 << 16  # temporaries of a few MB at most, whatever the run's size
_KEPT_FRACTION = 8
assert _ROWS_PER_BLOCK // _KEPT_FRACTION <= 2**15


def _with_missing(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype xarray gives an array once NaN holes are added (its ``maybe_promote``,
    pandas' rule): integers become float32 up to two bytes, else float64."""
    if dtype.kind in "iu":
        return np.dtype(np.float32 if dtype.itemsize <= 2 else np.float64)
    if dtype.kind == "b":  # QCoDeS refuses boolean arrays: never in a file it wrote
        return np.dtype(np.float64)
    return dtype


def _holding(dtype: np.dtype[Any], shape: tuple[int, ...], *, holes: bool) -> npt.NDArray[Any]:
    """The array values of ``dtype`` are put into: with ``holes`` (some cells get no
    value), of the dtype that can hold NaN and filled with it; else of ``dtype`` itself.
    xarray promotes only where it inserts holes (unstacking a MultiIndex that is not a
    full grid, reindexing with a missing label), so integers stay integers elsewhere."""
    if not holes:
        return np.empty(shape, dtype=dtype)
    return np.full(shape, _missing(dtype), dtype=_with_missing(dtype))


def _missing(dtype: np.dtype[Any]) -> Any:
    """What fills a hole: NaN, and for complex numbers NaN in both parts (xarray's
    ``np.nan + np.nan * 1j``), not NaN + 0j."""
    if dtype.kind == "c":
        return complex(np.nan, np.nan)
    return np.nan if dtype.kind in "fiubO" else None


def _with_inferred(
    description: RunDescription,
    name: str,
    sub: Mapping[str, npt.NDArray[Any]],
    part: _Part,
    place: Callable[[npt.NDArray[Any]], npt.NDArray[Any]] | None = None,
) -> _Part:
    """QCoDeS' ``_add_inferred_data_vars``: other tree members over all current dims, where
    their values are as many as the dims' cells. ``place`` puts them into the cells of a
    grid whose rows are not in its order: QCoDeS 0.62 aligns them through the setpoints'
    index there (``Series(values, index).to_xarray()``), 0.58 reshaped them in measured
    order, so that they no longer matched the rows of the parameter they belong to."""
    graph = description.interdependencies
    _, setpoints, others = graph.tree_by_group(name)
    dims = _dataset_dims(part)
    expected = math.prod(part.dims[d] for d in dims)
    for other in others:
        if other in setpoints or other in part.variables or other not in sub:
            continue
        flat = text_as_objects(flattened(sub[other]))
        if flat.shape[0] == expected:
            grid = flat.reshape(tuple(part.dims[d] for d in dims)) if place is None else place(flat)
            part.add(other, dims, grid, coord=False)
    return part


def _dataset_dims(part: _Part) -> tuple[str, ...]:
    """Dims in the order xarray's Dataset lists them: as the variables introduced them,
    levels of a compressed multi-index not counting (they are not dims before encoding)."""
    compressed = part.variables.get(MULTI_INDEX)
    hidden = set(compressed.attrs["compress"].split()) if compressed is not None else set()
    ordered: list[str] = []
    for variable in part.variables.values():
        for dim in variable.dims:
            if dim not in ordered and dim not in hidden:
                ordered.append(dim)
    return tuple(ordered)


def _merge(parts: Sequence[_Part]) -> tuple[dict[str, int], dict[str, Variable]]:
    """``xr.merge(compat="equals", join="outer")`` of the per-parameter datasets, for the
    cases QCoDeS can export: dims of the same name must agree; a name that is a coordinate
    anywhere is a coordinate everywhere."""
    coords = {n for p in parts for n, v in p.variables.items() if v.is_coord}
    dims: dict[str, int] = {}
    variables: dict[str, Variable] = {}
    for part in parts:
        for name, variable in part.variables.items():
            variable.is_coord = variable.is_coord or name in coords
            previous = variables.get(name)
            if previous is None:
                variables[name] = variable
            elif previous.dims != variable.dims or not same_as_qcodes_sees(
                previous.data, variable.data
            ):
                return _merge_outer(parts)
        for dim, size in part.dims.items():
            if dims.setdefault(dim, size) != size:
                return _merge_outer(parts)
    return dims, variables


def _dimension_coordinates(parts: Sequence[_Part]) -> Iterator[tuple[str, Variable]]:
    """Each tree's coordinate along each of its dimensions (named as the dimension), the
    values xarray's outer join aligns the trees' datasets on."""
    for part in parts:
        for dim in part.dims:
            own = part.variables.get(dim)
            if own is not None and own.dims == (dim,):
                yield dim, own


def _merge_outer(parts: Sequence[_Part]) -> tuple[dict[str, int], dict[str, Variable]]:
    """Trees whose one-dimensional coordinates differ: the union of their (sorted) values,
    every variable padded with NaN where its tree had no row (xarray's outer join)."""
    coords = {n for p in parts for n, v in p.variables.items() if v.is_coord}
    index_values: dict[str, npt.NDArray[Any]] = {}
    for dim, own in _dimension_coordinates(parts):
        if dim in index_values and not same_as_qcodes_sees(index_values[dim], own.data):
            if dim == MULTI_INDEX or len(np.unique(own.data)) != len(own.data):
                raise PlanError(
                    f"cannot align dimension {dim!r} of different trees (QCoDeS cannot either)"
                )
            index_values[dim] = np.union1d(index_values[dim], own.data)
        else:
            index_values.setdefault(dim, own.data)
    dims = {dim: len(values) for dim, values in index_values.items()}
    variables: dict[str, Variable] = {}
    for part in parts:
        for name, variable in part.variables.items():
            if name in index_values:
                variables[name] = Variable(name, (name,), index_values[name], is_coord=True)
                continue
            aligned = _reindex(variable, part, index_values)
            aligned.is_coord = aligned.is_coord or name in coords
            previous = variables.get(name)
            if previous is not None and not same_as_qcodes_sees(previous.data, aligned.data):
                raise PlanError(f"variable {name!r} differs between parameter trees")
            variables[name] = aligned
    return dims, variables


def _reindex(
    variable: Variable, part: _Part, index_values: Mapping[str, npt.NDArray[Any]]
) -> Variable:
    data = variable.data
    for axis, dim in enumerate(variable.dims):
        target = index_values.get(dim)
        own = part.variables.get(dim)
        if target is None or own is None or same_as_qcodes_sees(own.data, target):
            continue
        positions = np.searchsorted(target, own.data)
        shape = list(data.shape)
        shape[axis] = len(target)
        # holes where no own value lands; a mere reordering keeps the dtype, as in xarray
        holes = len(np.unique(positions)) < len(target)
        padded = _holding(data.dtype, tuple(shape), holes=holes)
        index: list[Any] = [slice(None)] * data.ndim
        index[axis] = positions
        padded[tuple(index)] = data
        data = padded
    return Variable(variable.name, variable.dims, data, dict(variable.attrs), variable.is_coord)


def _side_by_side(
    names: Sequence[str], parts: Sequence[_Part], specs: Mapping[str, ParamSpec]
) -> tuple[dict[str, int], dict[str, Variable]]:
    """Trees that cannot be merged (QCoDeS' export raises xarray's MergeError), each in its
    own layout: the dimensions and variables of parameter P's tree other than P itself
    are named ``<name>__<P>``, so that xarray opens the file and nothing is lost."""
    dims: dict[str, int] = {}
    variables: dict[str, Variable] = {}
    for top, part in zip(names, parts, strict=True):
        rename = {n: n if n == top else f"{n}__{top}" for n in (*part.dims, *part.variables)}
        for dim, size in part.dims.items():
            dims[rename[dim]] = size
        for variable in part.variables.values():
            attrs = dict(variable.attrs)
            if variable.name in specs and variable.name not in (INDEX, MULTI_INDEX):
                attrs.update(variable_attrs(specs[variable.name]))
            if "compress" in attrs:
                attrs["compress"] = " ".join(rename.get(n, n) for n in attrs["compress"].split())
            name = rename[variable.name]
            dims_of = tuple(rename[d] for d in variable.dims)
            variables[name] = Variable(name, dims_of, variable.data, attrs, variable.is_coord)
    return dims, variables


def _merged_memory_order(parts: Sequence[_Part]) -> tuple[str, ...]:
    """The order of the variables of ``xr.merge(join="outer")`` of the trees' datasets:
    as they first appear, except that a dataset reindexed along a dimension whose values
    differ between trees (outer join) has all its index coordinates moved to its front,
    in the order the aligner first met them (xarray's ``Dataset._reindex_callback``)."""
    orders = [part.memory_order() for part in parts]
    indexed = [
        [n for n in order if n == MULTI_INDEX or part.variables[n].dims == (n,)]
        for part, order in zip(parts, orders, strict=True)
    ]
    all_indexed = list(dict.fromkeys(n for names in indexed for n in names))
    seen: dict[str, npt.NDArray[Any]] = {}
    realigned: set[str] = set()
    for dim, own in _dimension_coordinates(parts):
        if dim in seen and not same_as_qcodes_sees(seen[dim], own.data):
            realigned.add(dim)
        seen.setdefault(dim, own.data)
    merged: dict[str, None] = {}
    for part, order, names in zip(parts, orders, indexed, strict=True):
        if realigned & set(part.dims):
            front = [n for n in all_indexed if n in names]
            order = front + [n for n in order if n not in front]
        merged.update(dict.fromkeys(order))
    return tuple(merged)


def plan_dataset(
    description: RunDescription,
    data: Mapping[str, Mapping[str, npt.NDArray[Any]]],
    attrs: Mapping[str, Any],
    *,
    use_multi_index: MultiIndexUse = "auto",
    positions: Positions | None = None,
) -> DatasetPlan:
    """The file QCoDeS would export for a run with this description, data and attributes.

    ``use_multi_index`` is ``to_xarray_dataset``'s: ``"always"`` skips the direct layout
    and puts every tree of several unique setpoints on a multi-index, ``"never"`` puts
    them on a grid (NaN where no row exists) even off the grid. QCoDeS' export uses
    ``"auto"``."""
    return _planned(description, data, attrs, use_multi_index, positions, owned=False)


def _planned(
    description: RunDescription,
    data: Mapping[str, Mapping[str, npt.NDArray[Any]]],
    attrs: Mapping[str, Any],
    use_multi_index: MultiIndexUse,
    positions: Positions | None,
    *,
    owned: bool,
) -> DatasetPlan:
    """:func:`plan_dataset`; with ``owned``, ``data``'s trees are dicts the plan may empty
    as it goes (see :func:`_through_index`)."""
    if use_multi_index not in MULTI_INDEX_USES:
        raise PlanError(f"use_multi_index={use_multi_index!r} is none of 'auto', 'always', 'never'")
    parts = []
    for name, sub in data.items():
        # QCoDeS: ``sub[name].shape == shapes[name]``, the declared tuple as stored (6.0
        # equals 6, True equals 1, "6" equals nothing)
        declared = (description.declared_shapes or {}).get(name)
        if declared is not None and sub[name].shape == declared and use_multi_index != "always":
            parts.append(_direct(description, name, sub))
        else:
            parts.append(_through_index(description, name, sub, use_multi_index, positions, owned))
    specs = description.paramspecs
    memory_order: tuple[str, ...] | None = _merged_memory_order(parts)
    try:
        dims, variables = _merge(parts) if parts else ({}, {})
    except PlanError:  # QCoDeS' export fails here (xarray cannot merge the trees' datasets)
        dims, variables = _side_by_side(list(data), parts, specs)
        memory_order = None
    for variable in variables.values():
        if variable.name not in (INDEX, MULTI_INDEX) and variable.name in specs:
            variable.attrs.update(variable_attrs(specs[variable.name]))
    return DatasetPlan(dims=dims, variables=variables, attrs=dict(attrs), memory_order=memory_order)


def parameter_names(description: RunDescription) -> dict[str, str]:
    """``{name: long_name or name}`` of the variables the export writes for the run's
    parameters (in :func:`plan_dataset`'s tree order), from the description alone.

    Every member of every top-level parameter's tree becomes a variable whose
    ``long_name`` is its label (:func:`variable_attrs`), whichever layout its rows get: a
    tree laid out side by side renames the variable (``x__P``) but keeps its label (an
    unlabelled one is then known by the new name, which only the rows decide). What the
    description cannot say is left out: the layout's own coordinates (``index``,
    ``multi_index`` and their side-by-side names), which depend on every row (duplicated
    setpoints, rows off the grid) and name no parameter; and an inferred parameter whose
    values do not fit its tree's dimensions, which QCoDeS drops."""
    graph = description.interdependencies
    names: dict[str, str] = {}
    for top in graph.top_level_parameters:
        name, setpoints, others = graph.tree_by_group(top)
        for member in (name, *setpoints, *others):
            names.setdefault(member, graph.parameters[member].label or member)
    return names


class Selection(TypedDict, total=False):
    """The keywords of QCoDeS' conversions that choose what they read, declared once for
    all of them: the rows ``start``..``end`` (1-based, as ``get_parameter_data``;
    default all) and ``use_multi_index`` (``"auto"``, ``"always"`` or ``"never"``)."""

    start: int | None
    end: int | None
    use_multi_index: MultiIndexUse


def plan_run(
    run: DatasetSource,
    *params: str,
    positions: Positions | None = None,
    **selection: Unpack[Selection],
) -> DatasetPlan:
    """The plan of a run (of the trees of ``params``, default all, and QCoDeS' rows
    ``start``..``end``), from its data as ``get_parameter_data`` returns them."""
    data, attrs = _read_for_plan(run, params, selection)
    return _plan_located(run, data, attrs, selection, positions)


def plan_trees(
    run: DatasetSource,
    *params: str,
    positions: Positions | None = None,
    **selection: Unpack[Selection],
) -> dict[str, DatasetPlan]:
    """One plan per parameter tree, unmerged (QCoDeS' ``to_xarray_dataset_dict``): each
    with the attributes of its variables and of the dataset."""
    data, attrs = _read_for_plan(run, params, selection)
    return {
        name: _plan_located(run, {name: tree}, attrs, selection, positions)
        for name, tree in data.items()
    }


def _read_for_plan(
    run: DatasetSource, params: Sequence[str], selection: Selection
) -> tuple[ParameterData, dict[str, Any]]:
    """The data of a plan of ``run``, in dicts of its own: the run's own (an in-memory run's
    data) are never emptied, and where nothing else holds the arrays the plan frees each
    column it no longer needs (see :func:`_through_index`)."""
    data = run.get_parameter_data(*params, start=selection.get("start"), end=selection.get("end"))
    _refuse_text_in_numeric_columns(run, data)
    return {name: dict(tree) for name, tree in data.items()}, dataset_attrs(run)


def _plan_located(
    run: DatasetSource,
    data: ParameterData,
    attrs: dict[str, Any],
    selection: Selection,
    positions: Positions | None,
) -> DatasetPlan:
    """:func:`plan_dataset` of data the plan owns (:func:`_read_for_plan`), its layout
    errors naming the run."""
    try:
        return _planned(
            run.description,
            data,
            attrs,
            selection.get("use_multi_index", "auto"),
            positions,
            owned=True,
        )
    except DirectLayoutError as exc:
        raise _located(run, exc) from exc


def _located(run: DatasetSource, exc: DirectLayoutError) -> DirectLayoutError:
    return DirectLayoutError(
        f"{run.path_to_db}, run {run.run_id}: {exc}",
        path=run.path_to_db,
        run_id=run.run_id,
        table="runs",
        column="run_description",
    )


def _refuse_text_in_numeric_columns(run: DatasetSource, data: ParameterData) -> None:
    """Text in a numeric column reads as QCoDeS reads it (an object array), but QCoDeS'
    export of such a run fails (its dataframe cannot concatenate the values): one typed
    error here too, as the streamed plans give, instead of a file QCoDeS never writes."""
    specs = run.description.interdependencies.parameters
    for tree in data.values():
        for column, values in tree.items():
            spec = specs.get(column)
            if spec is None or spec.paramtype != "numeric" or values.dtype != object:
                continue
            text = next((v for v in values.ravel() if isinstance(v, str)), None)
            if text is not None:
                where = run.results_table().where.at(column=column)
                raise DataDecodeError(
                    f"{where}: holds the text {text!r:.40} in a numeric column, which QCoDeS "
                    "reads but cannot export",
                    where=where,
                )
