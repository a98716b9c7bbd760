"""The ``qcsql`` command: data on stdout, messages on stderr, exit 0 ok / 1 error / 2 usage.

Every failure is a :class:`~qcsql.errors.QcsqlError` by the time it reaches
:func:`main`, which prints it as one line (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from qcsql.audit import audit
from qcsql.database import Database, Run, open_database
from qcsql.errors import QcsqlError
from qcsql.export import default_file_name
from qcsql.export.writer import ExportError, LiveFile

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    return value


def run_record(run: Run) -> dict[str, Any]:
    """The light, JSON-ready description of a run that ``qcsql runs --json`` prints."""
    return {
        "run_id": run.run_id,
        "captured_run_id": run.captured_run_id,
        "counter": run.counter,
        "captured_counter": run.captured_counter,
        "guid": run.guid,
        "name": run.name,
        "exp_id": run.exp_id,
        "exp_name": run.exp_name,
        "sample_name": run.sample_name,
        "table_name": run.table_name,
        "run_timestamp_raw": run.run_timestamp_raw,
        "completed_timestamp_raw": run.completed_timestamp_raw,
        "completed": run.completed,
        "metadata": {key: _json_value(value) for key, value in run.metadata.items()},
    }


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


def cmd_info(db: Database, args: argparse.Namespace, out: TextIO) -> int:
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


def cmd_runs(db: Database, args: argparse.Namespace, out: TextIO) -> int:
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
    """One line on stderr, redrawn in place; silent unless stderr is a terminal."""

    def __init__(self, stream: TextIO, total: int, enabled: bool) -> None:
        self.stream, self.total = stream, total
        self.enabled = enabled and total > 0 and stream.isatty()

    def show(self, done: float, label: str) -> None:
        """``done`` runs, a fraction for the run under way."""
        if self.enabled:
            width = 30
            filled = int(width * done // self.total)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {int(done)}/{self.total} {label[:40]:<40}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


def cmd_export(db: Database, args: argparse.Namespace, out: TextIO) -> int:
    if args.all == bool(args.run):
        raise UsageError("give --run ID (one or more) or --all")
    target = Path(args.output).expanduser()
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is not a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"{target}: cannot create the output folder ({exc.strerror})", path=target
        ) from exc
    runs = db.runs() if args.all else [db.load_by_id(run_id) for run_id in args.run]
    progress = Progress(sys.stderr, len(runs), enabled=not args.quiet)
    started = time.perf_counter()
    written: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for index, run in enumerate(runs):
        label = f"run {run.run_id} {run.name or ''}"
        progress.show(index, label)

        def within(rows: int, expected: int, index: int = index, label: str = label) -> None:
            progress.show(index + min(rows / max(expected, 1), 1.0), f"{label} {rows:,} rows")

        try:
            path = run.export_hdf5(target, within)
        except QcsqlError as exc:
            failed.append({"run_id": run.run_id, "error": str(exc)})
            continue
        written.append(
            {
                "run_id": run.run_id,
                "guid": run.stable_guid,
                "path": str(path),
                "bytes": path.stat().st_size,
            }
        )
    progress.close()
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
        for item in written:
            out.write(f"run {item['run_id']}: {item['path']} ({item['bytes']:,} bytes)\n")
        for item in failed:
            out.write(f"run {item['run_id']}: FAILED: {item['error']}\n")
        out.write(
            f"exported {summary['files']} of {summary['runs']} runs, "
            f"{summary['bytes']:,} bytes in {summary['seconds']:.2f} s\n"
        )
    return EXIT_ERROR if failed else EXIT_OK


def cmd_follow(db: Database, args: argparse.Namespace, out: TextIO) -> int:
    if args.latest == (args.run is not None):
        raise UsageError("give --run ID or --latest")
    target = Path(args.output).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    if args.latest:
        runs = db.runs()
        if not runs:
            raise UsageError(f"{db.path} has no runs to follow")
        run = runs[-1]
    else:
        run = db.load_by_id(args.run)
    live = LiveFile(target / (default_file_name(run).removesuffix(".nc") + ".live.h5"))
    rows = 0
    reason = None
    try:
        for chunk in run.follow(poll_interval=args.poll, idle_timeout=args.idle_timeout):
            live.append(chunk.data, {"guid": run.stable_guid, "run_id": run.run_id})
            rows += chunk.rows
            reason = chunk.reason
            if not args.quiet and sys.stderr.isatty():
                sys.stderr.write(f"\rrun {run.run_id}: {rows:,} rows")
                sys.stderr.flush()
    finally:
        live.close()
    summary: dict[str, Any] = {
        "run_id": run.run_id,
        "rows": rows,
        "reason": reason,
        "live_file": str(live.path),
    }
    if reason == "completed":
        summary["export"] = str(db.load_by_id(run.run_id).export_hdf5(target))
    if args.json:
        _write_json(summary, out)
    else:
        out.write(
            f"run {run.run_id}: {rows:,} rows followed, {reason or 'stopped'}; live file {live.path}"
            + (f"; exported {summary['export']}" if "export" in summary else "")
            + "\n"
        )
    return EXIT_OK if reason == "completed" else EXIT_ERROR


def cmd_show(db: Database, args: argparse.Namespace, out: TextIO) -> int:
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
    except QcsqlError as exc:
        lines.append(f"  snapshot: unreadable ({exc})")
    else:
        if snapshot is None:
            lines.append("  snapshot: none")
        else:
            instruments = sorted((snapshot.get("station") or {}).get("instruments") or {})
            size = len(run.snapshot_raw or "")
            lines.append(
                f"  snapshot: {size:,} bytes; instruments: {', '.join(instruments) or '-'}"
            )
            meta = ((snapshot.get("station") or {}).get("instruments") or {}).get("qh_meta")
            if meta:
                tags = meta.get("parameters", {}).get("tags", {}).get("value")
                lines.append(f"  qh_meta tags: {tags}")
    out.write("\n".join(lines) + "\n")
    return EXIT_OK


def cmd_audit(db_path: str, args: argparse.Namespace, out: TextIO) -> int:
    report = audit(db_path, deep=args.deep)
    if args.json:
        _write_json(
            {
                "path": str(report.path),
                "schema_version": report.schema_version,
                "journal_mode": report.journal_mode,
                "runs_checked": report.runs_checked,
                "quick_check": report.quick_check,
                "healthy": report.healthy,
                "findings": [vars(f) for f in report.findings],
            },
            out,
        )
    else:
        out.write(
            f"{report.path}: schema v{report.schema_version}, {report.journal_mode} journal, "
            f"{report.runs_checked} runs checked, quick_check {'ok' if report.quick_check == ['ok'] else 'FAILED'}\n"
        )
        for finding in report.findings:
            where = f"run {finding.run_id}" if finding.run_id is not None else "file"
            out.write(f"  {finding.level:7} {where:>8}  {finding.code}: {finding.message}\n")
        out.write("healthy\n" if report.healthy else f"{len(report.findings)} findings\n")
    return EXIT_OK if report.healthy else EXIT_ERROR


class UsageError(Exception):
    """Arguments that parse but make no sense together."""


COMMANDS: dict[str, tuple[Callable[[Database, argparse.Namespace, TextIO], int], str]] = {
    "info": (cmd_info, "schema version, journal mode, size and counts of a database"),
    "runs": (cmd_runs, "list the runs of a database"),
    "export": (cmd_export, "export runs as xarray-compatible HDF5 (netCDF4) files"),
    "follow": (cmd_follow, "follow a running measurement into a live HDF5 file, then export it"),
    "show": (cmd_show, "one run for a person: parameters, units, shapes, metadata, snapshot"),
}
# Commands that take the path and open (or fail to open) the database themselves.
PATH_COMMANDS = {"audit": (cmd_audit, "a read-only health report; exit 1 when anything is found")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qcsql",
        description="Read QCoDeS databases of any schema version, read-only, without QCoDeS.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in {**COMMANDS, **PATH_COMMANDS}.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
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
                "-o", "--output", required=True, metavar="DIR", help="folder to write to (created)"
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
    return parser


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and EXIT_USAGE
    try:
        if args.command in PATH_COMMANDS:
            return PATH_COMMANDS[args.command][0](args.database, args, out)
        command, _ = COMMANDS[args.command]
        with open_database(args.database) as db:
            status = command(db, args, out)
    except UsageError as exc:
        err.write(f"qcsql {args.command}: usage error: {exc}\n")
        return EXIT_USAGE
    except QcsqlError as exc:
        if args.debug:
            traceback.print_exc(file=err)
        err.write(f"qcsql {args.command}: error: {exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:  # `qcsql runs db | head`
        return EXIT_OK
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
