"""Export a run to the xarray-compatible HDF5 (netCDF4) file a QCoDeS export would be.

``qcodes_<captured_run_id>_<guid>.nc`` by default, as QCoDeS names its exports.
The layouts of large sweeps are streamed (:mod:`qcsql.export.streamed`): the file's
structure is written first and the rows go from the page readers straight into
it, so memory does not grow with the run. Everything else, and every stream that
gives up part-way, is laid out in memory by :func:`qcsql.export.layout.plan_run`.
"""

from __future__ import annotations

from pathlib import Path

from qcsql.data.streams import RowsDiffer
from qcsql.export.attributes import DatasetSource
from qcsql.export.layout import plan_run
from qcsql.export.streamed import NotStreamable, Progress, streamed_plans
from qcsql.export.writer import ExportError, write_plan

__all__ = ["default_file_name", "export_run"]


def default_file_name(run: DatasetSource) -> str:
    guid = run.stable_guid
    if guid is None:
        raise ExportError(
            f"{run.path_to_db}, run {run.run_id}: a schema-v0 run that never started has no "
            "guid to name its export after; give a file name",
            path=run.path_to_db,
            run_id=run.run_id,
        )
    return f"qcodes_{run.captured_run_id}_{guid}.nc"


def export_run(
    run: DatasetSource, path_or_dir: str | Path, progress: Progress | None = None
) -> Path:
    """Write ``run`` as HDF5/netCDF4; a directory gets QCoDeS' default file name.
    ``progress(rows written, rows expected)`` is called as a streamed export goes."""
    target = Path(path_or_dir).expanduser()
    if target.is_dir():
        target = target / default_file_name(run)
    if not target.parent.is_dir():
        raise ExportError(f"{target}: the folder {target.parent} does not exist", path=target)
    for streamed in streamed_plans(run, progress):
        try:
            return write_plan(streamed, target)
        except (NotStreamable, RowsDiffer):
            continue  # the rows stopped fitting: the partial file is gone, try the next
    return write_plan(plan_run(run), target)
