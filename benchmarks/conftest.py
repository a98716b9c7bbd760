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

import functools  # noqa: E402
import shutil  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
# (label, probe result) of every memory probe run in this session, for the summary.
MEMORY_REPORTS: list[tuple[str, dict[str, Any]]] = []
# (journal mode, commit-to-live-file delays in seconds) of the live-follow benchmark.
LATENCY_REPORTS: list[tuple[str, list[float]]] = []
# layout -> side ("qcsql", "qcsql 4x", "qcodes") -> memory probe result, for the summary.
LAYOUT_MEMORY: dict[str, dict[str, dict[str, Any]]] = {}
# Lines a benchmark computed itself (ratios between qcsql's own variants), for the summary.
EXTRA_REPORTS: list[str] = []


def fresh_process_probe(module: str, *arguments: str) -> dict[str, Any]:
    """The JSON report (its last stdout line) of ``python -m benchmarks.<module>
    arguments...``, run in a fresh process so that its peak RSS is its own."""
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *arguments],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


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
        named = ("qcodes", "physical_floor", "floor")  # the first a name holds is its side
        side = next((name for name in named if name in bench.name), "qcsql")
        groups.setdefault(bench.group or bench.name, {})[side] = bench.stats
    terminalreporter.section(
        "qcsql vs QCoDeS 0.58 (times and ratios: mean / median / fastest round)"
    )
    for journal, delays in LATENCY_REPORTS:
        ordered = sorted(delays)
        median = ordered[len(ordered) // 2]
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        terminalreporter.write_line(
            f"live follow, {journal}, 20,000 rows/s: {len(delays)} commits, delay to the live file "
            f"median {median * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms"
        )
    for line in EXTRA_REPORTS:
        terminalreporter.write_line(line)
    for label, probe in MEMORY_REPORTS:
        terminalreporter.write_line(
            f"memory, {label}, {probe['reader']}: peak RSS grew {probe['peak_growth_bytes'] / 2**20:.0f} MiB"
            f" for {probe['returned_bytes'] / 2**20:.0f} MiB returned = {probe['ratio']:.2f}x"
        )
    for group, sides in sorted(groups.items()):
        ours = sides.get("qcsql")
        if ours is not None and "qcodes" in sides:
            theirs = sides["qcodes"]
            terminalreporter.write_line(
                f"{group}: qcsql {_times(ours)}, QCoDeS {_times(theirs)}"
                f" -> qcsql is {_ratios(theirs, ours)} faster"
            )
        if ours is not None and "floor" in sides and not group.startswith("layout, "):
            floor = sides["floor"]
            terminalreporter.write_line(
                f"{group}: the file's bytes alone into fresh memory, on two threads,"
                f" {_times(floor)}; qcsql takes {_ratios(ours, floor)} that"
            )
    _layout_table(terminalreporter, groups)


def _layout_table(terminalreporter: Any, groups: dict[str, dict[str, Any]]) -> None:
    """One row per layout of test_bench_layouts: median export time of each, their ratio,
    and the peak RSS growth of a fresh process's export (qcsql also of the same layout 4x
    larger: "4x/1x" is how much more that one needs)."""
    rows = sorted(g for g in groups if g.startswith("layout, "))
    if not rows:
        return
    terminalreporter.write_line(
        f"{'layout':<22}{'qcsql s':>9}{'QCoDeS s':>10}{'ratio':>8}"
        f"{'RSS qcsql':>11}{'RSS QCoDeS':>12}{'RSS qcsql 4x':>13}{'4x/1x':>7}{'data MiB':>10}"
        f"{'floor s':>9}{'qcsql/floor':>13}{'bytes s':>9}{'qcsql/bytes':>13}"
    )
    for group in rows:
        layout = group.removeprefix("layout, ")
        sides = groups[group]
        ours, theirs = sides.get("qcsql"), sides.get("qcodes")
        memory = LAYOUT_MEMORY.get(layout, {})
        mib = functools.partial(_mib, memory)
        small, large = memory.get("qcsql"), memory.get("qcsql 4x")
        growth = (
            f"{large['peak_growth_bytes'] / small['peak_growth_bytes']:.2f}"
            if small and large and small["peak_growth_bytes"] > 0
            else "-"
        )
        ratio = f"{theirs.median / ours.median:.1f}x" if ours and theirs else "-"
        floor, physical = sides.get("floor"), sides.get("physical_floor")
        above = f"{ours.median / floor.median:.2f}x" if ours and floor else "-"
        above_bytes = f"{ours.median / physical.median:.2f}x" if ours and physical else "-"
        terminalreporter.write_line(
            f"{layout:<22}{_seconds(ours):>9}{_seconds(theirs):>10}{ratio:>8}"
            f"{mib('qcsql'):>11}{mib('qcodes'):>12}{mib('qcsql 4x'):>13}{growth:>7}"
            f"{mib('qcsql', 'returned_bytes'):>10}{_seconds(floor):>9}{above:>13}"
            f"{_seconds(physical):>9}{above_bytes:>13}"
        )


def _mib(memory: dict[str, dict[str, Any]], side: str, key: str = "peak_growth_bytes") -> str:
    probe = memory.get(side)
    return "-" if probe is None else f"{probe[key] / 2**20:.0f}"


def _seconds(stats: Any) -> str:
    return "-" if stats is None else f"{stats.median:.2f}"


_STATISTICS = ("mean", "median", "min")


def _times(stats: Any) -> str:
    """Mean / median / fastest round, in ms."""
    return " / ".join(f"{getattr(stats, name) * 1e3:.1f}" for name in _STATISTICS) + " ms"


def _ratios(slower: Any, faster: Any) -> str:
    return " / ".join(
        f"{getattr(slower, name) / getattr(faster, name):.1f}x" for name in _STATISTICS
    )
