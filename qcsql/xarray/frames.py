"""A run as the pandas DataFrames of QCoDeS' ``to_pandas_dataframe(_dict)``.

QCoDeS builds these straight from ``get_parameter_data``, not from its xarray layout:
per parameter tree one column (the parameter), indexed by its setpoints (none: a
``RangeIndex``; one: an ``Index``; several: a ``MultiIndex``); inferred parameters are
not columns. Rules as in QCoDeS 0.58's ``exporters/export_to_pandas.py``, quirks
included (a single setpoint's index is named after the tree's second array).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from qcsql.data.parameter_data import ParameterData
from qcsql.export.attributes import DatasetSource
from qcsql.export.layout import flattened
from qcsql.schema.description import RunDescription

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["to_pandas_dataframe", "to_pandas_dataframe_dict"]


def _index(description: RunDescription, name: str, tree: Mapping[str, npt.NDArray[Any]]) -> Any:
    import pandas as pd

    _, setpoints, _ = description.interdependencies.tree_by_group(name)
    present = [s for s in setpoints if s in tree]
    if not present:
        return None
    if len(present) == 1:
        return pd.Index(tree[present[0]].ravel(), name=list(tree)[1])
    return pd.MultiIndex.from_arrays([flattened(tree[s]) for s in present], names=present)


def _frame(description: RunDescription, name: str, tree: Mapping[str, npt.NDArray[Any]]) -> Any:
    import pandas as pd

    if not tree:
        return pd.DataFrame()
    values = tree[name]
    column = np.concatenate(list(values)) if values.dtype == object else values.ravel()  # as QCoDeS
    return pd.DataFrame(column, index=_index(description, name, tree), columns=[name])


def frames(description: RunDescription, data: ParameterData) -> dict[str, pd.DataFrame]:
    return {name: _frame(description, name, tree) for name, tree in data.items()}


def to_pandas_dataframe_dict(
    run: DatasetSource, *params: str, start: int | None = None, end: int | None = None
) -> dict[str, pd.DataFrame]:
    """QCoDeS' ``DataSet.to_pandas_dataframe_dict``: one frame per parameter tree."""
    return frames(run.description, run.get_parameter_data(*params, start=start, end=end))


def to_pandas_dataframe(
    run: DatasetSource, *params: str, start: int | None = None, end: int | None = None
) -> pd.DataFrame:
    """QCoDeS' ``DataSet.to_pandas_dataframe``: the trees' frames side by side (outer
    join on the index), with QCoDeS' warning when their setpoints differ."""
    import pandas as pd

    data = run.get_parameter_data(*params, start=start, end=end)
    if not data:  # QCoDeS' concat of no frames fails; no trees make an empty frame
        return pd.DataFrame()
    if not _same_setpoints(data):
        warnings.warn(
            "Independent parameter setpoints are not equal. Check concatenated output "
            "carefully. Please consider using `to_pandas_dataframe_dict` to export each "
            "independent parameter to its own dataframe.",
            stacklevel=3,
        )
    return pd.concat(list(frames(run.description, data).values()), axis=1)


def _same_setpoints(data: ParameterData) -> bool:
    setpoints = [{k: v for k, v in tree.items() if k != name} for name, tree in data.items()]
    for other in setpoints[1:]:
        try:
            np.testing.assert_equal(setpoints[0], other)
        except AssertionError:
            return False
    return True
