"""Array runs whose setpoint rows repeat are streamed into QCoDeS' flat ``index`` layout,
window by window, and the files equal QCoDeS' own exports; a run that stops fitting
that layout part-way is written from memory instead, with the same result."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import qcsql
import qcsql.export.layout
import qcsql.export.run
import qcsql.export.streamed
from tests.helpers import NOT_A_GRID, copy_database, layout_differs_from_058
from tests.qcodes_build import export_where_058_differs, new_database, parameters, qcodes_export

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.test_export_matches_qcodes import ENGINES, _attrs, assert_same_dataset  # noqa: E402


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records, per export, whether the streamed index plan of an array run, its grid
    plan, or a merged plan of trees on different setpoints, was made, and whether the
    in-memory plan was."""
    events: list[str] = []
    real_plan, real_merged, real_grid = (
        qcsql.export.streamed._streamed_index_plan,
        qcsql.export.streamed._merged_plan,
        qcsql.export.streamed.array_grid_plans,
    )
    real_memory = qcsql.export.run.plan_run

    def plan(*args: Any) -> Any:
        found = real_plan(*args)
        events.append("streamed" if found is not None else "not streamable")
        return found

    def merged(*args: Any) -> Any:
        found = real_merged(*args)
        events.append("merged" if found is not None else "not merged")
        return found

    def grid(*args: Any) -> Any:
        found = False
        for plan in real_grid(*args):
            found = True
            events.append("grid")
            yield plan
        if not found:
            events.append("not a grid")

    def memory(run: Any) -> Any:
        events.append("in memory")
        return real_memory(run)

    monkeypatch.setattr(qcsql.export.streamed, "_streamed_index_plan", plan)
    monkeypatch.setattr(qcsql.export.streamed, "array_grid_plans", grid)
    monkeypatch.setattr(qcsql.export.streamed, "_merged_plan", merged)
    monkeypatch.setattr(qcsql.export.run, "plan_run", memory)
    monkeypatch.setattr(qcsql.export.streamed, "ARRAY_BYTES_PER_CHUNK", 64 * 1024)  # many windows
    return events


def _assert_exports_like_qcodes(path: Path, run_id: int, ours: Path, folder: Path) -> None:
    theirs = qcodes_export(path, run_id, folder / "qcodes")
    for engine in ENGINES:
        with xr.open_dataset(theirs, engine=engine) as a, xr.open_dataset(ours, engine=engine) as b:
            assert_same_dataset(b.load(), a.load(), f"{path.name} run {run_id} ({engine})")


def _assert_streamed_equals_in_memory(
    path: Path, folder: Path, run_id: int = 1, must_stream: bool = False
) -> None:
    """A run exported as qcsql does (streamed where it can) and with streaming switched
    off give identical datasets; ``must_stream``: and the first did stream (else both
    files would come from the in-memory plan, and their equality would prove nothing).
    A run whose setpoints put two rows in one cell of its declared shape is the same
    ``DirectLayoutError`` both ways, and no file, where QCoDeS 0.62's rules (decided apart
    from qcsql's layout code, :func:`layout_differs_from_058`) fail on it too."""
    with qcsql.open_database(path) as db:
        run = db.load_by_id(run_id)
        in_memory_plans: list[Any] = []
        real_plan = qcsql.export.run.plan_run
        refused: qcsql.DirectLayoutError | None = None
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                qcsql.export.run,
                "plan_run",
                lambda run: in_memory_plans.append(run) or real_plan(run),
            )
            try:
                streamed = run.export_hdf5(folder / "streamed.nc")
            except qcsql.DirectLayoutError as exc:
                refused = exc
        if must_stream:
            assert in_memory_plans == [], "the export fell back to the in-memory plan"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(qcsql.export.run, "streamed_plans", lambda run, progress=None: iter(()))
            if refused is not None:
                difference = layout_differs_from_058(run)
                assert difference is not None and difference.endswith(NOT_A_GRID), refused
                with pytest.raises(qcsql.DirectLayoutError) as again:
                    run.export_hdf5(folder / "in_memory.nc")
                assert str(again.value) == str(refused)
                assert not [p for p in folder.iterdir() if p.name.endswith((".nc", ".partial"))]
                return
            in_memory = run.export_hdf5(folder / "in_memory.nc")
    with (
        xr.open_dataset(streamed, engine="h5netcdf") as a,
        xr.open_dataset(in_memory, engine="h5netcdf") as b,
    ):
        xr.testing.assert_identical(a.load(), b.load())
        for name, variable in a.variables.items():
            if variable.dtype.kind == "c":  # xarray sees NaN + 0j and NaN + NaNj alike
                np.testing.assert_array_equal(variable.values.imag, b[name].values.imag)


def test_repeated_sweeps_stream_and_equal_qcodes(
    array_runs: Path, tmp_path: Path, streamed: list[str]
) -> None:
    theirs = qcodes_export(array_runs, 1, tmp_path / "qcodes")
    progress: list[tuple[int, int]] = []
    with qcsql.open_database(array_runs) as db:
        run = db.load_by_id(1)
        ours = run.export_hdf5(
            tmp_path, progress=lambda done, total: progress.append((done, total))
        )
    assert streamed == ["streamed"]  # no fallback to memory
    assert len(progress) > 10 and progress[-1][0] == progress[-1][1]
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    for engine in ENGINES:
        with xr.open_dataset(theirs, engine=engine) as a, xr.open_dataset(ours, engine=engine) as b:
            assert dict(b.sizes) == {"index": 1200 * 700}
            assert_same_dataset(b.load(), a.load(), f"streamed spectra ({engine})")


def test_spectra_over_a_gate_stream_as_a_grid_and_equal_qcodes(
    array_runs: Path, tmp_path: Path, streamed: list[str]
) -> None:
    """Spectra over a gate: every (gate, freq) pair is new, so QCoDeS builds a (gate,
    freq) grid of the sorted levels, written a row at a time."""
    with qcsql.open_database(array_runs) as db:
        ours = db.load_by_id(2).export_hdf5(tmp_path)
    assert streamed == ["not streamable", "grid"]
    _assert_exports_like_qcodes(array_runs, 2, ours, tmp_path)
    _assert_streamed_equals_in_memory(array_runs, tmp_path, 2, must_stream=True)


@pytest.mark.parametrize(
    ("change", "plans"),
    [
        ("-gate", ["not streamable", "grid"]),  # a falling sweep: one pass, rows reversed
        ("CASE WHEN id % 900 = 700 THEN -299 ELSE gate END", ["not streamable", "grid", "grid"]),
    ],
    ids=["falling", "a-row-out-of-order"],
)
def test_a_sweep_streams_in_one_pass_and_a_broken_one_by_its_levels(
    array_runs: Path, tmp_path: Path, streamed: list[str], change: str, plans: list[str]
) -> None:
    """Spectra over a gate swept one way, window after window, go to their levels in row
    order (reversed for a falling sweep) with no pass over the gate first; a row that
    breaks the sweep later (its value still unique) makes that plan give up, and the plan
    of sorted levels (a pass over the gate, then the rows) writes the grid."""
    copy = copy_database(array_runs, tmp_path / "db")
    with sqlite3.connect(copy) as conn:
        table = conn.execute("SELECT result_table_name FROM runs WHERE run_id = 2").fetchone()[0]
        conn.execute(f'UPDATE "{table}" SET gate = {change}')
    conn.close()
    with qcsql.open_database(copy) as db:
        ours = db.load_by_id(2).export_hdf5(tmp_path)
    assert streamed == plans
    assert not list(tmp_path.glob("*.partial"))
    _assert_exports_like_qcodes(copy, 2, ours, tmp_path)
    _assert_streamed_equals_in_memory(copy, tmp_path, 2, must_stream=True)


def test_a_run_that_changes_shape_midway_is_written_from_memory(
    array_runs: Path, tmp_path: Path, streamed: list[str]
) -> None:
    """The first windows stream; a later row with a shorter array makes the stream give
    up, and the file is the one the in-memory plan writes (no partial file is left)."""
    copy = copy_database(array_runs, tmp_path / "db")
    with sqlite3.connect(copy) as conn:
        table = conn.execute("SELECT result_table_name FROM runs WHERE run_id = 1").fetchone()[0]
        blob = conn.execute(f'SELECT spectrum FROM "{table}" WHERE id = 900').fetchone()[0]
        header = blob[: len(blob) - 700 * 8].replace(b"(700,)", b"(699,)")
        conn.execute(
            f'UPDATE "{table}" SET spectrum = ?, freq = ? WHERE id = 900',
            (header + blob[len(header) : -8], header + bytes(699 * 8)),
        )
    conn.close()
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(1)
        ours = run.export_hdf5(tmp_path / "ours.nc")
        expected = qcsql.export.layout.plan_run(run)
    assert streamed == ["streamed", "in memory"]
    assert not list(tmp_path.glob("*.partial"))
    with xr.open_dataset(ours, engine="h5netcdf") as b:
        assert dict(b.sizes) == dict(expected.dims)
        for name, variable in expected.variables.items():
            np.testing.assert_array_equal(b[name].values, variable.data)


# -- several dependents measured together ---------------------------------------------------


@pytest.fixture(scope="module")
def dependents_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QCoDeS 0.58 sweeps recording several dependents at each point: a 1-D sweep of
    three (one of them NaN now and then, a real NaN, not a missing value), a shaped 2-D
    sweep of two, two dependents written in separate calls point by point, and a second
    dependent measured at every other point only (the trees' setpoints differ)."""
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("dependents") / "dependents.db"
    experiment = new_database(path, "dependents")
    x, y = parameters("x", "y")
    i, q, r = parameters("i", "q", "r")
    for dependent in (i, q, r):
        dependent.unit = "V"
    rng = np.random.default_rng(9)

    sweep = Measurement(exp=experiment, name="1-D, three dependents")
    sweep.register_parameter(x)
    for dependent in (i, q, r):
        sweep.register_parameter(dependent, setpoints=(x,))
    with sweep.run() as saver:
        for start in range(0, 30_000, 1000):
            xs = np.arange(start, start + 1000) * 1e-3
            rs = rng.normal(size=1000)
            rs[::97] = np.nan
            saver.add_result((x, xs), (i, np.sin(xs)), (q, np.cos(xs)), (r, rs))

    grid = Measurement(exp=experiment, name="2-D shaped, two dependents")
    grid.register_parameter(x)
    grid.register_parameter(y)
    for dependent in (i, q):
        grid.register_parameter(dependent, setpoints=(x, y))
    grid.set_shapes({"i": (40, 50), "q": (40, 50)})
    with grid.run() as saver:
        for xv in np.linspace(-1, 1, 40):
            ys = np.linspace(0, 2, 50)
            saver.add_result((x, np.full(50, xv)), (y, ys), (i, xv * ys), (q, xv - ys))

    apart = Measurement(exp=experiment, name="two dependents, separate calls")
    apart.register_parameter(x)
    for dependent in (i, q):
        apart.register_parameter(dependent, setpoints=(x,))
    with apart.run() as saver:
        for xv in np.linspace(0, 1, 500):
            saver.add_result((x, xv), (i, 2 * xv))
            saver.add_result((x, xv), (q, 3 * xv))

    sparse = Measurement(exp=experiment, name="second dependent at every other point")
    sparse.register_parameter(x)
    for dependent in (i, q):
        sparse.register_parameter(dependent, setpoints=(x,))
    with sparse.run() as saver:
        for step, xv in enumerate(np.linspace(0, 1, 500)):
            saver.add_result((x, xv), (i, 2 * xv))
            if step % 2:
                saver.add_result((x, xv), (q, 3 * xv))
    experiment.conn.close()  # type: ignore[attr-defined]
    return path


# -- parameters on different setpoints -------------------------------------------------------


@pytest.fixture(scope="module")
def apart_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QCoDeS 0.58 runs whose dependents are on different setpoints: a current on an (x, y)
    grid, shaped and not, with a gate leakage read once per x line; two gates swept one
    after the other; and a leakage read on every other line only (QCoDeS' merge aligns
    the two x by an outer join, which is laid out in memory)."""
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("apart") / "apart.db"
    experiment = new_database(path, "apart")
    x, y, z = parameters("x", "y", "z")
    current, leak = parameters("current", "leak")
    xs, ys = np.linspace(-1, 1, 30), np.linspace(0, 2, 40)

    def measurement(name: str, trees: dict[Any, tuple[Any, ...]]) -> Any:
        built = Measurement(exp=experiment, name=name)
        for setpoint in {s for setpoints in trees.values() for s in setpoints}:
            built.register_parameter(setpoint)
        for dependent, setpoints in trees.items():
            built.register_parameter(dependent, setpoints=setpoints)
        return built

    for shaped in (True, False):
        grid = measurement(
            f"leak per line, {'shaped' if shaped else 'unshaped'}",
            {current: (x, y), leak: (x,)},
        )
        if shaped:
            grid.set_shapes({"current": (len(xs), len(ys)), "leak": (len(xs),)})
        with grid.run() as saver:
            for xv in xs:
                saver.add_result((x, xv), (leak, xv * 1e-3))
                saver.add_result((x, np.full(len(ys), xv)), (y, ys), (current, xv * ys))

    gates = measurement("two gates one after the other", {current: (x,), leak: (z,)})
    with gates.run() as saver:
        for xv in xs:
            saver.add_result((x, xv), (current, np.sin(xv)))
        for zv in np.linspace(5, 3, 50):
            saver.add_result((z, zv), (leak, np.cos(zv)))

    sparse = measurement("leak on every other line", {current: (x, y), leak: (x,)})
    with sparse.run() as saver:
        for line, xv in enumerate(xs):
            if line % 2 == 0:
                saver.add_result((x, xv), (leak, xv * 1e-3))
            saver.add_result((x, np.full(len(ys), xv)), (y, ys), (current, xv * ys))
    experiment.conn.close()  # type: ignore[attr-defined]
    return path


@pytest.mark.parametrize(("run_id", "in_memory"), [(1, False), (2, False), (3, False), (4, True)])
def test_parameters_on_different_setpoints_stream_tree_by_tree(
    apart_db: Path, tmp_path: Path, streamed: list[str], run_id: int, in_memory: bool
) -> None:
    """Each tree is planned on its own and the plans merged; a merge that needs xarray's
    outer join (a coordinate with other values in the other tree) is written from memory."""
    with qcsql.open_database(apart_db) as db:
        ours = db.load_by_id(run_id).export_hdf5(tmp_path)
    assert ("in memory" in streamed) == in_memory, streamed
    assert "merged" in streamed, streamed
    _assert_exports_like_qcodes(apart_db, run_id, ours, tmp_path)
    _assert_streamed_equals_in_memory(apart_db, tmp_path, run_id)


# -- shaped sweeps that stopped early --------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QCoDeS 0.58 shaped 2-D sweeps that stopped early: mid-line with two dependents,
    with a descending inner axis, exactly at a line's end, and one that revisits a point
    (two rows in one cell: QCoDeS lays that out along an index); and three unshaped ones,
    complete (a grid), stopped mid-line (QCoDeS' compressed multi-index), and complete
    with a descending inner axis."""
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("interrupted") / "interrupted.db"
    experiment = new_database(path, "interrupted")
    x, y = parameters("x", "y")
    i, q = parameters("i", "q")

    def sweep(
        name: str,
        ys: np.ndarray,
        points: int,
        dependents: tuple[Any, ...],
        shaped: bool = True,
    ) -> None:
        measurement = Measurement(exp=experiment, name=name)
        measurement.register_parameter(x)
        measurement.register_parameter(y)
        for dependent in dependents:
            measurement.register_parameter(dependent, setpoints=(x, y))
        if shaped:
            measurement.set_shapes({d.name: (12, len(ys)) for d in dependents})
        grid = [(xv, yv) for xv in np.linspace(-1, 1, 12) for yv in ys]
        if name.startswith("revisits"):
            grid[5] = grid[4]
        with measurement.run() as saver:
            for xv, yv in grid[:points]:
                values = [(d, xv * 10 + yv + n) for n, d in enumerate(dependents)]
                saver.add_result((x, xv), (y, yv), *values)

    sweep("mid-line, two dependents", np.linspace(0, 1, 30), 7 * 30 + 11, (i, q))
    sweep("descending inner axis", np.linspace(1, 0, 30), 5 * 30 + 3, (i,))
    sweep("stopped at a line's end", np.linspace(0, 1, 30), 4 * 30, (i,))
    sweep("revisits a point", np.linspace(0, 1, 30), 100, (i,))
    sweep("unshaped, complete", np.linspace(0, 1, 30), 12 * 30, (i, q), shaped=False)
    sweep("unshaped, stopped mid-line", np.linspace(0, 1, 30), 100, (i,), shaped=False)
    sweep("unshaped, descending inner axis", np.linspace(1, 0, 30), 12 * 30, (i,), shaped=False)
    experiment.conn.close()  # type: ignore[attr-defined]
    return path


@pytest.mark.parametrize(
    ("database", "run_id"),
    [("dependents_db", run_id) for run_id in range(1, 5)]
    + [("interrupted_db", run_id) for run_id in range(1, 8)],
)
def test_numeric_sweeps_stream_and_equal_qcodes(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    streamed: list[str],
    database: str,
    run_id: int,
) -> None:
    """Every run of both databases streams (none falls back to the in-memory plan)."""
    path: Path = request.getfixturevalue(database)
    with qcsql.open_database(path) as db:
        ours = db.load_by_id(run_id).export_hdf5(tmp_path)
    assert "in memory" not in streamed
    _assert_exports_like_qcodes(path, run_id, ours, tmp_path)


# -- streamed and in-memory layouts agree on random sweeps ----------------------------------


@pytest.mark.parametrize("run_id", [5, 7])
def test_complete_unshaped_grids_stream_in_one_pass(
    interrupted_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_id: int
) -> None:
    """A doNd-style grid without shapes (the outer setpoint rising line by line, the
    inner one the same values on every line) is written as it is read: no pass over the
    levels first, and the file is QCoDeS'."""

    def no_pass(*args: Any) -> Any:
        raise AssertionError("a pass over the levels before writing")

    monkeypatch.setattr(qcsql.export.streamed, "_find_levels", no_pass)
    with qcsql.open_database(interrupted_db) as db:
        ours = db.load_by_id(run_id).export_hdf5(tmp_path)
    _assert_exports_like_qcodes(interrupted_db, run_id, ours, tmp_path)


# The hypothesis settings of the streamed-against-in-memory tests (QCSQL_EXAMPLES: how many).
EXAMPLES = settings(
    max_examples=int(os.environ.get("QCSQL_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def _sweeps(draw: st.DrawFn) -> dict[str, Any]:
    outer = draw(st.integers(1, 6))
    inner = draw(st.integers(1, 7))
    return {
        "outer": np.linspace(-1, 1, outer)[:: draw(st.sampled_from([1, -1]))],
        "inner": np.linspace(0, 2, inner)[:: draw(st.sampled_from([1, -1]))],
        "points": draw(st.integers(1, outer * inner + 3)),  # beyond the grid: runs over
        "shaped": draw(st.booleans()),
        "dependents": draw(st.integers(1, 3)),
        "together": draw(st.booleans()),  # one add_result per point, or one per dependent
        "revisit": draw(st.booleans()),
        # a dependent on x alone, read at the start of every line or every other line
        "per_line": draw(st.sampled_from([0, 1, 2])),
        # complex and text values are read through SQLite
        "paramtype": draw(st.sampled_from(["numeric", "complex", "text"])),
    }


@EXAMPLES
@given(sweep=_sweeps())
# Hypothesis found it: a shaped grid that revisits its first cell instead of its last,
# which QCoDeS 0.62 cannot lay out (both export paths refuse it).
@example(
    sweep={
        "outer": np.array([-1.0, 1.0]),
        "inner": np.array([0.0, 1.0, 2.0]),
        "points": 6,
        "shaped": True,
        "dependents": 1,
        "together": False,
        "revisit": True,
        "per_line": 0,
        "paramtype": "numeric",
    }
)
def test_streamed_sweeps_equal_the_in_memory_layout(
    tmp_path_factory: pytest.TempPathFactory, sweep: dict[str, Any]
) -> None:
    """Whatever the streamed path writes equals the in-memory plan's file (itself compared
    with QCoDeS' exports run by run); when the stream gives up, the file is that plan's."""
    from qcodes.dataset import Measurement

    folder = tmp_path_factory.mktemp("sweep")
    path = folder / "sweep.db"
    experiment = new_database(path, "sweeps")
    x, y = parameters("x", "y")
    dependents = parameters(*(f"d{n}" for n in range(sweep["dependents"])))
    measurement = Measurement(exp=experiment, name="random sweep")
    measurement.register_parameter(x)
    measurement.register_parameter(y)
    paramtype = sweep["paramtype"]
    for dependent in dependents:
        measurement.register_parameter(dependent, setpoints=(x, y), paramtype=paramtype)
    (leak,) = parameters("leak")
    if sweep["per_line"]:
        measurement.register_parameter(leak, setpoints=(x,))
    if sweep["shaped"] and paramtype != "text":  # QCoDeS' cache of shaped runs casts to float
        shape = (len(sweep["outer"]), len(sweep["inner"]))
        measurement.set_shapes({d.name: shape for d in dependents})
    grid = [(a, b) for a in sweep["outer"] for b in sweep["inner"]]
    grid = (grid * 2)[: sweep["points"]]
    if sweep["revisit"] and len(grid) > 2:
        grid[-1] = grid[0]
    with _qcodes_cache_casts_complex(), measurement.run() as saver:
        for n, (a, b) in enumerate(grid):
            line = n // len(sweep["inner"])
            if sweep["per_line"] and n % len(sweep["inner"]) == 0 and line % sweep["per_line"] == 0:
                saver.add_result((x, a), (leak, a * 1e-3 + line))
            values = [
                (d, _value(paramtype, a * 10 + b + k + n * 1e-3, a - b))
                for k, d in enumerate(dependents)
            ]
            if sweep["together"]:
                saver.add_result((x, a), (y, b), *values)
            else:
                for value in values:
                    saver.add_result((x, a), (y, b), value)
    experiment.conn.close()  # type: ignore[attr-defined]

    # A complete numeric grid, each point once, streams whatever else was drawn, except
    # beside a per-line dependent whose outer setpoint is not in the grid's (sorted) order
    # or not on every line: QCoDeS' merge then aligns the two by an outer join, in memory.
    complete = sweep["points"] == len(sweep["outer"]) * len(sweep["inner"])
    outer = list(sweep["outer"])
    aligned = sweep["per_line"] == 0 or (
        sweep["per_line"] == 1 and outer == sorted(outer) and len(set(outer)) == len(outer)
    )
    must_stream = paramtype == "numeric" and complete and not sweep["revisit"] and aligned
    _assert_streamed_equals_in_memory(path, folder, must_stream=must_stream)


@pytest.fixture(scope="module")
def two_spectra_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QCoDeS 0.58: magnitude and phase spectra against the same frequencies, repeated
    (QCoDeS writes each in rows of its own), a pair whose second spectrum is shorter, and
    complex traces (a VNA's S21) as complex128 arrays."""
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("spectra") / "spectra.db"
    experiment = new_database(path, "spectra")
    freq, mag, phase = parameters("freq", "mag", "phase")
    rng = np.random.default_rng(3)
    for name, second in (("magnitude and phase", 300), ("phase shorter", 200)):
        measurement = Measurement(exp=experiment, name=name)
        measurement.register_parameter(freq, paramtype="array")
        measurement.register_parameter(mag, setpoints=(freq,), paramtype="array")
        measurement.register_parameter(phase, setpoints=(freq,), paramtype="array")
        frequencies = np.linspace(1e9, 2e9, 300)
        with measurement.run() as saver:
            for _ in range(400):
                saver.add_result(
                    (freq, frequencies),
                    (mag, rng.normal(size=300)),
                    (phase, rng.normal(size=300)),
                ) if second == 300 else (
                    saver.add_result((freq, frequencies), (mag, rng.normal(size=300))),
                    saver.add_result(
                        (freq, frequencies[:second]), (phase, rng.normal(size=second))
                    ),
                )
    vna = Measurement(exp=experiment, name="complex S21 traces")
    vna.register_parameter(freq, paramtype="array")
    vna.register_parameter(mag, setpoints=(freq,), paramtype="array")
    with vna.run() as saver:
        for _ in range(300):
            trace = rng.normal(size=300) + 1j * rng.normal(size=300)
            saver.add_result((freq, np.linspace(4e9, 8e9, 300)), (mag, trace))
    experiment.conn.close()  # type: ignore[attr-defined]
    return path


def test_spectra_on_the_same_frequencies_stream_and_equal_qcodes(
    two_spectra_db: Path, tmp_path: Path, streamed: list[str]
) -> None:
    with qcsql.open_database(two_spectra_db) as db:
        ours = db.load_by_id(1).export_hdf5(tmp_path)
    assert streamed == ["streamed"]
    _assert_exports_like_qcodes(two_spectra_db, 1, ours, tmp_path)


def test_spectra_of_different_lengths_are_written_side_by_side(
    two_spectra_db: Path, tmp_path: Path, streamed: list[str]
) -> None:
    """The trees' frequencies differ: the stream gives up before writing anything, and
    QCoDeS' own export fails (xarray MergeError). qcsql writes each tree in its own
    layout, its dimensions and setpoints suffixed with the parameter's name, and every
    value is the one QCoDeS' get_parameter_data gives."""
    from tests.qcodes_reference import parameter_data_for

    reference = parameter_data_for(two_spectra_db).by_run[(2, None, None)]
    with xr.open_dataset(qcodes_export(two_spectra_db, 1, tmp_path / "qcodes")) as same_params:
        attrs = {name: same_params[name].attrs for name in ("mag", "phase", "freq")}
    with qcsql.open_database(two_spectra_db) as db:
        ours = db.load_by_id(2).export_hdf5(tmp_path)
    assert streamed == ["in memory"]
    for engine in ENGINES:
        with xr.open_dataset(ours, engine=engine) as b:
            assert set(b.variables) == {
                "mag",
                "phase",
                "freq__mag",
                "freq__phase",
                "index__mag",
                "index__phase",
            }
            for top in ("mag", "phase"):
                assert b[top].dims == (f"index__{top}",)
                np.testing.assert_array_equal(b[top].values, reference[top][top].ravel())
                np.testing.assert_array_equal(
                    b[f"freq__{top}"].values, reference[top]["freq"].ravel()
                )
                assert _attrs(b[top].attrs) == _attrs(attrs[top])
                assert _attrs(b[f"freq__{top}"].attrs) == _attrs(attrs["freq"])


def test_complex_traces_stream_and_equal_qcodes(
    two_spectra_db: Path, tmp_path: Path, streamed: list[str]
) -> None:
    theirs = qcodes_export(two_spectra_db, 3, tmp_path / "qcodes")
    with qcsql.open_database(two_spectra_db) as db:
        ours = db.load_by_id(3).export_hdf5(tmp_path)
    assert streamed == ["streamed"]
    for engine in ENGINES:
        with xr.open_dataset(theirs, engine=engine) as a, xr.open_dataset(ours, engine=engine) as b:
            if engine == "h5netcdf":  # netCDF4 reads HDF5 complex as a compound of r and i
                assert b["mag"].dtype == np.complex128
            assert_same_dataset(b.load(), a.load(), f"complex traces ({engine})")


# -- array traces at every step of a swept setpoint ------------------------------------------


@st.composite
def _traces(draw: st.DrawFn) -> dict[str, Any]:
    steps = draw(st.integers(1, 7))
    return {
        "steps": steps,
        "points": draw(st.integers(1, 6)),
        # the swept values: in order, reversed, shuffled, one repeated, or two that QCoDeS
        # reads as one (0.1 + 0.2 and 0.3 agree to 15 digits)
        "sweep": draw(st.sampled_from(["rising", "falling", "shuffled", "repeat", "near"])),
        "seed": draw(st.integers(0, 1000)),
        # the frequencies: the same in every row, one row's changed, or a repeated one
        "axis": draw(st.sampled_from(["same", "same", "changed", "repeated", "unsorted"])),
        # shapes: none, the run's own (QCoDeS' direct layout), one it does not fill
        "shape": draw(st.sampled_from([None, "fits", "larger"])),
        "dependents": draw(st.integers(1, 2)),
        "complex": draw(st.booleans()),
        "integers": draw(st.booleans()),  # the swept values stored as SQLite integers
    }


@EXAMPLES
@given(traces=_traces())
def test_streamed_array_grids_equal_the_in_memory_layout_and_qcodes(
    tmp_path_factory: pytest.TempPathFactory, traces: dict[str, Any]
) -> None:
    """Spectra (or complex IQ traces) registered against a swept scalar and an array
    setpoint: the streamed grid equals the in-memory plan's file and QCoDeS' export, and
    it must stream whenever QCoDeS' layout is that grid (unique swept values, the same
    distinct frequencies in every row) or the direct layout of a fitting shape."""
    from qcodes.dataset import Measurement

    folder = tmp_path_factory.mktemp("traces")
    path = folder / "traces.db"
    experiment = new_database(path, "traces")
    gate, freq = parameters("gate", "freq")
    dependents = parameters(*(f"s{n}" for n in range(traces["dependents"])))
    steps, points = traces["steps"], traces["points"]
    rng = np.random.default_rng(traces["seed"])
    swept: list[Any] = list(np.linspace(-1.5, 2.5, steps))
    if traces["integers"]:
        swept = [int(v * 10) for v in range(steps)]
    if traces["sweep"] == "falling":
        swept.reverse()
    elif traces["sweep"] == "shuffled":
        swept = list(rng.permutation(np.array(swept)))
    elif traces["sweep"] == "repeat" and steps > 1:
        swept[-1] = swept[0]
    elif traces["sweep"] == "near" and steps > 1:
        swept[0], swept[-1] = 0.1 + 0.2, 0.3
    axis = np.linspace(4e9, 8e9, points)
    if traces["axis"] == "unsorted":
        axis = rng.permutation(axis)
    elif traces["axis"] == "repeated" and points > 1:
        axis[-1] = axis[0]
    measurement = Measurement(exp=experiment, name="traces")
    measurement.register_parameter(gate)
    measurement.register_parameter(freq, paramtype="array")
    for dependent in dependents:
        measurement.register_parameter(dependent, setpoints=(gate, freq), paramtype="array")
    if traces["shape"] is not None:
        rows = steps if traces["shape"] == "fits" else steps + 2
        measurement.set_shapes({d.name: (rows, points) for d in dependents})
    with _qcodes_cache_casts_complex(), measurement.run() as saver:
        for row, value in enumerate(swept):
            frequencies = axis.copy()
            if traces["axis"] == "changed" and row == steps - 1:
                frequencies[0] -= 1.0
            results = []
            for _ in dependents:
                trace = rng.normal(size=points)
                if traces["complex"]:
                    trace = trace + 1j * rng.normal(size=points)
                results.append(trace)
            saver.add_result(
                (gate, value), (freq, frequencies), *zip(dependents, results, strict=True)
            )
    experiment.conn.close()  # type: ignore[attr-defined]

    keys = {float(f"{float(v):.15g}") for v in swept}
    grid = (
        len(keys) == steps
        and traces["axis"] in ("same", "unsorted")
        and len({float(f"{f:.15g}") for f in axis}) == points
    )
    direct = traces["shape"] == "fits"
    difference = export_where_058_differs(path, 1, folder)
    if difference is not None:  # QCoDeS 0.62's direct layout, which qcsql follows
        assert direct, difference
        if difference.endswith(NOT_A_GRID):
            _assert_both_refuse(path, folder)
            return
    _assert_streamed_equals_in_memory(path, folder, must_stream=grid or direct)
    if difference is None:
        with qcsql.open_database(path) as db:
            ours = db.load_by_id(1).export_hdf5(folder / "ours.nc")
        _assert_exports_like_qcodes(path, 1, ours, folder)


def _assert_both_refuse(path: Path, folder: Path, run_id: int = 1) -> None:
    """The streamed export and the in-memory one both give QCoDeS 0.62's refusal."""
    with qcsql.open_database(path) as db:
        run = db.load_by_id(run_id)
        with pytest.raises(qcsql.DirectLayoutError):
            run.export_hdf5(folder / "streamed.nc")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(qcsql.export.run, "streamed_plans", lambda run, progress=None: iter(()))
            with pytest.raises(qcsql.DirectLayoutError):
                run.export_hdf5(folder / "in_memory.nc")


# -- complex numbers and text as scalar parameters ----------------------------------------


def _value(paramtype: str, real: float, imaginary: float) -> Any:
    """A value of ``paramtype`` made of two numbers."""
    if paramtype == "complex":
        return complex(real, imaginary)
    if paramtype == "text":
        return f"{real:.6g}/{imaginary:.3g}"
    return real


@contextlib.contextmanager
def _qcodes_cache_casts_complex() -> Iterator[None]:
    """QCoDeS 0.58's in-memory cache of a shaped run preallocates floats, even for
    complex parameters, and numpy warns when it casts (the database gets the complex
    values; only the cache, which no test reads, loses the imaginary part)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        yield


@pytest.fixture(scope="module", params=["complex", "text"])
def scalar_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QCoDeS 0.58 sweeps of a complex parameter (paramtype 'complex': one .npy blob per
    value, which only SQLite reads), or of a text one: along one setpoint; a shaped 2-D
    grid with a numeric dependent beside it; the same sweep stopped early (holes);
    repeated setpoints; an unshaped 2-D sweep stopped mid-line (multi-index)."""
    from qcodes.dataset import Measurement

    paramtype = request.param
    path = tmp_path_factory.mktemp(paramtype) / f"{paramtype}.db"
    experiment = new_database(path, paramtype)
    x, y = parameters("x", "y")
    s21, i = parameters("s21", "i")
    rng = np.random.default_rng(11)

    def sweep(
        name: str, points: list[tuple[float, ...]], shape: tuple[int, ...] | None, with_i: bool
    ) -> None:
        measurement = Measurement(exp=experiment, name=name)
        axes = (x, y)[: len(points[0])]
        for axis in axes:
            measurement.register_parameter(axis)
        measurement.register_parameter(s21, setpoints=axes, paramtype=paramtype)
        if with_i:
            measurement.register_parameter(i, setpoints=axes)
        if shape is not None:
            dependents = ("s21", "i") if with_i else ("s21",)
            measurement.set_shapes({name: shape for name in dependents})
        with measurement.run() as saver:
            for point in points:
                value = complex(rng.normal(), rng.normal())
                stored = value if paramtype == "complex" else f"state {abs(value):.3f}"
                results = [(axis, v) for axis, v in zip(axes, point, strict=False)]
                extra = [(i, abs(value))] if with_i else []
                saver.add_result(*results, (s21, stored), *extra)

    line = [(v,) for v in np.linspace(4e9, 8e9, 1500)]
    grid = [(a, b) for a in np.linspace(-1, 1, 20) for b in np.linspace(0, 1, 30)]
    sweep("1-D", line, (1500,), False)
    sweep("2-D shaped, with a numeric dependent", grid, (20, 30), True)
    sweep("2-D shaped, stopped early", grid[:200], (20, 30), False)
    sweep("repeated setpoints", line[:300] * 3, None, False)
    sweep("2-D unshaped, stopped mid-line", grid[:215], None, False)
    experiment.conn.close()  # type: ignore[attr-defined]
    return path


@pytest.mark.parametrize("run_id", [1, 2, 3, 4, 5])
def test_complex_and_text_sweeps_stream_and_equal_qcodes(
    scalar_db: Path, tmp_path: Path, streamed: list[str], run_id: int
) -> None:
    """Streamed like numeric sweeps. The holes of a stopped complex grid read as NaN +
    NaNj, as in QCoDeS' file, through the dataset's fill value (without a _FillValue
    attribute, which xarray does not write for complex numbers); text cells never
    written read as "", as xarray writes text holes. QCoDeS cannot
    export text in the multi-index layout (run 5: pandas' StringDtype fails in xarray's
    encoder), so that file is compared with the in-memory plan's, itself compared with
    QCoDeS for numbers."""
    with qcsql.open_database(scalar_db) as db:
        ours = db.load_by_id(run_id).export_hdf5(tmp_path)
    text = scalar_db.stem == "text"
    assert "in memory" not in streamed
    with xr.open_dataset(ours, engine="h5netcdf") as b:
        assert b["s21"].dtype.kind == ("U" if text else "c")
    if text and run_id == 5:
        _assert_streamed_equals_in_memory(scalar_db, tmp_path, run_id)
        return
    _assert_exports_like_qcodes(scalar_db, run_id, ours, tmp_path)


@EXAMPLES
@given(
    values=st.lists(
        st.sampled_from([-1.0, 0.0, 0.5, 1e-3, 2.0, 7.5, float("nan")]), min_size=1, max_size=12
    )
    | st.permutations([0.1 * n for n in range(9)]),
    dependents=st.integers(1, 3),
    shaped=st.booleans(),
    together=st.booleans(),
    every=st.integers(1, 3),
    paramtype=st.sampled_from(["numeric", "complex", "text"]),
)
def test_streamed_one_dimensional_runs_equal_the_in_memory_layout(
    tmp_path_factory: pytest.TempPathFactory,
    values: list[float],
    dependents: int,
    shaped: bool,
    together: bool,
    every: int,
    paramtype: str,
) -> None:
    """Single-setpoint runs in any order, with or without repeats, a dependent measured at
    fewer points: monotonic ones stream in one pass, the others after a pass that counts
    the distinct values (repeats: the flat index layout), dependents at different points
    as QCoDeS' outer merge; the file is the in-memory plan's."""
    from qcodes.dataset import Measurement

    folder = tmp_path_factory.mktemp("one-d")
    path = folder / "one-d.db"
    experiment = new_database(path, "one-d")
    (x,) = parameters("x")
    outputs = parameters(*(f"d{n}" for n in range(dependents)))
    measurement = Measurement(exp=experiment, name="1-D")
    measurement.register_parameter(x)
    for output in outputs:
        measurement.register_parameter(output, setpoints=(x,), paramtype=paramtype)
    if shaped and paramtype != "text":  # QCoDeS' cache of shaped runs casts to float
        measurement.set_shapes({o.name: (len(values),) for o in outputs})
    with _qcodes_cache_casts_complex(), measurement.run() as saver:
        for n, value in enumerate(values):
            results = [
                (o, _value(paramtype, value * 3 + k + n * 1e-3, k - value))
                for k, o in enumerate(outputs)
            ]
            if together:
                saver.add_result((x, value), *results)
            else:  # the last dependent only at every ``every``-th point: an outer merge
                for result in results[:-1] if n % every else results:
                    saver.add_result((x, value), result)
    experiment.conn.close()  # type: ignore[attr-defined]

    # Numeric dependents at every point stream, in any order and with repeats or NaN.
    must_stream = paramtype == "numeric" and (together or every == 1)
    with qcsql.open_database(path) as db:
        difference = layout_differs_from_058(db.load_by_id(1))
    if difference is not None and difference.endswith(NOT_A_GRID):
        _assert_both_refuse(path, folder)  # a shaped sweep that repeats a value (0.62)
        return
    _assert_streamed_equals_in_memory(path, folder, must_stream=must_stream)


def _rounded_direction(values: np.ndarray, previous: float | None, direction: int) -> int | None:
    """The definition: the signs of the steps between the values as QCoDeS reads them."""
    joined = values if previous is None else np.concatenate([[previous], values])
    if len(joined) < 2:
        return direction
    signs = np.sign(np.diff(qcsql.export.keys.as_qcodes_sees(joined)))
    if np.isnan(signs).any():
        return None
    direction = direction or int(signs[0])
    if direction == 0 or np.any(signs != direction):
        return None
    return direction


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(-1e12, 1e12),
    steps=st.lists(
        st.sampled_from([1.0, 1e-3, 1e-12, 1e-15, 0.0, -1e-15, -1.0]) | st.floats(-1e3, 1e3),
        min_size=0,
        max_size=20,
    ),
    scale=st.sampled_from([1.0, -1.0, 1e-9, 1e9]),
    previous=st.none() | st.floats(-1e12, 1e12),
    direction=st.sampled_from([-1, 0, 1]),
    nan_at=st.none() | st.integers(0, 20),
)
def test_monotonic_setpoints_are_judged_as_qcodes_rounds_them(
    start: float,
    steps: list[float],
    scale: float,
    previous: float | None,
    direction: int,
    nan_at: int | None,
) -> None:
    """The quick test for rising or falling setpoints (min and max of the steps) agrees
    with rounding every value to 15 digits, QCoDeS' view, on runs that are monotonic,
    nearly so, have steps below the 15th digit, or NaN."""
    values = start + scale * np.cumsum([0.0, *steps])
    if nan_at is not None and nan_at < len(values):
        values[nan_at] = np.nan
    assert qcsql.export.streamed._monotonic(values, previous, direction) == _rounded_direction(
        values, previous, direction
    )
