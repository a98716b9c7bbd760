"""Read a run's data back from the netCDF file QCoDeS exported it to.

Metadata-only databases and ``DataSetInMem`` runs keep no results table: their data
exist only in the export named by the run's ``export_info`` metadata. They are read
as QCoDeS' ``DataSetInMem`` reads them (``_from_xarray_dataset_to_qcodes_raw_data``):
each data variable with the coordinates of its dimensions, expanded to a grid when
it has several, and the levels of a compressed ``multi_index`` row by row.

The temporary ``.partial`` file of an export that never finished is refused even when
named explicitly: it may look like HDF5 and still miss rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5netcdf
import numpy as np
import numpy.typing as npt

__all__ = [
    "PARTIAL_ALPHABET",
    "PARTIAL_RANDOM",
    "PARTIAL_SUFFIX",
    "count_exported",
    "exported_attrs",
    "is_partial_name",
    "read_exported",
]

# The temporary name of an export being written: ``.<final name>.<random>.partial``. The
# random part is 8 characters of tempfile's alphabet (CPython's _RandomNameSequence);
# matching exactly this is what keeps the writer's leftover cleanup from touching a file
# qcsql did not make, and what keeps every reader from taking one for an export.
PARTIAL_SUFFIX = ".partial"
PARTIAL_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
PARTIAL_RANDOM = r"[a-z0-9_]{8}"
_ANY_PARTIAL = re.compile(r"\..+\." + PARTIAL_RANDOM + re.escape(PARTIAL_SUFFIX))


def is_partial_name(name: str) -> bool:
    """Whether ``name`` is the temporary name of an unfinished export (never an export)."""
    return _ANY_PARTIAL.fullmatch(name) is not None


def _values(variable: Any) -> npt.NDArray[Any]:
    data = np.asarray(variable[...])
    if data.dtype.names == ("r", "i"):  # the netCDF compound for complex numbers
        data = data["r"] + 1j * data["i"]
    elif variable.attrs.get("dtype") == "bool" and data.dtype.kind in "iu":
        data = data.astype(bool)  # how xarray stores booleans, and QCoDeS reads them back
    elif data.dtype.kind in "OS":
        # Variable-length text comes as bytes; xarray (and so QCoDeS) decodes it to a
        # fixed-width unicode array as long as its longest string.
        text = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in data.ravel()]
        data = np.array(text, dtype=str).reshape(data.shape)
    return data


def _coordinate_names(handle: Any) -> set[str]:
    names = set(handle.dimensions)
    for variable in handle.variables.values():
        names.update(str(variable.attrs.get("coordinates", "")).split())
    names.update(str(handle.attrs.get("coordinates", "")).split())
    return names


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    """The export, opened read-only. Raises ValueError for an unfinished export's
    temporary file (``.<name>.<random>.partial``)."""
    if is_partial_name(Path(path).name):
        raise ValueError(f"{path} is the temporary file of an export that never finished")
    with h5netcdf.File(path, "r") as handle:
        yield handle


def _trees(handle: Any) -> Iterator[tuple[str, Any, tuple[str, ...], list[str]]]:
    """Each data variable with its dimensions and the levels of a compressed
    multi-index among them (cf_xarray's ``compress`` attribute; else none)."""
    coordinates = _coordinate_names(handle)
    for name, variable in handle.variables.items():
        if name in coordinates:
            continue
        dims = tuple(variable.dimensions)
        levels = []
        if len(dims) == 1:
            levels = str(handle.variables[dims[0]].attrs.get("compress", "")).split()
        yield name, variable, dims, levels


def read_exported(path: Path) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """``{parameter: {parameter: array, setpoint: array, ...}}`` from a QCoDeS export."""
    output: dict[str, dict[str, npt.NDArray[Any]]] = {}
    with _open(path) as handle:
        for name, variable, dims, levels in _trees(handle):
            tree = output[name] = {name: _values(variable)}
            if len(dims) > 1:
                grids = np.meshgrid(*(_values(handle.variables[d]) for d in dims), indexing="ij")
                tree.update(zip(dims, grids, strict=True))
            elif levels:  # cf_xarray's compressed multi-index: decode the levels row by row
                values = [_values(handle.variables[level]) for level in levels]
                index = _values(handle.variables[dims[0]])
                codes = np.unravel_index(index, tuple(len(v) for v in values))
                tree.update({lv: v[c] for lv, v, c in zip(levels, values, codes, strict=True)})
            elif dims:
                tree[dims[0]] = _values(handle.variables[dims[0]])
    return output


def count_exported(path: Path) -> int:
    """What QCoDeS' ``DataSetInMem`` loaded from the export counts as its number of
    results: the values of every array of :func:`read_exported`, summed over the trees
    (each array of a tree has the size of its data variable), without reading them."""
    total = 0
    with _open(path) as handle:
        for _, variable, dims, levels in _trees(handle):
            arrays = 1 + (len(levels) or len(dims))
            total += arrays * int(np.prod(variable.shape, dtype=np.int64))
    return total


def exported_attrs(path: Path) -> dict[str, Any]:
    """The dataset attributes of an export, in their order."""
    with _open(path) as handle:
        return {str(key): handle.attrs[key] for key in handle.attrs}
