"""Databases written by QCoDeS 0.58 itself, for the tests that build their own runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import copy_database


def new_database(path: Path, experiment: str = "tests", sample: str = "s") -> Any:
    """Create the QCoDeS database ``path`` and return an experiment in it (close its
    ``conn`` when the runs are written)."""
    from qcodes.dataset import initialise_or_create_database_at, load_or_create_experiment

    initialise_or_create_database_at(str(path))
    return load_or_create_experiment(experiment, sample_name=sample)


def parameters(*names: str) -> list[Any]:
    """Manual QCoDeS parameters, one per name."""
    from qcodes.parameters import Parameter

    return [Parameter(name, set_cmd=None, get_cmd=None) for name in names]


def sweep(experiment: Any, name: str, setpoint: Any, *dependents: Any) -> Any:
    """A QCoDeS ``Measurement`` of ``dependents`` each against the one swept ``setpoint``
    (one tree each, rows of one tree holding the others' columns NULL where they are added
    apart)."""
    from qcodes.dataset import Measurement

    measurement = Measurement(exp=experiment, name=name)
    measurement.register_parameter(setpoint)
    for dependent in dependents:
        measurement.register_parameter(dependent, setpoints=(setpoint,))
    return measurement


def qcodes_export(path: Path, run_id: int, folder: Path) -> Path:
    """QCoDeS' own ``export("netcdf")`` of a run, from a copy of ``path``."""
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(copy_database(path, folder / "db")))
    try:
        dataset = load_by_id(run_id, conn=conn)
        dataset.export("netcdf", path=str(folder))
        return Path(dataset.export_info.export_paths["nc"])
    finally:
        conn.close()


def export_where_058_differs(path: Path, run_id: int, folder: Path) -> str | None:
    """None where QCoDeS 0.58 lays run ``run_id`` of ``path`` out as 0.62 does (compare
    with 0.58's export as usual); else the difference, named by
    :func:`tests.helpers.layout_differs_from_058`, once shown to be real: 0.58 exports a
    copy of the run, and qcsql's export (which follows 0.62) either fails with
    ``DirectLayoutError`` (0.62's ValueError: setpoints that form no complete grid) or
    holds other values or coordinates than 0.58's file."""
    import numpy as np
    import xarray as xr

    import qcsql
    from tests.helpers import NOT_A_GRID, layout_differs_from_058

    with qcsql.open_database(path) as db:
        run = db.load_by_id(run_id)
        difference = layout_differs_from_058(run)
        if difference is None:
            return None
        theirs = qcodes_export(path, run_id, folder / "qcodes-0.58")
        if difference.endswith(NOT_A_GRID):
            try:
                run.export_hdf5(folder / "refused.nc")
            except qcsql.DirectLayoutError:
                assert not (folder / "refused.nc").exists()
                return difference
            raise AssertionError(f"run {run_id}: {difference}, but qcsql exported it")
        ours = run.export_hdf5(folder / "qcsql-0.62.nc")
    with xr.open_dataset(theirs) as a, xr.open_dataset(ours) as b:
        same = set(a.variables) == set(b.variables) and all(
            a[name].shape == b[name].shape
            and np.allclose(a[name].values, b[name].values, rtol=2e-14, equal_nan=True)
            for name in a.variables
        )
    assert not same, f"run {run_id}: {difference}, but QCoDeS 0.58's file is qcsql's"
    return difference
