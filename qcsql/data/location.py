"""Where a run's data live, decided in one place, and reading them there.

A run's rows are in its results table in the database file; or, from QCoDeS 0.59
on, in a results table of a separate SQLite file (``runs.raw_data_db_path``); or,
for metadata-only databases and ``DataSetInMem`` runs, only in the netCDF export
named in the run's ``export_info``; or nowhere (an in-memory run never exported).
:meth:`DataLocator.where` says which, and every reader asks it. A run whose data are
nowhere, or whose export is gone, reads as QCoDeS 0.58 loads it: no data and a
:class:`~qcsql.errors.DataNotFoundWarning`. QCoDeS records
absolute paths, which dangle once a lab folder is moved or copied to another
machine, so a side file is looked for at the recorded path, relative to the
database's folder, and as the longest tail of the recorded path under that folder.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import sqlalchemy as sa

from qcsql.data.parameter_data import ParameterData, read_parameter_data
from qcsql.data.results import ResultsTable
from qcsql.errors import (
    DataElsewhereError,
    DataNotFoundWarning,
    ParameterNotFoundError,
    QcsqlError,
    SchemaError,
    Where,
)
from qcsql.schema.description import RunDescription
from qcsql.schema.rows import RunRow
from qcsql.schema.store import RunStore
from qcsql.sqlite.connection import ReadOnlyConnection

__all__ = ["DataLocator", "Location", "locate_side_file"]

LocationKind = Literal["table", "raw_data_file", "export", "nowhere"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Location:
    """Where one run's rows are: ``recorded`` is the path the file records for a raw-data
    file or an export (as recorded; :func:`locate_side_file` finds it now)."""

    kind: LocationKind
    recorded: str | None = None


class DataLocator:
    """The data of the runs of one file, wherever they live; side files are opened
    read-only on first use, once, whichever thread asks first."""

    def __init__(self, store: RunStore) -> None:
        self._store = store
        self._connections: dict[Path, ReadOnlyConnection] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()

    def where(self, row: RunRow) -> Location:
        """The one decision of where ``row``'s data are."""
        home = self._store.results_table_home(row)
        if home is not None:
            kind, recorded = home
            return Location("table") if kind == "table" else Location("raw_data_file", recorded)
        exported = _export_path(row.metadata.get("export_info"))
        return Location("nowhere") if exported is None else Location("export", exported)

    def results_table(self, row: RunRow) -> ResultsTable:
        """The run's results table, in the file or in its raw-data file."""
        location = self.where(row)
        if location.kind == "table":
            assert row.table_name is not None
            return ResultsTable(self._store.connection, row.run_id, row.table_name)
        if location.kind == "raw_data_file":
            assert location.recorded is not None
            found = self._side_file(row, location.recorded, "its raw data are in")
            with self._lock:
                side = self._connections.get(found)
                if side is None:
                    side = self._connections[found] = ReadOnlyConnection(found)
            return ResultsTable(side, row.run_id, str(row.table_name))
        raise SchemaError(
            f"{self._store.path}, run {row.run_id}: its results table {row.table_name!r} is "
            "not in the file (an in-memory or metadata-only run keeps its data elsewhere)",
            path=self._store.path,
            run_id=row.run_id,
            table=row.table_name,
        )

    def count_results(self, row: RunRow) -> int:
        """Rows in the run's results table (all trees together); 0 where it has none."""
        location = self.where(row)
        if location.kind == "table":
            assert row.table_name is not None
            statement = sa.select(sa.func.count()).select_from(sa.table(row.table_name))
            reading = self._store.connection.reading(run_id=row.run_id, table=row.table_name)
            with reading as sql:
                return int(sql.execute(statement).scalar_one())
        if location.kind == "raw_data_file":
            try:
                return self.results_table(row).count_rows()
            except QcsqlError:
                return 0
        found = self._export_file(location)
        if found is None:
            return 0
        from qcsql.data.exported import count_exported  # reading netCDF needs h5netcdf

        try:
            return count_exported(found)
        except (OSError, KeyError, ValueError):
            return 0  # unreadable: reading its data says why

    def exported_attrs(self, row: RunRow) -> dict[str, Any] | None:
        """The dataset attributes QCoDeS exports a run without results table with, when
        its export is there: those of that file, whose ``export_info`` QCoDeS replaces by
        the file's own with the ``nc`` path the run records (QCoDeS re-exports the loaded
        file, not the run's row; a run loaded from another file keeps that file's run_id).
        None where the run has a results table or no export."""
        location = self.where(row)
        found = self._export_file(location)
        if found is None or location.recorded is None:
            return None
        from qcsql.data.exported import exported_attrs

        attrs = _read_export(exported_attrs, found, Where(self._store.path, row.run_id))
        paths = _export_paths(attrs.get("export_info"))
        paths["nc"] = str(Path(location.recorded))
        attrs["export_info"] = json.dumps({"export_paths": paths})
        return attrs

    def _export_file(self, location: Location) -> Path | None:
        """The export file a run without results table is read from, if it is there."""
        if location.kind != "export" or location.recorded is None:
            return None
        return locate_side_file(location.recorded, self._store.path.parent)

    def parameter_data(
        self,
        row: RunRow,
        description: RunDescription,
        names: Sequence[str],
        start: int | None,
        end: int | None,
    ) -> ParameterData:
        """QCoDeS' ``get_parameter_data`` of the run, wherever its data are."""
        if not names and not description.interdependencies.parameters:
            return {}  # pristine, or nothing described: QCoDeS returns {} too
        location = self.where(row)
        if location.kind in ("export", "nowhere"):
            return self._exported_data(row, location, names, start, end)
        table = self.results_table(row)
        return read_parameter_data(
            table, description, names, start, end, Where(self._store.path, row.run_id)
        )

    def _exported_data(
        self,
        row: RunRow,
        location: Location,
        names: Sequence[str],
        start: int | None,
        end: int | None,
    ) -> ParameterData:
        """Data of a run without results table, from the netCDF file its export_info names
        (metadata-only databases, DataSetInMem runs). Where there is no such file, QCoDeS
        loads the run as a dataset without data and warns: ``{}`` whatever ``names``,
        ``start`` and ``end`` ask, and a :class:`DataNotFoundWarning`. An export that is
        there but unreadable stays an error (QCoDeS fails reading it too)."""
        path = self._store.path
        where = Where(path, row.run_id)
        if location.recorded is None:
            return _no_data(
                f"{where}: no raw data stored for dataset with guid {row.guid} (its results "
                f"table {row.table_name!r} is not in the file, and export_info records no "
                "netCDF export: an in-memory run that was never exported keeps no data)"
            )
        found = locate_side_file(location.recorded, path.parent)
        if found is None:
            return _no_data(
                f"{where}: could not load raw data for dataset with guid {row.guid} from "
                f"the export {location.recorded}, which does not exist (nor does any tail "
                f"of that path under {path.parent})"
            )
        if start is not None or end is not None:
            raise DataElsewhereError(
                f"{where}: start/end are not supported for data read from the export {found}",
                where=where,
            )
        from qcsql.data.exported import read_exported  # reading netCDF needs h5netcdf

        data = _read_export(read_exported, found, where)
        if names:
            missing = [n for n in names if n not in data]
            if missing:
                raise ParameterNotFoundError(
                    f"{where}: the export {found} has no parameter {missing[0]!r}",
                    where=where,
                )
            return {n: data[n] for n in names}
        return data

    def _side_file(self, row: RunRow, recorded: str, what: str) -> Path:
        path = self._store.path
        found = locate_side_file(recorded, path.parent)
        if found is None:
            raise DataElsewhereError(
                f"{path}, run {row.run_id}: {what} {recorded}, which does not exist "
                f"(nor does any tail of that path under {path.parent})",
                path=path,
                run_id=row.run_id,
                table=row.table_name,
            )
        return found


def _no_data(message: str) -> ParameterData:
    """QCoDeS' reading of a run whose data are nowhere: none, with a warning."""
    warnings.warn(message, DataNotFoundWarning, stacklevel=5)  # the caller of Run's method
    return {}


def _read_export(read: Callable[[Path], _T], found: Path, where: Where) -> _T:
    """``read(found)``; an export that cannot be read is a DataElsewhereError naming it
    (QCoDeS fails reading it too)."""
    try:
        return read(found)
    except (OSError, KeyError, ValueError) as exc:
        raise DataElsewhereError(
            f"{where}: cannot read the export {found} ({exc})", where=where
        ) from exc


def _export_paths(export_info: Any) -> dict[str, Any]:
    """The ``export_paths`` of QCoDeS' export_info JSON (``{"export_paths": {"nc": ...}}``);
    empty where there is none or it is not that JSON."""
    if not isinstance(export_info, str) or not export_info:
        return {}
    try:
        parsed = orjson.loads(export_info)
    except orjson.JSONDecodeError:
        return {}
    paths = parsed.get("export_paths") if isinstance(parsed, dict) else None
    return dict(paths) if isinstance(paths, dict) else {}


def _export_path(export_info: Any) -> str | None:
    """The netCDF path in QCoDeS' export_info metadata."""
    path = _export_paths(export_info).get("nc")
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
