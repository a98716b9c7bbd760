"""The engine's lazy variables: the layouts of large runs read only the rows indexed.

Runs written by QCoDeS' Measurement API: a 1-D sweep, a shaped 2-D grid (QCoDeS'
direct layout), a run of arrays (flat along ``index``) and a sweep off the grid (a
multi-index). Each opens lazily, loads to exactly ``Run.to_xarray_dataset()`` (which
test_xarray_matches_qcodes.py compares with QCoDeS), gives the same values for any
basic or fancy index, reads only the rows an index spans (counted), and pickles
without a connection.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from qcsql.xarray.lazy import RowsArray, rows_read

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from xarray.core.indexing import ExplicitlyIndexed  # noqa: E402

from tests.qcodes_build import new_database, parameters  # noqa: E402

SWEEP, GRID, ARRAYS, SCATTER, TWO_SWEEPS = 1, 2, 3, 4, 5
GRID_SHAPE = (30, 40)
ARRAY_ROWS, ARRAY_LENGTH = 50, 20


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("lazy") / "lazy.db"
    experiment = new_database(path)
    rng = np.random.default_rng(7)
    try:
        x, y, v, w, freq, spectrum = parameters("x", "y", "v", "w", "freq", "spectrum")
        sweep = Measurement(exp=experiment, name="sweep")
        sweep.register_parameter(x)
        sweep.register_parameter(v, setpoints=(x,))
        with sweep.run() as saver:
            xs = np.linspace(-1, 1, 2000)
            saver.add_result((x, xs), (v, np.sin(xs * 7) + rng.normal(0, 0.1, xs.size)))
        grid = Measurement(exp=experiment, name="grid")
        grid.register_parameter(x)
        grid.register_parameter(y)
        grid.register_parameter(w, setpoints=(x, y))
        grid.set_shapes({"w": GRID_SHAPE})
        with grid.run() as saver:
            for xv in np.linspace(0, 1, GRID_SHAPE[0]):
                ys = np.linspace(-2, 2, GRID_SHAPE[1])
                saver.add_result((x, np.full_like(ys, xv)), (y, ys), (w, xv * ys))
        arrays = Measurement(exp=experiment, name="arrays")
        arrays.register_parameter(freq, paramtype="array")
        arrays.register_parameter(spectrum, setpoints=(freq,), paramtype="array")
        with arrays.run() as saver:
            for _ in range(ARRAY_ROWS):
                saver.add_result(
                    (freq, np.linspace(1, 2, ARRAY_LENGTH)),
                    (spectrum, rng.normal(0, 1, ARRAY_LENGTH)),
                )
        scatter = Measurement(exp=experiment, name="scatter")
        scatter.register_parameter(x)
        scatter.register_parameter(y)
        scatter.register_parameter(w, setpoints=(x, y))
        with scatter.run() as saver:
            for _ in range(300):
                xv, yv = rng.uniform(0, 1, 2)
                saver.add_result((x, xv), (y, yv), (w, xv * yv))
        two = Measurement(exp=experiment, name="two sweeps")  # trees on dimensions of their own
        two.register_parameter(x)
        two.register_parameter(y)
        two.register_parameter(v, setpoints=(x,))
        two.register_parameter(w, setpoints=(y,))
        with two.run() as saver:
            saver.add_result((x, np.linspace(0, 1, 300)), (v, rng.normal(0, 1, 300)))
            saver.add_result((y, np.linspace(5, -5, 200)), (w, rng.normal(0, 1, 200)))
            saver.add_result((x, np.linspace(2, 3, 100)), (v, rng.normal(0, 1, 100)))
    finally:
        experiment.conn.close()
    return path


def _lazy(dataset: Any) -> set[str]:
    """The variables whose data are qcsql's lazy arrays (under xarray's wrappers)."""
    found = set()
    for name, variable in dataset.variables.items():
        data = variable._data
        while isinstance(data, ExplicitlyIndexed) and not isinstance(data, RowsArray):
            data = data.array
        if isinstance(data, RowsArray):
            found.add(name)
    return found


CASES = [
    (SWEEP, "v", {"v"}),
    (GRID, "w", {"w"}),
    (ARRAYS, "spectrum", {"spectrum", "freq"}),
    (SCATTER, "w", {"w"}),
    (TWO_SWEEPS, "w", {"v", "w"}),
]


@pytest.mark.parametrize(("run_id", "name", "lazy"), CASES)
def test_large_run_layouts_open_lazily_and_load_exactly(
    database: Path, run_id: int, name: str, lazy: set[str]
) -> None:
    with qcsql.open_database(database) as db:
        expected = db.load_by_id(run_id).to_xarray_dataset()
    with xr.open_dataset(database, engine="qcsql", run_id=run_id) as opened:
        assert _lazy(opened) == lazy
        xr.testing.assert_identical(opened.load(), expected)


INDEXES: list[Any] = [
    0,
    -1,
    slice(None),
    slice(5, 17),
    slice(3, None, 7),
    slice(None, None, -3),
    slice(40, 2, -5),
    slice(10, 10),
    [4, 2, 9],
    "every third",
]


@pytest.mark.parametrize(("run_id", "name", "lazy"), CASES)
def test_any_index_gives_the_values_of_the_loaded_run(
    database: Path, run_id: int, name: str, lazy: set[str]
) -> None:
    with qcsql.open_database(database) as db:
        expected = db.load_by_id(run_id).to_xarray_dataset()[name].values
    with xr.open_dataset(database, engine="qcsql", run_id=run_id) as opened:
        array = opened[name].variable
        for index in INDEXES:
            if isinstance(index, str):  # a boolean mask along the first axis
                index = np.arange(expected.shape[0]) % 3 == 0
            key = (index, 1) if expected.ndim == 2 else (index,)
            np.testing.assert_array_equal(array[key].values, expected[key], err_msg=str(key))


def test_a_slice_reads_only_its_rows(database: Path) -> None:
    with xr.open_dataset(database, engine="qcsql", run_id=SWEEP) as opened:
        with rows_read() as log:
            opened["v"][500:1500].values
        assert [r.rows for r in log] == [1000]
        assert log[0].upto_id - log[0].after_id == 1000  # one tree: ids are the positions
    with xr.open_dataset(database, engine="qcsql", run_id=ARRAYS) as opened:
        with rows_read() as log:
            opened["spectrum"][45:65].values  # elements of rows 2 and 3
        assert [r.rows for r in log] == [2]
    with xr.open_dataset(database, engine="qcsql", run_id=GRID) as opened:
        with rows_read() as log:
            opened["w"][3:5, 10:20].values  # lines 3 and 4 of the grid
        assert [r.rows for r in log] == [2 * GRID_SHAPE[1]]


def test_a_few_rows_decode_a_few_leaf_pages(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slice of ten values reads the leaf pages that hold them, not a whole window of
    pages (the sweep's 2,000 rows fill more than a dozen)."""
    import qcsql.sqlite.pages

    real = qcsql.sqlite.pages.leaf_pages
    fetched: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> list[int]:
        found: list[int] = real(*args, **kwargs)
        fetched.extend(found)
        return found

    monkeypatch.setattr(qcsql.sqlite.pages, "leaf_pages", counted)
    with xr.open_dataset(database, engine="qcsql", run_id=SWEEP, cache=False) as opened:
        fetched.clear()
        everything = opened["v"].values
        pages_of_all = len(fetched)
        fetched.clear()
        np.testing.assert_array_equal(opened["v"][500:510].values, everything[500:510])
    assert pages_of_all > 10
    assert 1 <= len(fetched) <= 2


def test_opening_reads_no_values_through_lazy_arrays(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("opening read the run whole")

    monkeypatch.setattr(qcsql.Run, "get_parameter_data", never)
    for run_id in (SWEEP, ARRAYS, TWO_SWEEPS):
        with rows_read() as log:
            with xr.open_dataset(database, engine="qcsql", run_id=run_id) as opened:
                assert _lazy(opened)
        assert log == []  # a sweep's setpoint is kept from the pass that settles its layout


def test_lazy_coordinates_without_default_indexes_open_reading_no_values(database: Path) -> None:
    with qcsql.open_database(database) as db:
        expected = db.load_by_id(SWEEP).to_xarray_dataset()
    with rows_read() as log:
        with xr.open_dataset(
            database, engine="qcsql", run_id=SWEEP, lazy_coordinates=True
        ) as opened:
            assert _lazy(opened) == {"v"}
            assert [r.rows for r in log] == [2000]  # xarray indexes x, reading it
            xr.testing.assert_identical(opened.load(), expected)
    with rows_read() as log:
        with xr.open_dataset(
            database,
            engine="qcsql",
            run_id=SWEEP,
            lazy_coordinates=True,
            create_default_indexes=False,
        ) as opened:
            assert _lazy(opened) == {"v", "x"}
            assert not opened.xindexes
            assert log == []
            with rows_read() as sliced:
                np.testing.assert_array_equal(opened["x"][10:20].values, expected["x"][10:20])
            assert [r.rows for r in sliced] == [10]
            xr.testing.assert_identical(opened.load().set_xindex("x"), expected)


def test_lazy_datasets_pickle_without_a_connection(database: Path) -> None:
    with xr.open_dataset(database, engine="qcsql", run_id=ARRAYS) as opened:
        again = pickle.loads(pickle.dumps(opened))
        assert _lazy(again) == {"spectrum", "freq"}
        xr.testing.assert_identical(again.load(), opened.load())


def test_chunks_are_windows_of_rows(database: Path) -> None:
    pytest.importorskip("dask")
    with xr.open_dataset(database, engine="qcsql", run_id=ARRAYS, chunks={}) as opened:
        assert opened["spectrum"].chunks == ((ARRAY_ROWS * ARRAY_LENGTH,),)  # one window
    # chunks smaller than the windows: xarray says so, as for any file's stored chunks
    with (
        pytest.warns(UserWarning, match="separate the stored chunks"),
        xr.open_dataset(database, engine="qcsql", run_id=SWEEP, chunks={"x": 300}) as opened,
    ):
        with qcsql.open_database(database) as db:
            expected = db.load_by_id(SWEEP).get_parameter_data()["v"]["v"]
        assert opened["v"].chunks == ((300,) * 6 + (200,),)
        np.testing.assert_array_equal(opened["v"].values, expected)


def test_a_cluster_of_processes_computes_on_a_chunked_run(database: Path) -> None:
    pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    with qcsql.open_database(database) as db:
        data = db.load_by_id(ARRAYS).get_parameter_data()["spectrum"]["spectrum"]
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        pytest.warns(UserWarning, match="separate the stored chunks"),
        xr.open_dataset(database, engine="qcsql", run_id=ARRAYS, chunks={"index": 220}) as opened,
    ):
        assert len(opened["spectrum"].chunks[0]) > 2
        mean = float(opened["spectrum"].mean().compute())
        total = float(opened["spectrum"].sum().compute())
    np.testing.assert_allclose(mean, data.mean(), rtol=1e-13)
    np.testing.assert_allclose(total, data.sum(), rtol=1e-13)


def test_slices_of_every_lazy_variable_of_the_example_runs(tmp_path: Path) -> None:
    from tests.helpers import EXAMPLE_DB, copy_database

    path = copy_database(EXAMPLE_DB, tmp_path)
    with qcsql.open_database(path) as db:
        runs = [(run.run_id, run.to_xarray_dataset()) for run in db.runs()]
    seen = 0
    for run_id, expected in runs:
        with xr.open_dataset(path, engine="qcsql", run_id=run_id) as opened:
            for name in _lazy(opened):
                seen += 1
                size = opened[name].shape[0]
                for index in (slice(1, size - 1), slice(size // 2, None, 2), size - 1):
                    np.testing.assert_array_equal(
                        opened[name][index].values, expected[name][index].values
                    )
    assert seen >= 5


def test_a_rising_sweep_with_values_one_for_qcodes_is_not_taken_as_unique(
    tmp_path: Path,
) -> None:
    """Setpoints that rise strictly but differ only past the 15th digit are one value as
    QCoDeS reads them: duplicates, so the run is laid out along ``index`` as QCoDeS does."""
    from qcodes.dataset import Measurement, load_by_id

    from tests.helpers import copy_database
    from tests.qcodes_reference import _connect_like_a_user

    path = tmp_path / "near.db"
    experiment = new_database(path)
    try:
        x, v = parameters("x", "v")
        sweep = Measurement(exp=experiment, name="near duplicates")
        sweep.register_parameter(x)
        sweep.register_parameter(v, setpoints=(x,))
        with sweep.run() as saver:
            for value in (1.0, float(np.nextafter(1.0, 2.0)), 2.0, 3.0):
                saver.add_result((x, value), (v, value * 2))
    finally:
        experiment.conn.close()
    conn, _ = _connect_like_a_user(copy_database(path, tmp_path / "q"), tmp_path / "qc")
    try:
        theirs = load_by_id(1, conn=conn).to_xarray_dataset()
    finally:
        conn.close()
    assert set(theirs.dims) == {"index"}
    with qcsql.open_database(path) as db:
        ours = db.load_by_id(1).to_xarray_dataset()
    assert set(ours.dims) == {"index"}
    with xr.open_dataset(path, engine="qcsql", run_id=1) as opened:
        assert set(opened.dims) == {"index"}


def test_arrays_of_another_shape_past_the_first_rows_are_a_typed_error(tmp_path: Path) -> None:
    """Blobs of one size settle an array run's layout on open; a later row whose array has
    another shape in a blob of that size (40 float32 among rows of 20 float64) is found
    when read, as one typed error, not as misplaced values."""
    from qcodes.dataset import Measurement

    path = tmp_path / "shapes.db"
    experiment = new_database(path)
    try:
        freq, spectrum = parameters("freq", "spectrum")
        arrays = Measurement(exp=experiment, name="arrays")
        arrays.register_parameter(freq, paramtype="array")
        arrays.register_parameter(spectrum, setpoints=(freq,), paramtype="array")
        with arrays.run() as saver:
            for row in range(2500):
                values, setpoints = np.arange(20.0) + row, np.linspace(1, 2, 20)
                if row == 2400:  # 40 float32 in as many bytes as 20 float64
                    values = np.arange(40, dtype=np.float32)
                    setpoints = np.linspace(1, 2, 40, dtype=np.float32)
                saver.add_result((freq, setpoints), (spectrum, values))
    finally:
        experiment.conn.close()
    with xr.open_dataset(path, engine="qcsql", run_id=1) as opened:
        np.testing.assert_array_equal(opened["spectrum"][:20].values, np.arange(20.0))
        with pytest.raises(qcsql.DataDecodeError, match="other shapes than its first rows"):
            opened["spectrum"][2400 * 20 : 2401 * 20].values


@pytest.mark.parametrize("step", [1.0, -1.0])
def test_a_sweep_read_in_windows_is_told_as_read_whole(
    database: Path, step: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that settles a sweep's layout, fed window by window (as opening streams
    the setpoint), agrees with the whole column, across window edges too; and a sweep
    longer than one window is told without factorizing its setpoint."""
    import qcsql.export.layout as layout

    column = np.arange(3_000_000.0) * step
    for cut in (1, 2, 1 << 20, 2_999_999):
        assert layout.monotonic_apart([column[:cut], column[cut:]])
    repeated = column.copy()
    repeated[1 << 20] = repeated[(1 << 20) - 1]  # a repeat right at a window's edge
    assert not layout.monotonic_apart([repeated[: 1 << 20], repeated[1 << 20 :]])
    assert not layout.monotonic_apart([column[:1]])

    def never(*args: Any) -> Any:
        raise AssertionError("a sweep was factorized")

    monkeypatch.setattr(layout, "_factors", never)
    with qcsql.open_database(database) as db:
        description = db.load_by_id(SWEEP).description
    plan = layout.plan_dataset(description, {"v": {"v": column, "x": column}}, {})
    assert plan.dims == {"x": len(column)}


def test_steps_narrow_beside_large_values_are_each_compared_with_their_own() -> None:
    """A sweep whose narrowest step is below two units of the 15th digit of its largest
    value, yet wider than that of its own two values, is unique as QCoDeS reads it (the
    quick test on the narrowest step fails, each step passes); a step too narrow for its
    own values is not."""
    import qcsql.export.layout as layout

    fine_then_coarse = np.concatenate([np.arange(1, 100) * 1e-10, np.arange(1, 100) * 1e5])
    assert layout.monotonic_apart([fine_then_coarse])
    assert layout.monotonic_apart([fine_then_coarse[::-1].copy()])
    too_close = np.array([1.0, 2.0, 1e5, 1e5 + 1e-12, 2e5])
    assert not layout.monotonic_apart([too_close])
    assert not layout.monotonic_apart([np.array([1.0, np.nan, 3.0])])
    assert not layout.monotonic_apart([np.array([1.0, 2.0, np.inf])])


def test_a_sweep_unique_out_of_order_is_read_once_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setpoints unique but not in order (no repeat among the first values): the pass that
    finds them out of order keeps the column and lays the run out from it, instead of
    reading the setpoints again; the dataset is still ``to_xarray_dataset()``'s."""
    from qcodes.dataset import Measurement

    import qcsql.sqlite.pages

    path = tmp_path / "shuffled.db"
    experiment = new_database(path)
    points = 100_000
    try:
        x, v = parameters("x", "v")
        sweep = Measurement(exp=experiment, name="shuffled sweep")
        sweep.register_parameter(x)
        sweep.register_parameter(v, setpoints=(x,))
        rng = np.random.default_rng(11)
        with sweep.run() as saver:
            xs = rng.permutation(points) * 1e-3 + 0.5e-3
            saver.add_result((x, xs), (v, np.cos(xs)))
    finally:
        experiment.conn.close()
    with qcsql.open_database(path) as db:
        expected = db.load_by_id(1).to_xarray_dataset()
    pages_read: list[int] = []
    real = qcsql.sqlite.pages.PageSource.pages

    def counted(self: Any, numbers: Any) -> Any:
        pages_read.append(len(numbers))
        return real(self, numbers)

    monkeypatch.setattr(qcsql.sqlite.pages.PageSource, "pages", counted)
    with xr.open_dataset(path, engine="qcsql", run_id=1) as opened:
        once = points // 150  # rows of three numbers: about 160 a leaf page of 4 KiB
        assert 0 < sum(pages_read) < once * 1.3, "the setpoints were read twice"
        xr.testing.assert_identical(opened.load(), expected)
