"""A genuine QCoDeS 0.58 measurement writing fast, for the live-follow tests and benchmark.

    python tests/live_writer.py DB JOURNAL_MODE SECONDS ROWS_PER_SECOND

Prints ``run <run_id>`` once the run has started and ``rows <n>`` when it is done;
QCoDeS' own log (where a failed commit would show) goes to stderr. The time of each of
QCoDeS' commits (after ``DataSaver.flush_data_to_database`` returns) is appended to
DB + ".commits" as ``<rows committed so far> <epoch seconds>`` lines, so the benchmark
can measure the delay until a follower has the rows.
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
