"""Exports (and other per-run or per-file work) of many databases, fanned out over local
processes or a Dask cluster.

Every task is a pure function of its arguments (a database path, a run, a folder) to a
file and an :class:`Outcome`: tasks share nothing, open the database themselves
(read-only, as everywhere in qcsql), and never raise for what a database holds: a
failure is an :class:`Outcome` naming the error class, the database and the run. So
the coordination is only what :mod:`concurrent.futures` or ``dask.distributed``
already do: submit, then collect the outcomes as the tasks finish. Even a task that
dies (a worker killed, a bug) becomes one failed outcome for its database and run,
and the batch goes on.

Work per run, not per file: a lab's archive holds a few files with most of the runs,
and one file per task would leave all but one worker idle at the end.

Processes are started with ``forkserver`` (``spawn`` where there is none), never a
plain ``fork`` of a process that holds SQLite connections and threads. Dask is an
optional extra (``pip install qcsql[dask]``), imported only when a client is given.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qcsql.archive.discover import Problem, discover
from qcsql.database import Database, open_database
from qcsql.errors import NotQCoDeSError, NotSQLiteError, QcsqlError

if TYPE_CHECKING:
    from dask.distributed import Client

__all__ = [
    "ExportPlan",
    "ExportTask",
    "Inputs",
    "Outcome",
    "dask_client",
    "export_chunk",
    "export_one",
    "export_tasks",
    "export_runs",
    "failure",
    "find_databases",
    "plan_exports",
    "run_tasks",
]


@dataclass(frozen=True)
class Outcome:
    """What one task did: a file written (``path``, ``bytes``) or a failure
    (``error_type``, the qcsql error class or the exception's, and ``message``).
    ``run_id`` is None for a task (or a failure) about a whole database."""

    database: str
    run_id: int | None
    ok: bool
    path: str | None = None
    bytes: int = 0
    guid: str | None = None
    error_type: str | None = None
    message: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    payload: Any = None  # what a task returns besides a file (an audit report)


def failure(database: str, run_id: int | None, exc: BaseException) -> Outcome:
    """The outcome of a task that raised ``exc``; the message names database and run."""
    message = str(exc) if isinstance(exc, QcsqlError) else f"{type(exc).__name__}: {exc}"
    if database not in message:
        where = database if run_id is None else f"{database}, run {run_id}"
        message = f"{where}: {message}"
    return Outcome(database, run_id, False, error_type=type(exc).__name__, message=message)


def export_one(database: str, run_id: int, folder: str) -> Outcome:
    """Export run ``run_id`` of ``database`` into ``folder`` (created) under QCoDeS' file
    name. A task: never raises for what the database holds or for a file it cannot
    write, and its warnings come back in the outcome (a worker's stderr is nobody's)."""
    outcome: Outcome = export_chunk(database, run_id, (run_id,), folder).payload[0]
    return outcome


def export_chunk(
    database: str, first_run_id: int, run_ids: tuple[int, ...], folder: str
) -> Outcome:
    """:func:`export_one` of each of ``run_ids`` (``first_run_id`` the first, naming the
    chunk) of ``database``, opened once for them all: a task, a pure function of its
    arguments, whose payload is the runs' outcomes in order (a failure to open the
    database is each run's failure). Opening a file and reading its schema again for
    each of its runs cost more than exporting a small run."""
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)  # see export_one
            db = open_database(database)
        except (QcsqlError, OSError) as exc:
            return Outcome(
                database, first_run_id, True, payload=[failure(database, r, exc) for r in run_ids]
            )
    opening = tuple(str(w.message) for w in caught)  # each run's, as export_one reports them
    outcomes = []
    with db:
        for run_id in run_ids:
            outcomes.append(_export_from(db, database, run_id, folder, opening, started))
            started = time.perf_counter()
    return Outcome(database, first_run_id, True, payload=outcomes)


def _export_from(
    db: Database, database: str, run_id: int, folder: str, opening: tuple[str, ...], started: float
) -> Outcome:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run = db.load_by_id(run_id)
            path = run.export_hdf5(Path(folder))
            guid = run.stable_guid
            size = path.stat().st_size
        except (QcsqlError, OSError) as exc:
            return failure(database, run_id, exc)
    return Outcome(
        database,
        run_id,
        True,
        path=str(path),
        bytes=size,
        guid=guid,
        warnings=opening + tuple(str(w.message) for w in caught),
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class ExportTask:
    database: str
    run_id: int
    folder: str

    @property
    def arguments(self) -> tuple[str, int, str]:
        return (self.database, self.run_id, self.folder)


@dataclass
class Inputs:
    """The QCoDeS databases under some paths, with their run ids where asked for, and
    what was not one: a file found in a folder that is not a QCoDeS database is
    ``skipped`` (an archive holds exports and notes too); a path given by name that is
    not one, or a database that cannot be listed, is a failed :class:`Outcome`."""

    databases: list[tuple[Path, list[int]]] = field(default_factory=list)
    failures: list[Outcome] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    root: Path = field(default_factory=Path.cwd)  # the folder the inputs share
    single_file: bool = False  # one database file given alone


def find_databases(
    paths: Sequence[str | Path], *, list_runs: bool = True, open_files: bool = True
) -> Inputs:
    """The QCoDeS databases under ``paths`` (see :class:`Inputs`), each opened read-only
    once, in this process, to tell (and list its runs); with ``open_files`` False, every
    candidate file found, unopened, for tasks that open it and tell themselves."""
    given = [Path(p).expanduser().absolute() for p in paths]
    found = discover(given)
    inputs = Inputs(single_file=len(given) == 1 and given[0].is_file())
    if given:
        inputs.root = _common_folder(given)
    for problem in found.problems:
        if problem.kind in ("not_found", "broken_link") and problem.path in map(str, given):
            inputs.failures.append(
                Outcome(
                    problem.path,
                    None,
                    False,
                    error_type="DatabaseNotFoundError",
                    message=problem.message,
                )
            )
        else:
            inputs.skipped.append(problem)
    named = {str(p) for p in given}
    for path in found.files:
        if not open_files:
            inputs.databases.append((path, []))
            continue
        try:
            with open_database(path) as db:
                run_ids = [run.run_id for run in db.runs()] if list_runs else []
        except (NotSQLiteError, NotQCoDeSError) as exc:
            if str(path) in named:
                inputs.failures.append(failure(str(path), None, exc))
            else:
                inputs.skipped.append(Problem(str(path), type(exc).__name__, str(exc)))
            continue
        except (QcsqlError, OSError) as exc:
            inputs.failures.append(failure(str(path), None, exc))
            continue
        inputs.databases.append((path, run_ids))
    return inputs


@dataclass
class ExportPlan:
    """The runs to export, and what could not even be listed (one failed outcome each)."""

    tasks: list[ExportTask] = field(default_factory=list)
    failures: list[Outcome] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    databases: int = 0


def _common_folder(paths: Sequence[Path]) -> Path:
    folders = [p if p.is_dir() else p.parent for p in paths]
    return Path(os.path.commonpath([str(f) for f in folders]))


def plan_exports(
    paths: Sequence[str | Path],
    output: str | Path,
    run_ids: Sequence[int] | None = None,
) -> ExportPlan:
    """Every run (or those of ``run_ids``) of every database under ``paths``.

    One database file given alone exports into ``output`` itself, as a single export
    does; otherwise each database's runs go into ``output/<its path relative to the
    folder the inputs share>/`` (the file name kept as a folder name, so that
    ``a.db`` and ``a.sqlite`` do not meet), since copies of a run in several files
    have the same QCoDeS file name.
    """
    inputs = find_databases(paths, list_runs=run_ids is None)
    plan = ExportPlan(failures=inputs.failures, skipped=inputs.skipped)
    for path, listed in inputs.databases:
        folder = (
            Path(output) if inputs.single_file else Path(output) / path.relative_to(inputs.root)
        )
        wanted = listed if run_ids is None else list(run_ids)
        plan.tasks += [ExportTask(str(path), run_id, str(folder)) for run_id in wanted]
        plan.databases += 1
    return plan


Task = Callable[..., Outcome]


# Imported once by the fork server, so that each worker forked from it starts with the
# export stack loaded instead of importing it itself (a second or more per worker).
PRELOAD = ["qcsql.archive.scan", "qcsql.export.run", "qcsql.data.location"]


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def run_tasks(
    function: Task,
    tasks: Iterable[tuple[Any, ...]],
    *,
    jobs: int = 1,
    client: Client | None = None,
) -> Iterator[Outcome]:
    """``function(*arguments)`` for every tuple of ``tasks``, yielding the outcomes as the
    tasks finish: in this process (``jobs`` 1), in ``jobs`` local processes, or on the
    workers of a ``dask.distributed`` ``client``. The first two arguments of each task
    are its database and run (None for a task about a whole file), to name a task
    that died."""
    pending = list(tasks)
    if client is not None:
        yield from _on_dask(function, pending, client)
    elif jobs > 1 and len(pending) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=_context()) as pool:
            futures: dict[Future[Outcome], tuple[Any, ...]] = {
                pool.submit(function, *arguments): arguments for arguments in pending
            }
            try:
                for future in as_completed(futures):
                    yield _collected(future, futures[future])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    else:
        for arguments in pending:
            try:
                yield function(*arguments)
            except Exception as exc:  # noqa: BLE001 - a bug in one task must not stop the batch
                yield failure(str(arguments[0]), arguments[1], exc)


def _collected(future: Any, arguments: tuple[Any, ...]) -> Outcome:
    try:
        outcome: Outcome = future.result()
    except Exception as exc:  # noqa: BLE001 - a worker that died, a bug: one failure
        return failure(str(arguments[0]), arguments[1], exc)
    return outcome


def _on_dask(function: Task, tasks: list[tuple[Any, ...]], client: Client) -> Iterator[Outcome]:
    from dask.distributed import as_completed as dask_completed

    futures = {}
    for arguments in tasks:
        # pure=False: two tasks with equal arguments (a re-export) are still two tasks.
        future = client.submit(function, *arguments, pure=False)
        futures[future.key] = (future, arguments)
    try:
        futures_list = [f for f, _ in futures.values()]
        for future in dask_completed(futures_list, loop=client.loop):  # type: ignore[no-untyped-call]
            yield _collected(future, futures[future.key][1])
    except BaseException:
        client.cancel([f for f, _ in futures.values()])  # type: ignore[no-untyped-call]
        raise


@contextlib.contextmanager
def dask_client(address: str, workers: int) -> Iterator[Client]:
    """A client of the Dask scheduler at ``address``, or for ``local`` of a new
    ``LocalCluster`` of ``workers`` single-threaded worker processes; both closed after
    the block."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise QcsqlError("--dask needs dask.distributed: pip install 'qcsql[dask]'") from exc
    if address != "local":
        try:
            client = Client(address, set_as_default=False, timeout=30)  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise QcsqlError(f"cannot reach the Dask scheduler at {address} ({exc})") from exc
        with client:
            yield client
        return
    import dask

    # No statistical profiler in the workers we start: it holds every thread's frames for
    # a moment, and so the h5py objects of a write under way, which can move HDF5
    # structures in the file and break the exports' byte-for-byte reproducibility.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    with cluster, Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        yield client


# Runs of one database per export task: enough to open each file a fraction as often,
# few enough that the workers share a large file's runs and progress moves steadily.
CHUNK_RUNS = 8


def export_tasks(
    tasks: Sequence[ExportTask], *, jobs: int = 1, client: Client | None = None
) -> Iterator[Outcome]:
    """:func:`export_one` of every task, the runs of one database and folder grouped
    into :func:`export_chunk` tasks of up to :data:`CHUNK_RUNS` runs (fewer where that
    leaves fewer than four chunks per worker), yielding one outcome per run as each
    chunk finishes; a chunk that dies is a failure of each of its runs."""
    workers = jobs if client is None else max(1, sum(client.nthreads().values()))  # type: ignore[no-untyped-call]
    size = max(1, min(CHUNK_RUNS, len(tasks) // (4 * workers)))
    grouped: dict[tuple[str, str], list[int]] = {}
    for task in tasks:
        grouped.setdefault((task.database, task.folder), []).append(task.run_id)
    chunks: dict[tuple[str, int], tuple[str, int, tuple[int, ...], str]] = {}
    for (database, folder), run_ids in grouped.items():
        for start in range(0, len(run_ids), size):
            part = tuple(run_ids[start : start + size])
            chunks[(database, part[0])] = (database, part[0], part, folder)
    for outcome in run_tasks(export_chunk, list(chunks.values()), jobs=jobs, client=client):
        if outcome.ok:
            yield from outcome.payload
            continue
        _, _, together, _ = chunks[(outcome.database, int(outcome.run_id or 0))]
        for run_id in together:
            yield replace(outcome, run_id=run_id, message=_for_run(outcome, run_id, together))


def _for_run(outcome: Outcome, run_id: int, together: tuple[int, ...]) -> str:
    """The message of a chunk that died, for one of its runs."""
    ids = ", ".join(map(str, together))
    return (
        f"{outcome.database}, run {run_id}: its export task (runs {ids}) failed: {outcome.message}"
    )


def export_runs(
    paths: Sequence[str | Path],
    output: str | Path,
    run_ids: Sequence[int] | None = None,
    *,
    jobs: int = 1,
    client: Client | None = None,
) -> Iterator[Outcome]:
    """Export every run (or ``run_ids``) of every database under ``paths`` into
    ``output`` (see :func:`plan_exports`), yielding one :class:`Outcome` per run as it
    finishes, and first one failed outcome per database that could not be listed.
    ``jobs`` local processes, or the workers of a ``dask.distributed`` ``client``."""
    plan = plan_exports(paths, output, run_ids)
    yield from plan.failures
    yield from export_tasks(plan.tasks, jobs=jobs, client=client)
