"""Benchmark databases, built once with QCoDeS' own Measurement API and cached.

Every benchmark runs qcsql and QCoDeS 0.58 on the same file in the same
session (QCoDeS on a copy, since it may upgrade what it opens), in one
pytest-benchmark group; the terminal summary prints the ratio of their means. Where a
group also has a ``floor`` benchmark (the least any reader must do on this machine), the
summary says how close qcsql comes to it.

    pip install -e '.[test]'
    pytest benchmarks --benchmark-only
"""

from __future__ import annotations

import os
import tempfile

os.environ["HOME"] = tempfile.mkdtemp(prefix="qcsql-bench-home-")  # before qcodes is imported

import shutil  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
# (label, probe result) of every memory probe run in this session, for the summary.
MEMORY_REPORTS: list[tuple[str, dict[str, Any]]] = []
# (journal mode, commit-to-live-file delays in seconds) of the live-follow benchmark.
LATENCY_REPORTS: list[tuple[str, list[float]]] = []


def cached_database(name: str, build: Callable[[Path], None]) -> Path:
    """Build ``name`` once with ``build`` (under a temporary name, renamed when complete)."""
    CACHE.mkdir(exist_ok=True)
    target = CACHE / name
    if not target.exists():
        partial = CACHE / f".{name}.partial"
        for leftover in CACHE.glob(f".{name}.partial*"):
            leftover.unlink()
        build(partial)
        for side in ("-wal", "-shm"):
            assert not Path(str(partial) + side).exists(), "builder left SQLite side files"
        partial.rename(target)
    return target


def qcodes_copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / source.name
    shutil.copyfile(source, copy)
    return copy


def pytest_terminal_summary(terminalreporter: Any) -> None:
    session = getattr(terminalreporter.config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, dict[str, Any]] = {}
    for bench in session.benchmarks:
        if bench.stats is None:
            continue
        side = next((name for name in ("qcodes", "floor") if name in bench.name), "qcsql")
        groups.setdefault(bench.group or bench.name, {})[side] = bench.stats
    terminalreporter.section(
        "qcsql vs QCoDeS 0.58 (ratio of mean times; of median times; of the fastest rounds)"
    )
    for journal, delays in LATENCY_REPORTS:
        ordered = sorted(delays)
        median = ordered[len(ordered) // 2]
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        terminalreporter.write_line(
            f"live follow, {journal}, 20,000 rows/s: {len(delays)} commits, delay to the live file "
            f"median {median * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms"
        )
    for label, probe in MEMORY_REPORTS:
        terminalreporter.write_line(
            f"memory, {label}, {probe['reader']}: peak RSS grew {probe['peak_growth_bytes'] / 2**20:.0f} MiB"
            f" for {probe['returned_bytes'] / 2**20:.0f} MiB returned = {probe['ratio']:.2f}x"
        )
    for group, sides in sorted(groups.items()):
        if {"qcsql", "qcodes"} <= set(sides):
            ours, theirs = sides["qcsql"], sides["qcodes"]
            terminalreporter.write_line(
                f"{group}: qcsql {ours.mean * 1e3:.1f} ms, QCoDeS {theirs.mean * 1e3:.1f} ms"
                f" -> qcsql is {theirs.mean / ours.mean:.1f}x faster"
                f" (medians: {ours.median * 1e3:.1f} vs {theirs.median * 1e3:.1f} ms,"
                f" {theirs.median / ours.median:.1f}x;"
                f" fastest rounds: {ours.min * 1e3:.1f} vs {theirs.min * 1e3:.1f} ms,"
                f" {theirs.min / ours.min:.1f}x)"
            )
        if {"qcsql", "floor"} <= set(sides):
            ours, floor = sides["qcsql"], sides["floor"]
            terminalreporter.write_line(
                f"{group}: the file's bytes alone into fresh memory, on two threads, take"
                f" {floor.mean * 1e3:.1f} ms (median {floor.median * 1e3:.1f}, fastest"
                f" {floor.min * 1e3:.1f}); qcsql takes {ours.mean / floor.mean:.2f}x /"
                f" {ours.median / floor.median:.2f}x / {ours.min / floor.min:.2f}x that"
            )
