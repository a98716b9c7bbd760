"""Damaged inputs, built from copies of genuine databases, through every entry point.

Every failure must be a qcsql error (or an audit finding), nothing may hang (each
input runs in a subprocess with a time limit), no export may be left half-written,
and the damaged input itself must not change. Every command of the CLI then runs on the
same input in process, and each failure must be one line on stderr: no traceback, no
error text on stdout (see :func:`_check_command`).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import pytest

import qcsql
from qcsql.cli import COMMANDS, PATH_COMMANDS
from qcsql.cli import main as cli
from tests.helpers import EXAMPLE_DB, LEGACY, FileState, copy_database

PROBE = Path(__file__).with_name("corruption_probe.py")
SOURCES = [EXAMPLE_DB, LEGACY / "v4_qcodes-0.2.1.db"]


def _sql(*statements: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        # closing(): sqlite3's own context manager commits but leaves the connection (and
        # a WAL file's -wal/-shm) open until garbage collection.
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            for statement in statements:
                conn.execute(statement)

    return damage


def _column_of(path: Path, declared: str) -> tuple[str, str]:
    """(results table, column) of the first column of this declared type in any run."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for (table,) in conn.execute("SELECT result_table_name FROM runs ORDER BY run_id"):
            for row in conn.execute(f'PRAGMA table_info("{table}")'):
                if str(row[2]).lower() == declared:
                    return table, row[1]
    raise sqlite3.OperationalError(f"no {declared} column")


def _damage_column(declared: str, value: str, where: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        table, column = _column_of(path, declared)
        _sql(f'UPDATE "{table}" SET "{column}" = {value} WHERE {where}')(path)

    return damage


def _drop_first_results_table(path: Path) -> None:
    table, _ = _column_of(path, "numeric")
    _sql(f'DROP TABLE "{table}"')(path)


def _truncate(fraction: float) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: max(100, int(len(data) * fraction))])

    return damage


def _flip_bits(seed: int, pages: int = 3) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        rng = random.Random(seed)
        page_size = 4096
        for _ in range(pages):
            page = rng.randrange(1, len(data) // page_size)  # page 1 (the schema) is safer to keep
            for _ in range(16):
                offset = page * page_size + rng.randrange(page_size)
                data[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))

    return damage


def _write(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "truncated-half": _truncate(0.5),
    "truncated-tenth": _truncate(0.1),
    "truncated-header": _truncate(0.0),
    **{f"bit-flips-{seed}": _flip_bits(seed) for seed in range(6)},
    "empty": _write(b""),
    "text": _write(b"lab notes, not a database\n" * 50),
    "dropped-runs": _sql("DROP TABLE runs"),
    "dropped-results": _drop_first_results_table,
    "bad-description": _sql('UPDATE runs SET run_description = \'{"version": 3, "interdep\''),
    "bad-snapshot": _sql("UPDATE runs SET snapshot = '[1, 2'"),
    "bad-blob": _damage_column("array", "X'93'", "id % 3 = 0"),
    "wrong-type": _damage_column("numeric", "'left'", "id = 2"),
    "user-version-99": _sql("PRAGMA user_version = 99"),
}


def _make(source: Path, name: str, folder: Path) -> Path:
    path = copy_database(source, folder)
    try:
        DAMAGES[name](path)
    except sqlite3.Error:
        pytest.skip(f"{name} does not apply to {source.name}")
    return path


def _probe(path: Path, out: Path) -> dict[str, Any]:
    """Run tests/corruption_probe.py on ``path`` in a subprocess (a hang is a timeout)."""
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "tests.corruption_probe", str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _commands(out: Path) -> list[list[str]]:
    """Every command of the CLI, with the options that change how it fails or prints."""
    follow = ["--idle-timeout", "0.05", "--poll", "0.01", "--quiet"]
    return [
        ["info"],
        ["info", "--json"],
        ["runs"],
        ["runs", "--json"],
        ["show", "1"],
        ["show", "2"],
        ["audit"],
        ["audit", "--deep", "--json"],
        ["export", "--all", "--quiet", "-o", str(out / "all")],
        ["export", "--run", "1", "2", "--json", "--quiet", "-o", str(out / "json")],
        ["export", "--run", "1", "--quiet", "-o", str(out / "one.nc")],
        ["follow", "--run", "1", "-o", str(out / "live"), *follow],
        ["follow", "--latest", "--json", "-o", str(out / "latest"), *follow],
        ["sync", "--to", str(out / "mirror"), "--set-up", "x", "--quiet", "--idle-timeout", "0.05"],
    ]


def _failed_runs(argv: list[str], stdout: str) -> int | None:
    """How many runs an export says failed, from its summary (None: no summary)."""
    if "--json" in argv:
        return len(json.loads(stdout)["failed"]) if stdout else None
    summary = re.search(r"^exported (\d+) of (\d+) runs", stdout, re.MULTILINE)
    return int(summary[2]) - int(summary[1]) if summary else None


def _check_command(path: Path, argv: list[str]) -> None:
    """Run ``qcsql argv[0] path argv[1:]`` in process and check the CLI's contract."""
    command = argv[0]
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():  # as a command-line program shows them (pytest: errors)
        warnings.filterwarnings("default", category=qcsql.QcsqlWarning)
        status = cli([command, str(path), *argv[1:]], out=out, err=err)
    stdout, stderr = out.getvalue(), err.getvalue()
    where = f"qcsql {' '.join(argv)} -> {status}\nstdout: {stdout[-1500:]}\nstderr: {stderr}"
    assert status in (0, 1), where
    assert "Traceback" not in stderr, where
    # (a run's metadata may quote one: QCoDeS keeps a failed measurement's traceback)
    assert not re.search(r"^Traceback \(most recent call last\)", stdout, re.MULTILINE), where
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith(f"qcsql {command}: error: ")]
    warned = [line for line in lines if line.startswith(f"qcsql {command}: warning: ")]
    assert len(errors) + len(warned) == len(lines), where  # nothing but message lines
    assert not [line for line in errors if "internal error" in line], where  # a bug
    if command == "export" and (failed := _failed_runs(argv, stdout)) is not None:
        assert len(errors) == failed and status == (1 if failed else 0), where
    elif command == "sync":  # one line per run that failed, and the sync goes on
        assert status == (1 if errors else 0), where
    else:
        assert len(errors) == status, where  # exactly one line for a failure, none for success
    if "--json" in argv and stdout:
        json.loads(stdout)  # data, parseable, even beside a failure
    if command != "audit":  # audit's findings are its report, the data it prints
        for line in errors + warned:
            message = line.split(": ", 2)[2]
            assert message not in stdout, where
        assert "FAILED" not in stdout, where


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_damaged_database(source: Path, damage: str, tmp_path: Path) -> None:
    path = _make(source, damage, tmp_path / "input")
    before = FileState.of(path)
    out = tmp_path / "out"
    report = _probe(path, out)
    assert report["raw"] == [], "\n".join(report["raw"])
    assert set(report["cli"].values()) <= {0, 1}, report["cli"]
    assert FileState.of(path) == before
    for argv in _commands(tmp_path / "cli"):
        _check_command(path, argv)
    assert FileState.of(path) == before
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if ".partial" in p.name]
    for exported in (p for p in leftovers if p.suffix == ".nc"):
        with h5py.File(exported, "r"):
            pass  # complete, or it would not be there


def test_the_commands_checked_are_all_the_commands() -> None:
    """A command added to the CLI must be added to the damaged-input checks too."""
    assert set(COMMANDS) | set(PATH_COMMANDS) == {argv[0] for argv in _commands(Path("out"))}


def test_a_directory_named_like_a_database(tmp_path: Path) -> None:
    folder = tmp_path / "looks.db"
    folder.mkdir()
    report = _probe(folder, tmp_path / "out")
    assert report["raw"] == [] and set(report["cli"].values()) == {1}
    for argv in _commands(tmp_path / "cli"):
        _check_command(folder, argv)
