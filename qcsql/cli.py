"""The ``qcsql`` command: data on stdout, messages on stderr, exit 0 ok / 1 error / 2 usage.

Every failure reaches :func:`main` and is printed there as one line on stderr,
``qcsql <command>: error: <message>`` (``usage error`` for arguments that make no sense,
exit 2), never a traceback unless ``--debug`` is given: a sync agent's log or a shell
script reads one line per failure. An export of several runs goes on past a failing run
and prints one error line per failing run. Warnings are one line too,
``qcsql <command>: warning: <message>``. Only the data and the summaries go to stdout.

Interrupts: Ctrl-C (SIGINT), SIGTERM (a service stop, ``kill``) and SIGHUP (the terminal
closed) all unwind the command as KeyboardInterrupt does, so the ``.partial`` file of an
export under way is removed and no half-written file remains; the exit status is then
128 + the signal's number, what a shell reports for a process that signal ended (130
for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP); :func:`main` returns it rather than ending
the process by the signal, so that a caller in the same process gets a status too. The
handlers (:class:`_Interrupts`) are installed by :func:`main` only, only in the main
thread, never over a signal that was ignored when qcsql started (``nohup`` keeps
working), and the previous handlers are put back before :func:`main` returns:
importing or calling the library installs nothing, and the library's own cleanup
(:mod:`qcsql.export.writer`) works for any exception that reaches it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import orjson

from qcsql.errors import QcsqlError
from qcsql.export.naming import EXPORT_SUFFIXES, default_file_name, make_folder, names_a_folder

if TYPE_CHECKING:  # the commands import what they need when they run: --help stays light
    from qcsql.archive.fanout import Outcome
    from qcsql.audit import AuditReport
    from qcsql.database import Database, Run

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL_BASE = 128  # exit status 128 + N: ended by signal N, as a shell reports it


@dataclass(frozen=True)
class Console:
    """Where a command writes: ``out`` for data, ``err`` for one line per message."""

    command: str
    out: TextIO
    err: TextIO

    def error(self, message: str) -> None:
        self.err.write(f"qcsql {self.command}: error: {_one_line(message)}\n")

    def warning(self, message: str) -> None:
        self.err.write(f"qcsql {self.command}: warning: {_one_line(message)}\n")

    def usage_error(self, message: str) -> None:
        self.err.write(f"qcsql {self.command}: usage error: {_one_line(message)}\n")


def _one_line(message: str) -> str:
    """A message as one line: a line break inside one would look like two messages."""
    return " ".join(message.splitlines())


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    return value


# What ``qcsql runs --json`` prints of a run, in this order (QCoDeS' ``DataSet`` names).
RUN_RECORD_FIELDS = (
    "run_id",
    "captured_run_id",
    "counter",
    "captured_counter",
    "guid",
    "name",
    "exp_id",
    "exp_name",
    "sample_name",
    "table_name",
    "run_timestamp_raw",
    "completed_timestamp_raw",
    "completed",
)


def run_record(run: Run) -> dict[str, Any]:
    """The light, JSON-ready description of a run that ``qcsql runs --json`` prints."""
    record: dict[str, Any] = {field: getattr(run, field) for field in RUN_RECORD_FIELDS}
    record["metadata"] = {key: _json_value(value) for key, value in run.metadata.items()}
    return record


def _first_line(text: str | None, width: int) -> str:
    line = (text or "").splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )


def _write_json(payload: Any, out: TextIO) -> None:
    out.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_info(db: Database, args: argparse.Namespace, console: Console) -> int:
    out = console.out
    summary = db.summary()
    record = {
        "path": str(summary.path),
        "schema_version": summary.schema_version,
        "journal_mode": summary.journal_mode,
        "access": summary.access,
        "size_bytes": summary.size_bytes,
        "wal_bytes": summary.wal_bytes,
        "experiments": summary.experiments,
        "runs": summary.runs,
        "completed_runs": summary.completed_runs,
        "metadata_columns": list(summary.metadata_columns),
    }
    if args.json:
        _write_json(record, out)
        return EXIT_OK
    wal = f" (+{summary.wal_bytes:,} bytes in -wal)" if summary.wal_bytes is not None else ""
    lines = [
        ("file", str(summary.path)),
        ("schema version", str(summary.schema_version)),
        ("journal mode", summary.journal_mode),
        ("read as", summary.access),
        ("size", f"{summary.size_bytes:,} bytes{wal}"),
        ("experiments", str(summary.experiments)),
        ("runs", f"{summary.runs} ({summary.completed_runs} completed)"),
        ("metadata columns", ", ".join(summary.metadata_columns) or "-"),
    ]
    _table([(f"{key}:", value) for key, value in lines], out)
    return EXIT_OK


def cmd_runs(db: Database, args: argparse.Namespace, console: Console) -> int:
    out = console.out
    runs = db.runs(start_run_id=args.start)
    if args.json:
        _write_json([run_record(run) for run in runs], out)
        return EXIT_OK
    if not runs:
        out.write(
            f"{db.path} has no runs"
            + (f" from run_id {args.start} on" if args.start > 1 else "")
            + "\n"
        )
        return EXIT_OK
    header = ("run_id", "exp", "sample", "name", "started", "done", "guid", "metadata")
    rows = [header]
    for run in runs:
        metadata = " ".join(
            f"{key}={_first_line(str(value), 20)}" for key, value in run.metadata.items()
        )
        rows.append(
            (
                str(run.run_id),
                _first_line(run.exp_name, 24),
                _first_line(run.sample_name, 20),
                _first_line(run.name, 32),
                run.run_timestamp() or "-",
                "yes" if run.completed else "no",
                run.guid or "-",
                _first_line(metadata, 60),
            )
        )
    _table(rows, out)
    return EXIT_OK


class Progress:
    """A command's progress on stderr (tqdm): done of total, rate and ETA, and for a batch
    the bytes written and the failures; drawn only when stderr is a terminal, so a log or
    a pipe gets none of it."""

    def __init__(self, stream: TextIO, total: int | None, enabled: bool, unit: str = "run") -> None:
        """``total`` None: a counter without end (rows of a followed run)."""
        self.bytes = 0
        self.failures = 0
        self._bar: Any = None
        if enabled and (total is None or total > 0) and stream.isatty():
            from tqdm import tqdm  # only when drawn: --help and pipes stay light

            self._bar = tqdm(
                total=total, file=stream, unit=unit, leave=False, dynamic_ncols=True, delay=0
            )

    def show(self, done: float, label: str) -> None:
        """``done`` items, a fraction for the one under way."""
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_description_str(_one_line(label)[:40], refresh=False)
            self._bar.refresh()

    def advance(self, size: int = 0, failed: bool = False) -> None:
        """One item of a batch finished, ``size`` bytes written."""
        self.bytes += size
        self.failures += failed
        if self._bar is not None:
            from tqdm import tqdm

            postfix = tqdm.format_sizeof(self.bytes, "B", 1024)
            if self.failures:
                postfix += f", {self.failures} failed"
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        """Erase the bar (before a message line; the next :meth:`show` draws it again)."""
        if self._bar is not None:
            self._bar.clear()

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _export_target(args: argparse.Namespace) -> Path:
    """Where ``export -o`` writes: a folder (created, as it always was) unless the path
    ends in .nc, .h5 or .hdf5 and is neither an existing folder nor a path ending in a
    separator; then it is the file, and takes exactly one ``--run``. The library's own
    rule (:func:`qcsql.export.run.export_target`) refuses a suffix-less file name instead,
    but ``-o`` has always named a folder."""
    output: str = args.output
    target = Path(output).expanduser()
    one_file = (
        not target.is_dir()
        and not names_a_folder(output)
        and target.suffix.lower() in EXPORT_SUFFIXES
    )
    if one_file:
        if args.all or len(args.run) != 1:
            raise UsageError(
                f"-o {output} names one file ({target.suffix}); it takes exactly one --run ID, "
                "give a folder to export several runs"
            )
        return target
    if target.exists() and not target.is_dir():
        raise UsageError(
            f"{target} is a file, not a folder; -o takes a folder, or a file name ending in "
            ".nc, .h5 or .hdf5 with one --run ID"
        )
    make_folder(target)
    return target


_RUN_WORD = re.compile(r"\brun (\d+)\b")


def _about_run(run_id: int, message: str) -> str:
    """``message``, prefixed with the run unless it names it already."""
    if str(run_id) in _RUN_WORD.findall(message):
        return message
    return f"run {run_id}: {message}"


def cmd_export(db: Database, args: argparse.Namespace, console: Console) -> int:
    if args.all == bool(args.run):
        raise UsageError("give --run ID (one or more) or --all")
    target = _export_target(args)
    out = console.out
    # A run that cannot be loaded fails alone, as one that cannot be written does.
    runs: list[Run | int] = list(db.runs()) if args.all else list(args.run)
    progress = Progress(console.err, len(runs), enabled=not args.quiet)
    started = time.perf_counter()
    written: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        for index, item in enumerate(runs):
            run_id = item if isinstance(item, int) else item.run_id
            try:
                run = db.load_by_id(item) if isinstance(item, int) else item
                label = f"run {run.run_id} {run.name or ''}"
                progress.show(index, label)

                def within(
                    rows: int, expected: int, index: int = index, label: str = label
                ) -> None:
                    progress.show(
                        index + min(rows / max(expected, 1), 1.0), f"{label} {rows:,} rows"
                    )

                path = run.export_hdf5(target, within)
                size = path.stat().st_size
            except (QcsqlError, OSError) as exc:
                message = _about_run(
                    run_id, str(exc) if isinstance(exc, QcsqlError) else _os_error(exc)
                )
                # The message goes to stderr only; the summary says which kind of error.
                failed.append({"run_id": run_id, "error_type": type(exc).__name__})
                progress.close()
                console.error(message)
                continue
            record = {
                "run_id": run.run_id,
                "guid": run.stable_guid,
                "path": str(path),
                "bytes": size,
            }
            written.append(record)
            if not args.json:  # as it goes: an interrupted --all still lists what it wrote
                progress.close()
                out.write(f"run {run.run_id}: {path} ({size:,} bytes)\n")
                out.flush()
    finally:
        progress.finish()
    summary = {
        "runs": len(runs),
        "files": len(written),
        "bytes": sum(item["bytes"] for item in written),
        "seconds": round(time.perf_counter() - started, 3),
        "written": written,
        "failed": failed,
    }
    if args.json:
        _write_json(summary, out)
    else:
        out.write(
            f"exported {summary['files']} of {summary['runs']} runs, "
            f"{summary['bytes']:,} bytes in {summary['seconds']:.2f} s"
            + (f", {len(failed)} failed" if failed else "")
            + "\n"
        )
    return EXIT_ERROR if failed else EXIT_OK


def cmd_follow(db: Database, args: argparse.Namespace, console: Console) -> int:
    if args.latest == (args.run is not None):
        raise UsageError("give --run ID or --latest")
    target = Path(args.output).expanduser()
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is a file, not a folder; -o takes a folder")
    make_folder(target)
    if args.latest:
        runs = db.runs()
        if not runs:
            raise UsageError(f"{db.path} has no runs to follow")
        run = runs[-1]
    else:
        run = db.load_by_id(args.run)
    from qcsql.sync.live_follow import LiveFollow, follow_into  # h5py only for following

    path = target / (default_file_name(run).removesuffix(".nc") + ".live.h5")
    progress = Progress(console.err, None, enabled=not args.quiet, unit="row")

    def show(follower: LiveFollow) -> None:
        progress.show(follower.rows, f"run {run.run_id}")

    try:
        result = follow_into(
            run,
            path,
            poll_interval=args.poll,
            idle_timeout=args.idle_timeout,
            live_errors="raise",
            on_step=show,
        )
    finally:
        progress.finish()
    rows, reason = result.rows, result.reason
    live_file = str(path) if path.exists() else None  # no rows, no file
    summary: dict[str, Any] = {
        "run_id": run.run_id,
        "rows": rows,
        "reason": reason,
        "live_file": live_file,
    }
    if reason == "completed":
        summary["export"] = str(db.load_by_id(run.run_id).export_hdf5(target))
    if args.json:
        _write_json(summary, console.out)
    else:
        console.out.write(
            f"run {run.run_id}: {rows:,} rows followed, {reason or 'stopped'}; "
            + (f"live file {live_file}" if live_file else "no live file (no rows)")
            + (f"; exported {summary['export']}" if "export" in summary else "")
            + "\n"
        )
    if reason == "completed":
        return EXIT_OK
    console.error(
        f"{db.path}, run {run.run_id}: did not complete; no new rows for {args.idle_timeout} s "
        "(--idle-timeout), so it was not exported"
    )
    return EXIT_ERROR


def cmd_show(db: Database, args: argparse.Namespace, console: Console) -> int:
    run = db.load_by_id(args.run_id)
    graph = run.description.interdependencies
    lines = [
        f"run {run.run_id} (captured {run.captured_run_id}): {_first_line(run.name, 80)}",
        f"  experiment: {run.exp_name} / sample: {run.sample_name}",
        f"  guid: {run.stable_guid}",
        f"  started: {run.run_timestamp() or '-'}   completed: {run.completed_timestamp() or 'no'}",
        f"  rows: {run.number_of_results}   results table: {run.table_name}",
        "  parameters:",
    ]
    specs = run.paramspecs
    for top in graph.top_level_parameters:
        _, setpoints, others = graph.tree_by_group(top)
        shape = (run.shapes or {}).get(top)
        spec = specs[top]
        axes = ", ".join(f"{s} [{specs[s].unit or '-'}]" for s in setpoints)
        lines.append(
            f"    {top} [{spec.unit or '-'}] {spec.paramtype}"
            + (f" shape {shape}" if shape else "")
            + (f"  vs {axes}" if setpoints else "")
        )
        for other in others:
            lines.append(
                f"      with {other} [{specs[other].unit or '-'}] {specs[other].paramtype}"
            )
    if run.metadata:
        lines.append("  metadata:")
        lines.extend(f"    {k}: {_first_line(str(v), 70)}" for k, v in run.metadata.items())
    try:
        snapshot = run.snapshot
    except QcsqlError as exc:  # the rest of the run is still worth showing
        console.warning(str(exc))
        lines.append("  snapshot: unreadable (see the warning on stderr)")
    else:
        if snapshot is None:
            lines.append("  snapshot: none")
        else:
            instruments = sorted((snapshot.get("station") or {}).get("instruments") or {})
            size = len(run.snapshot_raw or "")
            lines.append(
                f"  snapshot: {size:,} bytes; instruments: {', '.join(instruments) or '-'}"
            )
            from qcsql.sync.qh_meta import qh_meta_of

            try:
                meta = qh_meta_of(snapshot)
            except ValueError as exc:
                console.warning(
                    f"{db.path}, run {run.run_id}: the qh_meta instrument is malformed ({exc})"
                )
            else:
                if meta is not None:
                    lines.append(f"  qh_meta tags: {meta.tags}")
    console.out.write("\n".join(lines) + "\n")
    return EXIT_OK


def _audit_record(report: AuditReport) -> dict[str, Any]:
    return {
        "path": str(report.path),
        "schema_version": report.schema_version,
        "journal_mode": report.journal_mode,
        "runs_checked": report.runs_checked,
        "quick_check": report.quick_check,
        "healthy": report.healthy,
        "findings": [vars(f) for f in report.findings],
    }


def _write_audit_text(report: AuditReport, out: TextIO) -> None:
    out.write(
        f"{report.path}: schema v{report.schema_version}, {report.journal_mode} journal, "
        f"{report.runs_checked} runs checked, quick_check {'ok' if report.quick_check == ['ok'] else 'FAILED'}\n"
    )
    for finding in report.findings:
        where = f"run {finding.run_id}" if finding.run_id is not None else "file"
        out.write(f"  {finding.level:7} {where:>8}  {finding.code}: {finding.message}\n")
    out.write("healthy\n" if report.healthy else f"{len(report.findings)} findings\n")


def _not_healthy(report: AuditReport) -> str:
    errors = sum(finding.level == "error" for finding in report.findings)
    return (
        f"{report.path} is not healthy: {errors} errors and "
        f"{len(report.findings) - errors} warnings (the report is on stdout)"
    )


def cmd_audit(db_path: str, args: argparse.Namespace, console: Console) -> int:
    out = console.out
    from qcsql.audit import audit

    report = audit(db_path, deep=args.deep)
    if args.json:
        _write_json(_audit_record(report), out)
    else:
        _write_audit_text(report, out)
    if report.healthy:
        return EXIT_OK
    # The findings are the report (stdout); stderr says, once, that the audit failed.
    console.error(_not_healthy(report))
    return EXIT_ERROR


def cmd_sync(database: str, args: argparse.Namespace, console: Console) -> int:
    """Mirror the database into a folder (:mod:`qcsql.sync.mirror`): one line per run on
    stderr, with --json one JSON object per run on stdout."""
    from qcsql.sync.mirror import Mirror, SyncEvent, sync_config

    def report(event: SyncEvent) -> None:
        if args.json:
            console.out.write(orjson.dumps(event.as_dict()).decode() + "\n")
            console.out.flush()
        if event.action == "failed":  # one error line per run, as export prints
            console.error(event.message)
        elif event.action in ("live-file-ended", "resync", "busy", "deleted"):
            console.warning(event.message)
        elif not args.quiet:
            console.err.write(
                f"qcsql sync: run {event.run_id} {event.guid}: {event.action} ({event.status})\n"
            )
            console.err.flush()

    config = sync_config(database, args.set_up, args.attribute or [], args.snapshot_attributes)
    with Mirror(
        config, args.to, live=not args.no_live, idle_timeout=args.idle_timeout, on_event=report
    ) as mirror:
        if args.watch:
            mirror.watch(args.interval)
        else:
            mirror.sync_once(args.interval)
    return EXIT_ERROR if any(e.action == "failed" for e in mirror.problems) else EXIT_OK


# -- several databases and folders: the archive commands ---------------------------------


def _fans_out(args: argparse.Namespace) -> bool:
    """Whether ``export``/``audit`` take the batch path: several paths, a folder, or work
    spread over processes; one database file alone keeps the single-file behaviour."""
    paths: list[str] = args.database
    return len(paths) > 1 or Path(paths[0]).is_dir() or args.jobs > 1 or bool(args.dask)


@contextlib.contextmanager
def _fan_out_client(args: argparse.Namespace) -> Iterator[Any]:
    """The Dask client of ``--dask`` (None without it)."""
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: give 1 or more processes")
    if not args.dask:
        yield None
        return
    from qcsql.archive.fanout import dask_client

    workers = args.jobs if args.jobs > 1 else os.cpu_count() or 1
    with dask_client(args.dask, workers) as client:
        yield client


def _json_line(payload: Any, out: TextIO) -> None:
    out.write(orjson.dumps(payload).decode() + "\n")
    out.flush()


def _outcome_record(outcome: Outcome) -> dict[str, Any]:
    record = {k: v for k, v in vars(outcome).items() if k not in ("payload", "message")}
    record["warnings"] = list(outcome.warnings)
    return record


def _report_failure(outcome: Outcome, console: Console, progress: Progress) -> None:
    progress.close()
    console.error(outcome.message or f"{outcome.database}: {outcome.error_type}")


def cmd_export_batch(args: argparse.Namespace, console: Console) -> int:
    """``export`` of several databases or folders, or with ``--jobs``/``--dask``: one task
    per run, results as they finish, one JSON line each with ``--json``."""
    from qcsql.archive.fanout import export_tasks, plan_exports

    if args.all == bool(args.run):
        raise UsageError("give --run ID (one or more) or --all")
    target = Path(args.output).expanduser()
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is a file, not a folder; -o takes a folder here")
    out = console.out
    started = time.perf_counter()
    plan = plan_exports(args.database, target, None if args.all else args.run)
    if not plan.databases and not plan.failures:
        raise _nothing_found(args.database)
    progress = Progress(console.err, len(plan.tasks), enabled=not args.quiet)
    written = failed = size = 0
    try:
        with _fan_out_client(args) as client:
            outcomes = export_tasks(plan.tasks, jobs=args.jobs, client=client)
            for outcome in itertools.chain(plan.failures, outcomes):
                for message in outcome.warnings:
                    progress.close()
                    console.warning(message)
                if outcome.ok:
                    written += 1
                    size += outcome.bytes
                else:
                    failed += 1
                    _report_failure(outcome, console, progress)
                if outcome.run_id is not None:
                    progress.advance(outcome.bytes, not outcome.ok)
                if args.json:
                    _json_line(_outcome_record(outcome), out)
                elif outcome.ok:
                    progress.close()
                    out.write(
                        f"{outcome.database}, run {outcome.run_id}: {outcome.path} "
                        f"({outcome.bytes:,} bytes)\n"
                    )
                    out.flush()
    finally:
        progress.finish()
    seconds = round(time.perf_counter() - started, 3)
    summary = {
        "databases": plan.databases,
        "runs": len(plan.tasks),
        "files": written,
        "bytes": size,
        "seconds": seconds,
        "failed": failed,
        "skipped": [problem.path for problem in plan.skipped],
    }
    if args.json:
        _json_line({"summary": summary}, out)
    else:
        skipped = f", {len(plan.skipped)} other files skipped" if plan.skipped else ""
        out.write(
            f"exported {written} of {len(plan.tasks)} runs of {plan.databases} databases, "
            f"{size:,} bytes in {seconds:.2f} s"
            + (f", {failed} failed" if failed else "")
            + skipped
            + "\n"
        )
    return EXIT_ERROR if failed else EXIT_OK


def cmd_audit_batch(args: argparse.Namespace, console: Console) -> int:
    """``audit`` of several databases or folders: one task per file, each report as it
    finishes (one JSON line each with ``--json``)."""
    from qcsql.audit import AuditReport, audit_archive

    unhealthy = audited = 0
    with _fan_out_client(args) as client:
        for outcome in audit_archive(args.database, deep=args.deep, jobs=args.jobs, client=client):
            audited += 1
            report = outcome.payload
            if not isinstance(report, AuditReport):
                unhealthy += 1
                console.error(outcome.message or f"{outcome.database}: {outcome.error_type}")
                continue
            if args.json:
                _json_line(_audit_record(report), console.out)
            else:
                _write_audit_text(report, console.out)
            if not report.healthy:
                unhealthy += 1
                console.error(_not_healthy(report))
    if not audited:
        raise _nothing_found(args.database)
    return EXIT_ERROR if unhealthy else EXIT_OK


def _nothing_found(paths: Sequence[str]) -> QcsqlError:
    from qcsql.errors import DatabaseNotFoundError

    return DatabaseNotFoundError(
        f"{', '.join(paths)}: no QCoDeS database found (folders are searched recursively)"
    )


def cmd_catalog(args: argparse.Namespace, console: Console) -> int:
    """The catalogue of every run of every QCoDeS database under the paths: an SQLite file
    (``-o``, default ``catalog.db``; re-read only where files changed), or JSON lines."""
    from qcsql.archive import build_catalog, catalog_records, read_catalog, write_catalog

    output = (
        Path(args.output or "catalog.db").expanduser() if args.output or not args.json else None
    )
    previous = read_catalog(output) if output is not None else None
    started = time.perf_counter()
    bars: list[Progress] = []  # made once the walk knows how many files there are

    def step(done: int, total: int, path: str) -> None:
        if not bars:
            bars.append(Progress(console.err, total, enabled=not args.quiet, unit="file"))
        bars[0].show(done, Path(path).name)

    exclude = [output] if output is not None else []
    try:
        with _fan_out_client(args) as client:
            catalog = build_catalog(
                args.paths,
                previous,
                exclude=exclude,
                progress=step,
                jobs=args.jobs,
                client=client,
                checksums=not args.no_checksums,
            )
    finally:
        for bar in bars:
            bar.finish()
    if output is not None:
        write_catalog(catalog, output, previous)
    if args.json:
        for record in catalog_records(catalog):
            _json_line(record, console.out)
        return EXIT_OK
    databases = sum(entry.kind == "qcodes" for entry in catalog.files)
    # Counted, not listed: the runs of an unchanged archive's catalogue stay in its file.
    duplicates = catalog.duplicate_counts()
    kinds = Counter(problem.kind for problem in catalog.problems)
    by_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    console.out.write(
        f"{output}: {catalog.run_count()} runs in {databases} databases "
        f"({catalog.reused_files} files unchanged since the last catalogue), "
        f"{len(catalog.problems)} problems"
        + (f" ({by_kind})" if by_kind else "")
        + f", {duplicates.guids} guids in several places"
        + (f" ({duplicates.differing} with differing data)" if duplicates.differing else "")
        + f", {time.perf_counter() - started:.2f} s\n"
    )
    return EXIT_OK


ArchiveCommand = Callable[[argparse.Namespace, Console], int]
# Commands over several databases and folders (export and audit when they fan out).
ARCHIVE_COMMANDS: dict[str, ArchiveCommand] = {
    "catalog": cmd_catalog,
    "export": cmd_export_batch,
    "audit": cmd_audit_batch,
}
BATCH_COMMANDS = ("export", "audit")


class UsageError(Exception):
    """Arguments that parse but make no sense together."""


Command = Callable[["Database", argparse.Namespace, Console], int]
COMMANDS: dict[str, tuple[Command, str]] = {
    "info": (cmd_info, "schema version, journal mode, size and counts of a database"),
    "runs": (cmd_runs, "list the runs of a database"),
    "export": (cmd_export, "export runs as xarray-compatible HDF5 (netCDF4) files"),
    "follow": (cmd_follow, "follow a running measurement into a live HDF5 file, then export it"),
    "show": (cmd_show, "one run for a person: parameters, units, shapes, metadata, snapshot"),
}
# Commands that take the path and open (or fail to open) the database themselves.
PathCommand = Callable[[str, argparse.Namespace, Console], int]
PATH_COMMANDS: dict[str, tuple[PathCommand, str]] = {
    "audit": (cmd_audit, "a read-only health report; exit 1 when anything is found"),
    "sync": (cmd_sync, "mirror every run into a folder (export + record), live and crash-safe"),
}


class _ArgumentsRefused(Exception):
    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.message = prog, message


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors reach :func:`main` (one line on its ``err``) instead
    of usage text printed to sys.stderr and an exit."""

    def error(self, message: str) -> NoReturn:
        raise _ArgumentsRefused(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qcsql",
        description="Read QCoDeS databases of any schema version, read-only, without QCoDeS.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in {**COMMANDS, **PATH_COMMANDS}.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name in BATCH_COMMANDS:
            _add_fan_out_arguments(sub)
        else:
            sub.add_argument("database", help="path of the QCoDeS .db file")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        if name == "runs":
            sub.add_argument(
                "--start", type=int, default=1, metavar="RUN_ID", help="first run_id to list"
            )
        if name == "export":
            sub.add_argument("--run", type=int, nargs="+", metavar="ID", help="run_id(s) to export")
            sub.add_argument("--all", action="store_true", help="export every run")
            sub.add_argument(
                "-o",
                "--output",
                required=True,
                metavar="PATH",
                help="folder to write to (created), or with one --run a file name ending "
                "in .nc, .h5 or .hdf5",
            )
            sub.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "show":
            sub.add_argument("run_id", type=int, metavar="RUN", help="run_id to show")
        if name == "audit":
            sub.add_argument("--deep", action="store_true", help="decode every value of every run")
        if name == "follow":
            sub.add_argument("--run", type=int, metavar="ID", help="run_id to follow")
            sub.add_argument("--latest", action="store_true", help="follow the newest run")
            sub.add_argument(
                "-o", "--output", required=True, metavar="DIR", help="folder to write to (created)"
            )
            sub.add_argument(
                "--poll", type=float, default=0.2, metavar="S", help="seconds between polls"
            )
            sub.add_argument(
                "--idle-timeout",
                type=float,
                default=None,
                metavar="S",
                help="stop after this many seconds without new rows",
            )
            sub.add_argument("--quiet", action="store_true", help="no progress on stderr")
        if name == "sync":
            sub.add_argument("--to", required=True, metavar="DIR", help="the mirror folder")
            sub.add_argument("--set-up", required=True, metavar="NAME", help="the set-up")
            sub.add_argument(
                "--attribute", action="append", metavar="KEY=VALUE", help="a static attribute"
            )
            sub.add_argument("--watch", action="store_true", help="keep polling for changes")
            sub.add_argument(
                "--interval", type=float, default=1.0, metavar="S", help="seconds between polls"
            )
            sub.add_argument(
                "--no-live", action="store_true", help="wait for a running run to complete"
            )
            sub.add_argument(
                "--idle-timeout",
                type=float,
                default=600.0,
                metavar="S",
                help="a live run without new rows this long is exported as it stands",
            )
            sub.add_argument(
                "--snapshot-attributes",
                nargs="*",
                metavar="INSTRUMENT",
                help="instrument settings in the snapshot as attributes (all when none named)",
            )
            sub.add_argument("--quiet", action="store_true", help="no line per run on stderr")
    _add_catalog_parser(commands)
    return parser


def _add_fan_out_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "database",
        nargs="+",
        metavar="PATH",
        help="QCoDeS database files, or folders searched for them (recursively)",
    )
    _add_fan_out_options(sub)


def _add_fan_out_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="local processes to spread the work over"
    )
    sub.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="a dask.distributed scheduler to spread the work over; 'local' starts a "
        "LocalCluster of --jobs processes (needs qcsql[dask])",
    )


def _add_catalog_parser(commands: Any) -> None:
    help_text = "every run of every QCoDeS database under some folders, in one catalogue"
    sub = commands.add_parser("catalog", help=help_text, description=help_text)
    sub.add_argument("paths", nargs="+", metavar="PATH", help="files and folders (recursively)")
    sub.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="the catalogue (an SQLite file; default catalog.db, or none with --json)",
    )
    sub.add_argument("--json", action="store_true", help="JSON lines on stdout")
    sub.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sub.add_argument(
        "--no-checksums",
        action="store_true",
        help="do not read the data of runs found in several places to compare them",
    )
    _add_fan_out_options(sub)
    sub.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )


class _Signalled(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread like KeyboardInterrupt for SIGINT, so
    that every ``finally`` and cleanup (the export's ``.partial`` file) runs on the way out.
    A BaseException, as KeyboardInterrupt is: ``except Exception`` must not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _send_again(signum: int) -> None:
    """Send ``signum`` to this process once the main thread is past the finalizer that
    swallowed its exception (Python handles it in the main thread, whoever sends it)."""
    time.sleep(0.001)
    signal.raise_signal(signum)


class _Interrupts:
    """SIGTERM and SIGHUP as :class:`_Signalled`, and SIGINT as KeyboardInterrupt, while the
    block runs (see the module docstring), delivered until they reach :func:`_run`.

    Python runs a signal handler in the main thread at whatever bytecode comes next, and
    that may be a finalizer (a weakref callback, a ``__del__``): an exception raised
    there cannot propagate, Python prints it as "Exception ignored" and goes on, so the
    export would carry on to the end. The ``sys.unraisablehook`` installed meanwhile
    catches exactly that case and has the signal sent again a moment later, from another
    thread (sent from the hook, it would be handled at once, inside the hook, and be
    swallowed again), so that it raises once the finalizer is done. Other finalizer
    errors after an interrupt (objects whose ``__init__`` it cut short) are expected and
    silenced, unless ``--debug``.

    A repeat of a signal by the user while the first unwinds is ignored: it would
    interrupt the cleanup the first one started. SIGINT is taken over only from Python's
    own default handler, so a host program's, or an ignored SIGINT, stays as it was.
    """

    def __init__(self, debug: bool) -> None:
        self.received: int | None = None
        self._debug = debug
        self._again = False  # the last raise was swallowed: raise once more
        self._closing = False  # the command is over: raise nothing any more
        self._resend: threading.Thread | None = None
        self._previous: dict[int, Any] = {}
        self._previous_hook: Callable[[Any], Any] | None = None

    def _exception(self, signum: int) -> BaseException:
        return KeyboardInterrupt() if signum == signal.SIGINT else _Signalled(signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._closing:
            return  # the command has finished (or reported the interrupt already)
        if self.received is None:
            self.received = signum
        elif self._again:
            self._again = False
        else:
            return  # a repeat while the first unwinds
        raise self._exception(self.received)

    def _unraisable(self, unraisable: Any) -> None:
        if self.received is None:
            assert self._previous_hook is not None
            self._previous_hook(unraisable)
        elif isinstance(unraisable.exc_value, _Signalled | KeyboardInterrupt):
            if not self._closing:  # raise it again, outside the finalizer
                self._again = True
                self._resend = threading.Thread(
                    target=_send_again, args=(self.received,), daemon=True
                )
                self._resend.start()
        elif self._debug and self._previous_hook is not None:
            self._previous_hook(unraisable)

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal.signal works only there; and a host program owns signals
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            number = getattr(signal, name, None)
            if number is None:  # no SIGHUP on Windows
                continue
            previous = signal.getsignal(number)
            if previous is signal.SIG_IGN:  # nohup, or a parent that wants it ignored
                continue
            if number == signal.SIGINT and previous is not signal.default_int_handler:
                continue
            self._previous[number] = previous
            signal.signal(number, self._handle)
        if self._previous:
            self._previous_hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing = True
        if self._resend is not None:  # its signal must come while this handler is in place
            self._resend.join()
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            # None: a handler not set from Python; the default is the best restoration.
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        if self._previous_hook is not None:
            sys.unraisablehook = self._previous_hook
            self._previous_hook = None


@contextlib.contextmanager
def _warnings_as_lines(console: Console) -> Iterator[None]:
    """Warnings shown as one ``qcsql <command>: warning:`` line each, not Python's two
    (file:line and source); which warnings show is still up to the filters (``-W``)."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        console.warning(str(message))

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    if args.command in ARCHIVE_COMMANDS and (args.command == "catalog" or _fans_out(args)):
        status = ARCHIVE_COMMANDS[args.command](args, console)
        console.out.flush()
        return status
    if args.command in BATCH_COMMANDS:
        args.database = args.database[0]
    if args.command in PATH_COMMANDS:
        status = PATH_COMMANDS[args.command][0](args.database, args, console)
    else:
        from qcsql.database import open_database

        command, _ = COMMANDS[args.command]
        with open_database(args.database) as db:
            status = command(db, args, console)
    console.out.flush()  # a closed pipe fails here, not in the interpreter's exit
    return status


def _run(args: argparse.Namespace, console: Console, interrupts: _Interrupts) -> int:
    """The command's exit status; every exception it raises as one line on stderr."""
    debug = bool(args.debug)
    try:
        status = _dispatch(args, console)
    except UsageError as exc:
        console.usage_error(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:  # `qcsql runs db | head`: the reader has what it wanted
        _quiet_stdout(console.out)
        return EXIT_OK
    except _Signalled as exc:
        if debug:
            traceback.print_exc(file=console.err)
        console.error(f"interrupted by {exc}")
        return EXIT_SIGNAL_BASE + exc.signum
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc(file=console.err)
        console.error("interrupted by SIGINT")  # Ctrl-C
        return EXIT_SIGNAL_BASE + signal.SIGINT
    except Exception as exc:  # noqa: BLE001 - the one place every failure is printed
        if debug:
            traceback.print_exc(file=console.err)
        if isinstance(exc, QcsqlError):
            console.error(str(exc))
        elif isinstance(exc, OSError):
            console.error(_os_error(exc))
        elif isinstance(exc, Warning):  # a warning made an error by -W error
            console.error(str(exc))
        else:  # a bug: still one line, and the way to the traceback
            console.error(
                f"internal error: {type(exc).__name__}: {exc} (--debug shows the traceback)"
            )
        return EXIT_ERROR
    if interrupts.received is not None:  # the signal's exception was swallowed on the way
        console.error(f"interrupted by {signal.Signals(interrupts.received).name}")
        return EXIT_SIGNAL_BASE + interrupts.received
    return status


def _quiet_stdout(out: TextIO) -> None:
    """After a broken pipe, point the real stdout at /dev/null: the interpreter's flush
    at exit would otherwise fail again and print "Exception ignored" on stderr."""
    if out is not sys.stdout:
        return
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the ``qcsql`` command line ``argv`` (default ``sys.argv[1:]``); return the exit
    status. Data go to ``out`` (default stdout), messages to ``err`` (default stderr)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out):  # --help is data: it goes to ``out``
            args = parser.parse_args(argv)
    except _ArgumentsRefused as exc:
        err.write(f"{exc.prog}: usage error: {_one_line(exc.message)} (see {exc.prog} --help)\n")
        return EXIT_USAGE
    except SystemExit as exit_:  # --help
        return EXIT_OK if not exit_.code else EXIT_USAGE
    console = Console(args.command, out, err)
    interrupts = _Interrupts(debug=bool(args.debug))
    try:
        with interrupts, _warnings_as_lines(console):
            return _run(args, console, interrupts)
    except (_Signalled, KeyboardInterrupt) as exc:  # came as the handlers were put back
        signum = exc.signum if isinstance(exc, _Signalled) else int(signal.SIGINT)
        console.error(f"interrupted by {signal.Signals(signum).name}")
        return EXIT_SIGNAL_BASE + signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
