"""The in-memory plan of a run owns the data it reads.

``plan_run`` lets each setpoint column go once its codes are known and lays a full grid
whose rows come in the grid's order out in the dependent's own array, so that a run
that must be laid out in memory needs little more than its data's size; what the run
(or any source) returned is never emptied, and every plan is still QCoDeS' layout.
"""

from __future__ import annotations

import copy
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
import qcsql.export.layout
from qcsql.export.layout import plan_run
from tests.helpers import copy_database

pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.test_plan_matches_qcodes import assert_plan_is, qcodes_datasets  # noqa: E402

# (outer x values, inner y values, cells left out): rows in the grid's order, x falling
# (rows out of the grid's order), and a grid with holes (QCoDeS' multi-index).
GRIDS = {
    "in-order": (np.linspace(-1, 1, 7), np.linspace(0, 3, 5), 0),
    "out-of-order": (np.linspace(1, -1, 7), np.linspace(0, 3, 5), 0),
    "holes": (np.linspace(-1, 1, 7), np.linspace(0, 3, 5), 4),
}


def _grid_database(path: Path, xs: Any, ys: Any, left_out: int) -> Path:
    from qcodes.dataset import Measurement

    from tests.qcodes_build import new_database, parameters

    experiment = new_database(path)
    x, y, z = parameters("x", "y", "z")
    measurement = Measurement(exp=experiment, name="grid")
    measurement.register_parameter(x)
    measurement.register_parameter(y)
    measurement.register_parameter(z, setpoints=(x, y))
    cells = [(xv, yv) for xv in xs for yv in ys]
    with measurement.run() as saver:
        for xv, yv in cells[: len(cells) - left_out]:
            saver.add_result((x, xv), (y, yv), (z, np.cos(xv * yv) + 0.1 * xv))
    experiment.conn.close()
    return path


class _Source:
    """A run whose ``get_parameter_data`` either returns one dict it keeps (``hold``), as
    a source holding its data would, or fresh data it keeps weak references to."""

    def __init__(self, run: qcsql.Run, *, hold: bool) -> None:
        self._run = run
        self._hold = hold
        self.held: dict[str, dict[str, Any]] | None = None
        self.refs: dict[str, weakref.ref[Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def get_parameter_data(self, *params: str, **rows: Any) -> dict[str, dict[str, Any]]:
        if self._hold:
            if self.held is None:
                self.held = self._run.get_parameter_data(*params, **rows)
            return self.held
        data = self._run.get_parameter_data(*params, **rows)
        self.refs = {column: weakref.ref(array) for column, array in data["z"].items()}
        return data


@pytest.fixture
def grid(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path, Any]:
    path = _grid_database(tmp_path / "grid.db", *GRIDS[request.param])
    return request.param, path, qcodes_datasets(copy_database(path, tmp_path / "copy"))[1]


@pytest.mark.parametrize("grid", list(GRIDS), indirect=True)
def test_a_source_keeping_its_data_keeps_all_of_it(grid: tuple[str, Path, Any]) -> None:
    name, path, theirs = grid
    with qcsql.open_database(path) as db:
        source = _Source(db.load_by_id(1), hold=True)
        before = copy.deepcopy(source.get_parameter_data())
        for _ in range(2):  # planned again from what the source kept
            assert_plan_is(plan_run(source), theirs, name)  # type: ignore[arg-type]
            assert source.held is not None
            assert list(source.held["z"]) == list(before["z"])
            for column, array in before["z"].items():
                np.testing.assert_array_equal(source.held["z"][column], array)


@pytest.mark.parametrize("grid", ["in-order", "out-of-order"], indirect=True)
def test_setpoint_columns_are_let_go_before_the_grid_is_made(
    grid: tuple[str, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the grid needs an array of its own, the setpoint columns are freed before it
    is made; where the rows come in the grid's order, the grid is the dependent's array."""
    name, path, theirs = grid
    made: list[dict[str, bool]] = []
    holding = qcsql.export.layout._holding

    def watched(*args: Any, **kwargs: Any) -> Any:
        made.append({column: ref() is None for column, ref in source.refs.items()})
        return holding(*args, **kwargs)

    monkeypatch.setattr(qcsql.export.layout, "_holding", watched)
    with qcsql.open_database(path) as db:
        source = _Source(db.load_by_id(1), hold=False)
        plan = plan_run(source)  # type: ignore[arg-type]
    assert_plan_is(plan, theirs, name)
    if name == "in-order":
        assert made == []
        assert np.shares_memory(plan.variables["z"].data, source.refs["z"]())
    else:
        assert made == [{"x": True, "y": True, "z": False}]
