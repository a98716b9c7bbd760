"""Write a :class:`~qcsql.export.layout.DatasetPlan` as the netCDF4/HDF5 file QCoDeS exports.

The netCDF4 bookkeeping (dimension scales, ``REFERENCE_LIST``/``DIMENSION_LIST``,
``_Netcdf4Dimid``, ``_Netcdf4Coordinates``, the ``_PFNC_DOUBLE_COMPLEX_TYPE``
named type for complex data, ``_NCProperties``) is delegated to h5netcdf: it is
what xarray, and so QCoDeS, writes these files with, so the conventions match by
construction rather than by imitation. What xarray adds on top (``_FillValue``
NaN on floating variables, CF ``coordinates`` attributes, text as variable-length
UTF-8) is reproduced here.

Files are written under a temporary name in the target folder and renamed when
complete; a failure (full disk, no permission, an interrupted export) leaves no
file behind and raises :class:`ExportError`. The same plan always gives the same
bytes: nothing time-dependent is written.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
import numpy.typing as npt

from qcsql.errors import ExportError
from qcsql.export.layout import DatasetPlan, Variable

__all__ = ["ExportError", "LiveFile", "write_plan"]


# Rows per HDF5 chunk of a streamed (growing) variable: 1 MiB of doubles.
STREAM_CHUNK = 131_072


def _coordinates_attribute(plan: DatasetPlan, variable: Variable) -> str | None:
    """xarray's CF encoding: non-dimension coordinates that lie on a data variable's dims."""
    if variable.is_coord:
        return None
    names = sorted(
        coord.name
        for coord in plan.coords
        if coord.name not in plan.dims and set(coord.dims) <= set(variable.dims)
    )
    return " ".join(names) or None


def _text(value: Any) -> str:
    """A string as xarray stores it: missing values (None, or the NaN of a hole) as ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _storable(data: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], Any, Any]:
    """(data, dtype, fill value) as xarray encodes them for h5netcdf."""
    if data.dtype.kind in "UO":
        text = np.array([_text(v) for v in data.ravel()], dtype=object)
        return text.reshape(data.shape), h5py.string_dtype("utf-8"), None
    if data.dtype.kind == "f":
        return data, data.dtype, np.nan
    if data.dtype.kind == "c":
        return data, data.dtype, complex(np.nan, np.nan)  # see _write: no _FillValue for it
    return data, data.dtype, None


def _chunks(plan: DatasetPlan, variable: Variable) -> tuple[int, ...] | None:
    """HDF5 chunks only where a dimension grows (contiguous otherwise, as xarray writes)."""
    if not set(variable.dims) & plan.unlimited:
        return None
    rows = max(1, min(STREAM_CHUNK, plan.expected_rows or STREAM_CHUNK))  # small runs, small files
    return tuple(rows if d in plan.unlimited else plan.dims[d] for d in variable.dims)


def _attribute(value: Any) -> Any:
    if isinstance(value, list) and value:
        return (
            np.array(value, dtype=object)
            if all(isinstance(v, str) for v in value)
            else np.array(value)
        )
    if isinstance(value, list):
        return np.array([], dtype=np.float64)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _write(plan: DatasetPlan, path: Path) -> None:
    with h5netcdf.File(path, "w-") as handle:  # create, never truncate (see _atomic_target)
        handle.dimensions = {
            dim: None if dim in plan.unlimited else size for dim, size in plan.dims.items()
        }
        ordered = [v for v in plan.variables.values() if v.name in plan.dims] + [
            v for v in plan.variables.values() if v.name not in plan.dims
        ]
        created_by_name = {}
        for variable in ordered:
            data, dtype, fill = _storable(variable.data)
            created = handle.create_variable(
                variable.name,
                variable.dims,
                dtype=dtype,
                data=None if variable.streamed else data,
                fillvalue=fill,
                chunks=_chunks(plan, variable),
            )
            if data.dtype.kind == "c":
                # xarray writes no _FillValue for complex numbers, but fills their holes
                # with NaN + NaNj: the dataset keeps that fill value, for the cells a
                # streamed layout leaves without a row, and loses the attribute.
                del created.attrs["_FillValue"]
            created_by_name[variable.name] = created
            for key, value in variable.attrs.items():
                created.attrs[key] = _attribute(value)
            coordinates = _coordinates_attribute(plan, variable)
            if coordinates:
                created.attrs["coordinates"] = coordinates
        for key, value in plan.attrs.items():
            handle.attrs[key] = _attribute(value)
        if plan.fill is not None:
            plan.fill(created_by_name, handle.resize_dimension)


@contextlib.contextmanager
def _atomic_target(final: Path) -> Iterator[Path]:
    """A temporary path beside ``final``, renamed onto it only if the block succeeds."""
    folder = final.parent
    try:
        descriptor, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=folder)
    except OSError as exc:
        raise ExportError(
            f"{final}: cannot write into {folder} ({exc.strerror})", path=final
        ) from exc
    os.close(descriptor)
    temporary = Path(name)
    # The writer creates the file afresh: truncating an existing one, even an empty one,
    # makes ext4 flush it on close (auto_da_alloc), which doubled the cost of a large export.
    temporary.unlink()
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_plan(plan: DatasetPlan, path: Path) -> Path:
    """Write ``plan`` to ``path`` atomically; return the path."""
    try:
        with _atomic_target(path) as temporary:
            _write(plan, temporary)
    except ExportError:
        raise
    except OSError as exc:
        raise ExportError(
            f"{path}: the export could not be written ({exc.strerror or exc})", path=path
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ExportError(
            f"{path}: the run cannot be written as netCDF ({exc})", path=path
        ) from exc
    return path


class LiveFile:
    """An HDF5 file that grows while a run is measured, readable meanwhile (h5py SWMR).

    One resizable dataset per column of each parameter tree, at ``/<parameter>/<column>``,
    appended to as rows arrive; readers open it with ``h5py.File(path, "r",
    libver="latest", swmr=True)`` and call ``refresh()`` on a dataset to see new rows.
    It is the preview of a running measurement, not the final export, which is written
    (atomically, as :func:`write_plan`) when the run completes.
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
                handle.attrs[key] = _attribute(value)
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
                    dataset[start : start + count] = (
                        values.astype(object) if values.dtype.kind == "U" else values
                    )
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
