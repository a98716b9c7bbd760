"""Build the data-reading benchmark databases with QCoDeS' own Measurement API.

* ``numeric``: one 1-D sweep of ``points`` numeric points (x, y), written as QCoDeS
  writes a fast sweep: add_result with numpy arrays, unrolled into rows.
* ``arrays``: ``rows`` results of a 1,000-point ``array`` parameter against an
  ``array`` setpoint, one blob per row and parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from qcodes.dataset.experiment_container import Experiment


def _experiment(path: Path, name: str) -> Experiment:
    from qcodes.dataset import initialise_or_create_database_at, load_or_create_experiment

    initialise_or_create_database_at(str(path))
    return load_or_create_experiment(name, sample_name="benchmark")


def build_numeric_database(path: Path, points: int = 10_000_000, per_call: int = 100_000) -> None:
    from qcodes.dataset import Measurement
    from qcodes.parameters import Parameter

    experiment = _experiment(path, "numeric_benchmark")
    x = Parameter("x", unit="V", set_cmd=None, get_cmd=None)
    y = Parameter("y", unit="A", set_cmd=None, get_cmd=None)
    measurement = Measurement(exp=experiment, name=f"sweep of {points} points")
    measurement.register_parameter(x)
    measurement.register_parameter(y, setpoints=(x,))
    rng = np.random.default_rng(1)
    with measurement.run() as saver:
        for first in range(0, points, per_call):
            xs = np.arange(first, min(first + per_call, points)) * 1e-6
            saver.add_result((x, xs), (y, np.sin(xs) + rng.normal(0, 1e-3, xs.size)))
    experiment.conn.close()


def build_array_database(path: Path, rows: int = 10_000, length: int = 1000) -> None:
    from qcodes.dataset import Measurement
    from qcodes.parameters import Parameter

    experiment = _experiment(path, "array_benchmark")
    freq = Parameter("freq", unit="Hz", set_cmd=None, get_cmd=None)
    spectrum = Parameter("spectrum", unit="dBm", set_cmd=None, get_cmd=None)
    measurement = Measurement(exp=experiment, name=f"{rows} spectra of {length} points")
    measurement.register_parameter(freq, paramtype="array")
    measurement.register_parameter(spectrum, setpoints=(freq,), paramtype="array")
    rng = np.random.default_rng(2)
    frequencies = np.linspace(4e9, 8e9, length)
    with measurement.run() as saver:
        for _ in range(rows):
            saver.add_result((freq, frequencies), (spectrum, rng.normal(-60, 3, length)))
    experiment.conn.close()
