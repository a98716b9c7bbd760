"""A genuine QCoDeS 0.58 measurement writing fast, for the live-follow tests and benchmark.

    python tests/live_writer.py DB JOURNAL_MODE SECONDS ROWS_PER_SECOND
    python tests/live_writer.py DB JOURNAL_MODE SECONDS ROWS_PER_SECOND sequence

Prints ``run <run_id>`` once the run has started and ``rows <n>`` when it is done;
QCoDeS' own log (where a failed commit would show) goes to stderr. The time of each of
QCoDeS' commits (after ``DataSaver.flush_data_to_database`` returns) is appended to
DB + ".commits" as ``<rows committed so far> <epoch seconds>`` lines, so the benchmark
can measure the delay until a follower has the rows.

With ``sequence`` it writes several runs one after the other instead, as a lab does
while a sync runs beside it: a 1-D sweep, a run whose second dependent starts only
after a while, a shaped 2-D grid, an array run, an interrupted run (never marked
completed, as when its process dies) and a run without rows, printing
``run <run_id>`` as each starts and ``runs <n>`` at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time

os.environ.setdefault("HOME", tempfile.mkdtemp(prefix="qcsql-writer-home-"))


def main(path: str, journal: str, seconds: float, rate: float) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    import numpy as np
    from qcodes.dataset import (
        Measurement,
        initialise_or_create_database_at,
        load_or_create_experiment,
    )
    from qcodes.dataset.measurements import DataSaver
    from qcodes.parameters import Parameter

    added = [0]  # rows handed to QCoDeS so far; a flush commits all of them
    commits = open(path + ".commits", "w")  # noqa: SIM115 - closed below
    flush = DataSaver.flush_data_to_database

    def timed_flush(self: DataSaver, *args: object, **kwargs: object) -> None:
        flush(self, *args, **kwargs)
        commits.write(f"{added[0]} {time.time()}\n")

    DataSaver.flush_data_to_database = timed_flush  # type: ignore[method-assign]
    initialise_or_create_database_at(path, journal_mode=journal)
    experiment = load_or_create_experiment("live", sample_name="fast writer")
    x = Parameter("x", unit="V", set_cmd=None, get_cmd=None)
    y = Parameter("y", unit="A", set_cmd=None, get_cmd=None)
    measurement = Measurement(exp=experiment, name="live sweep")
    measurement.register_parameter(x)
    measurement.register_parameter(y, setpoints=(x,))
    measurement.write_period = 0.05
    batch = 500
    written = 0
    with measurement.run() as saver:
        print(f"run {saver.run_id}", flush=True)
        started = time.time()
        while time.time() - started < seconds:
            values = np.arange(written, written + batch, dtype=float)
            written += batch
            added[0] = written
            saver.add_result((x, values), (y, 2 * values))
            delay = started + written / rate - time.time()
            if delay > 0:
                time.sleep(delay)
    commits.close()
    print(f"rows {written}", flush=True)


def sequence(path: str, journal: str, seconds: float, rate: float) -> None:
    """Several kinds of runs, each about ``seconds`` long at ``rate`` rows per second."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    import numpy as np
    from qcodes.dataset import (
        Measurement,
        initialise_or_create_database_at,
        load_or_create_experiment,
    )
    from qcodes.parameters import Parameter

    initialise_or_create_database_at(path, journal_mode=journal)
    experiment = load_or_create_experiment("sequence", sample_name="soak")
    x, y, z, g, f, s = (
        Parameter(name, set_cmd=None, get_cmd=None) for name in ("x", "y", "z", "g", "f", "s")
    )
    batch = 500
    runs = 0

    def measurement(name: str) -> Measurement:
        made = Measurement(exp=experiment, name=name)
        made.write_period = 0.05
        return made

    def paced(started: float, written: int) -> None:
        delay = started + written / rate - time.time()
        if delay > 0:
            time.sleep(delay)

    def swept(name: str, late_dependent: bool) -> None:
        """y(x) for ``seconds``; with ``late_dependent``, z(x) instead of y from half-time."""
        made = measurement(name)
        made.register_parameter(x)
        made.register_parameter(y, setpoints=(x,))
        if late_dependent:
            made.register_parameter(z, setpoints=(x,))
        with made.run() as saver:
            print(f"run {saver.run_id}", flush=True)
            started, written = time.time(), 0
            while time.time() - started < seconds:
                values = np.arange(written, written + batch, dtype=float)
                if late_dependent and time.time() - started >= seconds / 2:
                    saver.add_result((x, values), (z, values / 3))
                else:
                    saver.add_result((x, values), (y, 2 * values))
                written += batch
                paced(started, written)

    swept("sweep", late_dependent=False)
    swept("late dependent", late_dependent=True)  # its second dependent starts late
    runs += 2
    # a shaped 2-D grid
    grid = measurement("grid")
    grid.register_parameter(g)
    grid.register_parameter(x)
    grid.register_parameter(y, setpoints=(g, x))
    grid.set_shapes({"y": (20, 200)})
    with grid.run() as saver:
        print(f"run {saver.run_id}", flush=True)
        started = time.time()
        for step in range(20):
            columns = np.arange(200, dtype=float)
            saver.add_result((g, np.full(200, step)), (x, columns), (y, columns * step))
            paced(started, (step + 1) * 200)
    runs += 1
    # an array run
    spectra = measurement("spectra")
    spectra.register_parameter(f, paramtype="array")
    spectra.register_parameter(s, setpoints=(f,), paramtype="array")
    with spectra.run() as saver:
        print(f"run {saver.run_id}", flush=True)
        frequencies = np.linspace(4e9, 8e9, 100)
        for step in range(50):
            saver.add_result((f, frequencies), (s, frequencies * step))
            time.sleep(0.01)
    runs += 1
    # an interrupted run: its process "died" (it is never marked completed)
    from qcodes.dataset import new_data_set
    from qcodes.dataset.descriptions.dependencies import InterDependencies_

    interrupted = new_data_set("interrupted", exp_id=experiment.exp_id, conn=experiment.conn)
    interrupted.set_interdependencies(
        InterDependencies_(dependencies={y.param_spec: (x.param_spec,)})
    )
    interrupted.mark_started()
    print(f"run {interrupted.run_id}", flush=True)
    interrupted.add_results([{"x": float(i), "y": float(-i)} for i in range(1000)])
    runs += 1
    # a run without rows
    empty = measurement("empty")
    empty.register_parameter(x)
    empty.register_parameter(y, setpoints=(x,))
    with empty.run() as saver:
        print(f"run {saver.run_id}", flush=True)
    runs += 1
    print(f"runs {runs}", flush=True)


if __name__ == "__main__":
    if sys.argv[5:] == ["sequence"]:
        sequence(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    else:
        main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
