"""The ``qcsql`` xarray engine: ``xr.open_dataset("experiments.db", engine="qcsql", run_id=3)``.

Registered under the ``xarray.backends`` entry point, so xarray finds it by name and,
for a file no other engine claims, by :meth:`QcsqlBackendEntrypoint.guess_can_open`.
It sits above the public facade (it opens a :class:`~qcsql.Database` and picks a run
as ``load_by_id``/``load_by_guid``/``load_by_run_spec`` do); the dataset itself comes
from the xarray layer (:mod:`qcsql.xarray.backend`). xarray imports this module when it
lists its engines, so everything else is imported when a file is opened.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xarray.backends import BackendEntrypoint

if TYPE_CHECKING:
    import xarray as xr

    from qcsql.data.results import ResultsTable
    from qcsql.database import Database, Run
    from qcsql.export.layout import MultiIndexUse

__all__ = ["QcsqlBackendEntrypoint"]

# Files of the formats other engines open: not even read to say no.
_OTHER_FORMATS = frozenset(
    {".nc", ".nc4", ".cdf", ".netcdf", ".h5", ".hdf5", ".he5", ".zarr", ".grib", ".grib2"}
)


def _path(filename_or_obj: Any) -> Path | None:
    if isinstance(filename_or_obj, str | os.PathLike):
        return Path(os.fspath(filename_or_obj)).expanduser()
    return None  # an open file object, a buffer or a store: not a database path


class QcsqlBackendEntrypoint(BackendEntrypoint):
    """Open one run of a QCoDeS database as QCoDeS' ``to_xarray_dataset()`` would give it,
    read-only; large runs lazily (only what is indexed is read), ready for ``chunks=``."""

    description = "Open a run of a QCoDeS SQLite database (read-only) with qcsql"
    url = "https://github.com/qcsql/qcsql#use-with-xarray-pandas-and-dask"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "run_id",
        "guid",
        "captured_run_id",
        "captured_counter",
        "experiment_name",
        "use_multi_index",
        "lazy_coordinates",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """A QCoDeS database: an SQLite header and QCoDeS' tables, read as every read of
        qcsql is (read-only, through the kept descriptors); netCDF, HDF5 and other SQLite
        files are not."""
        path = _path(filename_or_obj)
        if path is None or path.suffix.lower() in _OTHER_FORMATS or not path.is_file():
            return False
        from qcsql.database import open_database
        from qcsql.errors import QcsqlError

        try:
            with open_database(path):
                return True
        except QcsqlError:
            return False

    def open_dataset(  # xarray's signature, plus the ways to name the run
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        run_id: int | None = None,
        guid: str | None = None,
        captured_run_id: int | None = None,
        captured_counter: int | None = None,
        experiment_name: str | None = None,
        use_multi_index: MultiIndexUse = "auto",
        lazy_coordinates: bool = False,
    ) -> xr.Dataset:
        from qcsql.database import open_database
        from qcsql.xarray.backend import open_run

        path = _path(filename_or_obj)
        if path is None:
            raise TypeError(
                f"the qcsql engine opens a database by its path, not a "
                f"{type(filename_or_obj).__name__}"
            )
        drop = {drop_variables} if isinstance(drop_variables, str) else set(drop_variables or ())
        if lazy_coordinates and not _indexes_made_by_xarray():
            lazy_coordinates = False  # an older xarray would leave the coordinate unindexed
        database = open_database(path)
        try:
            run = _pick_run(
                database,
                run_id=run_id,
                guid=guid,
                captured_run_id=captured_run_id,
                captured_counter=captured_counter,
                experiment_name=experiment_name,
            )
            return open_run(
                run,
                drop_variables=frozenset(drop),
                use_multi_index=use_multi_index,
                open_table=results_table,
                lazy_coordinates=lazy_coordinates,
            )
        finally:
            database.close()  # lazy arrays open the file again themselves, by path and run


def _indexes_made_by_xarray() -> bool:
    """Whether this xarray's ``open_dataset`` indexes the dimension coordinates a backend
    leaves unindexed (``create_default_indexes``, xarray 2025.07 and later)."""
    import inspect

    import xarray as xr

    return "create_default_indexes" in inspect.signature(xr.open_dataset).parameters


_SHARED_LOCK = threading.Lock()
_SHARED: dict[str, Database] = {}
_TABLES: dict[tuple[str, int], ResultsTable] = {}


def results_table(path: str, run_id: int) -> ResultsTable:
    """The results table of a run, for the lazy arrays of this process: one read-only
    ``Database`` per file and process, kept for the life of the process (as the kept
    descriptors are), shared by threads."""
    from qcsql.database import open_database

    with _SHARED_LOCK:
        table = _TABLES.get((path, run_id))
        if table is None:
            database = _SHARED.get(path)
            if database is None:
                database = _SHARED[path] = open_database(path)
            table = _TABLES[(path, run_id)] = database.load_by_id(run_id).results_table()
        return table


def _pick_run(
    database: Database,
    *,
    run_id: int | None,
    guid: str | None,
    captured_run_id: int | None,
    captured_counter: int | None,
    experiment_name: str | None,
) -> Run:
    """The run named by exactly one way of naming runs; the only run when none is named."""
    from qcsql.errors import RunLookupError, RunNotChosenError, RunNotFoundError

    spec = (captured_run_id, captured_counter, experiment_name)
    ways = [
        way
        for way, given in (
            ("run_id", run_id is not None),
            ("guid", guid is not None),
            ("a run spec", any(v is not None for v in spec)),
        )
        if given
    ]
    if len(ways) > 1:
        raise RunLookupError(
            f"{database.path}: name the run one way, by {' or '.join(ways)}, not several",
            path=database.path,
            table="runs",
        )
    if run_id is not None:
        return database.load_by_id(run_id)
    if guid is not None:
        return database.load_by_guid(guid)
    if ways:
        return database.load_by_run_spec(
            captured_run_id=captured_run_id,
            captured_counter=captured_counter,
            experiment_name=experiment_name,
        )
    runs = database.runs()
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise RunNotFoundError(f"{database.path}: has no runs", path=database.path, table="runs")
    ids = ", ".join(str(run.run_id) for run in runs[:50])
    more = f" and {len(runs) - 50} more" if len(runs) > 50 else ""
    raise RunNotChosenError(
        f"{database.path}: holds {len(runs)} runs (run_id {ids}{more}); name one, e.g. "
        f"xr.open_dataset({str(database.path)!r}, engine='qcsql', run_id={runs[0].run_id})",
        path=database.path,
        table="runs",
    )
