"""One run of a QCoDeS database, with QCoDeS' property names.

A :class:`Run` is created from the row of the listing query and reads
anything heavier (description, snapshot, row counts) only when asked, once.
It is a view of the run at the moment it was loaded: a live run's completion
or new rows are seen by loading it again.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from qcsql.description import ParamSpec, RunDescription
from qcsql.errors import RunDescriptionError, SnapshotError
from qcsql.guids import upgrade_guid
from qcsql.parameter_data import ParameterData
from qcsql.records import Link, MetadataValue, RunRow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from qcsql.database import Database
    from qcsql.live import FollowChunk

__all__ = ["Run"]


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

    def run_timestamp(self, fmt: str = "%Y-%m-%d %H:%M:%S") -> str | None:
        """Start time in the local time zone, formatted as QCoDeS does."""
        raw = self.run_timestamp_raw
        return None if raw is None else time.strftime(fmt, time.localtime(raw))

    def completed_timestamp(self, fmt: str = "%Y-%m-%d %H:%M:%S") -> str | None:
        raw = self.completed_timestamp_raw
        return None if raw is None else time.strftime(fmt, time.localtime(raw))

    @property
    def completed(self) -> bool:
        return self._row.is_completed

    @property
    def started(self) -> bool:
        return self._row.run_timestamp_raw is not None

    @property
    def metadata(self) -> dict[str, MetadataValue]:
        """Values of the metadata columns that are not NULL for this run, in column order."""
        return dict(self._row.metadata)

    @functools.cached_property
    def parent_dataset_links(self) -> list[Link]:
        raw = self._row.parent_datasets_raw
        if raw is None:
            return []
        try:
            return [Link.model_validate(orjson.loads(item)) for item in orjson.loads(raw)]
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise RunDescriptionError(
                f"{self._database.path}, run {self.run_id}: parent_datasets is not a JSON "
                f"list of links ({exc})",
                path=self._database.path,
                run_id=self.run_id,
                table="runs",
                column="parent_datasets",
            ) from exc

    # -- what was measured ----------------------------------------------------------------

    @functools.cached_property
    def description(self) -> RunDescription:
        """Parameters and shapes, normalised from whichever source this schema version has."""
        return self._database._describe(self)

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
        names = [p if isinstance(p, str) else str(p.name) for p in params]
        return self._database._parameter_data(self, names, start, end)

    def follow(
        self,
        *,
        poll_interval: float = 0.2,
        idle_timeout: float | None = None,
        yield_empty: bool = False,
    ) -> Iterator[FollowChunk]:
        """Yield the rows of a running measurement as they are committed (see :mod:`qcsql.live`)."""
        from qcsql.live import follow  # the live layer sits above runs

        return follow(
            self, poll_interval=poll_interval, idle_timeout=idle_timeout, yield_empty=yield_empty
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
        raises :class:`~qcsql.writer.ExportError` stating this rule, so ``"exprts"`` is
        refused rather than written as a file of that name.

        The file appears complete or not at all: it is written as
        ``.<name>.<random>.partial`` beside its final name and renamed when complete, and
        removed on any failure or interrupt (KeyboardInterrupt included). Such leftovers
        of a process killed outright (SIGKILL, power cut) are removed by the next export
        to the same name. ``progress(rows written, rows expected)`` is called as a
        streamed export goes. Returns the file's path.
        """
        from qcsql.export import export_run  # the writer layer sits above runs

        return export_run(self, path_or_dir, progress)

    @functools.cached_property
    def number_of_results(self) -> int:
        """Rows in the results table (all parameter trees together); 0 if it has none."""
        return self._database._count_results(self)

    # -- snapshot ---------------------------------------------------------------------------

    @functools.cached_property
    def snapshot_raw(self) -> str | None:
        """The station snapshot JSON exactly as stored, or None."""
        return self._database._snapshot_raw(self)

    @functools.cached_property
    def snapshot(self) -> dict[str, Any] | None:
        """The parsed snapshot; parsed on first access, never by a listing."""
        raw = self.snapshot_raw
        if raw is None:
            return None
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SnapshotError(
                f"{self._database.path}, run {self.run_id}: the snapshot is not valid JSON ({exc})",
                path=self._database.path,
                run_id=self.run_id,
                table="runs",
                column="snapshot",
            ) from exc
        if parsed is not None and not isinstance(parsed, dict):
            raise SnapshotError(
                f"{self._database.path}, run {self.run_id}: the snapshot is a JSON "
                f"{type(parsed).__name__}, not an object",
                path=self._database.path,
                run_id=self.run_id,
                table="runs",
                column="snapshot",
            )
        return parsed
