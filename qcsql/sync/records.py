"""What a sync agent uploads for each run: a record per run, and the runs new since the last.

A data platform stores each QCoDeS run as a dataset identified by the run's guid
(``alt_uid``), with a name, a description, the time it was collected, tags,
attributes, a ranking and the exported HDF5 file. The rules (those of the established
QCoDeS sync agent, eTiKeT's connector):

* ``name`` is the first line of the run name; further lines go to the description;
* ``tags`` are the ``long_name`` (else ``name``) of every variable and coordinate of
  the exported dataset, plus the tags of the ``qh_meta`` instrument in the snapshot.
  Given the export (``export_to``, or ``exported`` when it is already written, as the
  sync has it), they are read from its file's attributes
  (:func:`qcsql.export.written.variable_labels`): exactly the agent's, also the
  layout's own coordinates (``index``, ``multi_index``) and the names of a layout side
  by side (``x__P``), which only the rows decide. Without it they come from the run
  description, never from the data (:func:`qcsql.export.layout.parameter_names`), so a
  record costs the same for a run of ten rows or ten million: the tags of the variables
  that hold parameters, under the names a layout that is not side by side gives them;
* ``attributes`` are ``sample`` and ``set-up``, then (when the configuration asks for
  them) instrument settings from the snapshot, then the configuration's static
  attributes, then the ``qh_meta`` attributes, later ones overriding earlier ones;
* ``ranking`` is +1 for plottr's ``inspectr_tag`` 'star', -1 for 'cross', else 0.
"""

from __future__ import annotations

import logging
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qcsql.data.location import locate_side_file
from qcsql.database import Database, Run, open_database
from qcsql.errors import QcsqlError, RunNotFoundError, SnapshotMetadataWarning, Where
from qcsql.export.layout import parameter_names
from qcsql.sync.qh_meta import QH_META, qh_meta_of
from qcsql.sync.snapshot_attributes import instrument_attributes

__all__ = [
    "RANKING_TAG",
    "DatasetInfo",
    "QCoDeSConfigData",
    "dataset_info",
    "runs_after",
]

RANKING_TAG = "inspectr_tag"  # plottr's star or cross of a run, its metadata tag
RANKING = {"star": 1, "cross": -1}

log = logging.getLogger(__name__)


class QCoDeSConfigData(BaseModel):
    """A sync agent's configuration of one QCoDeS database."""

    model_config = ConfigDict(frozen=True)

    database_path: Path
    set_up: str
    static_attributes: dict[str, str] = Field(default_factory=dict)
    # None: no instrument settings; (): those of every instrument; else of these
    snapshot_instruments: tuple[str, ...] | None = None

    @field_validator("database_path", mode="before")
    @classmethod
    def _expand_user(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str | Path) else value

    @field_validator("database_path")
    @classmethod
    def _is_a_qcodes_database(cls, path: Path) -> Path:
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
        if path.suffix != ".db":
            raise ValueError(f"{path} does not end in .db")
        try:
            open_database(path).close()  # read-only; checks the SQLite header and tables
        except QcsqlError as exc:
            raise ValueError(str(exc)) from None
        return path


class DatasetInfo(BaseModel):
    """Everything a sync agent uploads for one run."""

    model_config = ConfigDict(frozen=True)

    alt_uid: str
    name: str
    description: str
    collected: datetime
    tags: frozenset[str]
    attributes: dict[str, str]
    ranking: int
    data_file: Path | None = None


def _qh_meta(run: Run) -> tuple[list[str], dict[str, str]]:
    """Tags and attributes of the ``qh_meta`` instrument in the run's snapshot."""
    where = Where(run.path_to_db, run.run_id)
    try:
        meta = qh_meta_of(run.snapshot)
    except QcsqlError as exc:
        warnings.warn(
            f"{where}: {exc}; no qh_meta tags or attributes", SnapshotMetadataWarning, stacklevel=3
        )
        return [], {}
    except ValueError as exc:
        warnings.warn(
            f"{where}: the {QH_META} instrument in the snapshot is malformed ({exc}); "
            "no qh_meta tags or attributes",
            SnapshotMetadataWarning,
            stacklevel=3,
        )
        return [], {}
    if meta is None:  # most stations have none: nothing to warn about
        log.debug("%s: the snapshot has no %s instrument", where, QH_META)
        return [], {}
    return meta.tags, meta.attributes


def _instrument_settings(run: Run, instruments: tuple[str, ...]) -> dict[str, str]:
    try:
        snapshot = run.snapshot
    except QcsqlError:
        return {}  # a snapshot that is not JSON: _qh_meta warns about it
    return instrument_attributes(snapshot, instruments)


def _variable_tags(run: Run) -> set[str]:
    """The tags of the variables the run's export holds, from its description alone: none
    where QCoDeS finds no data (an in-memory run never exported, or whose export is gone),
    as its export then has no variable."""
    location = run.database.data.where(run.row)
    if location.kind == "nowhere" or (
        location.kind == "export"
        and (
            location.recorded is None
            or locate_side_file(location.recorded, run.path_to_db.parent) is None
        )
    ):
        return set()
    return set(parameter_names(run.description).values())


def dataset_info(
    run: Run,
    config: QCoDeSConfigData,
    *,
    export_to: str | Path | None = None,
    exported: str | Path | None = None,
) -> DatasetInfo:
    """The sync record of ``run``; with ``export_to`` also its HDF5 file (a folder, or a
    file ending in .nc, .h5 or .hdf5, as :meth:`qcsql.Run.export_hdf5` takes it). The
    tags of its variables are read from that file, or from ``exported`` (the run's
    export, written before), else from the run description (see the module docstring)."""
    where = Where(run.path_to_db, run.run_id)
    guid = run.stable_guid
    if run.run_timestamp_raw is None or guid is None:
        raise QcsqlError(
            f"{where}: the run never started, so it has nothing to sync yet", where=where
        )
    lines = (run.name or "").splitlines() or [""]
    description = (
        f"database : {run.database.path.name} | run ID : {run.run_id} | "
        f"GUID : {guid} | exp name : {run.exp_name}"
    )
    if len(lines) > 1:
        description += "\n\n" + "\n".join(lines[1:])
    meta_tags, meta_attributes = _qh_meta(run)
    attributes = {"sample": str(run.sample_name), "set-up": config.set_up}
    if config.snapshot_instruments is not None:
        attributes.update(_instrument_settings(run, config.snapshot_instruments))
    attributes.update(config.static_attributes)
    attributes.update(meta_attributes)
    data_file = run.export_hdf5(export_to) if export_to is not None else None
    written = data_file if data_file is not None else exported
    if written is None:
        variable_tags = _variable_tags(run)
    else:
        from qcsql.export.written import variable_labels  # h5py: only when a file is read

        variable_tags = set(variable_labels(written).values())
    return DatasetInfo(
        alt_uid=guid,
        name=lines[0],
        description=description,
        collected=datetime.fromtimestamp(run.run_timestamp_raw).astimezone(),
        tags=frozenset(variable_tags | set(meta_tags)),
        attributes=attributes,
        ranking=RANKING.get(str(run.metadata.get(RANKING_TAG, "")), 0),
        data_file=data_file,
    )


def runs_after(db: Database, last_synced_guid: str | None) -> list[Run]:
    """The runs new since the run with ``last_synced_guid`` (all runs if None), by run_id."""
    runs = db.runs()
    if last_synced_guid is None:
        return runs
    for index, run in enumerate(runs):  # stable_guid: schema-v0 runs have no guid column
        if run.stable_guid == last_synced_guid:
            return runs[index + 1 :]
    raise RunNotFoundError(
        f"no run with guid {last_synced_guid!r} in {db.path}; the database may have been "
        "replaced since the last sync",
        path=db.path,
        table="runs",
    )
