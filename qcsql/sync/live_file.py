"""The live file: a run's rows in an HDF5 file that grows while it is measured.

Readers follow it with h5py's single-writer/multiple-reader mode while qcsql appends;
the final export is written separately, atomically, when the run completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy.typing as npt

from qcsql.data.streams import text_as_objects
from qcsql.errors import ExportError
from qcsql.export.writer import STREAM_CHUNK, attribute_value

__all__ = ["LiveFile"]


class LiveFile:
    """An HDF5 file that grows while a run is measured, readable meanwhile (h5py SWMR).

    One resizable dataset per column of each parameter tree, at ``/<parameter>/<column>``,
    appended to as rows arrive; readers open it with ``h5py.File(path, "r",
    libver="latest", swmr=True)`` and call ``refresh()`` on a dataset to see new rows.
    It is the preview of a running measurement, not the final export, which is written
    (atomically, as :func:`qcsql.export.writer.write_plan`) when the run completes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: h5py.File | None = None
        self.rows: dict[str, int] = {}

    def _create(
        self, data: dict[str, dict[str, npt.NDArray[Any]]], attrs: dict[str, Any]
    ) -> h5py.File:
        try:
            handle = h5py.File(self.path, "w", libver="latest")
            for key, value in attrs.items():
                handle.attrs[key] = attribute_value(value)
            for top, tree in data.items():
                group = handle.create_group(top)
                self.rows[top] = 0
                for column, values in tree.items():
                    dtype = (
                        h5py.string_dtype("utf-8") if values.dtype.kind in "UO" else values.dtype
                    )
                    group.create_dataset(
                        column,
                        shape=(0, *values.shape[1:]),
                        maxshape=(None, *values.shape[1:]),
                        dtype=dtype,
                        chunks=(
                            max(1, min(STREAM_CHUNK, 65536 // max(1, values[:1].nbytes or 8))),
                            *values.shape[1:],
                        ),
                    )
            handle.swmr_mode = True
        except OSError as exc:
            raise ExportError(
                f"{self.path}: cannot write the live file ({exc})", path=self.path
            ) from exc
        return handle

    def append(self, data: dict[str, dict[str, npt.NDArray[Any]]], attrs: dict[str, Any]) -> None:
        """Add rows (``{top: {column: array}}``); the trees of the first call fix the layout."""
        if not data:
            return
        if self._file is None:
            self._file = self._create(data, attrs)
        try:
            for top, tree in data.items():
                if top not in self._file:
                    continue  # a tree that had no rows when the file was laid out
                start = self.rows[top]
                count = len(next(iter(tree.values())))
                for column, values in tree.items():
                    dataset = self._file[top][column]
                    dataset.resize(start + count, axis=0)
                    dataset[start : start + count] = text_as_objects(values)
                    dataset.flush()
                self.rows[top] = start + count
        except OSError as exc:
            raise ExportError(
                f"{self.path}: cannot append to the live file ({exc})", path=self.path
            ) from exc

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
