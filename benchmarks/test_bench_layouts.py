"""Exporting the layouts labs measure most: qcsql's export_hdf5 against QCoDeS 0.58's
export("netcdf"), same files, same session, one pytest-benchmark group per layout.

Each layout is one run of about ``QCSQL_BENCH_LAYOUT_VALUES`` values (4,000,000 by
default; fewer for a quick look) built by ``build_layout_dbs.py``. Peak RSS growth is
measured in fresh processes (``memory_probe.py``) for both exporters, and for qcsql
also on the same layout 4x larger (``QCSQL_BENCH_GROWTH=0`` skips those builds), so
that the summary shows whether memory grows with the run. Nothing is asserted about
time or memory: the terminal summary prints a row per layout. Beside them, a floor:
every value of the run's results table read with plain sqlite3 (blobs into numpy
arrays, nothing laid out) and as many bytes as the exported file holds written with
h5py and synced, as the export does; and a physical floor: the database file's bytes
read and as many bytes as the export holds written and synced, nothing parsed.

    pytest benchmarks/test_bench_layouts.py --benchmark-only
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.build_layout_dbs import LAYOUTS
from benchmarks.conftest import LAYOUT_MEMORY, cached_database, qcodes_copy
from benchmarks.test_bench_export import (
    export_with_qcodes,
    export_with_qcsql,
    fresh_folders,
    probe_export,
)

pytest.importorskip("qcodes")

VALUES = int(os.environ.get("QCSQL_BENCH_LAYOUT_VALUES", 4_000_000))
GROWTH = os.environ.get("QCSQL_BENCH_GROWTH", "1") != "0"


def layout_db(layout: str, values: int = VALUES) -> Path:
    return cached_database(f"layout_{layout}_{values}.db", lambda p: LAYOUTS[layout](p, values))


def _probe(which: str, path: Path, layout: str, side: str) -> None:
    LAYOUT_MEMORY.setdefault(layout, {})[side] = probe_export(which, path)


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
        _probe("qcsql", layout_db(layout, 4 * VALUES), layout, "qcsql 4x")


def read_and_write_bytes(path: Path, out: Path, size: int) -> None:
    """The least an export does, with the plainest tools: every column of the run's
    results table read through Python's sqlite3 (each blob's values into one array per
    column), then as many bytes as the exported file holds written by h5py, synced."""
    import sqlite3

    import h5py

    uri = f"file:{path}?mode=ro&immutable=1"  # a built benchmark file: no side files
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        (table,) = conn.execute("SELECT result_table_name FROM runs WHERE run_id = 1").fetchone()
        names = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')][2:]
        quoted = ", ".join(f'"{name}"' for name in names)
        cursor = conn.execute(f'SELECT {quoted} FROM "{table}"')
        parts: list[list[tuple[Any, ...]]] = [[] for _ in names]
        while rows := cursor.fetchmany(4096):
            for part, column in zip(parts, zip(*rows, strict=True), strict=True):
                part.append(column)
    for part in parts:
        values = [value for column in part for value in column if value is not None]
        if values and isinstance(values[0], bytes):  # .npy blobs of one header: its values
            header = values[0].index(b"\n", 10) + 1  # an .npy header ends with a newline
            np.frombuffer(b"".join(values), np.uint8).reshape(len(values), -1)[:, header:].copy()
        else:
            np.array(values, dtype=np.float64)
    file = out / "floor.h5"
    with h5py.File(file, "w") as handle:
        handle.create_dataset("bytes", data=np.ones(size, dtype=np.uint8))
    with open(file, "rb+") as handle:
        os.fsync(handle.fileno())


def bytes_in_bytes_out(path: Path, out: Path, size: int) -> None:
    """The physical floor of an export: the database file's bytes read into memory and as
    many bytes as the exported file holds written and synced, nothing parsed or laid out
    (what no exporter can go below on this machine, whatever its decoder)."""
    with open(path, "rb") as handle:
        handle.read()
    payload = bytearray(size)
    with open(out / "bytes.bin", "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


# Two floors: what an exporter with the plainest tools does (sqlite3, h5py), and the
# physical one (bytes in, bytes out); the summary shows both beside qcsql.
FLOORS = {"floor": read_and_write_bytes, "physical_floor": bytes_in_bytes_out}


@pytest.mark.parametrize("floor", list(FLOORS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_floor(benchmark: Any, layout: str, floor: str, tmp_path: Path) -> None:
    path = layout_db(layout)
    size = export_with_qcsql(path, tmp_path).stat().st_size
    benchmark.group = f"layout, {layout}"
    rounds = iter(range(1_000_000))

    def setup() -> tuple[tuple[Path, Path, int], dict[str, Any]]:
        folder = tmp_path / f"round-{next(rounds)}"
        folder.mkdir()
        return (path, folder, size), {}

    benchmark.pedantic(FLOORS[floor], setup=setup, rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_qcodes(benchmark: Any, layout: str, tmp_path: Path) -> None:
    copy = qcodes_copy(layout_db(layout), tmp_path / "db")
    benchmark.group = f"layout, {layout}"
    # What QCoDeS' export imports on first use, imported before its single round is timed
    # (qcsql's rounds follow a warm-up round), so that no layout pays for it.
    import h5netcdf  # noqa: F401
    import qcodes.dataset  # noqa: F401
    import xarray  # noqa: F401

    benchmark.pedantic(export_with_qcodes, args=(copy, tmp_path), rounds=1, iterations=1)
    _probe("qcodes", copy, layout, "qcodes")
