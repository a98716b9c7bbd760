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
