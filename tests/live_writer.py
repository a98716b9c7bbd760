"""A genuine QCoDeS 0.58 measurement writing fast, for the live-follow tests and benchmark.

    python tests/live_writer.py DB JOURNAL_MODE SECONDS ROWS_PER_SECOND

Prints ``run <run_id>`` once the run has started and ``rows <n>`` when it is done;
QCoDeS' own log (where a failed commit would show) goes to stderr. Each commit's
time is appended to DB + ".commits" (``<last row id> <epoch seconds>`` lines), so the
benchmark can measure the delay until a follower has the rows.
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
    from qcodes.parameters import Parameter

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
    with open(path + ".commits", "w") as commits, measurement.run() as saver:
        print(f"run {saver.run_id}", flush=True)
        started = time.time()
        while time.time() - started < seconds:
            values = np.arange(written, written + batch, dtype=float)
            saver.add_result((x, values), (y, 2 * values))
            written += batch
            commits.write(f"{written} {time.time()}\n")
            delay = started + written / rate - time.time()
            if delay > 0:
                time.sleep(delay)
    print(f"rows {written}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
