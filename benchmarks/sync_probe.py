"""Peak memory and time of a sync agent's work on one database, in a fresh process.

    python -m benchmarks.sync_probe {qcsql|qcodes} DB {record|sync}

``record``: what a sync agent needs to file run 1: qcsql's ``dataset_info`` (tags from
the description); QCoDeS' way, the eTiKeT agent's: ``load_by_id(1).to_xarray_dataset()``
and the ``long_name`` of every variable. ``sync``: the whole job for a database of one
run: ``qcsql sync``'s :class:`~qcsql.sync.mirror.Mirror` (export, record, state) against
QCoDeS' netCDF export of the run (what the agent uploads) plus its dataset for the tags.

Prints JSON: the process's peak RSS (VmHWM, absolute: what the issue's 200 MB bound is
about), its growth during the job, and the seconds the job took. Run QCoDeS on a copy.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.memory_probe import reset_peak, status_bytes


def _qcodes_job(path: str, job: str, out: str) -> Callable[[], object]:
    os.environ["HOME"] = tempfile.mkdtemp()
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(path)

    def record() -> object:
        dataset = load_by_id(1, conn=conn)
        xr = dataset.to_xarray_dataset()
        return {str(v.attrs.get("long_name") or n) for n, v in xr.variables.items()}

    def sync() -> object:
        dataset = load_by_id(1, conn=conn)
        dataset.export("netcdf", path=out)
        return record()

    return record if job == "record" else sync


def _qcsql_job(path: str, job: str, out: str) -> Callable[[], object]:
    import qcsql
    import qcsql.data.location  # imported lazily on first use: before measuring, as
    import qcsql.export.run  # QCoDeS' modules are, so that only the work counts
    import qcsql.sync.mirror
    from qcsql.sync import QCoDeSConfigData, dataset_info

    config = QCoDeSConfigData(database_path=Path(path), set_up="bench")
    db = qcsql.open_database(path)

    def record() -> object:
        return dataset_info(db.load_by_id(1), config)

    def sync() -> object:
        with qcsql.sync.mirror.Mirror(config, out, live=False) as mirror:
            mirror.sync_once()
        return mirror.cursor

    return record if job == "record" else sync


def main() -> None:
    which, path, job = sys.argv[1], sys.argv[2], sys.argv[3]
    out = tempfile.mkdtemp()
    work = (_qcodes_job if which == "qcodes" else _qcsql_job)(path, job, out)
    before = status_bytes("VmRSS")
    reset_peak()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    peak = status_bytes("VmHWM")
    print(
        json.dumps(
            {
                "reader": which,
                "job": job,
                "peak_rss_bytes": peak,
                "peak_growth_bytes": peak - before,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
