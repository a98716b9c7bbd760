"""Run every qcsql entry point on one (possibly damaged) database; report what escaped.

    python tests/corruption_probe.py DB OUTPUT_DIR

Prints one JSON line: ``raw`` lists exceptions that were not qcsql errors (each one a
bug), ``typed`` counts the qcsql errors raised, ``cli`` the exit codes of every command.
Run in a subprocess by the tests so that a hang is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import qcsql
from qcsql.audit import audit
from qcsql.cli import main as cli

raw: list[str] = []
typed: list[str] = []


def attempt(label: str, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except qcsql.QcsqlError as exc:
        typed.append(f"{label}: {type(exc).__name__}")
    except Exception as exc:  # noqa: BLE001 - this is what the probe looks for
        raw.append(f"{label}: {type(exc).__name__}: {exc} | {traceback.format_exc(limit=-3)}")
    return None


def exercise_run(run: qcsql.Run, out: Path) -> None:
    for name in (
        "description",
        "paramspecs",
        "shapes",
        "snapshot",
        "parent_dataset_links",
        "number_of_results",
    ):
        attempt(f"run {run.run_id} {name}", lambda name=name: getattr(run, name))
    attempt(f"run {run.run_id} get_parameter_data", run.get_parameter_data)
    attempt(f"run {run.run_id} export", lambda: run.export_hdf5(out))
    attempt(
        f"run {run.run_id} follow", lambda: list(run.follow(poll_interval=0.01, idle_timeout=0.05))
    )


def main(path: Path, out: Path) -> None:
    warnings.simplefilter("ignore", qcsql.QcsqlWarning)  # e.g. a damaged user_version
    db = attempt("open", lambda: qcsql.open_database(path))
    if db is not None:
        with db:
            attempt("summary", db.summary)
            attempt("experiments", db.experiments)
            runs = attempt("runs", db.runs) or []
            for run in runs[:20]:
                exercise_run(run, out)
            for run_id in (1, 2):
                run = attempt(f"load_by_id {run_id}", lambda run_id=run_id: db.load_by_id(run_id))
                if run is not None and run.guid:
                    attempt("load_by_guid", lambda run=run: db.load_by_guid(run.guid))
    attempt("audit", lambda: audit(path, deep=True))
    codes = {}
    for argv in (
        ["info"],
        ["runs"],
        ["runs", "--json"],
        ["show", "1"],
        ["audit", "--deep"],
        ["export", "--all", "-o", str(out / "cli"), "--quiet"],
        [
            "follow",
            "--run",
            "1",
            "-o",
            str(out / "live"),
            "--idle-timeout",
            "0.05",
            "--poll",
            "0.01",
            "--quiet",
        ],
    ):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = cli([argv[0], str(path), *argv[1:]], out=io.StringIO(), err=err)
            except Exception as exc:  # noqa: BLE001
                raw.append(f"cli {argv}: {type(exc).__name__}: {exc}")
                code = -1
        if "Traceback" in err.getvalue():
            raw.append(f"cli {argv}: traceback on stderr")
        codes[" ".join(argv)] = code
    print(json.dumps({"raw": raw, "typed": len(typed), "cli": codes}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
