"""The public face of a QCoDeS database opened read-only: ``Database`` and ``Run``.

QCoDeS' names for QCoDeS' notions. The work is done below: the run queries of the
file's schema version in :class:`~qcsql.schema.store.RunStore`, where each run's
data live and reading them in :class:`~qcsql.data.location.DataLocator`, the layout
and the file in :mod:`qcsql.export`. A :class:`Run` is created from the row of the
listing query and reads anything heavier (description, snapshot, row counts) only
when asked, once. It is a view of the run at the moment it was loaded: a live run's
completion or new rows are seen by loading it again (:meth:`Run.reload`).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
import sqlalchemy as sa

from qcsql.errors import (
    AmbiguousRunSpecError,
    QcsqlError,
    RunDescriptionError,
    RunNotFoundError,
    SnapshotError,
    Where,
)
from qcsql.schema.description import ParamSpec, RunDescription
from qcsql.schema.guids import parse_guid, upgrade_guid
from qcsql.schema.rows import (
    QCODES_TIME_FORMAT,
    Experiment,
    Link,
    MetadataValue,
    RunRow,
    local_time,
)
from qcsql.schema.store import RunStore
from qcsql.schema.tables import SchemaModel
from qcsql.sqlite.connection import Access, ReadOnlyConnection
from qcsql.sqlite.files import side_file

if TYPE_CHECKING:  # the data layer (and numpy) is imported when data are first read
    from typing_extensions import Unpack  # typing's own from Python 3.11

    from qcsql.data.follow import FollowChunk
    from qcsql.data.location import DataLocator
    from qcsql.data.parameter_data import ParameterData
    from qcsql.data.results import ResultsTable
    from qcsql.export.layout import Selection

if TYPE_CHECKING:  # the extras qcsql[xarray]: imported by the conversions, when called
    import pandas as pd
    import xarray as xr

__all__ = ["Database", "DatabaseSummary", "Run", "open_database"]

_E = TypeVar("_E", bound=QcsqlError)


def open_database(path: str | Path) -> Database:
    """Open a QCoDeS database of any schema version read-only; use it as a context manager."""
    return Database(path)


@dataclass(frozen=True)
class DatabaseSummary:
    """What ``qcsql info`` reports."""

    path: Path
    size_bytes: int
    wal_bytes: int | None
    schema_version: int
    journal_mode: str
    access: str
    experiments: int
    runs: int
    completed_runs: int
    metadata_columns: tuple[str, ...]


class Database:
    """A QCoDeS SQLite file, opened read-only; never upgraded, never written.

    Threads may share a ``Database``: its one SQLite connection is guarded by a lock
    held for one statement (or one window of pages) at a time, so their reads are
    correct and take turns; a ``Database`` per thread reads side by side. Closing it
    while another thread reads makes that read fail with :class:`DatabaseOpenError`.
    """

    def __init__(self, path: str | Path) -> None:
        self._conn = ReadOnlyConnection(path)
        try:
            self.store = RunStore(self._conn)
        except BaseException:
            self._conn.close()
            raise
        # Facts of the file as it was opened (a Database never re-reads its schema):
        self.schema_version: Final[int] = self.store.schema_version
        self.model: Final[SchemaModel] = self.store.model  # the version's table models
        # The columns QCoDeS' ``add_metadata`` had added to the runs table.
        self.metadata_columns: Final[tuple[str, ...]] = self.store.metadata_columns
        self._data: DataLocator | None = None
        self._data_lock = threading.Lock()

    @property
    def data(self) -> DataLocator:
        """Where the runs' data live and reading them; the data layer (and numpy) is
        imported on first use, so that listing runs costs neither."""
        with self._data_lock:
            if self._data is None:
                from qcsql.data.location import DataLocator

                self._data = DataLocator(self.store)
            return self._data

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._conn.path

    @property
    def access(self) -> Access:
        """How the file is being read (see :mod:`qcsql.sqlite.connection`)."""
        return self._conn.access

    @property
    def journal_mode(self) -> str:
        return "wal" if self._conn.header.wal_mode else "rollback"

    def close(self) -> None:
        with self._data_lock:
            if self._data is not None:
                self._data.close()
        self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<qcsql.Database {str(self.path)!r} schema v{self.schema_version}>"

    # -- experiments and runs ---------------------------------------------------------------

    def experiments(self) -> list[Experiment]:
        return self.store.experiments()

    def has_table(self, name: str) -> bool:
        """Whether ``name`` is a table now; looks again when a run created it since opening."""
        return self.store.has_table(name)

    # -- runs --------------------------------------------------------------------------------

    def runs(self, start_run_id: int = 1) -> list[Run]:
        """Every run from ``start_run_id`` on, by run_id, from one query (no JSON parsed)."""
        rows = self.store.run_rows_from(start_run_id)
        return [Run(self, row) for row in rows]

    def load_by_id(self, run_id: int) -> Run:
        rows = self.store.run_rows_of_id(run_id)
        if not rows:
            raise RunNotFoundError(
                f"run_id={run_id} is not in {self.path} ({self.store.run_id_range()}); "
                f"list them with 'qcsql runs {self.path}'",
                path=self.path,
                run_id=run_id,
                table="runs",
            )
        return Run(self, rows[0])

    def load_by_guid(self, guid: str) -> Run:
        if "guid" not in self.store.runs.c:
            raise RunNotFoundError(
                f"{self.path} is a schema v{self.schema_version} database, which has no guids; "
                "load its runs by run_id",
                path=self.path,
                table="runs",
            )
        rows = self.store.run_rows(self.store.runs.c.guid == guid)
        return self._only_run(
            rows,
            none=f"no run with guid {guid!r} in {self.path}",
            several=lambda: (
                f"guid {guid!r} is shared by runs {_id_list(rows)} of {self.path}; "
                "load one of them by run_id"
            ),
        )

    def load_by_run_spec(
        self,
        *,
        captured_run_id: int | None = None,
        captured_counter: int | None = None,
        experiment_name: str | None = None,
        sample_name: str | None = None,
        sample_id: int | None = None,
        location: int | None = None,
        work_station: int | None = None,
    ) -> Run:
        """The one run matching every given field (QCoDeS' ``load_by_run_spec``)."""
        runs = self.store.runs.c
        experiments = self.store.model.experiments.c
        captured_id_column = runs.captured_run_id if "captured_run_id" in runs else runs.run_id
        captured_counter_column = (
            runs.captured_counter if "captured_counter" in runs else runs.result_counter
        )
        conditions: list[sa.ColumnElement[bool]] = []
        for column, value in (
            (captured_id_column, captured_run_id),
            (captured_counter_column, captured_counter),
            (experiments.name, experiment_name),
            (experiments.sample_name, sample_name),
        ):
            if value is not None:
                conditions.append(column == value)
        rows = self.store.run_rows(sa.and_(sa.true(), *conditions))
        wanted_parts = {
            "sample": sample_id,
            "location": location,
            "work_station": work_station,
        }
        if any(value is not None for value in wanted_parts.values()):
            rows = [row for row in rows if _guid_matches(row.guid, wanted_parts)]
        spec = (
            ", ".join(
                f"{key}={value!r}"
                for key, value in (
                    ("captured_run_id", captured_run_id),
                    ("captured_counter", captured_counter),
                    ("experiment_name", experiment_name),
                    ("sample_name", sample_name),
                    ("sample_id", sample_id),
                    ("location", location),
                    ("work_station", work_station),
                )
                if value is not None
            )
            or "no criteria"
        )

        def several() -> str:
            listing = "; ".join(
                f"run_id={row.run_id} captured_run_id={row.captured_run_id} "
                f"exp={row.exp_name!r} sample={row.sample_name!r} guid={row.guid}"
                for row in rows[:10]
            )
            more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
            return (
                f"{len(rows)} runs of {self.path} match {spec}: {listing}{more}; "
                "give more fields to pick one"
            )

        return self._only_run(rows, none=f"no run of {self.path} matches {spec}", several=several)

    def _only_run(self, rows: Sequence[RunRow], *, none: str, several: Callable[[], str]) -> Run:
        """The one run of ``rows``; otherwise the lookup error (``none`` or ``several`` as
        its message) that names this file's runs table."""
        if not rows:
            raise RunNotFoundError(none, path=self.path, table="runs")
        if len(rows) > 1:
            raise AmbiguousRunSpecError(several(), path=self.path, table="runs")
        return Run(self, rows[0])

    # -- summary -------------------------------------------------------------------------------

    def _completed(self) -> sa.ColumnElement[bool]:
        """:attr:`Run.completed` in SQL, to count completed runs in one query: for the
        in-memory runs (:meth:`RunStore.in_memory`), whether they have a completion time."""
        runs = self.store.runs.c

        def column(name: str) -> sa.ColumnElement[Any]:
            return runs[name] if name in runs else sa.null()

        tables: sa.Select[Any] = (
            sa.select(sa.column("name"))
            .select_from(sa.table("sqlite_master"))
            .where(sa.column("type") == "table")
        )
        raw_data_file = column("raw_data_db_path")
        in_memory = sa.or_(
            column("result_table_name").is_(None),
            sa.and_(
                column("result_table_name").not_in(tables.scalar_subquery()),
                sa.or_(raw_data_file.is_(None), raw_data_file == ""),
            ),
        )
        return sa.case(
            (in_memory, column("completed_timestamp").is_not(None)),
            else_=column("is_completed") == 1,
        )

    def summary(self) -> DatabaseSummary:
        with self._conn.reading(table="runs") as sql:
            n_runs, n_completed = sql.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.case((self._completed(), 1), else_=0)), 0),
                ).select_from(self.store.runs)
            ).one()
            n_experiments = sql.execute(
                sa.select(sa.func.count()).select_from(self.store.model.experiments)
            ).scalar_one()
        wal = side_file(self.path, "-wal")
        return DatabaseSummary(
            path=self.path,
            size_bytes=self.path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else None,
            schema_version=self.schema_version,
            journal_mode=self.journal_mode,
            access=self.access.value,
            experiments=int(n_experiments),
            runs=int(n_runs),
            completed_runs=int(n_completed),
            metadata_columns=self.metadata_columns,
        )


EXPORT_INFO = "export_info"


def _export_info_as_qcodes_writes_it(stored: MetadataValue | None) -> MetadataValue:
    """``ExportInfo.from_str(stored).to_str()``, as ``DataSetInMem`` sets its tag; a stored
    value QCoDeS could not parse (it fails to load such a run) is kept as stored."""
    if stored is None or stored == "":
        return json.dumps({"export_paths": {}})
    if not isinstance(stored, (str, bytes)):
        return stored
    try:
        parsed = json.loads(stored)
    except (ValueError, RecursionError):
        return stored
    if not isinstance(parsed, dict) or set(parsed) != {"export_paths"}:
        return stored
    if not isinstance(parsed["export_paths"], dict):
        return stored
    return json.dumps({"export_paths": parsed["export_paths"]})


def _names(params: Sequence[str | Any]) -> list[str]:
    """Parameter names, from names or objects with a ``name`` (QCoDeS parameters)."""
    return [p if isinstance(p, str) else str(p.name) for p in params]


def _id_list(rows: Sequence[RunRow]) -> str:
    return ", ".join(str(row.run_id) for row in rows)


def _guid_matches(guid: str | None, wanted: dict[str, int | None]) -> bool:
    if guid is None:
        return False
    try:
        parts = parse_guid(guid)
    except ValueError:
        return False
    return all(value is None or getattr(parts, key) == value for key, value in wanted.items())


class Run:
    """A QCoDeS run (QCoDeS calls it a dataset), read-only."""

    def __init__(self, database: Database, row: RunRow) -> None:
        self._database = database
        self._row = row

    def __repr__(self) -> str:
        return (
            f"<qcsql.Run run_id={self.run_id} guid={self.guid} name={self.name!r} "
            f"of {self._database.path.name}>"
        )

    # -- identity and bookkeeping (from the listing row) ---------------------------------

    @property
    def database(self) -> Database:
        return self._database

    @property
    def row(self) -> RunRow:
        """The run's light columns as the listing query read them."""
        return self._row

    @property
    def path_to_db(self) -> Path:
        """The database file (QCoDeS' name)."""
        return self._database.path

    def reload(self) -> Run:
        """The same run as the file holds it now (completion, description, new rows)."""
        return self._database.load_by_id(self.run_id)

    def results_table(self) -> ResultsTable:
        """The run's results table, in the file or its raw-data file, for the readers
        below this facade (see :mod:`qcsql.data.location`)."""
        return self._database.data.results_table(self._row)

    def _runs_column_error(self, error: type[_E], column: str, problem: str) -> _E:
        """``error`` about this run's ``column`` of the runs table, its message
        ``<file>, run N: <problem>``."""
        path = self._database.path
        return error(
            f"{path}, run {self.run_id}: {problem}",
            path=path,
            run_id=self.run_id,
            table="runs",
            column=column,
        )

    @property
    def run_id(self) -> int:
        return self._row.run_id

    @property
    def captured_run_id(self) -> int | None:
        return self._row.captured_run_id

    @property
    def counter(self) -> int | None:
        """``result_counter``: the run's 1-based number within its experiment."""
        return self._row.counter

    @property
    def captured_counter(self) -> int | None:
        return self._row.captured_counter

    @property
    def guid(self) -> str | None:
        """The run's guid; None for schema v0 files, which have no guids."""
        return self._row.guid

    @property
    def stable_guid(self) -> str | None:
        """The guid, or for schema-v0 runs (which have none) the guid QCoDeS' upgrade would
        give them: what exports and sync records use to identify the run."""
        return (
            self._row.guid if self._row.guid is not None else upgrade_guid(self.run_timestamp_raw)
        )

    @property
    def name(self) -> str | None:
        return self._row.name

    @property
    def exp_id(self) -> int | None:
        return self._row.exp_id

    @property
    def exp_name(self) -> str | None:
        return self._row.exp_name

    @property
    def sample_name(self) -> str | None:
        return self._row.sample_name

    @property
    def table_name(self) -> str | None:
        """Name of the results table; it may not exist (in-memory and metadata-only runs)."""
        return self._row.table_name

    @property
    def parameters(self) -> str | None:
        """The legacy comma-separated parameter list of ``runs.parameters``."""
        return self._row.parameters

    @property
    def run_timestamp_raw(self) -> float | None:
        return self._row.run_timestamp_raw

    @property
    def completed_timestamp_raw(self) -> float | None:
        return self._row.completed_timestamp_raw

    def run_timestamp(self, fmt: str = QCODES_TIME_FORMAT) -> str | None:
        """Start time in the local time zone with its UTC offset, as QCoDeS 0.59+ gives it
        (``datetime.strftime`` format); ``fmt="%Y-%m-%d %H:%M:%S"`` gives QCoDeS 0.58's
        default, without the offset."""
        return local_time(self.run_timestamp_raw, fmt, where=self._timestamp_at("run_timestamp"))

    def completed_timestamp(self, fmt: str = QCODES_TIME_FORMAT) -> str | None:
        """Completion time, formatted as :meth:`run_timestamp`; None if not completed."""
        return local_time(
            self.completed_timestamp_raw, fmt, where=self._timestamp_at("completed_timestamp")
        )

    def _timestamp_at(self, column: str) -> Where:
        return Where(self.path_to_db, self.run_id, table="runs", column=column)

    @functools.cached_property
    def in_memory(self) -> bool:
        """Whether QCoDeS loads the run as a ``DataSetInMem``: it does when the file holds
        no results table for it (in-memory and metadata-only runs), and such a dataset
        reports its completion and metadata by rules of its own (below)."""
        return self._database.store.in_memory(self._row)

    @property
    def completed(self) -> bool:
        """QCoDeS' ``completed``: ``runs.is_completed``, except for an in-memory run, for
        which QCoDeS asks whether it has a completion time (one never started has none,
        though copying it into a database marks it completed)."""
        if self.in_memory:
            return self._row.completed_timestamp_raw is not None
        return self._row.is_completed

    @property
    def started(self) -> bool:
        return self._row.run_timestamp_raw is not None

    @property
    def metadata(self) -> dict[str, MetadataValue]:
        """Values of the metadata columns that are not NULL for this run, in column order.

        An in-memory run also has QCoDeS' ``export_info`` tag even where no column holds
        it: ``DataSetInMem`` always sets it, to its export paths re-serialised (so an
        empty or missing one reads ``{"export_paths": {}}``), and its exports carry it."""
        metadata = dict(self._row.metadata)
        if self.in_memory:
            metadata[EXPORT_INFO] = _export_info_as_qcodes_writes_it(metadata.get(EXPORT_INFO))
        return metadata

    @functools.cached_property
    def parent_dataset_links(self) -> list[Link]:
        raw = self._row.parent_datasets_raw
        if raw is None:
            return []
        try:
            return [Link.model_validate(orjson.loads(item)) for item in orjson.loads(raw)]
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise self._runs_column_error(
                RunDescriptionError,
                "parent_datasets",
                f"parent_datasets is not a JSON list of links ({exc})",
            ) from exc

    # -- what was measured ----------------------------------------------------------------

    @functools.cached_property
    def description(self) -> RunDescription:
        """Parameters and shapes, normalised from whichever source this schema version has."""
        return self._database.store.describe(self._row)

    @property
    def paramspecs(self) -> dict[str, ParamSpec]:
        """QCoDeS' legacy view: every parameter with ``depends_on``/``inferred_from``."""
        return self.description.paramspecs

    @property
    def shapes(self) -> dict[str, tuple[int, ...]] | None:
        return self.description.shapes

    def get_parameter_data(
        self, *params: str | Any, start: int | None = None, end: int | None = None
    ) -> ParameterData:
        """The run's data exactly as QCoDeS' ``DataSet.get_parameter_data`` returns it.

        ``{P: {P: array, setpoint: array, ...}}`` for each requested parameter P (names,
        or objects with a ``name`` such as QCoDeS parameters; default: every top-level
        parameter). ``start``/``end`` are QCoDeS' 1-based inclusive indices into the rows
        of each P. Values are the stored doubles, not QCoDeS' 15-digit rounding of them.
        Read in short chunks, so a measurement writing to the file is never blocked.
        """
        return self._database.data.parameter_data(
            self._row, self.description, _names(params), start, end
        )

    def follow(
        self,
        *,
        poll_interval: float = 0.2,
        idle_timeout: float | None = None,
        yield_empty: bool = False,
        max_ids: int | None = None,
    ) -> Iterator[FollowChunk]:
        """Yield the rows of a running measurement as they are committed (see
        :mod:`qcsql.data.follow`); ``max_ids`` bounds a chunk to that many row ids, so that
        a run far ahead of the follower is read window by window."""
        from qcsql.data.follow import follow

        return follow(
            self,
            poll_interval=poll_interval,
            idle_timeout=idle_timeout,
            yield_empty=yield_empty,
            max_ids=max_ids,
        )

    def export_hdf5(
        self, path_or_dir: str | Path, progress: Callable[[int, int], None] | None = None
    ) -> Path:
        """Write the run as the xarray-compatible HDF5 file QCoDeS' netCDF export would be.

        ``path_or_dir`` is a folder if it is an existing folder, or a ``str`` ending in a
        path separator (``"exports/"``, created with its parents); the file in it gets
        QCoDeS' name ``qcodes_<captured_run_id>_<guid>.nc``. Any other path is the file
        itself and must end in ``.nc``, ``.h5`` or ``.hdf5`` (in any case), in a folder
        that exists; an existing file of that name is replaced. A path that is neither
        raises :class:`~qcsql.ExportError` stating this rule, so ``"exprts"`` is
        refused rather than written as a file of that name.

        The file appears complete or not at all: it is written as
        ``.<name>.<random>.partial`` beside its final name and renamed when complete, and
        removed on any failure or interrupt (KeyboardInterrupt included). Such leftovers
        of a process killed outright (SIGKILL, power cut) are removed by the next export
        to the same name. ``progress(rows written, rows expected)`` is called as a
        streamed export goes. Returns the file's path.
        """
        from qcsql.export.run import export_run  # h5py and the export stack only when exporting

        return export_run(self, path_or_dir, progress)

    # -- xarray and pandas (the extras ``qcsql[xarray]``; imported on first call) ----------

    def to_xarray_dataset(self, *params: str | Any, **selection: Unpack[Selection]) -> xr.Dataset:
        """QCoDeS' ``DataSet.to_xarray_dataset(*params, start=None, end=None,
        use_multi_index="auto")``: the same dataset (dims, coordinates, variables, dtypes,
        attributes), laid out by the rules :meth:`export_hdf5` writes, with the stored
        doubles. ``use_multi_index`` is QCoDeS': ``"auto"``, ``"always"`` or ``"never"``."""
        from qcsql.export.layout import plan_run
        from qcsql.xarray.convert import dataset_from_plan, range_positions

        plan = plan_run(self, *_names(params), positions=range_positions, **selection)
        return dataset_from_plan(plan)

    def to_xarray_dataset_dict(
        self, *params: str | Any, **selection: Unpack[Selection]
    ) -> dict[str, xr.Dataset]:
        """QCoDeS' ``DataSet.to_xarray_dataset_dict``, with the keywords of
        :meth:`to_xarray_dataset`: one dataset per parameter tree."""
        from qcsql.export.layout import plan_trees
        from qcsql.xarray.convert import dataset_from_plan, range_positions

        plans = plan_trees(self, *_names(params), positions=range_positions, **selection)
        return {name: dataset_from_plan(plan) for name, plan in plans.items()}

    def to_xarray_dataarray_dict(
        self, *params: str | Any, **selection: Unpack[Selection]
    ) -> dict[str, xr.DataArray]:
        """Each parameter as a DataArray of its tree's dataset, with the dataset's
        attributes added (QCoDeS' older ``to_xarray_dataarray_dict``), with the keywords
        of :meth:`to_xarray_dataset`."""
        from qcsql.xarray.convert import dataarrays

        return dataarrays(self.to_xarray_dataset_dict(*params, **selection))

    def to_pandas_dataframe_dict(
        self, *params: str | Any, start: int | None = None, end: int | None = None
    ) -> dict[str, pd.DataFrame]:
        """QCoDeS' ``DataSet.to_pandas_dataframe_dict``: one frame per parameter tree."""
        from qcsql.xarray.frames import to_pandas_dataframe_dict

        return to_pandas_dataframe_dict(self, *_names(params), start=start, end=end)

    def to_pandas_dataframe(
        self, *params: str | Any, start: int | None = None, end: int | None = None
    ) -> pd.DataFrame:
        """QCoDeS' ``DataSet.to_pandas_dataframe``: the trees' frames side by side."""
        from qcsql.xarray.frames import to_pandas_dataframe

        return to_pandas_dataframe(self, *_names(params), start=start, end=end)

    @functools.cached_property
    def exported_attrs(self) -> dict[str, Any] | None:
        """The dataset attributes of the export an in-memory or metadata-only run is read
        from, as QCoDeS writes them when it exports the run again (export_info naming
        that file); None for a run with a results table, or whose export is not there."""
        return self._database.data.exported_attrs(self._row) if self.in_memory else None

    @functools.cached_property
    def number_of_results(self) -> int:
        """Rows in the results table (all parameter trees together); 0 if it has none. For
        a run read from its export, QCoDeS' count for a ``DataSetInMem``: the values of
        every array of its parameter data, summed."""
        return self._database.data.count_results(self._row)

    # -- snapshot ---------------------------------------------------------------------------

    @functools.cached_property
    def snapshot_raw(self) -> str | None:
        """The station snapshot JSON exactly as stored, or None."""
        return self._database.store.snapshot_raw(self._row)

    @functools.cached_property
    def snapshot(self) -> dict[str, Any] | None:
        """The parsed snapshot; parsed on first access, never by a listing."""
        raw = self.snapshot_raw
        if raw is None:
            return None
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise self._runs_column_error(
                SnapshotError, "snapshot", f"the snapshot is not valid JSON ({exc})"
            ) from exc
        if parsed is not None and not isinstance(parsed, dict):
            raise self._runs_column_error(
                SnapshotError,
                "snapshot",
                f"the snapshot is a JSON {type(parsed).__name__}, not an object",
            )
        return parsed
