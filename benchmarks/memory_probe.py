"""Peak memory of one get_parameter_data call, measured in a fresh process.

    python -m benchmarks.memory_probe {qcsql|qcodes} DB [read|export|xarray|open|mean|inmemory]

(``xarray``: ``to_xarray_dataset()``; ``open`` and ``mean``, qcsql only:
``xr.open_dataset(DB, engine="qcsql")``, and the mean of its first data variable
with ``chunks={}`` (windows of 1,000,000 values), computed by Dask's threads;
``open_lazy`` and ``mean_lazy`` the same with ``lazy_coordinates=True,
create_default_indexes=False``: no setpoint held, no index built; ``open_h5netcdf``
and ``open_netcdf4``, qcsql only: qcsql's export of the run opened with xarray's own
engine, the floor of an open that builds xarray's default indexes; ``inmemory``, qcsql
only: the export through the in-memory plan whatever the layout,
``write_plan(plan_run(run), path)``, which every run no streamed plan fits takes.)

Prints JSON: the bytes of the returned arrays, the growth of the peak RSS during
the call (VmHWM, reset just before, minus the RSS just before), their ratio and
the time. (ru_maxrss is no use here: Linux carries it over from the parent.)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

Arrays = dict[str, dict[str, Any]]

# Jobs that open qcsql's netCDF export of the run with one of xarray's own engines: what
# xarray itself holds for the same data, beside what the qcsql engine holds.
NETCDF_ENGINES = {"open_h5netcdf": "h5netcdf", "open_netcdf4": "netcdf4"}


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _nbytes(data: Arrays) -> int:
    return sum(array.nbytes for tree in data.values() for array in tree.values())


def main() -> None:
    which, path = sys.argv[1], sys.argv[2]
    job = sys.argv[3] if len(sys.argv) > 3 else "read"
    out = tempfile.mkdtemp()
    read: Callable[[], Arrays]
    export: Callable[[], object]
    returned_bytes: Callable[[], Arrays]
    if which == "qcodes":
        os.environ["HOME"] = tempfile.mkdtemp()
        from qcodes.dataset import load_by_id
        from qcodes.dataset.sqlite.database import connect

        conn = connect(path)
        dataset = load_by_id(1, conn=conn)
        read = dataset.get_parameter_data
        export = lambda: dataset.export("netcdf", path=out)  # noqa: E731
        to_xarray = dataset.to_xarray_dataset
        returned_bytes = dataset.get_parameter_data
    else:
        import qcsql
        import qcsql.data.location  # imported lazily on first read: before measuring, as
        import qcsql.export.run  # QCoDeS' modules are, so that only the data count

        db = qcsql.open_database(path)
        run = db.load_by_id(1)
        read = run.get_parameter_data
        export = lambda: run.export_hdf5(out)  # noqa: E731
        to_xarray = run.to_xarray_dataset
        returned_bytes = read
        if job == "inmemory":
            from pathlib import Path

            from qcsql.export.layout import plan_run
            from qcsql.export.writer import write_plan

            export = lambda: write_plan(plan_run(run), Path(out) / "inmemory.nc")  # noqa: E731
        lazy: dict[str, Any] = (
            {"lazy_coordinates": True, "create_default_indexes": False}
            if job.endswith("_lazy")
            else {}
        )
        if job in ("xarray", "open", "mean", "open_lazy", "mean_lazy", *NETCDF_ENGINES):
            import dask.array  # noqa: F401  # imported before measuring, as above
            import xarray

            import qcsql.xarray.backend  # noqa: F401
            import qcsql.xarray_engine  # noqa: F401

            def open_run() -> object:
                return xarray.open_dataset(path, engine="qcsql", run_id=1, **lazy)

            if job in NETCDF_ENGINES:  # the floor: xarray's own engine on qcsql's export
                engine = NETCDF_ENGINES[job]
                __import__("netCDF4" if engine == "netcdf4" else engine)
                exported = run.export_hdf5(out)

                def open_run() -> object:
                    return xarray.open_dataset(exported, engine=engine)

            def mean() -> object:
                # chunks={}: windows of whole rows of 1,000,000 values
                chunked = xarray.open_dataset(path, engine="qcsql", run_id=1, chunks={}, **lazy)
                name = next(iter(chunked.data_vars))
                return float(chunked[name].mean().compute())

    reset_peak()
    before = status_bytes("VmRSS")
    started = time.perf_counter()
    if job == "read":
        data = read()
    elif job == "xarray":
        kept: object = to_xarray()  # noqa: F841  # held until the peak is read
    elif job in ("open", "open_lazy", *NETCDF_ENGINES):
        kept = open_run()  # noqa: F841
    elif job in ("mean", "mean_lazy"):
        mean()
    else:
        export()
    seconds = time.perf_counter() - started
    peak = status_bytes("VmHWM")
    returned = _nbytes(data if job == "read" else returned_bytes())
    print(
        json.dumps(
            {
                "reader": which,
                "job": job,
                "returned_bytes": returned,
                "peak_growth_bytes": peak - before,
                "ratio": (peak - before) / returned,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
