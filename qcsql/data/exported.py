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
from pathlib import Path
from typing import Any

import h5netcdf
import numpy as np
import numpy.typing as npt

__all__ = [
    "PARTIAL_ALPHABET",
    "PARTIAL_RANDOM",
    "PARTIAL_SUFFIX",
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
    return data


def _coordinate_names(handle: Any) -> set[str]:
    names = set(handle.dimensions)
    for variable in handle.variables.values():
        names.update(str(variable.attrs.get("coordinates", "")).split())
    names.update(str(handle.attrs.get("coordinates", "")).split())
    return names


def read_exported(path: Path) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """``{parameter: {parameter: array, setpoint: array, ...}}`` from a QCoDeS export.

    Raises ValueError for an unfinished export's temporary file (``.<name>.<random>.partial``).
    """
    if is_partial_name(Path(path).name):
        raise ValueError(f"{path} is the temporary file of an export that never finished")
    output: dict[str, dict[str, npt.NDArray[Any]]] = {}
    with h5netcdf.File(path, "r") as handle:
        coordinates = _coordinate_names(handle)
        for name, variable in handle.variables.items():
            if name in coordinates:
                continue
            tree = output[name] = {name: _values(variable)}
            dims = variable.dimensions
            if len(dims) > 1:
                grids = np.meshgrid(*(_values(handle.variables[d]) for d in dims), indexing="ij")
                tree.update(zip(dims, grids, strict=True))
            elif dims:
                index = handle.variables[dims[0]]
                levels = str(index.attrs.get("compress", "")).split()
                if levels:  # cf_xarray's compressed multi-index: decode the levels row by row
                    values = [_values(handle.variables[level]) for level in levels]
                    codes = np.unravel_index(_values(index), tuple(len(v) for v in values))
                    tree.update({lv: v[c] for lv, v, c in zip(levels, values, codes, strict=True)})
                else:
                    tree[dims[0]] = _values(index)
    return output
