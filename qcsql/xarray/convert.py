"""A dataset plan as the ``xarray.Dataset`` QCoDeS' ``to_xarray_dataset()`` returns.

The plan is what QCoDeS' netCDF export writes, so the one thing to undo here is the
encoding of a multi-index: in the file (and the plan) it is cf_xarray's compression by
gathering (each level a dimension of its sorted unique values, ``multi_index`` the flat
grid position of each row); in memory QCoDeS has a pandas ``MultiIndex`` along
``multi_index``, whose levels are coordinates along it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from qcsql.export.layout import INDEX, MULTI_INDEX, DatasetPlan

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["dataarrays", "dataset_from_plan", "range_positions"]


def dataset_from_plan(
    plan: DatasetPlan, drop_variables: frozenset[str] = frozenset()
) -> xr.Dataset:
    """The in-memory dataset of ``plan`` (its variables' arrays are used, not copied).
    Names in ``drop_variables`` are left out (a level of a multi-index cannot be)."""
    import xarray as xr
    from xarray.core.indexing import ExplicitlyIndexed

    compressed = plan.variables.get(MULTI_INDEX)
    levels = (
        compressed.attrs["compress"].split()
        if compressed is not None and "compress" in compressed.attrs
        else []
    )
    coords: dict[str, xr.Variable] = {}
    data_vars: dict[str, xr.Variable] = {}
    for variable in plan.variables.values():
        if variable.name in levels or (levels and variable.name == MULTI_INDEX):
            continue
        if variable.name in drop_variables:
            continue
        target = coords if variable.is_coord else data_vars
        target[variable.name] = xr.Variable(variable.dims, variable.data, dict(variable.attrs))
    dataset = xr.Dataset(data_vars, coords=_range_index(coords, plan), attrs=dict(plan.attrs))
    unindexed: dict[str, xr.Variable] = {}
    for name, coordinate in list(coords.items()):
        if coordinate.dims != (name,):
            continue
        if isinstance(plan.variables[name].data, ExplicitlyIndexed):
            # lazy: xarray's open_dataset indexes it (loading it) unless told not to
            unindexed[name] = coords.pop(name)
        elif coordinate.dtype.kind in "fiu":
            dataset = dataset.assign_coords(_index_sharing(name, coords.pop(name)))
            dataset.coords[name].attrs.update(coordinate.attrs)
    if unindexed:
        dataset = dataset.assign_coords(xr.Coordinates(unindexed, indexes={}))
    if levels:
        assert compressed is not None
        dataset = dataset.assign_coords(_multi_index(plan, levels, compressed.data))
        for level in levels:
            dataset.coords[level].attrs.update(plan.variables[level].attrs)
    return _in_memory_order(dataset.assign_coords(coords), plan)


def _in_memory_order(dataset: xr.Dataset, plan: DatasetPlan) -> xr.Dataset:
    """The variables listed in the order of QCoDeS' dataset (the plan's is its file's, and
    building the dataset above lists data variables before coordinates); selecting them
    by name reorders without copying any array."""
    if plan.memory_order is None:
        return dataset
    present = [str(name) for name in dataset.variables]  # the plan's names are str
    order = [name for name in plan.memory_order if name in present]
    order += [name for name in present if name not in plan.memory_order]
    if order == present:
        return dataset
    return dataset[order]


def _index_sharing(name: str, variable: xr.Variable) -> xr.Coordinates:
    """A dimension coordinate whose pandas index uses the plan's array: xarray would copy
    it (the setpoints of a 10-million-point sweep are 80 MB)."""
    import pandas as pd
    import xarray as xr

    index = pd.Index(variable.values, copy=False, name=name)
    return xr.Coordinates.from_xindex(xr.indexes.PandasIndex(index, name))


def range_positions(size: int) -> Any:
    """0..size-1 along ``index`` as the ``RangeIndex`` QCoDeS' dataset has, not as numbers
    (80 MB for 10 million rows); see :func:`_range_index`."""
    import pandas as pd

    return pd.RangeIndex(size, name=INDEX)


def _is_arange(values: Any) -> bool:
    """Whether ``values`` are 0, 1, ..., n-1 (integers rising strictly from 0 to n-1 are
    nothing else), without another array of n integers to compare with."""
    if values.dtype != np.int64:
        return False
    if not len(values):
        return True
    return bool(
        values[0] == 0 and values[-1] == len(values) - 1 and np.all(values[1:] > values[:-1])
    )


def _range_index(coords: dict[str, xr.Variable], plan: DatasetPlan) -> xr.Coordinates:
    """An ``index`` of 0..n-1 as the ``RangeIndex`` pandas (so QCoDeS) gives it, taken
    out of ``coords``. A lazy plan's ``index`` is a ``RangeIndex`` already, never held
    as n integers."""
    import pandas as pd
    import xarray as xr

    index = coords.get(INDEX)
    if index is None or index.dims != (INDEX,):
        return xr.Coordinates()
    planned = plan.variables[INDEX].data
    if isinstance(planned, pd.RangeIndex) and planned.start == 0 and planned.step == 1:
        size = len(planned)
    elif _is_arange(index.values):
        size = len(index)
    else:
        return xr.Coordinates()
    del coords[INDEX]
    return xr.Coordinates.from_xindex(
        xr.indexes.PandasIndex(pd.RangeIndex(size, name=INDEX), INDEX)
    )


def _multi_index(plan: DatasetPlan, levels: list[str], positions: Any) -> xr.Coordinates:
    """The pandas MultiIndex coordinate cf_xarray's ``decode_compress_to_multi_index``
    rebuilds from a compressed one: sorted unique levels and each row's codes."""
    import pandas as pd
    import xarray as xr

    values = [plan.variables[level].data for level in levels]
    codes = np.unravel_index(np.asarray(positions), tuple(len(v) for v in values))
    index = pd.MultiIndex(levels=values, codes=list(codes), names=levels)
    return xr.Coordinates.from_pandas_multiindex(index, MULTI_INDEX)


def dataarrays(datasets: Mapping[str, xr.Dataset]) -> dict[str, xr.DataArray]:
    """Each tree's parameter as a DataArray with its tree's coordinates, its own
    attributes and the dataset's (as QCoDeS' former ``to_xarray_dataarray_dict`` gave
    them), from one dataset per tree."""
    arrays = {}
    for name, dataset in datasets.items():
        array = dataset[name]
        array.attrs.update(dataset.attrs)
        arrays[name] = array
    return arrays
