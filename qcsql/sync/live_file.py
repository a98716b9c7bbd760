"""The live file: a run's rows in an HDF5 file that grows while it is measured.

Readers follow it with h5py's single-writer/multiple-reader mode (SWMR) while qcsql
appends; the final export is written separately, atomically, when the run completes.

Layout (one group per parameter tree, one dataset per column of the tree)::

    /                       attrs: guid, run_id (what the caller gives)
    /<top parameter>/       one group per top-level parameter of the run description
        <column>            1-D, resizable, the tree's values in row order

Every column of a tree has the same length at all times a reader can see (rows are
written column by column, then flushed, tree by tree). An array parameter's rows are
flattened into it (QCoDeS repeats a tree's scalar setpoints along its arrays, so the
columns still line up value for value). Numbers are float64 (complex128 for complex
parameters and complex arrays), text is UTF-8.

Why every tree is laid out when the file is created, from the run description, rather
than when its first rows arrive: an HDF5 writer in SWMR mode may only append to the
datasets it has; creating a group or dataset afterwards is outside what SWMR readers
are guaranteed to see consistently. QCoDeS fixes a run's description before its first
row, so the trees that will ever get rows are known then; a tree whose rows start
late simply has empty datasets until they do. Rows the layout cannot hold (a tree or
column the description did not have, text where numbers were, complex values in a
real array) end the live file with a :class:`~qcsql.LiveFileError`, never silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from qcsql.data.streams import text_as_objects
from qcsql.errors import ExportError, LiveFileError
from qcsql.export.writer import STREAM_CHUNK, attribute_value
from qcsql.schema.description import RunDescription

__all__ = ["LiveFile", "live_layout"]

Layout = dict[str, dict[str, np.dtype[Any]]]  # {top: {column: dtype}}

_TEXT: np.dtype[Any] = h5py.string_dtype("utf-8")
_REAL, _COMPLEX = np.dtype(np.float64), np.dtype(np.complex128)


def _dtype_of_values(values: npt.NDArray[Any]) -> np.dtype[Any]:
    if values.dtype.kind in "UOS":
        return _TEXT
    return _COMPLEX if values.dtype.kind == "c" else _REAL


def live_layout(
    description: RunDescription | None, data: Mapping[str, Mapping[str, npt.NDArray[Any]]]
) -> Layout:
    """The trees, columns and dtypes of a live file: every tree of ``description`` (its
    columns as ``get_parameter_data`` orders them, dtypes from their paramtypes; an array
    column's from its first values in ``data``, if any, else float64), or without a
    description the trees of ``data``."""
    if description is None or not description.interdependencies.parameters:
        return {
            top: {column: _dtype_of_values(values) for column, values in tree.items()}
            for top, tree in data.items()
        }
    graph = description.interdependencies
    layout: Layout = {}
    for top in graph.top_level_parameters:
        name, setpoints, others = graph.tree_by_group(top)
        columns: dict[str, np.dtype[Any]] = {}
        for column in (name, *setpoints, *others):
            paramtype = graph.parameters[column].paramtype
            if paramtype == "text":
                columns[column] = _TEXT
            elif paramtype == "complex":
                columns[column] = _COMPLEX
            elif paramtype == "array" and column in data.get(top, {}):
                columns[column] = _dtype_of_values(data[top][column])
            else:
                columns[column] = _REAL
        layout[top] = columns
    return layout


def _fitted(values: npt.NDArray[Any], dtype: np.dtype[Any]) -> npt.NDArray[Any] | None:
    """``values`` flattened and converted to the dataset's ``dtype``; None where they do
    not fit it (text among numbers, numbers among text, complex into real)."""
    flat = values.reshape(-1)
    kind = flat.dtype.kind
    if dtype == _TEXT:
        if kind == "U":
            return text_as_objects(flat)
        if kind == "O" and all(isinstance(v, str) for v in flat):
            return flat
        return None
    allowed = "biufc" if dtype == _COMPLEX else "biuf"
    return flat.astype(dtype) if kind in allowed else None


class LiveFile:
    """An HDF5 file that grows while a run is measured, readable meanwhile (h5py SWMR).

    See the module docstring for the layout. Readers open it with ``h5py.File(path,
    "r", libver="latest", swmr=True)`` and call ``refresh()`` on a dataset to see new
    rows. It is the preview of a running measurement, not the final export, which is
    written (atomically, as :func:`qcsql.export.writer.write_plan`) when the run
    completes. ``rows`` counts the values of each tree so far.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: h5py.File | None = None
        self._layout: Layout = {}
        self._ended: str | None = None  # why the live file ended early
        self.rows: dict[str, int] = {}

    def _create(self, layout: Layout, attrs: dict[str, Any]) -> h5py.File:
        try:
            handle = h5py.File(self.path, "w", libver="latest")
            for key, value in attrs.items():
                handle.attrs[key] = attribute_value(value)
            for top, columns in layout.items():
                group = handle.create_group(top)
                self.rows[top] = 0
                for column, dtype in columns.items():
                    itemsize = 8 if dtype == _TEXT else dtype.itemsize
                    group.create_dataset(
                        column,
                        shape=(0,),
                        maxshape=(None,),
                        dtype=dtype,
                        chunks=(max(1, min(STREAM_CHUNK, 65536 // itemsize)),),
                    )
            handle.swmr_mode = True
        except OSError as exc:
            raise ExportError(
                f"{self.path}: cannot write the live file ({exc})", path=self.path
            ) from exc
        return handle

    def append(
        self,
        data: Mapping[str, Mapping[str, npt.NDArray[Any]]],
        attrs: dict[str, Any],
        description: RunDescription | None = None,
    ) -> None:
        """Add rows (``{top: {column: array}}``). The first call with rows creates the
        file with every tree of ``description`` (see :func:`live_layout`); rows that do not
        fit it raise :class:`~qcsql.LiveFileError` and end the file (it keeps the rows
        written so far)."""
        if self._ended is not None:
            raise LiveFileError(self._ended, path=self.path)
        if not data:
            return
        if self._file is None:
            self._layout = live_layout(description, data)
            self._file = self._create(self._layout, attrs)
        prepared = [(top, self._prepared(top, tree)) for top, tree in data.items()]
        try:
            for top, columns in prepared:
                start = self.rows[top]
                count = len(next(iter(columns.values()))) if columns else 0
                for column, values in columns.items():
                    dataset = self._file[top][column]
                    dataset.resize(start + count, axis=0)
                    dataset[start : start + count] = values
                for column in columns:
                    self._file[top][column].flush()
                self.rows[top] = start + count
        except OSError as exc:
            raise ExportError(
                f"{self.path}: cannot append to the live file ({exc})", path=self.path
            ) from exc

    def _prepared(
        self, top: str, tree: Mapping[str, npt.NDArray[Any]]
    ) -> dict[str, npt.NDArray[Any]]:
        """The tree's new values as they go into its datasets, or the error that ends the
        live file: checked whole before anything of the chunk is written."""
        columns = self._layout.get(top)
        if columns is None:
            self._fail(f"rows arrived for the tree {top!r}, which the run description did not have")
        assert columns is not None
        if set(tree) != set(columns):
            self._fail(
                f"the tree {top!r} arrived with the columns {sorted(tree)}, but the live file "
                f"was laid out with {sorted(columns)}"
            )
        prepared: dict[str, npt.NDArray[Any]] = {}
        for column, dtype in columns.items():
            fitted = _fitted(tree[column], dtype)
            if fitted is None:
                self._fail(
                    f"the column {column!r} of the tree {top!r} holds {tree[column].dtype} "
                    f"values, which its {'text' if dtype == _TEXT else dtype} dataset cannot hold"
                )
            assert fitted is not None
            prepared[column] = fitted
        if len({len(values) for values in prepared.values()}) > 1:
            self._fail(f"the columns of the tree {top!r} arrived with different numbers of values")
        return prepared

    def _fail(self, reason: str) -> None:
        self.close()
        self._ended = (
            f"{self.path}: the live file ends here: {reason}; the final export is not affected"
        )
        raise LiveFileError(self._ended, path=self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
