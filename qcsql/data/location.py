"""Where a run's data live when not in the database file, and reading them there.

QCoDeS >= 0.59 can keep a run's results table in a separate SQLite file
(``runs.raw_data_db_path``); metadata-only databases and ``DataSetInMem`` runs keep
none at all, only a netCDF export named in the run's ``export_info``. QCoDeS records
absolute paths, which dangle once a lab folder is moved or copied to another machine,
so a side file is looked for at the recorded path, relative to the database's folder,
and as the longest tail of the recorded path under that folder.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from qcsql.data.parameter_data import ParameterData
from qcsql.data.results import ResultsTable
from qcsql.errors import DataElsewhereError, ParameterNotFoundError
from qcsql.sqlite.connection import ReadOnlyConnection

if TYPE_CHECKING:
    from qcsql.database import Database
    from qcsql.runs import Run

__all__ = ["SideStorage", "locate_side_file"]


class SideStorage:
    """The side files of one database, opened read-only on first use."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._connections: dict[Path, ReadOnlyConnection] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()

    def exported_data(
        self, run: Run, names: Sequence[str], start: int | None, end: int | None
    ) -> ParameterData | None:
        """Data of a run without results table, from the netCDF file its export_info names
        (metadata-only databases, DataSetInMem runs); None for runs with a results table."""
        if run.table_name is not None and self._db.has_table(run.table_name):
            return None
        if self._db._scalar_of_run(run, "raw_data_db_path"):
            return None
        where = f"{self._db.path}, run {run.run_id}"
        recorded = _export_path(run.metadata.get("export_info"))
        if recorded is None:
            raise DataElsewhereError(
                f"{where}: its results table {run.table_name!r} is not in the file, and "
                "export_info records no netCDF export (an in-memory run that was never "
                "exported keeps no data)",
                path=self._db.path,
                run_id=run.run_id,
            )
        found = self._side_file(run, recorded, "its data are in the export")
        if start is not None or end is not None:
            raise DataElsewhereError(
                f"{where}: start/end are not supported for data read from the export {found}",
                path=self._db.path,
                run_id=run.run_id,
            )
        from qcsql.data.exported import read_exported  # reading netCDF needs h5netcdf

        try:
            data = read_exported(found)
        except (OSError, KeyError, ValueError) as exc:
            raise DataElsewhereError(
                f"{where}: cannot read the export {found} ({exc})",
                path=self._db.path,
                run_id=run.run_id,
            ) from exc
        if names:
            missing = [n for n in names if n not in data]
            if missing:
                raise ParameterNotFoundError(
                    f"{where}: the export {found} has no parameter {missing[0]!r}",
                    path=self._db.path,
                    run_id=run.run_id,
                )
            return {n: data[n] for n in names}
        return data

    def _side_file(self, run: Run, recorded: str, what: str) -> Path:
        found = locate_side_file(recorded, self._db.path.parent)
        if found is None:
            raise DataElsewhereError(
                f"{self._db.path}, run {run.run_id}: {what} {recorded}, which does not exist "
                f"(nor does any tail of that path under {self._db.path.parent})",
                path=self._db.path,
                run_id=run.run_id,
                table=run.table_name,
            )
        return found

    def results_table(self, run: Run, recorded: str) -> ResultsTable:
        """The results table in the separate raw-data file QCoDeS >= 0.59 can write."""
        found = self._side_file(run, recorded, "its raw data are in")
        with self._lock:  # threads share the Database: open each side file once
            side = self._connections.get(found)
            if side is None:
                side = self._connections[found] = ReadOnlyConnection(found)
        return ResultsTable(side, run.run_id, str(run.table_name))


def _export_path(export_info: Any) -> str | None:
    """The netCDF path in QCoDeS' export_info metadata (``{"export_paths": {"nc": ...}}``)."""
    if not isinstance(export_info, str):
        return None
    try:
        parsed = orjson.loads(export_info)
    except orjson.JSONDecodeError:
        return None
    path = (parsed.get("export_paths") or {}).get("nc") if isinstance(parsed, dict) else None
    return path if isinstance(path, str) and path else None


def locate_side_file(recorded: str, folder: Path) -> Path | None:
    """Where a file the database points to is now: the recorded path if it exists (a
    relative one taken against the database's folder), else the longest tail of the
    recorded path that exists under that folder (the folder moved, or came from another
    machine, with its side files)."""
    path = Path(recorded)
    candidates = [path if path.is_absolute() else folder / path]
    parts = path.parts[1:]
    candidates += [folder.joinpath(*parts[i:]) for i in range(len(parts))]
    return next((c for c in candidates if c.is_file()), None)
