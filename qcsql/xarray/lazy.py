"""Lazy variables for the ``qcsql`` engine: indexing reads only the rows that hold the values.

QCoDeS lays the values of the large runs' layouts out in the order of their rows: a
sweep of one setpoint along it (in measured order), a grid of declared shape (the
direct layout: C order of the shape is row order), array runs along ``index`` (row by
row, each row's array in turn), a multi-index (row order). So element ``k`` of such a
variable is element ``k % per_row`` of the tree's row ``k // per_row``, and a basic
index along the first axis is a window of rows: :meth:`ResultsTable.rows_at` finds its
ids from the spans counted when the run was opened (directly where the ids are dense),
and the data layer reads just that window (the page readers where they apply), decoded
exactly as ``get_parameter_data`` decodes the whole tree.

The arrays carry the path, the run and those spans, not a connection, so they pickle
to the processes of a Dask cluster; each process opens the file once, read-only, with
the ``table`` opener it is given (the engine's, which keeps one ``Database`` per file).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from xarray.backends import BackendArray
from xarray.core import indexing

from qcsql.data.parameter_data import Tree, read_tree
from qcsql.data.results import ResultsTable, RowRange, Span
from qcsql.errors import DataDecodeError

__all__ = ["RowSource", "RowsArray", "rows_read"]

TableOpener = Callable[[str, int], ResultsTable]  # (path, run_id) -> its results table


@dataclass(frozen=True)
class RowSource:
    """Where the values of one variable are: ``column`` of ``top``'s tree, in row order."""

    path: str
    run_id: int
    open_table: TableOpener  # a module-level function, so that the source pickles
    top: str
    columns: tuple[str, ...]  # the columns read: the tree's top first, then ``column``
    kinds: tuple[str, ...]
    column: str
    spans: tuple[Span, ...]
    rows: int  # rows of the tree
    per_row: int  # values of ``column`` per row (1 for numbers, the array length for arrays)

    def read(self, first: int, last: int) -> npt.NDArray[Any]:
        """The flat values ``first``..``last - 1`` in row order, reading only their rows."""
        low, high = first // self.per_row, -(-last // self.per_row)
        table = self.open_table(self.path, self.run_id)
        rows = table.rows_at(self.top, self.spans, low, high - low)
        _record(rows)
        values = read_tree(Tree(table, self.top, self.columns, self.kinds, rows), objects=True)
        flat = values[self.column].reshape(-1)
        if flat.size != (high - low) * self.per_row:
            # arrays of another shape than the first rows' in blobs of the same size: the
            # layout the engine settled on open (from the blobs' sizes) does not hold
            where = table.where.at(column=self.column)
            raise DataDecodeError(
                f"{where}: rows {low + 1}..{high} of {self.top!r}'s tree hold arrays of "
                f"{self.column!r} of other shapes than its first rows ({flat.size} values, "
                f"not {self.per_row} a row): load it with Run.to_xarray_dataset() instead",
                where=where,
            )
        return flat[first - low * self.per_row : last - low * self.per_row]


_LOG_LOCK = threading.Lock()
_LOG: list[list[RowRange]] = []


def _record(rows: RowRange) -> None:
    with _LOG_LOCK:
        for log in _LOG:
            log.append(rows)


@contextlib.contextmanager
def rows_read() -> Iterator[list[RowRange]]:
    """The row windows lazy arrays read in this process while the ``with`` lasts (what an
    index costs)."""
    log: list[RowRange] = []
    with _LOG_LOCK:
        _LOG.append(log)
    try:
        yield log
    finally:
        with _LOG_LOCK:
            _LOG[:] = [other for other in _LOG if other is not log]  # nested logs are equal


class RowsArray(BackendArray):
    """A variable of ``shape`` whose flat C-order values are ``source``'s rows in order."""

    def __init__(self, source: RowSource, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.source = source
        self.shape = shape
        self.dtype = dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._basic
        )

    def _basic(self, key: tuple[Any, ...]) -> npt.NDArray[Any]:
        """A basic index (ints and slices): the rows spanned along the first axis are read,
        the rest of the index applies to them."""
        if not self.shape:
            return self.source.read(0, 1).reshape(())
        head, rest = key[0], tuple(key[1:])
        inner = math.prod(self.shape[1:])
        if isinstance(head, int | np.integer):
            head = int(head) + self.shape[0] if head < 0 else int(head)
            positions = range(head, head + 1)
        else:
            positions = range(*head.indices(self.shape[0]))
        if len(positions) == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)[(slice(None), *rest)]
        low, high = min(positions), max(positions) + 1
        block = self.source.read(low * inner, high * inner).reshape((high - low, *self.shape[1:]))
        block = block.astype(self.dtype, copy=False)
        if isinstance(head, int):
            return np.asarray(block[(0, *rest)])
        local = slice(
            positions.start - low,
            None if positions.stop - low < 0 else positions.stop - low,
            positions.step,
        )
        return block[(local, *rest)]


def in_row_order(data: npt.NDArray[Any], placeholders: Sequence[npt.NDArray[Any]]) -> int | None:
    """Which placeholder ``data`` is, in the same C order (so its values are that tree's
    rows in order), or None."""
    for number, placeholder in enumerate(placeholders):
        if (
            data.size == placeholder.size
            and data.flags.c_contiguous
            and data.__array_interface__["data"][0] == placeholder.__array_interface__["data"][0]
        ):
            return number
    return None
