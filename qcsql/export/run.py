"""Export a run: the one entry point that picks the streamed plan or the in-memory one,
and where the file goes."""

from __future__ import annotations

import os
from pathlib import Path

from qcsql.data.streams import RowsDiffer
from qcsql.errors import ExportError
from qcsql.export.attributes import DatasetSource
from qcsql.export.layout import plan_run
from qcsql.export.naming import EXPORT_SUFFIXES, default_file_name, make_folder, names_a_folder
from qcsql.export.streamed import NotStreamable, Progress, streamed_plans
from qcsql.export.writer import write_plan

__all__ = ["export_run", "export_target"]


def export_target(run: DatasetSource, path_or_dir: str | Path) -> Path:
    """The file an export of ``run`` to ``path_or_dir`` writes (see the module docstring).

    An existing folder, or a str ending in a path separator (created, with its parents),
    gets QCoDeS' default name ``qcodes_<captured_run_id>_<guid>.nc``. Any other path is
    the file itself: it must end in ``.nc``, ``.h5`` or ``.hdf5`` (an existing file of
    that name is replaced) and its folder must exist. Raises :class:`ExportError` for a
    path that fits neither rule, names the file and says the rule.
    """
    target = Path(path_or_dir).expanduser()
    if target.is_dir():
        return target / default_file_name(run)
    if names_a_folder(path_or_dir):
        name = default_file_name(run)  # before creating anything: a v0 run may have none
        if target.exists():
            raise ExportError(
                f"{target}: names a folder (it ends in {os.sep!r}) but is a file", path=target
            )
        make_folder(target)
        return target / name
    if target.suffix.lower() not in EXPORT_SUFFIXES:
        raise ExportError(
            f"{target}: is not an existing folder and has no .nc, .h5 or .hdf5 suffix; "
            f"give an existing folder, a folder path ending in {os.sep!r} (created), or a "
            "file name ending in .nc, .h5 or .hdf5",
            path=target,
            run_id=run.run_id,
        )
    if not target.parent.is_dir():
        raise ExportError(f"{target}: the folder {target.parent} does not exist", path=target)
    return target


def export_run(
    run: DatasetSource, path_or_dir: str | Path, progress: Progress | None = None
) -> Path:
    """Write ``run`` as HDF5/netCDF4 to :func:`export_target` of ``path_or_dir``.
    ``progress(rows written, rows expected)`` is called as a streamed export goes.

    An in-memory run has no results table to stream from: its data (those of its export,
    or none, as QCoDeS loads it) go through the in-memory plan, so a run whose data were
    never stored exports, as QCoDeS' does, to a file with every dataset attribute and no
    variable."""
    target = export_target(run, path_or_dir)
    for streamed in () if run.in_memory else streamed_plans(run, progress):
        try:
            return write_plan(streamed, target)
        except (NotStreamable, RowsDiffer):
            continue  # the rows stopped fitting: the partial file is gone, try the next
    return write_plan(plan_run(run), target)
