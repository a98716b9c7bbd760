"""Rows of one or more parameter trees, window by window, for the streamed exports.

:mod:`qcsql.data.parameter_data` decodes a tree's rows exactly as QCoDeS'
``get_parameter_data`` does; the streams here hand them on in windows of ids, so
that an export never holds a whole run. QCoDeS writes each parameter's tree in
rows of its own, interleaved as the measurement called ``add_result``; a stream
of several trees queues each tree's rows and hands them on once every tree has
them, with the setpoints checked to be the same values in the same order (which
makes QCoDeS' merge of the trees' datasets a plain union). When they are not,
:class:`RowsDiffer` tells the export to lay the run out in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from qcsql.data.parameter_data import (
    NUMERIC_ROWS_PER_CHUNK,
    Tree,
    column_chunks,
    numeric_chunks,
    read_tree,
)
from qcsql.data.results import RowRange

if TYPE_CHECKING:
    from qcsql.data.source import RunSource

__all__ = [
    "ArrayTreeStream",
    "NumericTreeStream",
    "RowsDiffer",
    "stream_array_trees",
    "stream_numeric_trees",
    "text_as_objects",
]


class RowsDiffer(Exception):
    """The trees of a joint stream do not have the same setpoints row for row (or the
    pages that would show it cannot be read): lay the run out in memory instead."""


JOINT_LAG = 1 << 22  # rows one tree may run ahead of another before the stream gives up


class _RowQueue:
    """Rows of one tree decoded but not yet matched with the other trees' rows."""

    def __init__(self) -> None:
        self.parts: list[list[npt.NDArray[np.float64]]] = []
        self.rows = 0

    def push(self, columns: list[npt.NDArray[np.float64]]) -> None:
        if len(columns[0]):
            self.parts.append(columns)
            self.rows += len(columns[0])

    def pop(self, rows: int) -> list[npt.NDArray[np.float64]]:
        if len(self.parts) == 1 and rows == self.rows:  # one tree, or trees in step: no copy
            taken, self.parts, self.rows = self.parts[0], [], 0
            return taken
        joined = [np.concatenate(column) for column in zip(*self.parts, strict=True)]
        taken = [column[:rows] for column in joined]
        rest = [column[rows:] for column in joined]
        self.parts = [rest] if len(rest[0]) else []
        self.rows -= rows
        return taken


@dataclass(frozen=True)
class NumericTreeStream:
    """All rows of one or more scalar trees with the same numeric setpoints (a sweep that
    records several dependents at each point), chunk by chunk. The parameters are numbers,
    complex numbers or text."""

    tree: Tree  # columns: the parameters, then the setpoints
    rows: int
    tops: int = 1

    def chunks(self) -> Iterator[list[npt.NDArray[Any]]]:
        """One array per column (the parameters first, then the setpoints): float64,
        complex128 for complex parameters, Python strings for text."""
        if {"complex", "text"} & set(self.tree.kinds):
            # .npy blobs and text, which only SQLite reads: tree by tree.
            windows = _matched_windows(self._trees_apart(), NUMERIC_ROWS_PER_CHUNK)
            return ([text_as_objects(column) for column in columns] for _, columns in windows)
        if self.tops == 1:
            return numeric_chunks(self.tree)
        return self._joint_chunks()

    def column(self, name: str) -> Iterator[npt.NDArray[Any]]:
        """Only the values of column ``name``, chunk by chunk, as :meth:`chunks` gives
        them: where the stream is one tree of numbers, no other column is decoded."""
        if self.tops == 1 and set(self.tree.kinds) == {"numeric"}:
            return column_chunks(self.tree, name)
        index = self.tree.columns.index(name)
        return (chunk[index] for chunk in self.chunks())

    def _trees_apart(self) -> list[Tree]:
        tree, tops = self.tree, self.tops
        setpoints, kinds = tree.columns[tops:], tree.kinds[tops:]
        return [
            dataclasses.replace(tree, top=top, columns=(top, *setpoints), kinds=(kind, *kinds))
            for top, kind in zip(tree.columns[:tops], tree.kinds[:tops], strict=True)
        ]

    def _joint_chunks(self) -> Iterator[list[npt.NDArray[np.float64]]]:
        """QCoDeS writes each parameter's tree in rows of its own, interleaved as the
        measurement called add_result. Each tree's rows are queued, and rows are handed
        on as soon as every tree has them, their setpoints checked to be the same values
        in the same order (what makes QCoDeS' merge of the trees' datasets a plain
        union). Only the pages tell which parameter a row holds: no SQLite fallback."""
        tree, tops = self.tree, self.tops

        def each_trees_rows() -> Iterator[tuple[None, list[list[npt.NDArray[Any]]]]]:
            for _, window in tree.table.numeric_windows(tree.columns, tree.rows, tops):
                if window is None or window.has is None:
                    raise RowsDiffer
                setpoints = window.values[tops:]
                held = [window.has[:, top] for top in range(tops)]
                yield (
                    None,
                    [
                        [window.values[top][rows], *(s[rows] for s in setpoints)]
                        for top, rows in enumerate(held)
                    ],
                )

        for _, columns in _matched_rows(each_trees_rows(), tops):
            yield columns


def text_as_objects(column: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Fixed-width text as Python strings: what pandas columns and indexes hold, and what
    h5py writes into variable-length string datasets; other arrays as they are."""
    return column.astype(object) if column.dtype.kind == "U" else column


def _matched_windows(
    trees: Sequence[Tree], ids_per_chunk: int
) -> Iterator[tuple[int, list[npt.NDArray[Any]]]]:
    """``(last id read, [P1, ..., Pk, *setpoints])`` id window by id window, each tree's
    rows decoded exactly as :func:`read_parameter_data` decodes a whole tree (not
    reshaped), and the trees matched row for row as :class:`NumericTreeStream` matches
    them."""

    def each_trees_rows() -> Iterator[tuple[int, list[list[npt.NDArray[Any]]]]]:
        after = min(tree.rows.after_id for tree in trees)
        upto = max(tree.rows.upto_id for tree in trees)
        while after < upto:
            high = min(after + ids_per_chunk, upto)
            window = RowRange(after_id=after, upto_id=high, rows=high - after, exact=False)
            decoded = [read_tree(dataclasses.replace(tree, rows=window)) for tree in trees]
            yield (
                high,
                [
                    [data[column] for column in tree.columns]
                    for tree, data in zip(trees, decoded, strict=True)
                ],
            )
            after = high
            if not any(len(data[tree.top]) for tree, data in zip(trees, decoded, strict=True)):
                # Ids need not be dense (a row inserted at id 2**62): past an empty window,
                # go on from the next row there is, not window by window through the gap.
                after = trees[0].table.skip_gap(after, upto)

    return _matched_rows(each_trees_rows(), len(trees))


_Key = TypeVar("_Key")


def _matched_rows(
    windows: Iterator[tuple[_Key, list[list[npt.NDArray[Any]]]]], trees: int
) -> Iterator[tuple[_Key, list[npt.NDArray[Any]]]]:
    """Each tree's ``[P, *setpoints]`` rows, window by window, queued and handed on as
    ``[P1, ..., Pk, *setpoints]`` as soon as every tree has them (with the key of the
    window that completed them). The trees must have the same setpoints row for row, no
    tree may run more than :data:`JOINT_LAG` rows ahead, and all must end together:
    otherwise :class:`RowsDiffer`."""
    queues = [_RowQueue() for _ in range(trees)]
    for key, rows in windows:
        for queue, columns in zip(queues, rows, strict=True):
            queue.push(columns)
        ready = min(queue.rows for queue in queues)
        if ready:
            yield key, _matched([queue.pop(ready) for queue in queues])
        if max(queue.rows for queue in queues) > JOINT_LAG:
            raise RowsDiffer  # one tree far ahead: its rows would pile up in memory
    if any(queue.rows for queue in queues):
        raise RowsDiffer  # the trees have different numbers of rows


def _matched(trees: list[list[npt.NDArray[Any]]]) -> list[npt.NDArray[Any]]:
    """``[P1, ..., Pk, *setpoints]`` from each tree's ``[P, *setpoints]``, if the setpoints
    are the same in every tree."""
    first = trees[0][1:]
    for other in trees[1:]:
        for mine, theirs in zip(first, other[1:], strict=True):
            if not np.array_equal(mine, theirs, equal_nan=True):
                raise RowsDiffer
    return [tree[0] for tree in trees] + first


def stream_numeric_trees(run: RunSource, tops: Sequence[str]) -> NumericTreeStream | None:
    """A streamed reader of the parameters ``tops`` and their setpoints, if the setpoints
    are numeric and the parameters numeric, complex or text, the parameters share their
    setpoints (in order) and nothing else belongs to their trees; else None (read it in
    memory instead). ``rows`` is an upper bound (the table's row count): streams need
    not count first."""
    graph = run.description.interdependencies
    trees = [graph.tree_by_group(top) for top in tops]
    setpoints = trees[0][1]
    if any(tree[1] != setpoints or tree[2] for tree in trees):
        return None
    if any(graph.parameters[c].paramtype != "numeric" for c in setpoints):
        return None
    if any(graph.parameters[c].paramtype not in ("numeric", "complex", "text") for c in tops):
        return None
    columns = (*tops, *setpoints)
    table = run.results_table()
    rows = table.all_rows(table.max_id())
    kinds = tuple(graph.parameters[c].paramtype for c in columns)
    return NumericTreeStream(Tree(table, tops[0], columns, kinds, rows), rows.rows, len(tops))


@dataclass(frozen=True)
class ArrayTreeStream:
    """All rows of one or more trees with array columns and the same setpoints, id window
    by id window, each decoded exactly as :func:`read_parameter_data` decodes a whole tree
    (not reshaped). Each tree's ``rows`` holds its exact number of rows (all the same)."""

    trees: list[Tree]
    ids_per_chunk: int

    @property
    def rows(self) -> int:
        return self.trees[0].rows.rows

    def chunks(self) -> Iterator[tuple[int, dict[str, npt.NDArray[Any]]]]:
        """``(last id read, {parameter: array, ..., setpoint: array, ...})``."""
        names = [*(tree.top for tree in self.trees), *self.trees[0].columns[1:]]
        for last_id, matched in _matched_windows(self.trees, self.ids_per_chunk):
            yield last_id, dict(zip(names, matched, strict=True))

    def scalar_column(self, name: str, ids_per_chunk: int = 1 << 20) -> list[Any]:
        """The values of the scalar column ``name`` in the first tree's rows, in id order,
        as SQLite gives them, read alone: a cheap pass over a setpoint (its blobs' pages
        are walked, not decoded), before the rows themselves are streamed."""
        tree = self.trees[0]
        chunks = tree.table.chunks((name,), tree.top, tree.rows, ids_per_chunk)
        return [value for chunk in chunks for (value,) in chunk]


def stream_array_trees(
    run: RunSource, tops: Sequence[str], bytes_per_chunk: int
) -> ArrayTreeStream | None:
    """A streamed reader of the parameters ``tops`` and their setpoints, if the parameters
    share their setpoints (in order), at least one column is an array and all are arrays
    or numbers, nothing else belongs to the trees, and every tree has as many rows; else
    None."""
    graph = run.description.interdependencies
    groups = [graph.tree_by_group(top) for top in tops]
    setpoints = groups[0][1]
    if any(group[1] != setpoints or group[2] for group in groups):
        return None
    kinds = {graph.parameters[c].paramtype for c in (*tops, *setpoints)}
    if "array" not in kinds or not kinds <= {"array", "numeric"}:
        return None
    table = run.results_table()
    upto = table.max_id()
    trees = []
    for top in tops:
        columns = (top, *setpoints)
        rows = table.locate(top, None, None, upto)  # exact: the file's size is known
        kinds_of = tuple(graph.parameters[c].paramtype for c in columns)
        trees.append(Tree(table, top, columns, kinds_of, rows))
    if len({tree.rows.rows for tree in trees}) != 1:
        return None
    first = table.first_row(trees[0].columns, tops[0], trees[0].rows)
    row_bytes = sum(len(value) if isinstance(value, bytes) else 8 for value in first) or 1
    return ArrayTreeStream(trees, max(1, bytes_per_chunk // (row_bytes * len(tops))))
