"""Where QCoDeS 0.62 lays a run out differently from 0.58, qcsql follows 0.62, and 0.58's
other result is real.

The runs are those of ``tests/fixtures/qcodes062/gen_reference.py`` that show each
difference, measured here by QCoDeS 0.58 with the same builders: qcsql's datasets of
them equal 0.62's recorded ones (test_qcodes062_reference.py compares the recorded runs
in full), 0.58's give the other result, and :func:`tests.helpers.layout_differs_from_058`,
with which the live 0.58 comparisons set such runs aside, names the difference for the
modes in which it shows and nothing for the others, where the live comparison still runs.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import qcsql
from tests.helpers import (
    FIXTURES,
    INFERRED_ALIGNED,
    NOT_A_GRID,
    PLACED_BY_VALUE,
    SHAPED_WITHOUT_SETPOINTS,
    copy_database,
    layout_differs_from_058,
)

xr = pytest.importorskip("xarray")
pytest.importorskip("pandas")
pytest.importorskip("qcodes")
from tests.test_xarray_matches_qcodes import assert_same_xarray  # noqa: E402

pytestmark = pytest.mark.requires_qcodes

REFERENCE = FIXTURES / "qcodes062"
RECORDED = json.loads((REFERENCE / "reference.json").read_text())["runs"]
MODES = ("auto", "always", "never")
# the builder of each run, its top-level parameter and the difference it shows
RUNS = {
    "serpentine_2d": ("current", PLACED_BY_VALUE),
    "transposed_loops": ("current", PLACED_BY_VALUE),
    "array_serpentine": ("spectrum", PLACED_BY_VALUE),
    "jittered_grid": ("current", NOT_A_GRID),
    "back_and_forth_1d": ("y", NOT_A_GRID),
    "shaped_without_setpoints": ("counts", SHAPED_WITHOUT_SETPOINTS),
    "inferred_on_unsorted_grid": ("current", INFERRED_ALIGNED),
}


def _builders() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", REFERENCE / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The runs measured by QCoDeS 0.58, and 0.58's conversions of a copy, by name."""
    from qcodes.dataset import initialise_or_create_database_at, load_by_id, new_experiment
    from qcodes.dataset.sqlite.database import connect

    builders = _builders()
    folder = tmp_path_factory.mktemp("qcodes058")
    path = folder / "differences.db"
    initialise_or_create_database_at(str(path))
    exp = new_experiment("differences", sample_name="s")
    run_ids = {name: getattr(builders, name)(exp) for name in RUNS}
    exp.conn.close()
    conn = connect(str(copy_database(path, folder / "copy")))
    theirs: dict[str, dict[str, Any]] = {}
    try:
        for name, run_id in run_ids.items():
            dataset = load_by_id(run_id, conn=conn)
            theirs[name] = {}
            for mode in MODES:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        theirs[name][mode] = dataset.to_xarray_dataset(use_multi_index=mode)
                except Exception as exc:
                    theirs[name][mode] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return {"path": path, "run_ids": run_ids, "theirs": theirs}


def _recorded(name: str, mode: str) -> Any:
    """QCoDeS 0.62's dataset of the run of that name (or its error, as text)."""
    run_id, run = next((k, r) for k, r in RECORDED.items() if r["name"] == name)
    kinds = run["index_kinds"][mode]
    if isinstance(kinds, str):
        return kinds
    with xr.open_dataset(REFERENCE / "datasets" / f"run{run_id}_{mode}.nc") as dataset:
        return dataset.load()


def _same_variables(ours: Any, theirs: Any, where: str) -> None:
    """Same variables, dims and values (the dataset attributes name another run)."""
    assert set(ours.variables) == set(theirs.variables), where  # order: see the reference test
    for name in theirs.variables:
        assert ours[name].dims == theirs[name].dims, f"{where}/{name}"
        np.testing.assert_allclose(
            ours[name].values, theirs[name].values, rtol=2e-14, err_msg=f"{where}/{name}"
        )


@pytest.mark.parametrize("name", list(RUNS))
def test_qcsql_follows_qcodes_062_where_058_differs(
    measured: dict[str, Any], name: str, tmp_path: Path
) -> None:
    top, difference = RUNS[name]
    with qcsql.open_database(copy_database(measured["path"], tmp_path)) as db:
        run = db.load_by_id(measured["run_ids"][name])
        for mode in MODES:
            where = f"{name} {mode}"
            theirs = measured["theirs"][name][mode]
            recorded = _recorded(name, mode)
            named = layout_differs_from_058(run, mode)
            if mode == "always":  # no difference: the live comparison with 0.58 runs
                assert named is None, where
                assert_same_xarray(run.to_xarray_dataset(use_multi_index=mode), theirs, where)
                continue
            assert named == f"{top}: {difference}", where
            if difference == NOT_A_GRID:
                assert "does not define an axis" in recorded, where
                assert not isinstance(theirs, str), f"{where}: 0.58 lays it out ({theirs})"
                with pytest.raises(qcsql.DirectLayoutError):
                    run.to_xarray_dataset(use_multi_index=mode)
                continue
            ours = run.to_xarray_dataset(use_multi_index=mode)
            _same_variables(ours, recorded, where)
            if difference == SHAPED_WITHOUT_SETPOINTS:
                assert ours[top].dims == (f"{top}_dim_0",), where
                assert isinstance(theirs, str) and theirs.startswith("ValueError"), where
                continue
            assert not isinstance(theirs, str), f"{where}: {theirs}"
            measured_order = run.get_parameter_data()[top]
            _058_differs(ours, theirs, measured_order, top, difference, where)


def _058_differs(
    ours: Any, theirs: Any, rows: dict[str, Any], top: str, difference: str, where: str
) -> None:
    """0.58's dataset holds the values in measured order where 0.62 placed them by their
    setpoints; qcsql's keep each value with its own setpoints (and inferred values with
    their own parameter's), 0.58's do not."""
    if difference == PLACED_BY_VALUE:
        np.testing.assert_allclose(theirs[top].values.ravel(), rows[top].ravel(), 2e-14)
        assert not np.allclose(ours[top].values.ravel(), rows[top].ravel()), where
        for dataset, keeps in ((ours, True), (theirs, False)):
            assert _each_value_at_its_setpoints(dataset, rows, top) is keeps, where
    if difference == INFERRED_ALIGNED:  # power is inferred from the current: current ** 2
        np.testing.assert_allclose(ours.power.values, ours.current.values**2, rtol=2e-14)
        assert not np.allclose(theirs.power.values, theirs.current.values**2), where


def _each_value_at_its_setpoints(dataset: Any, rows: dict[str, Any], top: str) -> bool:
    """Whether every measured row's value sits in the cell its setpoint values name."""
    setpoints = list(dataset[top].dims)
    for row in range(rows[top].size):
        cell = tuple(
            int(np.argmin(np.abs(dataset[s].values - rows[s].ravel()[row]))) for s in setpoints
        )
        if not np.isclose(dataset[top].values[cell], rows[top].ravel()[row], rtol=2e-14):
            return False
    return True


def test_the_live_comparisons_set_these_runs_aside(
    measured: dict[str, Any], tmp_path: Path
) -> None:
    """The live 0.58 comparisons of every run of a database, run on these: they pass, each
    run set aside by :func:`tests.helpers.unless_qcodes_058_differs` only in the modes
    where the difference shows (and there the comparison must fail), compared with 0.58
    in the others (``always``, the pandas frames)."""
    from tests.test_export_matches_qcodes import test_exports_read_like_qcodes_exports
    from tests.test_plan_matches_qcodes import test_every_run_plans_like_qcodes
    from tests.test_xarray_matches_qcodes import test_conversions_equal_qcodes

    test_conversions_equal_qcodes(measured["path"], tmp_path / "xarray")
    test_every_run_plans_like_qcodes(measured["path"], tmp_path / "plan")
    test_exports_read_like_qcodes_exports(measured["path"], "h5netcdf")
