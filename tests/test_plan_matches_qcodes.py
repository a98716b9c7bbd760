"""The dataset plan is QCoDeS' to_xarray_dataset(), as its netCDF export encodes it.

Compared per run with QCoDeS 0.58 on a copy: the same variables, which of them are
coordinates, dims, dtypes, values (rtol 2e-14, QCoDeS rounds doubles), variable
attributes and dataset attributes (run_description as parsed JSON).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from qcsql.export.layout import DatasetPlan, plan_run
from tests.helpers import (
    comparable_description,
    copy_database,
    layout_differs_from_058,
    timestamps_set_aside,
    unless_qcodes_058_differs,
)

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.qcodes_reference import _connect_like_a_user, _raw_run_ids_of  # noqa: E402


def qcodes_datasets(path: Path) -> dict[int, Any]:
    """``{run_id: encoded xarray Dataset or the error text}`` from QCoDeS on a copy."""
    import cf_xarray
    import pandas as pd
    from qcodes.dataset import load_by_id

    out: dict[int, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        try:
            conn, _ = _connect_like_a_user(path, Path(folder))
        except Exception as exc:
            return {0: f"open: {exc}"}
        try:
            for run_id in _raw_run_ids_of(path):
                try:
                    ds = load_by_id(run_id, conn=conn).to_xarray_dataset()
                    if any(isinstance(ds.indexes[i], pd.MultiIndex) for i in ds.indexes):
                        ds = cf_xarray.coding.encode_multi_index_as_compress(ds)
                    out[run_id] = ds
                except Exception as exc:
                    out[run_id] = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
    return out


def assert_plan_is(plan: DatasetPlan, theirs: Any, where: str) -> None:
    assert set(plan.variables) == set(theirs.variables), where
    assert {v.name for v in plan.coords} == set(theirs.coords), where
    assert plan.dims == dict(theirs.sizes), where
    for name, ours in plan.variables.items():
        reference = theirs.variables[name]
        at = f"{where}/{name}"
        assert ours.dims == reference.dims, at
        assert ours.data.dtype == reference.dtype, f"{at}: {ours.data.dtype} != {reference.dtype}"
        if ours.data.dtype.kind in "fc":
            np.testing.assert_allclose(
                ours.data, reference.values, rtol=2e-14, atol=0, equal_nan=True, err_msg=at
            )
        else:
            np.testing.assert_array_equal(ours.data, reference.values, err_msg=at)
        assert ours.attrs == dict(reference.attrs), at
    ours_attrs = dict(plan.attrs)
    theirs_attrs = dict(theirs.attrs)
    assert comparable_description(ours_attrs.pop("run_description")) == comparable_description(
        theirs_attrs.pop("run_description")
    )
    ours_attrs, theirs_attrs = timestamps_set_aside(ours_attrs, theirs_attrs)
    assert ours_attrs == theirs_attrs, where
    assert list(ours_attrs) == list(theirs_attrs), f"{where}: attribute order"


def test_every_run_plans_like_qcodes(any_database: Path, tmp_path: Path) -> None:
    reference = qcodes_datasets(any_database)
    if 0 in reference:
        pytest.skip(str(reference[0]))
    with qcsql.open_database(copy_database(any_database, tmp_path)) as db:
        for run in db.runs():
            theirs = reference[run.run_id]
            if isinstance(theirs, str) or run.description.source == "results_table":
                continue  # QCoDeS cannot build it (or sees no parameters): tested elsewhere
            with unless_qcodes_058_differs(run, layout_differs_from_058(run)):
                assert_plan_is(plan_run(run), theirs, f"{any_database.name} run {run.run_id}")


@pytest.mark.parametrize(
    ("rows_per_block", "kept_fraction"),
    [(5, 8), (16, 1), (16, 4)],
    ids=["keys-computed-again", "keys-kept", "some-kept"],
)
def test_every_run_plans_like_qcodes_block_by_block(
    any_database: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows_per_block: int,
    kept_fraction: int,
) -> None:
    """The in-memory plan's levels, duplicate test and grid go block by block through a
    large run (65,536 rows at a time): with blocks of a few rows, every run of every
    database still plans as QCoDeS lays it out, whether a block's keys are kept for its
    codes (few distinct keys), computed again (many), or both happen in one column."""
    import qcsql.export.layout

    monkeypatch.setattr(qcsql.export.layout, "_ROWS_PER_BLOCK", rows_per_block)
    monkeypatch.setattr(qcsql.export.layout, "_KEPT_FRACTION", kept_fraction)
    test_every_run_plans_like_qcodes(any_database, tmp_path)
