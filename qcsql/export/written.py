"""What an export wrote, read back from its file's attributes (never from its values).

A sync record's tags are the ``long_name``, else the name, of every variable and
coordinate of the dataset the export holds, as the established sync agent takes them
from QCoDeS' xarray dataset. The run description names the variables of parameters, but
two things only the rows decide (so only the file can tell, once written): the layout's
own coordinates (``index``, ``multi_index``) and the names of a layout side by side
(``x__P``: an unlabelled parameter is known by that name there).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from qcsql.errors import ExportError

__all__ = ["variable_labels"]

# What netCDF-4 (and h5netcdf) write into the NAME of a dimension that is not a variable.
_NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def variable_labels(path: str | Path) -> dict[str, str]:
    """``{name: long_name, else name}`` of every variable and coordinate of the netCDF4/HDF5
    file ``path`` (as xarray lists them: every dataset at the root but the dimensions
    that are no variable), reading attributes only."""
    labels: dict[str, str] = {}
    try:
        with h5py.File(path, "r") as handle:
            for name, item in handle.items():
                if not isinstance(item, h5py.Dataset):
                    continue
                if _text(item.attrs.get("NAME", "")).encode().startswith(_NOT_A_VARIABLE):
                    continue
                labels[name] = _text(item.attrs.get("long_name", "")) or name
    except OSError as exc:
        raise ExportError(f"{path}: cannot read the exported file ({exc})", path=path) from exc
    return labels
