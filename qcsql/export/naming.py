"""What exports are called and where they go: light, so that the command line can check
its arguments before anything heavy is imported."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from qcsql.errors import ExportError

if TYPE_CHECKING:
    from qcsql.export.attributes import DatasetSource

__all__ = ["EXPORT_SUFFIXES", "default_file_name", "make_folder", "names_a_folder"]

# What a file export may be called (compared case-insensitively): netCDF4 files are HDF5.
EXPORT_SUFFIXES = (".nc", ".h5", ".hdf5")


def default_file_name(run: DatasetSource) -> str:
    guid = run.stable_guid
    if guid is None:
        raise ExportError(
            f"{run.path_to_db}, run {run.run_id}: a schema-v0 run that never started has no "
            "guid to name its export after; give a file name",
            path=run.path_to_db,
            run_id=run.run_id,
        )
    return f"qcodes_{run.row.captured_run_id}_{guid}.nc"


def names_a_folder(path_or_dir: str | Path) -> bool:
    """Whether ``path_or_dir`` is a str ending in a path separator (``"exports/"``); a
    Path cannot say so, it drops the separator."""
    if not isinstance(path_or_dir, str):
        return False
    return path_or_dir.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep))


def make_folder(target: Path) -> None:
    """Create the folder ``target`` and its parents (fine if it exists): an ExportError
    naming it where that cannot be done."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"{target}: cannot create the folder ({exc.strerror or exc})", path=target
        ) from exc
