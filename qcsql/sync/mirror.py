"""The sync job: a folder that mirrors a QCoDeS database, run by run, crash-safe.

``qcsql sync DB --to DIR`` (and :class:`Mirror`) keeps, for every run of DB::

    DIR/.qcsql-sync-state.json          the cursor and what is known of each run
    DIR/<guid>/measured_data.hdf5       the run's export (= ``qcsql export`` of it)
    DIR/<guid>/dataset.json             its record (:func:`record_of`), with the source
                                        database, run_id, the data file's sha256, status
    DIR/<guid>/measured_data.live.hdf5  while the run is measured: the live file
                                        (:mod:`qcsql.sync.live_file`), gone once final

Runs are taken in run_id order. A completed run gets its export and record. The
newest run, while QCoDeS still measures it, is followed into its live file (status
``live``) and gets its export when it completes (or, after ``idle_timeout`` seconds
without a row, as it stands, status ``incomplete``); an older run that was never
completed cannot be measured any more (QCoDeS measures one run at a time) and is
exported as it stands, status ``incomplete``. Without live following the sync stops
before the newest run while it is incomplete, and takes it up at a later poll: a run
skipped would never be revisited.

Every poll also lists the runs (one query) and compares each synced run's row with
the one it was synced from: a run starred in plottr (``inspectr_tag``), given metadata
or completed since gets its record rewritten, and its data file only if the new
export's bytes differ (exports are byte-reproducible: their checksums are compared).
A star or cross alone (plottr's ``inspectr_tag``) changes the record's ranking and
not the data file, although QCoDeS writes the tag into the export's attributes too: a
platform re-uploading gigabytes of unchanged data for a flag is what a sync must not
cause; such a data file is the export of the run as it was before the flag.

Invariants (what makes a crash at any moment harmless):

1. Every file appears by rename of a complete temporary file beside it
   (:func:`qcsql.export.writer.write_bytes_atomically`, the exports' own rule), so a
   file is either absent, the old version or the new one, never a part of one.
2. The files of a run are written in the order data file, record, state. The state
   only ever describes files that are already in place; the cursor is advanced in the
   same write that records the run it passes. (Within a poll the state is written at
   most once a second, and always at its end: a state that lags behind the files only
   means that more runs are done again.)
3. A run's files are named by its guid and their content is a function of the run
   (exports are byte-reproducible; a record is rewritten only when its bytes change),
   so doing a run again after a crash writes the same files under the same names: no
   duplicate, and nothing the state does not know of is ever trusted.
4. On start, every run after the cursor is done again, every run the state calls live
   (or whose folder holds a live file the state does not know of) is followed again
   from its first row into a new live file, also if it completed meanwhile: a record
   turns from live to complete only after a live file held every row of the run, so a
   reader of the live file never sees it end short of the run. Leftovers of a killed
   write (temporary files, a candidate export) are removed when that run's files are
   next written.

So a crash before a state write loses nothing (the run is redone), and a crash after
it leaves everything the state describes in place. The state file is one small JSON
document (a few hundred bytes per run); a corrupted one is reported and the folder is
resynced from scratch, which by (3) rewrites nothing that is already right.

qcsql only reads the database (no journal-mode change, no QCoDeS), keeps no read
transaction open between statements, and notices a database replaced or deleted
under it (:class:`~qcsql.SyncError`), as well as runs deleted from it (their files are
kept, their state says ``deleted``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from qcsql.database import Database, Run, open_database
from qcsql.errors import (
    DatabaseBusyError,
    DatabaseOpenError,
    DatabaseReadError,
    ExportError,
    QcsqlError,
    SyncError,
)
from qcsql.export.naming import make_folder
from qcsql.export.writer import write_bytes_atomically
from qcsql.sync.live_follow import FollowResult, LiveFollow, follow_into
from qcsql.sync.records import RANKING_TAG, QCoDeSConfigData, dataset_info

__all__ = [
    "DATA_NAME",
    "LIVE_NAME",
    "RECORD_NAME",
    "STATE_NAME",
    "FollowResult",
    "Mirror",
    "SyncEvent",
    "follow_into",
    "is_live",
    "new_runs",
    "record_of",
    "sync_config",
]

STATE_NAME = ".qcsql-sync-state.json"
DATA_NAME = "measured_data.hdf5"
RECORD_NAME = "dataset.json"
LIVE_NAME = "measured_data.live.hdf5"
_CANDIDATE_NAME = ".measured_data.candidate.hdf5"  # a re-export, compared before it replaces
STATE_FORMAT = 1
STATE_EVERY = 1.0  # seconds: the state is written at most this often within a poll

Status = Literal["live", "complete", "incomplete", "failed", "not started", "deleted"]


# -- the pieces an agent wraps --------------------------------------------------------------


def sync_config(
    database: str | Path,
    set_up: str,
    attributes: list[str],
    snapshot_instruments: list[str] | None = None,
) -> QCoDeSConfigData:
    """The configuration of a sync from the command line's words: ``KEY=VALUE`` static
    attributes, the instruments whose settings become attributes (None: none, []: all);
    a :class:`~qcsql.SyncError` saying what is wrong otherwise."""
    static: dict[str, str] = {}
    for item in attributes:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise SyncError(f"--attribute {item!r}: give KEY=VALUE")
        static[key] = value
    try:
        return QCoDeSConfigData(
            database_path=Path(database),
            set_up=set_up,
            static_attributes=static,
            snapshot_instruments=None
            if snapshot_instruments is None
            else tuple(snapshot_instruments),
        )
    except ValidationError as exc:
        reasons = "; ".join(str(error["msg"]) for error in exc.errors())
        raise SyncError(f"{database}: cannot be synced ({reasons})", path=database) from exc


def new_runs(db: Database, cursor: int = 0) -> list[Run]:
    """The runs with a run_id above ``cursor``, by run_id (one query)."""
    return db.runs(start_run_id=cursor + 1)


def is_live(run: Run) -> bool:
    """Whether QCoDeS may still be measuring ``run``: started, not completed, and no run
    after it in its database (QCoDeS measures one run at a time). Reads the file now."""
    fresh = run.reload()
    if not fresh.started or fresh.completed:
        return False
    return not fresh.database.runs(start_run_id=run.run_id + 1)


def record_of(
    run: Run,
    config: QCoDeSConfigData,
    *,
    status: Status,
    sha256: str | None = None,
    data_file: str | None = None,
    live_file: str | None = None,
    exported: Path | None = None,
) -> dict[str, Any]:
    """The ``dataset.json`` of ``run``: :func:`~qcsql.sync.dataset_info` (tags sorted, read
    from ``exported``, the run's export, when given) and where it came from, what file
    holds its data and that file's sha256, and its status."""
    info = dataset_info(run, config, exported=exported).model_dump(
        mode="json", exclude={"data_file"}
    )
    info["tags"] = sorted(info["tags"])
    info.update(
        source={"database": str(run.path_to_db), "run_id": run.run_id, "guid": run.stable_guid},
        status=status,
        data_file=data_file,
        sha256=sha256,
        live_file=live_file,
    )
    return info


# -- the mirror ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncEvent:
    """What happened to one run: ``action`` is ``synced`` (new files), ``live`` (its live
    follow started), ``updated`` (record or data rewritten after a change), ``deleted``
    (gone from the database; files kept), ``failed`` (the run cannot be exported: QCoDeS
    could not either) or ``live-file-ended`` (the live file stopped; the follow goes on)."""

    action: str
    run_id: int
    guid: str | None
    status: Status
    message: str = ""
    data_file: str | None = None
    sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _RunState:
    guid: str | None
    status: Status
    fingerprint: str
    sha256: str | None = None
    data_fingerprint: str | None = None  # the row but its ranking, when the data were written


@dataclass
class _State:
    database: str
    config: str
    cursor: int = 0
    runs: dict[int, _RunState] = dataclasses.field(default_factory=dict)

    def dumps(self) -> bytes:
        payload = {
            "format": STATE_FORMAT,
            "database": self.database,
            "config": self.config,
            "cursor": self.cursor,
            "runs": {str(k): dataclasses.asdict(v) for k, v in sorted(self.runs.items())},
        }
        return orjson.dumps(payload, option=orjson.OPT_INDENT_2)

    @classmethod
    def loads(cls, content: bytes) -> _State:
        """Raises ValueError (or KeyError, TypeError) on anything but a state we wrote."""
        payload = orjson.loads(content)
        if payload.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown format {payload.get('format')!r}")
        runs = {int(k): _RunState(**v) for k, v in payload["runs"].items()}
        state = cls(str(payload["database"]), str(payload["config"]), int(payload["cursor"]), runs)
        if any(k > state.cursor for k in runs):
            raise ValueError("a run past the cursor")
        return state


def _fingerprint(run: Run, *, ranking: bool = True) -> str:
    """What the run's row says now: a change (metadata, completion) means a new record.
    Without its ranking (plottr's star or cross): a change of this one means new data
    files, as every other column of the row is written into the export."""
    row = run.row
    if not ranking and RANKING_TAG in row.metadata:
        metadata = {key: value for key, value in row.metadata.items() if key != RANKING_TAG}
        row = dataclasses.replace(row, metadata=metadata)
    return hashlib.sha256(repr(row).encode()).hexdigest()


def _config_key(config: QCoDeSConfigData) -> str:
    return hashlib.sha256(
        orjson.dumps(
            {
                "set_up": config.set_up,
                "static": config.static_attributes,
                "snapshot": config.snapshot_instruments,
            }
        )
    ).hexdigest()


def _drop_live_leftovers(folder: Path) -> None:
    """A run that will not be followed any more and got no final export: its live file
    goes, and so does a record that described it (no data file beside it), so that no
    file claims a run is live when nothing follows it; a complete earlier export stays."""
    with contextlib.suppress(FileNotFoundError):
        (folder / LIVE_NAME).unlink()
    if not (folder / DATA_NAME).exists():
        with contextlib.suppress(FileNotFoundError):
            (folder / RECORD_NAME).unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _identity(path: Path) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise SyncError(
            f"{path}: the database is gone ({exc.strerror or exc}); the sync stops",
            path=path,
        ) from exc
    return stat.st_dev, stat.st_ino


class Mirror:
    """Keep ``folder`` a mirror of the database of ``config`` (see the module docstring).

    :meth:`poll` does one round (changes, live runs, new runs); :meth:`sync_once` polls
    until nothing is live any more; :meth:`watch` polls until ``stop()`` says so.
    ``on_event`` hears of every run synced, followed, updated, deleted or failed.
    """

    def __init__(
        self,
        config: QCoDeSConfigData,
        folder: str | Path,
        *,
        live: bool = True,
        idle_timeout: float | None = 600.0,
        on_event: Callable[[SyncEvent], None] | None = None,
    ) -> None:
        self.config = config
        self.path = Path(config.database_path).resolve()
        self.folder = Path(folder).expanduser()
        self.live = live
        self.idle_timeout = idle_timeout
        self.on_event = on_event or (lambda event: None)
        self.problems: list[SyncEvent] = []  # failed runs, ended live files
        self._identity = _identity(self.path)
        self._followers: dict[int, LiveFollow] = {}
        self._db: Database | None = None
        try:
            make_folder(self.folder)
        except ExportError as exc:
            raise SyncError(str(exc), path=self.folder) from exc
        self._state = self._load_state()
        self._config_changed = self._state.config != _config_key(config)
        self._saved_at = 0.0
        self._unsaved = False
        self._save_state(now=True)  # also proves the folder writable before any run is done

    # -- state -------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_NAME

    @property
    def cursor(self) -> int:
        """Every run up to this run_id is synced (or followed live)."""
        return self._state.cursor

    def _fresh_state(self) -> _State:
        return _State(str(self.path), _config_key(self.config))

    def _load_state(self) -> _State:
        try:
            content = self.state_path.read_bytes()
        except FileNotFoundError:
            return self._fresh_state()
        except OSError as exc:
            raise SyncError(
                f"{self.state_path}: cannot read the sync state ({exc.strerror or exc})",
                path=self.state_path,
            ) from exc
        try:
            state = _State.loads(content)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._emit(
                SyncEvent(
                    "resync",
                    0,
                    None,
                    "complete",
                    f"{self.state_path}: the sync state is damaged ({exc}); resyncing every "
                    "run (files already right are kept)",
                )
            )
            return self._fresh_state()
        if state.database != str(self.path):
            raise SyncError(
                f"{self.folder}: mirrors {state.database}, not {self.path}; give each "
                "database its own folder",
                path=self.folder,
            )
        return state

    def _save_state(self, *, now: bool = False) -> None:
        """Write the state (it describes only files already in place), at most every
        ``STATE_EVERY`` seconds within a poll and always at its end: a first sync of
        thousands of runs does not rewrite a growing file thousands of times, and a crash
        meanwhile only means a few runs are done again, to the same bytes."""
        self._unsaved = True
        if not now and time.monotonic() - self._saved_at < STATE_EVERY:
            return
        try:
            write_bytes_atomically(self.state_path, self._state.dumps())
        except ExportError as exc:
            raise SyncError(str(exc), path=self.state_path) from exc
        self._saved_at, self._unsaved = time.monotonic(), False

    def _emit(self, event: SyncEvent) -> None:
        if event.action in ("failed", "live-file-ended"):
            self.problems.append(event)
        self.on_event(event)

    # -- the loop -------------------------------------------------------------------------

    def sync_once(self, poll_interval: float = 0.2) -> None:
        """Sync every run there is, following a live one until it is over."""
        self.poll()
        while self._followers:
            time.sleep(poll_interval)
            self.poll()

    def watch(self, interval: float = 1.0, stop: Callable[[], bool] | None = None) -> None:
        """Poll every ``interval`` seconds until ``stop()`` is true (or forever). A poll
        that found the file busy (a writer held it past the busy timeout) is repeated."""
        while True:
            try:
                self.poll()
            except DatabaseBusyError as exc:
                self._emit(SyncEvent("busy", 0, None, "live", str(exc)))
            if stop is not None and stop():
                return
            time.sleep(interval)

    def close(self) -> None:
        for follower in self._followers.values():
            follower.close()
        self._followers.clear()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def poll(self) -> None:
        """One round: changed or deleted runs, a step of every live run, then new runs."""
        if _identity(self.path) != self._identity:
            raise SyncError(
                f"{self.path}: the database was replaced by another file; the sync stops "
                "(sync the new one into its own folder)",
                path=self.path,
            )
        db = self._database()
        listing = {run.run_id: run for run in db.runs()}
        try:
            self._check_synced(listing)
            self._step_followers(db)
            self._sync_new(listing)
        finally:
            if self._unsaved:
                self._save_state(now=True)

    def _database(self) -> Database:
        """The mirror's connection, kept from poll to poll (opening one costs ten times a
        listing of the runs), and opened again when the file's schema changed since: a
        ``Database`` fixes the runs table's columns when it opens, and QCoDeS'
        ``add_metadata`` adds a column the first time a key is used (plottr's
        ``inspectr_tag``), which must be seen at the next poll."""
        if self._db is not None and self._db.store.schema_changed():
            self._db.close()
            self._db = None
        if self._db is None:
            try:
                self._db = open_database(self.path)
            except DatabaseOpenError as exc:
                raise SyncError(f"{exc}; the sync stops", path=self.path) from exc
        return self._db

    def _check_synced(self, listing: dict[int, Run]) -> None:
        config_changed, self._config_changed = self._config_changed, False
        for run_id, entry in sorted(self._state.runs.items()):
            if entry.status == "deleted":
                continue
            run = listing.get(run_id)
            if run is None:
                follower = self._followers.pop(run_id, None)
                if follower is not None:
                    follower.close()
                    if entry.guid is not None:  # a live file of a run that is gone ends here
                        _drop_live_leftovers(self.folder / entry.guid)
                entry.status = "deleted"
                self._save_state()
                self._emit(
                    SyncEvent(
                        "deleted",
                        run_id,
                        entry.guid,
                        "deleted",
                        f"{self.path}, run {run_id}: deleted from the database; its files are kept",
                    )
                )
                continue
            if entry.guid is not None and run.stable_guid != entry.guid:
                raise SyncError(
                    f"{self.path}, run {run_id}: has guid {run.stable_guid}, but "
                    f"{self.folder} synced {entry.guid} as that run: the database was "
                    "replaced; sync it into its own folder",
                    path=self.path,
                    run_id=run_id,
                )
            if entry.status == "live":
                continue  # its follower finishes it
            changed = _fingerprint(run) != entry.fingerprint
            if entry.status == "not started":
                if changed and run.started:  # started after all: a run like a new one
                    self._take_up(run, newest=run_id == max(listing))
                    self._save_state()
            elif changed or config_changed:
                new_data = _fingerprint(run, ranking=False) != entry.data_fingerprint
                self._finish(run, reexport=new_data, action="updated")

    def _step_followers(self, db: Database) -> None:
        for run_id, entry in sorted(self._state.runs.items()):
            if entry.status == "live" and run_id not in self._followers:  # after a restart
                # Followed from row 1 into a new live file even if it completed meanwhile:
                # the record turns complete only once a live file held every row, so a
                # reader of the live file never sees it end short of the run.
                self._start_follower(db.load_by_id(run_id))
        for run_id, follower in list(self._followers.items()):
            live_error = follower.live_error
            done = follower.step()
            if follower.live_error is not None and live_error is None:
                self._emit(
                    SyncEvent(
                        "live-file-ended",
                        run_id,
                        self._state.runs[run_id].guid,
                        "live",
                        str(follower.live_error),
                    )
                )
            if done:
                follower.close()
                del self._followers[run_id]
                self._finish(db.load_by_id(run_id), reexport=True, action="synced")

    def _sync_new(self, listing: dict[int, Run]) -> None:
        newest = max(listing, default=0)
        for run_id in sorted(listing):
            if run_id <= self._state.cursor:
                continue
            run = listing[run_id]
            if not run.started and run_id == newest:
                return  # QCoDeS is about to start it: wait for it
            if not self._take_up(run, newest=run_id == newest):
                return  # a running run without live following: taken up when it completes
            self._state.cursor = run_id
            self._save_state()

    def _take_up(self, run: Run, *, newest: bool) -> bool:
        """Sync a run not synced before (the caller saves the state): follow it if it is
        being measured, else export it; False if it must wait (``--no-live``). A run with
        a live file in its folder (a sync was killed following it before its state said
        so) is followed into a new one first, as after a restart (see ``_step_followers``)."""
        if not run.started:  # abandoned before it started; revisited if it ever starts
            self._state.runs[run.run_id] = _RunState(None, "not started", _fingerprint(run))
        elif not run.completed and newest and not run.in_memory:
            if not self.live:
                return False
            self._start_live(run)
        elif self.live and (self.folder / str(run.stable_guid) / LIVE_NAME).exists():
            self._start_live(run)
        else:
            self._finish(run, reexport=True, action="synced", advance=False)
        return True

    # -- one run --------------------------------------------------------------------------

    def _run_folder(self, run: Run) -> Path:
        folder = self.folder / str(run.stable_guid)
        try:
            make_folder(folder)
        except ExportError as exc:
            raise SyncError(str(exc), path=folder) from exc
        return folder

    def _write_record(self, folder: Path, record: dict[str, Any]) -> None:
        content = orjson.dumps(record, option=orjson.OPT_INDENT_2)
        path = folder / RECORD_NAME
        with contextlib.suppress(OSError):
            if path.read_bytes() == content:
                return  # unchanged: not rewritten
        try:
            write_bytes_atomically(path, content)
        except ExportError as exc:
            raise SyncError(str(exc), path=path) from exc

    def _start_live(self, run: Run) -> None:
        folder = self._run_folder(run)
        self._write_record(folder, record_of(run, self.config, status="live", live_file=LIVE_NAME))
        self._state.runs[run.run_id] = _RunState(run.stable_guid, "live", _fingerprint(run))
        self._start_follower(run)
        self._emit(SyncEvent("live", run.run_id, run.stable_guid, "live"))

    def _start_follower(self, run: Run) -> None:
        folder = self._run_folder(run)
        self._followers[run.run_id] = LiveFollow(
            run, folder / LIVE_NAME, idle_timeout=self.idle_timeout, own_database=True
        )

    def _export(self, run: Run, folder: Path, known: str | None) -> str:
        """Export ``run`` to its data file, replacing an existing one only if the bytes
        differ; the data file's sha256."""
        data = folder / DATA_NAME
        candidate = folder / _CANDIDATE_NAME
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()  # left by a killed sync
        if not data.exists():
            run.export_hdf5(data)
            return _sha256(data)
        run.export_hdf5(candidate)
        new = _sha256(candidate)
        if new == (known or _sha256(data)):
            candidate.unlink()
        else:
            os.replace(candidate, data)
        return new

    def _finish(self, run: Run, *, reexport: bool, action: str, advance: bool = True) -> None:
        """Give ``run`` its final files (data, record), then the state; the live file
        goes last."""
        entry = self._state.runs.get(run.run_id)
        folder = self._run_folder(run)
        status: Status = "complete" if run.completed else "incomplete"
        sha = entry.sha256 if entry is not None else None
        data_fingerprint = entry.data_fingerprint if entry is not None else None
        failure: QcsqlError | None = None
        try:
            if reexport or sha is None or not (folder / DATA_NAME).exists():
                sha = self._export(run, folder, sha)
                data_fingerprint = _fingerprint(run, ranking=False)
            record = record_of(
                run,
                self.config,
                status=status,
                sha256=sha,
                data_file=DATA_NAME,
                exported=folder / DATA_NAME,
            )
        except ExportError as exc:
            if isinstance(exc.__cause__, OSError):  # the folder: nothing to go on with
                raise SyncError(str(exc), path=exc.path) from exc
            failure = exc
        except (DatabaseReadError, SyncError):
            raise  # the database: nothing to go on with
        except QcsqlError as exc:  # the run itself (QCoDeS cannot export it either)
            failure = exc
        if failure is not None:
            _drop_live_leftovers(folder)
            self._state.runs[run.run_id] = _RunState(run.stable_guid, "failed", _fingerprint(run))
            if advance:
                self._save_state()
            self._emit(SyncEvent("failed", run.run_id, run.stable_guid, "failed", str(failure)))
            return
        self._write_record(folder, record)
        self._state.runs[run.run_id] = _RunState(
            run.stable_guid,
            status,
            _fingerprint(run),
            sha,
            data_fingerprint,
        )
        if advance:
            self._save_state()
        with contextlib.suppress(FileNotFoundError):
            (folder / LIVE_NAME).unlink()
        self._emit(
            SyncEvent(action, run.run_id, run.stable_guid, status, "", str(folder / DATA_NAME), sha)
        )
