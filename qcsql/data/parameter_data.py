"""Rebuild a run's data exactly as QCoDeS' ``DataSet.get_parameter_data`` returns it.

Per requested parameter P, QCoDeS reads the rows where P is not NULL, with
the columns of P's tree (P, its setpoints in axis order, the other tree members
by name), turns them into one array per column, expands scalars to the shape
of array values, and reshapes to ``shapes[P]`` when the sizes match exactly.
The rules are QCoDeS'; the way is not:

* rows come from :mod:`qcsql.data.results` in short id-ordered chunks;
* numeric columns go straight into preallocated float64 arrays, so memory
  does not grow beyond the returned arrays;
* ``.npy`` blobs that share their header (nearly all) are sliced out with one
  copy per chunk (:func:`qcsql.data.npy.decode_uniform`).

Anything irregular (blobs whose shape changes between rows, NULL arrays,
Fortran-ordered blobs, text in a numeric column) is read again row by row with
QCoDeS' own algorithm, including its ragged object arrays and the object array
of numbers and text it returns for a numeric parameter that was given text.
Each tree's keys come in QCoDeS' order: P, its setpoints as stored, the rest by name.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qcsql.data.npy import MAX_DIMS, NpyHeader, decode_one, decode_uniform, parse_header
from qcsql.data.results import ResultsTable, RowRange
from qcsql.errors import DataDecodeError, ParameterNotFoundError, RunDescriptionError, Where
from qcsql.schema.description import RunDescription, qcodes_size
from qcsql.sqlite.blob_cells import ColumnTarget

__all__ = [
    "ParameterData",
    "Tree",
    "column_chunks",
    "numeric_chunks",
    "read_parameter_data",
    "read_tree",
]

log = logging.getLogger(__name__)

ParameterData = dict[str, dict[str, npt.NDArray[Any]]]
NUMERIC_ROWS_PER_CHUNK = 65_536
BLOB_BYTES_PER_CHUNK = 8 * 1024 * 1024
SCALAR_KINDS = ("numeric", "text", "complex")


class _Irregular(Exception):
    """The fast path met data it does not handle; read the tree again the exact slow way."""


class _NotNumbers(Exception):
    """A numeric column holds values that are not numbers (text QCoDeS was given for a
    numeric parameter). ``get_parameter_data`` then reads the tree the exact slow way,
    into QCoDeS' object array (:func:`read_tree` with ``objects=True``); readers that need
    numbers get :meth:`error`, a :class:`~qcsql.errors.DataDecodeError`."""

    def __init__(self, error: DataDecodeError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Tree:
    """One requested parameter, its columns, and where their rows are."""

    table: ResultsTable
    top: str
    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    rows: RowRange

    @property
    def where(self) -> Where:
        return self.table.where

    def fail(self, column: str, problem: str) -> DataDecodeError:
        where = self.where.at(column=column)
        return DataDecodeError(f"{where}: {problem}", where=where)

    def chunks(self, ids_per_chunk: int) -> Iterator[list[tuple[Any, ...]]]:
        return self.table.chunks(self.columns, self.top, self.rows, ids_per_chunk)


def read_parameter_data(
    table: ResultsTable | None,
    description: RunDescription,
    names: Sequence[str],
    start: int | None,
    end: int | None,
    where: Where,
) -> ParameterData:
    """``{P: {P: array, setpoint: array, ...}}`` for every requested P, as QCoDeS gives it."""
    graph = description.interdependencies
    requested = list(names) or list(graph.top_level_parameters)
    for name in requested:
        if name not in graph.parameters:
            known = ", ".join(graph.parameters) or "none"
            raise ParameterNotFoundError(
                f"{where}: has no parameter {name!r} (it has: {known})", where=where
            )
    if not requested:
        return {}
    assert table is not None, "callers pass the table whenever there are parameters"
    upto_id = table.max_id()
    output: ParameterData = {}
    for name in requested:
        top, setpoints, others = graph.tree_by_group(name)
        columns = (top, *setpoints, *others)
        kinds = tuple(graph.parameters[c].paramtype for c in columns)
        if start is None and end is None and not set(kinds) & {"text", "complex"}:
            rows = table.all_rows(upto_id)  # numeric and array trees fill and then trim
        else:
            rows = table.locate(top, start, end, upto_id)
        tree = Tree(table, top, columns, kinds, rows)
        shape = _declared_shape(tree, description, name)  # before reading: it may fail
        output[name] = _reshape(tree, read_tree(tree, objects=True), shape, name)
    return output


def read_tree(tree: Tree, *, objects: bool = False) -> dict[str, npt.NDArray[Any]]:
    """The tree's columns, keyed in ``tree.columns`` order (QCoDeS' order of its keys).

    ``objects``: a numeric column holding text becomes an object array of its values, as
    in QCoDeS' ``get_parameter_data``; else such text raises a ``DataDecodeError``."""
    if tree.rows.rows == 0:  # QCoDeS: np.array((), dtype=float64 or None) -> float64 either way
        return {column: np.array((), dtype=np.float64) for column in tree.columns}
    try:
        if "array" in tree.kinds:
            return _read_array_tree(tree)
        return _read_scalar_tree(tree)
    except _Irregular:
        return _read_exactly_like_qcodes(tree)
    except _NotNumbers as text:
        if not objects:
            raise text.error from None
        return _read_exactly_like_qcodes(tree)


# -- scalar trees: numeric, text and complex columns ------------------------------------------


def _numeric(tree: Tree, column: str, values: Sequence[Any]) -> npt.NDArray[np.float64]:
    try:
        return np.array(values, dtype=np.float64)
    except (ValueError, TypeError):
        bad = next(v for v in values if not _is_number_like(v))
        raise _NotNumbers(tree.fail(column, f"holds {bad!r:.60}, which is not a number")) from None


def _all_floats(chunk: list[tuple[Any, ...]], width: int) -> npt.NDArray[np.float64] | None:
    """A chunk of plain numbers as an (m, width) float64 block in one pass; None when some
    value needs a closer look (NULL, the text 'nan', something that is not a number)."""
    try:
        flat = np.fromiter(
            itertools.chain.from_iterable(chunk), dtype=np.float64, count=len(chunk) * width
        )
    except (ValueError, TypeError):
        try:
            return np.array(chunk, dtype=np.float64)  # NULL -> NaN, 'nan' -> NaN, as QCoDeS
        except (ValueError, TypeError):
            return None
    return flat.reshape(len(chunk), width)


def _is_number_like(value: Any) -> bool:
    try:
        float(value if value is not None else "nan")
        return not isinstance(value, bytes)
    except (TypeError, ValueError):
        return False


def _complex(tree: Tree, column: str, values: Sequence[Any]) -> npt.NDArray[Any]:
    """Complex scalars stored as ``(1,)`` npy blobs; element [0] of each, as QCoDeS takes it."""
    if any(v is None for v in values):
        raise _Irregular
    first = values[0]
    header = _header(tree, column, first)
    uniform = decode_uniform(values, header, first[: header.data_offset])
    if uniform is not None and uniform.ndim == 2:
        return uniform[:, 0]
    return np.array([_decode(tree, column, v)[0] for v in values])


def _header(tree: Tree, column: str, blob: Any) -> NpyHeader:
    try:
        return parse_header(blob)
    except ValueError as exc:
        raise tree.fail(column, str(exc)) from None


def _decode(tree: Tree, column: str, blob: Any) -> npt.NDArray[Any]:
    try:
        return decode_one(blob)
    except ValueError as exc:
        raise tree.fail(column, str(exc)) from None


def numeric_chunks(tree: Tree) -> Iterator[list[npt.NDArray[np.float64]]]:
    """An all-numeric tree's rows, chunk by chunk, one float64 array per column: from the
    table's pages (:mod:`qcsql.sqlite.pages`) for as long as they can be read, then from
    SQLite. Text among the numbers is a ``DataDecodeError``."""
    try:
        yield from _numeric_chunks(tree)
    except _NotNumbers as text:
        raise text.error from None


def column_chunks(tree: Tree, column: str) -> Iterator[npt.NDArray[np.float64]]:
    """Only ``column`` of an all-numeric tree's rows, chunk by chunk: a pass over one
    column (a setpoint, to settle a layout) that decodes no other value where the pages
    allow (:meth:`ResultsTable.column_windows`). Where they do not, the rest of the rows
    is read as :func:`numeric_chunks` reads it (so text in the tree is a
    ``DataDecodeError`` there, as it is in any pass over the tree)."""
    rest = RowRange(tree.rows.upto_id, tree.rows.upto_id, 0)
    for left, window in tree.table.column_windows(column, tree.top, tree.rows):
        if window is None:
            rest = left
            break
        if len(window.values):
            yield window.values
    if rest.rows:
        index = tree.columns.index(column)
        for chunk in numeric_chunks(dataclasses.replace(tree, rows=rest)):
            yield chunk[index]


def _numeric_chunks(tree: Tree) -> Iterator[list[npt.NDArray[np.float64]]]:
    rest = RowRange(tree.rows.upto_id, tree.rows.upto_id, 0)
    for left, window in tree.table.numeric_windows(tree.columns, tree.rows):
        if window is None:
            rest = left
            break
        if window.rows:
            yield window.values
    width = len(tree.columns)
    for chunk in tree.table.chunks(tree.columns, tree.top, rest, NUMERIC_ROWS_PER_CHUNK):
        block = _all_floats(chunk, width)
        if block is not None:
            yield [block[:, j] for j in range(width)]
        else:
            by_column = zip(*chunk, strict=True)
            yield [_numeric(tree, c, v) for c, v in zip(tree.columns, by_column, strict=True)]


def _read_scalar_tree(tree: Tree) -> dict[str, npt.NDArray[Any]]:
    n = tree.rows.rows
    numeric = [kind not in ("text", "complex") for kind in tree.kinds]
    floats = {
        c: np.empty(n, dtype=np.float64)
        for c, num in zip(tree.columns, numeric, strict=True)
        if num
    }
    pieces: dict[str, list[Any]] = {
        c: [] for c, num in zip(tree.columns, numeric, strict=True) if not num
    }
    position = 0
    if all(numeric):
        for decoded in _numeric_chunks(tree):
            m = len(decoded[0])
            for column, array in zip(tree.columns, decoded, strict=True):
                floats[column][position : position + m] = array
            position += m
    chunks = () if all(numeric) else tree.chunks(NUMERIC_ROWS_PER_CHUNK)
    for chunk in chunks:
        m = len(chunk)
        by_column = list(zip(*chunk, strict=True))
        for column, kind, values in zip(tree.columns, tree.kinds, by_column, strict=True):
            if column in floats:
                floats[column][position : position + m] = _numeric(tree, column, values)
            elif kind == "complex":
                pieces[column].append(_complex(tree, column, values))
            else:
                pieces[column].extend(values)
        position += m
    if position != n and tree.rows.exact:
        raise _Irregular  # rows vanished under us (a rewritten file); read again, exactly
    if position < n:  # the allocation was an upper bound: give back the untouched tail
        for array in floats.values():
            array.resize(position, refcheck=False)
    result: dict[str, npt.NDArray[Any]] = {}
    for column, kind in zip(tree.columns, tree.kinds, strict=True):
        if column in floats:
            result[column] = floats[column]
        elif kind == "complex" and pieces[column]:
            result[column] = np.concatenate(pieces[column])
        elif kind == "complex":  # no row (the count was an upper bound): float64, as QCoDeS
            result[column] = np.empty(0, dtype=np.float64)
        else:
            result[column] = _maybe_ragged(pieces[column], None)
    return result


# -- array trees ------------------------------------------------------------------------------


@dataclass
class _ArrayColumn:
    header: NpyHeader
    prefix: bytes


def _read_array_tree(tree: Tree) -> dict[str, npt.NDArray[Any]]:
    """The common case: every blob of a column has one header, and all array columns share
    one shape S (or have size 1): every column becomes ``(rows, *S)`` like QCoDeS' expansion."""
    n = tree.rows.rows
    first = tree.table.first_row(tree.columns, tree.top, tree.rows)
    if not first:  # the table has rows, none of them this tree's
        return {column: np.array((), dtype=np.float64) for column in tree.columns}
    layout: dict[str, _ArrayColumn] = {}
    target = _plan_array_layout(tree, first, layout)
    if len(target) >= MAX_DIMS:
        raise _Irregular  # no room for the rows' axis: numpy's (and QCoDeS') ragged stacking
    row_bytes = sum(column.header.blob_size for column in layout.values())
    if not tree.rows.exact:
        # Every row this path fills holds blobs of the first row's sizes, stored in the file:
        # no more rows than the file has room for (ids far beyond the row count, say after
        # an edit, would otherwise size an allocation of terabytes). More rows than that
        # cannot all be of that size: the exact path reads them.
        fits = tree.table.file_bytes() // max(row_bytes, 1)
        if fits < n:
            n = fits
            tree = dataclasses.replace(tree, rows=dataclasses.replace(tree.rows, rows=n))
    try:
        out = _allocate(tree, layout, target, n)
    except MemoryError:
        if tree.rows.exact:
            raise
        # Ids far beyond the row count (a table someone edited): count the rows after all.
        counted = RowRange(0, tree.rows.upto_id, tree.table.count_rows(), exact=False)
        tree = dataclasses.replace(tree, rows=counted)
        n = tree.rows.rows
        out = _allocate(tree, layout, target, n)
    texts: dict[str, list[Any]] = {
        c: [] for c, k in zip(tree.columns, tree.kinds, strict=True) if k == "text"
    }
    position, rest = _fill_from_pages(tree, layout, target, out)
    ids_per_chunk = max(1, BLOB_BYTES_PER_CHUNK // max(row_bytes, 1))
    for chunk in tree.table.chunks(tree.columns, tree.top, rest, ids_per_chunk):
        if position + len(chunk) > n:
            raise _Irregular  # more rows than allocated for: they are not all alike
        _fill_array_chunk(tree, chunk, layout, target, out, texts, position)
        position += len(chunk)
    if position != n and tree.rows.exact:
        raise _Irregular  # rows vanished under us (a rewritten file); read again, exactly
    if position < n:  # the allocation was an upper bound: give back the untouched tail
        for array in out.values():
            array.resize((position, *array.shape[1:]), refcheck=False)
    for column, values in texts.items():
        stacked = _maybe_ragged(values, None).reshape(position, *(1,) * len(target))
        out[column] = np.array(np.broadcast_to(stacked, (position, *target)))
    return {column: out[column] for column in tree.columns}  # text columns in their place


def _fill_from_pages(
    tree: Tree,
    layout: dict[str, _ArrayColumn],
    target: tuple[int, ...],
    out: dict[str, npt.NDArray[Any]],
) -> tuple[int, RowRange]:
    """Copy as many rows as :mod:`qcsql.sqlite.blob_pages` can straight from the table's pages;
    returns the rows filled and the rows SQLite still has to read."""
    if not set(tree.kinds) <= {"array", "numeric"}:
        return 0, tree.rows
    targets = []
    for column, kind in zip(tree.columns, tree.kinds, strict=True):
        index = tree.table.record_index(column)
        if kind == "numeric":
            targets.append(ColumnTarget(index, None, 8, np.dtype(np.float64), out[column], False))
            continue
        header = layout[column].header
        direct = header.shape == target and header.dtype == out[column].dtype
        targets.append(
            ColumnTarget(
                index, layout[column].prefix, header.data_nbytes, header.dtype, out[column], direct
            )
        )
    rows = tree.rows
    filled, covered = tree.table.fill_from_pages(targets, rows)
    return filled, RowRange(covered, rows.upto_id, rows.rows - filled, rows.exact)


def _plan_array_layout(
    tree: Tree, first_row: tuple[Any, ...], layout: dict[str, _ArrayColumn]
) -> tuple[int, ...]:
    shapes: list[tuple[int, ...]] = []
    for column, kind, value in zip(tree.columns, tree.kinds, first_row, strict=True):
        if kind != "array":
            continue
        if value is None:
            raise _Irregular
        header = _header(tree, column, value)
        if header.fortran_order and len(header.shape) > 1:
            raise _Irregular
        layout[column] = _ArrayColumn(header, value[: header.data_offset])
        shapes.append(header.shape)
    # QCoDeS: scalars take the first array's shape, then size-1 arrays grow to the largest.
    largest = max(shapes, key=math.prod)
    target = largest if math.prod(largest) > 1 else shapes[0]
    for shape in shapes:
        if shape != target and not (math.prod(shape) == 1 and math.prod(target) > 1):
            raise _Irregular
    return target


def _allocate(
    tree: Tree, layout: dict[str, _ArrayColumn], target: tuple[int, ...], n: int
) -> dict[str, npt.NDArray[Any]]:
    out: dict[str, npt.NDArray[Any]] = {}
    for column, kind in zip(tree.columns, tree.kinds, strict=True):
        if kind == "array":
            out[column] = np.empty((n, *target), dtype=layout[column].header.stacked_dtype(n))
        elif kind == "complex":
            out[column] = np.empty((n, *target), dtype=np.complex128)
        elif kind != "text":
            out[column] = np.empty((n, *target), dtype=np.float64)
    return out


def _fill_array_chunk(
    tree: Tree,
    chunk: list[tuple[Any, ...]],
    layout: dict[str, _ArrayColumn],
    target: tuple[int, ...],
    out: dict[str, npt.NDArray[Any]],
    texts: dict[str, list[Any]],
    position: int,
) -> None:
    m = len(chunk)
    spread = (m, *(1,) * len(target))
    by_column = list(zip(*chunk, strict=True))
    for column, kind, values in zip(tree.columns, tree.kinds, by_column, strict=True):
        if kind == "array":
            spec = layout[column]
            if spec.header.shape == target:
                done = decode_uniform(
                    values, spec.header, spec.prefix, out[column][position : position + m]
                )
                if done is None:
                    raise _Irregular
            else:
                decoded = decode_uniform(values, spec.header, spec.prefix)
                if decoded is None:
                    raise _Irregular
                out[column][position : position + m] = decoded.reshape(spread)
        elif kind == "complex":
            out[column][position : position + m] = _complex(tree, column, values).reshape(spread)
        elif kind == "text":
            texts[column].extend(values)
        else:
            out[column][position : position + m] = _numeric(tree, column, values).reshape(spread)


# -- the exact slow path ----------------------------------------------------------------------


def _read_exactly_like_qcodes(tree: Tree) -> dict[str, npt.NDArray[Any]]:
    """Row by row, QCoDeS' own algorithm (``_expand_data_to_arrays`` and friends)."""
    rows: list[list[Any]] = []
    for chunk in tree.chunks(NUMERIC_ROWS_PER_CHUNK // 16):
        for raw in chunk:
            rows.append(
                [
                    _decode_value(tree, c, k, v)
                    for c, k, v in zip(tree.columns, tree.kinds, raw, strict=True)
                ]
            )
    if "array" in tree.kinds:
        _expand_like_qcodes(tree, rows)
    result: dict[str, npt.NDArray[Any]] = {}
    for index, (column, kind) in enumerate(zip(tree.columns, tree.kinds, strict=True)):
        values = [row[index] for row in rows]
        result[column] = _maybe_ragged(values, np.float64 if kind == "numeric" else None)
    return result


def _decode_value(tree: Tree, column: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "array":
        return _decode(tree, column, value)
    if kind == "complex":
        return _decode(tree, column, value)[0]
    if kind == "text":
        return value
    return _as_qcodes_converts_numeric(tree, column, value)


def _as_qcodes_converts_numeric(tree: Tree, column: str, value: Any) -> Any:
    """A value of a numeric column as QCoDeS' ``_convert_numeric`` gives it: the number
    its text spells (an ``int`` when it is integral), else the text itself. QCoDeS
    converts the bytes SQLite renders, so a double reaches it rounded to 15 digits;
    this keeps the stored double (see :meth:`qcsql.Run.get_parameter_data`). Bytes that
    are neither a number nor UTF-8 fail QCoDeS' conversion, and this raises."""
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        try:
            number = float(raw)
        except ValueError:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise tree.fail(
                    column, f"holds {value!r:.60}, which is neither a number nor text"
                ) from None
    if not math.isfinite(number):
        return number
    integral = int(number)
    return integral if number == integral else number


def _expand_like_qcodes(tree: Tree, rows: list[list[Any]]) -> None:
    kinds = tree.kinds
    first_array = kinds.index("array")
    for row in rows:
        anchor = row[first_array]
        if any(value is None for value in row):
            missing = tree.columns[[v is None for v in row].index(True)]
            raise tree.fail(missing, "is NULL in a row of an array parameter's tree")
        for i, kind in enumerate(kinds):
            if kind in SCALAR_KINDS:
                dtype = {"numeric": np.float64, "complex": np.complex128}.get(
                    kind, f"U{len(str(row[i]))}"
                )
                try:
                    row[i] = np.full_like(anchor, row[i], dtype=dtype)
                except (TypeError, ValueError):  # text in a numeric column: QCoDeS fails too
                    raise tree.fail(
                        tree.columns[i],
                        f"holds {row[i]!r:.60}, which is not a number, in the tree of an "
                        "array parameter",
                    ) from None
        largest = max(row, key=lambda a: a.size)
        if largest.size > 1:
            shape = next(a.shape for a in row if a.size == largest.size)
            for i, value in enumerate(row):
                if value.size == 1:
                    row[i] = np.full(shape, value, dtype=value.dtype)


def _maybe_ragged(values: Sequence[Any], dtype: type | None) -> npt.NDArray[Any]:
    """QCoDeS' ``list_of_data_to_maybe_ragged_nd_array``: an object array when shapes differ."""
    try:
        return np.array(values, dtype=dtype)
    except ValueError:
        return np.array(values, dtype=object)


def _declared_shape(tree: Tree, description: RunDescription, name: str) -> tuple[int, ...] | None:
    try:
        return description.reshape_to(name)
    except ValueError as exc:  # QCoDeS' int() of an entry raises
        raise _shape_error(tree, str(exc)) from None


def _shape_error(tree: Tree, problem: str) -> RunDescriptionError:
    where = tree.where.at(table="runs", column="run_description")
    return RunDescriptionError(f"{where.at(table=None, column=None)}: {problem}", where=where)


def _reshape(
    tree: Tree, data: dict[str, npt.NDArray[Any]], shape: tuple[int, ...] | None, name: str
) -> dict[str, npt.NDArray[Any]]:
    """QCoDeS' reshaping: each column whose size equals ``np.prod(shape)`` (as numpy
    computes it, wrapping around) takes the shape; where numpy then refuses the shape
    (two negative entries, a product that wrapped around), QCoDeS fails, and so does this,
    with the run's error instead of numpy's."""
    if shape is None:
        return data
    expected = qcodes_size(shape)
    for column, array in data.items():
        if array.size == expected:
            try:
                data[column] = array.reshape(shape)
            except ValueError as exc:
                raise _shape_error(
                    tree,
                    f"the declared shape {shape!r:.80} of {name!r} does not fit its "
                    f"{array.size} values of {column!r} ({exc})",
                ) from None
        elif array.size > expected:
            log.warning(
                "%s: %d values of %s do not fit the declared shape %.80r of %s; returned flat",
                column,
                array.size,
                column,
                shape,
                name,
            )
    return data


def read_rows_between(
    table: ResultsTable, description: RunDescription, after_id: int, upto_id: int
) -> ParameterData:
    """The rows with ``after_id < id <= upto_id`` of every top-level parameter's tree, decoded
    as :func:`read_parameter_data` decodes them, not reshaped (for following live runs)."""
    graph = description.interdependencies
    output: ParameterData = {}
    for name in graph.top_level_parameters:
        top, setpoints, others = graph.tree_by_group(name)
        columns = (top, *setpoints, *others)
        kinds = tuple(graph.parameters[c].paramtype for c in columns)
        rows = table.locate(top, None, None, upto_id, after_id)
        if rows.rows:
            output[name] = read_tree(Tree(table, top, columns, kinds, rows))
    return output
