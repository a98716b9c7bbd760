"""Exporting the layouts labs measure most: qcsql's export_hdf5 against QCoDeS 0.58's
export("netcdf"), same files, same session, one pytest-benchmark group per layout.

Each layout is one run of about ``QCSQL_BENCH_LAYOUT_VALUES`` values (4,000,000 by
default; fewer for a quick look) built by ``build_layout_dbs.py``. Peak RSS growth is
measured in fresh processes (``memory_probe.py``) for both exporters, and for qcsql
also on the same layout 4x smaller (``QCSQL_BENCH_GROWTH=0`` skips it), so that the
summary shows whether memory grows with the run (the run of the matrix is the 4x one). Nothing is asserted about
time or memory: the terminal summary prints a row per layout.

    pytest benchmarks/test_bench_layouts.py --benchmark-only
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.build_layout_dbs import LAYOUTS
from benchmarks.conftest import LAYOUT_MEMORY, cached_database, qcodes_copy
from benchmarks.test_bench_export import export_with_qcodes, export_with_qcsql, fresh_folders

pytest.importorskip("qcodes")

VALUES = int(os.environ.get("QCSQL_BENCH_LAYOUT_VALUES", 4_000_000))
GROWTH = os.environ.get("QCSQL_BENCH_GROWTH", "1") != "0"


def layout_db(layout: str, values: int = VALUES) -> Path:
    return cached_database(f"layout_{layout}_{values}.db", lambda p: LAYOUTS[layout](p, values))


def _probe(which: str, path: Path, layout: str, side: str) -> None:
    project = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_probe", which, str(path), "export"],
        capture_output=True,
        text=True,
        check=True,
        cwd=project,
    )
    LAYOUT_MEMORY.setdefault(layout, {})[side] = json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_qcsql(benchmark: Any, layout: str, tmp_path: Path) -> None:
    path = layout_db(layout)
    benchmark.group = f"layout, {layout}"
    out = benchmark.pedantic(
        export_with_qcsql,
        setup=fresh_folders(path, tmp_path),
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    assert out.stat().st_size > 0
    _probe("qcsql", path, layout, "qcsql")
    if GROWTH:
        _probe("qcsql", layout_db(layout, VALUES // 4), layout, "qcsql 1/4")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_qcodes(benchmark: Any, layout: str, tmp_path: Path) -> None:
    copy = qcodes_copy(layout_db(layout), tmp_path / "db")
    benchmark.group = f"layout, {layout}"
    benchmark.pedantic(export_with_qcodes, args=(copy, tmp_path), rounds=1, iterations=1)
    _probe("qcodes", copy, layout, "qcodes")
