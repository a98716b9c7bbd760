"""A QCoDeS 0.58 database whose runs take every fast path of qcsql, in WAL or rollback mode.

The page readers (numeric windows, the array blob readers), the streamed grid fill
and the complex sweep only engage on runs large and regular enough, so a test that
wants to prove something about *every* path of qcsql (that it keeps no lock, drops
no lock, is thread-safe) needs a file with all of them. Building takes a few
seconds; tests build it once per session (:func:`built_fastpath_db`) and work on copies
(:func:`fastpath_db`),
since QCoDeS and SQLite change what they open.

Runs, in order (run_id 1..5):

1. ``1-D sweep``: 300,000 numeric points of one dependent against one setpoint;
2. ``400 x 400 grid``: a complete shaped numeric grid, doNd style (shapes declared);
3. ``spectra``: 400 rows of 2,000-point array blobs against an array setpoint;
4. ``spectra over a gate``: 400 rows of 2,000-point array blobs against a numeric
   outer setpoint and an array inner one (the blob readers with a numeric column);
5. ``complex sweep``: 20,000 complex points (paramtype "complex") against a setpoint.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from tests.qcodes_build import new_database, parameters

__all__ = [
    "FASTPATH_RUNS",
    "build_fastpath_db",
    "built_fastpath_db",
    "fastpath_db",
    "journal_byte",
]

FASTPATH_RUNS = 5
SWEEP_POINTS = 300_000
GRID_SIDE = 400
SPECTRA, SPECTRUM_POINTS = 400, 2_000
COMPLEX_POINTS = 20_000
_BYTE_18 = {"wal": 2, "delete": 1}  # SQLite header byte 18: write format (2 = WAL, 1 = rollback)


def journal_byte(path: Path) -> int:
    """Byte 18 of the SQLite header: 2 for a WAL file, 1 for a rollback-journal file."""
    with path.open("rb") as handle:  # never used on a file a connection of this process holds
        return handle.read(100)[18]


def _write_runs(experiment: Any) -> None:
    from qcodes.dataset import Measurement

    x, y, z, gate, freq, spectrum, s21 = parameters(
        "x", "y", "z", "gate", "freq", "spectrum", "s21"
    )
    rng = np.random.default_rng(2024)

    sweep = Measurement(exp=experiment, name="1-D sweep")
    sweep.register_parameter(x)
    sweep.register_parameter(z, setpoints=(x,))
    with sweep.run() as saver:
        xs = np.linspace(-1.0, 1.0, SWEEP_POINTS)
        for chunk in np.array_split(np.arange(SWEEP_POINTS), 10):
            saver.add_result((x, xs[chunk]), (z, np.sin(7 * xs[chunk])))

    grid = Measurement(exp=experiment, name="400 x 400 grid")
    grid.register_parameter(x)
    grid.register_parameter(y)
    grid.register_parameter(z, setpoints=(x, y))
    grid.set_shapes({"z": (GRID_SIDE, GRID_SIDE)})
    ys = np.linspace(0.0, 2.0, GRID_SIDE)
    with grid.run() as saver:
        for xv in np.linspace(-1.0, 1.0, GRID_SIDE):
            saver.add_result((x, np.full(GRID_SIDE, xv)), (y, ys), (z, xv * ys))

    frequencies = np.linspace(4e9, 8e9, SPECTRUM_POINTS)
    spectra = Measurement(exp=experiment, name="spectra")
    spectra.register_parameter(freq, paramtype="array")
    spectra.register_parameter(spectrum, setpoints=(freq,), paramtype="array")
    with spectra.run() as saver:
        for _ in range(SPECTRA):
            saver.add_result((freq, frequencies), (spectrum, rng.normal(size=SPECTRUM_POINTS)))

    outer = Measurement(exp=experiment, name="spectra over a gate")
    outer.register_parameter(gate)
    outer.register_parameter(freq, paramtype="array")
    outer.register_parameter(spectrum, setpoints=(gate, freq), paramtype="array")
    with outer.run() as saver:
        for step in range(SPECTRA):
            saver.add_result(
                (gate, step * 1e-3),
                (freq, frequencies),
                (spectrum, rng.normal(size=SPECTRUM_POINTS)),
            )

    complex_sweep = Measurement(exp=experiment, name="complex sweep")
    complex_sweep.register_parameter(x)
    complex_sweep.register_parameter(s21, setpoints=(x,), paramtype="complex")
    with complex_sweep.run() as saver:
        xs = np.linspace(0.0, 1.0, COMPLEX_POINTS)
        saver.add_result((x, xs), (s21, np.exp(1j * 40 * xs) * (1 - xs)))


def build_fastpath_db(path: Path, journal_mode: str) -> None:
    """Write the fast-path runs (module docstring) to the new file ``path`` with QCoDeS'
    Measurement API, leaving a closed file in ``journal_mode`` "wal" or "delete" (rollback)
    with no -wal, -shm or -journal beside it."""
    if journal_mode not in _BYTE_18:
        raise ValueError(f"journal_mode must be 'wal' or 'delete', not {journal_mode!r}")
    experiment = new_database(path, "fast paths")  # initialise_database sets WAL by default
    try:
        _write_runs(experiment)
    finally:
        experiment.conn.close()
        del experiment
        gc.collect()  # QCoDeS data sets may keep connections of their own until collected
    # QCoDeS' connect() keeps the mode a file has, so a file switched back to DELETE here
    # stays a rollback-journal file when QCoDeS opens it again.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        mode = "DELETE" if journal_mode == "delete" else "WAL"
        (found,) = conn.execute(f"PRAGMA journal_mode={mode}").fetchone()
        if str(found).upper() != mode:
            raise RuntimeError(f"{path}: SQLite kept journal_mode {found!r}, not {mode}")
    left = [
        p.name
        for s in ("-wal", "-shm", "-journal")
        if (p := path.with_name(path.name + s)).exists()
    ]
    if left:
        raise RuntimeError(f"{path}: a connection is still open ({', '.join(left)} left)")
    if journal_byte(path) != _BYTE_18[journal_mode]:
        raise RuntimeError(f"{path}: header byte 18 is {journal_byte(path)}, not {journal_mode}")


_BUILT: dict[str, Path] = {}


def built_fastpath_db(tmp_path_factory: Any, journal_mode: str) -> Path:
    """The session's fast-path file in ``journal_mode``, built on first use; shared by every
    test of the session, so never open it with QCoDeS or write to it: copy it first.
    ``tmp_path_factory`` is pytest's, so the file lives in the session's temporary folder."""
    built = _BUILT.get(journal_mode)
    if built is None or not built.exists():
        built = tmp_path_factory.mktemp(f"fastpath-{journal_mode}-built") / "fastpath.db"
        build_fastpath_db(built, journal_mode)
        _BUILT[journal_mode] = built
    return built


def fastpath_db(tmp_path_factory: Any, journal_mode: str) -> Path:
    """A fresh copy of the session's fast-path file in ``journal_mode`` (40 MB: a test that
    makes many should delete them, since pytest keeps its temporary folders)."""
    copy: Path = tmp_path_factory.mktemp(f"fastpath-{journal_mode}") / "fastpath.db"
    shutil.copyfile(built_fastpath_db(tmp_path_factory, journal_mode), copy)
    return copy
