"""The layouts labs measure most, each one run built with QCoDeS' own Measurement API.

Every builder takes ``values``, the number of values the run's dependent parameters
hold together (about 4,000,000 in the benchmark matrix), and writes one run as QCoDeS
writes it: numeric sweeps with ``add_result`` of numpy arrays (unrolled into rows),
array parameters one blob per row and parameter.

* ``sweep_1d``: y against a setpoint x that keeps rising.
* ``grid_shaped``: z on a doNd-style grid of (x, y), ``shapes`` declared.
* ``grid_unshaped``: the same grid without shapes (QCoDeS sorts it into levels).
* ``grid_two_dependents``: two dependents on one unshaped grid.
* ``spectra``: a 1,000-point spectrum (``array`` paramtype, its frequencies an
  ``array`` setpoint) per step of a swept power, no shapes: QCoDeS' (power, freq) grid.
* ``spectra_shaped``: the same with ``shapes`` declared (QCoDeS' direct layout).
* ``iq_traces``: complex IQ traces of 1,000 samples per gate step.
* ``time_trace``: a signal against a time setpoint that repeats (QCoDeS' ``index``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.build_data_dbs import _experiment

TRACE = 1000  # points of a spectrum or trace


@contextlib.contextmanager
def _no_live_cache() -> Iterator[None]:
    """QCoDeS grows a run's in-memory cache by concatenation on every add_result, which
    makes writing thousands of array rows quadratic (16,000 spectra: tens of minutes). The
    cache is never written to the database, so the builders switch it off."""
    from qcodes.dataset.data_set_cache import DataSetCache

    original = DataSetCache.add_data
    DataSetCache.add_data = lambda self, new_data: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        DataSetCache.add_data = original  # type: ignore[method-assign]


def _parameter(name: str, unit: str = "") -> Any:
    from qcodes.parameters import Parameter

    return Parameter(name, unit=unit, set_cmd=None, get_cmd=None)


def _grid_sides(cells: int) -> tuple[int, int]:
    outer = max(1, math.isqrt(cells))
    return outer, max(1, cells // outer)


def _build_1d(
    path: Path,
    values: int,
    names: tuple[str, str, tuple[str, str], tuple[str, str]],
    setpoint_of: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float64]],
    signal_of: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]],
    noise: float,
    seed: int,
) -> None:
    """One dependent against one setpoint, 100,000 rows per add_result: the setpoint's
    values are ``setpoint_of(row numbers)``, the dependent's ``signal_of`` them plus noise."""
    from qcodes.dataset import Measurement

    experiment_name, run_name, (setpoint_name, dependent_name), (unit, dependent_unit) = names
    experiment = _experiment(path, experiment_name)
    setpoint = _parameter(setpoint_name, unit)
    dependent = _parameter(dependent_name, dependent_unit)
    measurement = Measurement(exp=experiment, name=run_name)
    measurement.register_parameter(setpoint)
    measurement.register_parameter(dependent, setpoints=(setpoint,))
    rng = np.random.default_rng(seed)
    with _no_live_cache(), measurement.run() as saver:
        for first in range(0, values, 100_000):
            xs = setpoint_of(np.arange(first, min(first + 100_000, values)))
            noisy = signal_of(xs) + rng.normal(0, noise, xs.size)
            saver.add_result((setpoint, xs), (dependent, noisy))
    experiment.conn.close()


def build_sweep_1d(path: Path, values: int) -> None:
    names = ("sweep_1d", "1-D sweep", ("x", "y"), ("V", "A"))
    _build_1d(
        path,
        values,
        names,
        lambda rows: np.multiply(rows, 1e-6, dtype=np.float64),
        np.sin,
        1e-3,
        1,
    )


def _build_grid(path: Path, values: int, *, shaped: bool, dependents: int) -> None:
    from qcodes.dataset import Measurement

    experiment = _experiment(path, "grid")
    outer, inner = _grid_sides(values // dependents)
    x, y = _parameter("x", "V"), _parameter("y", "V")
    zs = [_parameter(f"z{i}" if dependents > 1 else "z", "A") for i in range(dependents)]
    measurement = Measurement(exp=experiment, name=f"{outer} x {inner} grid")
    measurement.register_parameter(x)
    measurement.register_parameter(y)
    for z in zs:
        measurement.register_parameter(z, setpoints=(x, y))
    if shaped:
        measurement.set_shapes({z.register_name: (outer, inner) for z in zs})
    rng = np.random.default_rng(3)
    ys = np.linspace(-1, 1, inner)
    with _no_live_cache(), measurement.run() as saver:
        for xv in np.linspace(-2, 2, outer):
            noise = [rng.normal(0, 1e-3, inner) for _ in zs]
            results = [(z, np.cos(xv * ys + i) + noise[i]) for i, z in enumerate(zs)]
            saver.add_result((x, np.full(inner, xv)), (y, ys), *results)
    experiment.conn.close()


def build_grid_shaped(path: Path, values: int) -> None:
    _build_grid(path, values, shaped=True, dependents=1)


def build_grid_unshaped(path: Path, values: int) -> None:
    _build_grid(path, values, shaped=False, dependents=1)


def build_grid_two_dependents(path: Path, values: int) -> None:
    _build_grid(path, values, shaped=False, dependents=2)


def _build_traces(path: Path, values: int, *, shaped: bool, complex_values: bool) -> None:
    from qcodes.dataset import Measurement

    experiment = _experiment(path, "traces")
    steps = max(1, values // TRACE)
    if complex_values:
        outer, axis, trace = _parameter("gate", "V"), _parameter("time", "s"), _parameter("iq", "V")
        axis_values = np.linspace(0, 1e-6, TRACE)
    else:
        outer, axis, trace = (
            _parameter("power", "dBm"),
            _parameter("freq", "Hz"),
            _parameter("spectrum", "dBm"),
        )
        axis_values = np.linspace(4e9, 8e9, TRACE)
    measurement = Measurement(exp=experiment, name=f"{steps} traces of {TRACE} points")
    measurement.register_parameter(outer)
    measurement.register_parameter(axis, paramtype="array")
    measurement.register_parameter(trace, setpoints=(outer, axis), paramtype="array")
    if shaped:
        measurement.set_shapes({trace.register_name: (steps, TRACE)})
    rng = np.random.default_rng(4)
    with _no_live_cache(), measurement.run() as saver:
        for value in np.linspace(-30, 0, steps):
            if complex_values:
                data: Any = rng.normal(0, 1, TRACE) + 1j * rng.normal(0, 1, TRACE)
            else:
                data = rng.normal(-60 + value / 10, 3, TRACE)
            saver.add_result((outer, value), (axis, axis_values), (trace, data))
    experiment.conn.close()


def build_spectra(path: Path, values: int) -> None:
    _build_traces(path, values, shaped=False, complex_values=False)


def build_spectra_shaped(path: Path, values: int) -> None:
    _build_traces(path, values, shaped=True, complex_values=False)


def build_iq_traces(path: Path, values: int) -> None:
    _build_traces(path, values, shaped=False, complex_values=True)


def build_time_trace(path: Path, values: int) -> None:
    names = ("time_trace", "repeated time traces", ("t", "signal"), ("s", "V"))
    times = np.arange(TRACE) * 1e-6
    setpoint = lambda rows: times[rows % TRACE]  # noqa: E731
    _build_1d(path, values, names, setpoint, lambda ts: np.sin(ts * 1e6), 1e-2, 5)


LAYOUTS: dict[str, Callable[[Path, int], None]] = {
    "sweep_1d": build_sweep_1d,
    "grid_shaped": build_grid_shaped,
    "grid_unshaped": build_grid_unshaped,
    "grid_two_dependents": build_grid_two_dependents,
    "spectra": build_spectra,
    "spectra_shaped": build_spectra_shaped,
    "iq_traces": build_iq_traces,
    "time_trace": build_time_trace,
}
