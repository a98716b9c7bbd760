"""The dataset the ``qcsql`` xarray engine gives for a run (see :mod:`qcsql.xarray_engine`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qcsql.export.attributes import DatasetSource
from qcsql.export.layout import MultiIndexUse, plan_run
from qcsql.xarray.convert import dataset_from_plan

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["open_run"]


def open_run(
    run: DatasetSource,
    *,
    drop_variables: frozenset[str] = frozenset(),
    use_multi_index: MultiIndexUse = "auto",
) -> xr.Dataset:
    """``run`` as ``to_xarray_dataset(use_multi_index=...)`` gives it, without the
    variables named in ``drop_variables`` (names it does not have are ignored)."""
    plan = plan_run(run, use_multi_index=use_multi_index)
    dataset = dataset_from_plan(plan, drop_variables)
    dropped = [name for name in drop_variables if name in dataset.variables]
    return dataset.drop_vars(dropped) if dropped else dataset
