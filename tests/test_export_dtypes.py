"""Every variable of an exported file has the dtype of QCoDeS' own file.

QCoDeS' rules (0.58, ``exporters/export_to_xarray.py`` and ``export_to_pandas.py``, with
xarray underneath): an array keeps the dtype ``get_parameter_data`` gives it (integer
spectra stay int64, int32 stays int32) in every layout, except where xarray inserts
NaN holes: unstacking a MultiIndex that is not a full grid (``from_dataframe``) and
reindexing a tree in the outer merge with a label it lacks (``reindex_variables``).
Only there integers become floats, by xarray's ``maybe_promote``: float32 up to two
bytes, float64 above. Numeric parameters are float64 in ``get_parameter_data`` even when
``add_result`` got integers, and a tree without rows is float64 whatever its paramtype
(complex, text). Each run is exported by QCoDeS and by qcsql (streamed where a streamed
layout fits, checked by recording the fall-backs to the in-memory plan) and both files
are compared, dtypes explicitly, as is qcsql's in-memory plan with ``to_xarray_dataset()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
import qcsql.export.layout
import qcsql.export.run
import qcsql.export.streamed
from tests.helpers import copy_database, record_in_memory_plans
from tests.qcodes_build import new_database, qcodes_export

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.test_export_matches_qcodes import ENGINES, assert_same_dataset  # noqa: E402

N = 7  # points per spectrum


def _spectra(n: int, values: Callable[[], Any], setpoints: Callable[[], Any]) -> tuple[Any, Any]:
    """A ParameterWithSetpoints ``spectrum`` (``values()``) against ``freq``."""
    from qcodes.parameters import Parameter, ParameterWithSetpoints
    from qcodes.validators import Arrays

    freq = Parameter("freq", get_cmd=setpoints, set_cmd=None, vals=Arrays(shape=(n,)))
    spectrum = ParameterWithSetpoints(
        "spectrum", get_cmd=values, setpoints=(freq,), vals=Arrays(shape=(n,))
    )
    return freq, spectrum


def _fresh(*names: str) -> list[Any]:
    """New manual parameters (a parameter keeps the paramtype of its first registration)."""
    from qcodes.parameters import Parameter

    return [Parameter(name, set_cmd=None, get_cmd=None) for name in names]


# label -> (run_id, whether qcsql's export streams it)
RUNS: dict[str, tuple[int, bool]] = {}


@pytest.fixture(scope="session")
def dtype_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("dtypes") / "dtypes.db"
    experiment = new_database(path, "dtypes")

    def run(label: str, streams: bool, build: Callable[[Any], None]) -> None:
        measurement = Measurement(exp=experiment, name=label)
        build(measurement)
        RUNS[label] = (len(RUNS) + 1, streams)

    def spectra_over_gate(dtype: Any, shape: tuple[int, int] | None, lines: int) -> Any:
        def build(measurement: Any) -> None:
            freq, spectrum = _spectra(
                N, lambda: np.arange(N, dtype=dtype), lambda: np.linspace(0, 1, N)
            )
            (gate,) = _fresh("gate")
            measurement.register_parameter(gate)
            measurement.register_parameter(spectrum, setpoints=(gate,), paramtype="array")
            if shape is not None:
                measurement.set_shapes({"spectrum": shape})
            with measurement.run() as saver:
                for line in range(lines):
                    saver.add_result((gate, line * 0.5), (spectrum, spectrum()), (freq, freq()))

        return build

    # integer spectra over a gate, unshaped: a full grid of (gate, freq), no holes
    run("int64 spectra on a grid", True, spectra_over_gate(np.int64, None, 4))
    run("int32 spectra on a grid", True, spectra_over_gate(np.int32, None, 4))
    # a declared shape the data fill: QCoDeS' direct layout
    run("int64 spectra, shape filled", True, spectra_over_gate(np.int64, (4, N), 4))
    # a shape the data do not fill, but the sorted levels still make a full grid
    run("int64 spectra, shape not filled", True, spectra_over_gate(np.int64, (6, N), 4))

    def holes(dtype: Any) -> Callable[[Any], None]:
        def build(measurement: Any) -> None:  # a shaped 3 x 4 grid that stopped one short
            a, b, z = _fresh("a", "b", "z")
            measurement.register_parameter(a, paramtype="array")
            measurement.register_parameter(b, paramtype="array")
            measurement.register_parameter(z, setpoints=(a, b), paramtype="array")
            measurement.set_shapes({"z": (3, 4)})
            with measurement.run() as saver:
                saver.add_result(
                    (a, np.repeat(np.arange(3), 4)[:-1]),
                    (b, np.tile(np.arange(4) * 0.25, 3)[:-1]),
                    (z, np.arange(11, dtype=dtype)),
                )

        return build

    run("int64 grid with a hole", False, holes(np.int64))
    run("int16 grid with a hole", False, holes(np.int16))

    def scattered(measurement: Any) -> None:  # unshaped, off the grid: compressed multi_index
        a, b, z = _fresh("a", "b", "z")
        measurement.register_parameter(a, paramtype="array")
        measurement.register_parameter(b, paramtype="array")
        measurement.register_parameter(z, setpoints=(a, b), paramtype="array")
        with measurement.run() as saver:
            saver.add_result((a, np.arange(5)), (b, np.arange(5) * 2), (z, np.arange(5) * 3))

    run("int64 scattered", False, scattered)

    def outer_merge(second: list[int]) -> Callable[[Any], None]:
        def build(measurement: Any) -> None:  # two trees on one setpoint: xarray's outer join
            x, y1, y2 = _fresh("x", "y1", "y2")
            measurement.register_parameter(x, paramtype="array")
            measurement.register_parameter(y1, setpoints=(x,), paramtype="array")
            measurement.register_parameter(y2, setpoints=(x,), paramtype="array")
            with measurement.run() as saver:
                saver.add_result((x, np.array([0, 1, 2])), (y1, np.array([5, 6, 7])))
                saver.add_result((x, np.array(second)), (y2, np.array([8, 9, 10])))

        return build

    run("int64 trees merged with holes", False, outer_merge([1, 2, 3]))
    run("int64 trees merged, reordered", False, outer_merge([2, 1, 0]))

    def repeated(measurement: Any) -> None:  # the same frequencies every sweep: flat index
        freq, spectrum = _spectra(
            100, lambda: np.arange(100) * 3 - 50, lambda: np.linspace(4e9, 5e9, 100)
        )
        measurement.register_parameter(spectrum, paramtype="array")
        with measurement.run() as saver:
            for _ in range(300):
                saver.add_result((spectrum, spectrum()), (freq, freq()))

    run("int64 spectra repeated", True, repeated)

    def numeric_ints(measurement: Any) -> None:  # integers into a numeric column
        x, y = _fresh("x", "y")
        measurement.register_parameter(x)
        measurement.register_parameter(y, setpoints=(x,))
        with measurement.run() as saver:
            for start in range(0, 140_000, 2000):
                steps = np.arange(start, start + 2000)
                saver.add_result((x, steps), (y, steps * 7 - 3))

    run("numeric ints", True, numeric_ints)

    def empty(paramtype: str) -> Callable[[Any], None]:
        def build(measurement: Any) -> None:
            x, y = _fresh("x", "y")
            measurement.register_parameter(x)
            measurement.register_parameter(y, setpoints=(x,), paramtype=paramtype)
            with measurement.run():
                pass

        return build

    run("empty complex", False, empty("complex"))
    run("empty text", False, empty("text"))
    run("empty array", False, empty("array"))

    def empty_tree_beside(measurement: Any) -> None:  # one tree has rows, the other none
        x, y, c = _fresh("x", "y", "c")
        measurement.register_parameter(x)
        measurement.register_parameter(y, setpoints=(x,))
        measurement.register_parameter(c, setpoints=(x,), paramtype="complex")
        with measurement.run() as saver:
            for step in range(50):
                saver.add_result((x, step * 0.5), (y, step * 2.0))

    run("complex tree without rows", False, empty_tree_beside)

    experiment.conn.close()
    return path


def _dtypes(dataset: Any) -> dict[str, tuple[tuple[str, ...], str]]:
    return {str(name): (tuple(v.dims), str(v.dtype)) for name, v in dataset.variables.items()}


def _column_dtypes(data: Any) -> dict[str, dict[str, str]]:
    return {tree: {c: str(a.dtype) for c, a in columns.items()} for tree, columns in data.items()}


def _as_written(dataset: Any) -> Any:
    """A dataset with a MultiIndex as QCoDeS' export encodes it (cf_xarray's compression
    by gathering), the form qcsql's plan has."""
    import cf_xarray

    if "multi_index" in dataset.indexes:
        return cf_xarray.coding.encode_multi_index_as_compress(dataset)
    return dataset


def _qcodes_in_memory(path: Path, run_id: int, folder: Path) -> dict[str, Any]:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(copy_database(path, folder)))
    try:
        dataset = load_by_id(run_id, conn=conn)
        data = dataset.get_parameter_data()
        return {
            "parameter_data": _column_dtypes(data),
            "xarray": _dtypes(_as_written(dataset.to_xarray_dataset())),
        }
    finally:
        conn.close()


LABELS = [
    "int64 spectra on a grid",
    "int32 spectra on a grid",
    "int64 spectra, shape filled",
    "int64 spectra, shape not filled",
    "int64 grid with a hole",
    "int16 grid with a hole",
    "int64 scattered",
    "int64 trees merged with holes",
    "int64 trees merged, reordered",
    "int64 spectra repeated",
    "numeric ints",
    "empty complex",
    "empty text",
    "empty array",
    "complex tree without rows",
]


@pytest.mark.parametrize("label", LABELS)
def test_dtypes_are_those_of_qcodes_export(
    dtype_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str
) -> None:
    run_id, streams = RUNS[label]
    theirs = qcodes_export(dtype_db, run_id, tmp_path / "qcodes")
    reference = _qcodes_in_memory(dtype_db, run_id, tmp_path / "memory")

    real_plan = qcsql.export.run.plan_run
    in_memory = record_in_memory_plans(monkeypatch)
    monkeypatch.setattr(qcsql.export.streamed, "ARRAY_BYTES_PER_CHUNK", 64 * 1024)  # windows
    with qcsql.open_database(dtype_db) as db:
        run = db.load_by_id(run_id)
        ours = run.export_hdf5(tmp_path / "ours.nc")
        ours_data = run.get_parameter_data()
        ours_plan = real_plan(run)

    # in memory: get_parameter_data, and qcsql's plan against QCoDeS' to_xarray_dataset()
    assert _column_dtypes(ours_data) == reference["parameter_data"], label
    planned = {n: (v.dims, str(v.data.dtype)) for n, v in ours_plan.variables.items()}
    assert planned == reference["xarray"], label

    # in the file, through both engines
    for engine in ENGINES:
        with xr.open_dataset(theirs, engine=engine) as a, xr.open_dataset(ours, engine=engine) as b:
            a.load()
            b.load()
            assert _dtypes(b) == _dtypes(a), f"{label} ({engine})"
            assert_same_dataset(b, a, f"{label} ({engine})")
            # all but the dataset attributes (run_description's lists, export_info differ)
            xr.testing.assert_identical(b.drop_attrs(deep=False), a.drop_attrs(deep=False))

    # streamed where a streamed layout fits (else the above only tested the in-memory plan),
    # and then the same file as the in-memory plan writes
    assert (in_memory == []) == streams, f"{label}: streamed={not in_memory}, expected {streams}"
    if streams:
        with qcsql.open_database(dtype_db) as db, pytest.MonkeyPatch.context() as patch:
            patch.setattr(qcsql.export.run, "streamed_plans", lambda run, progress=None: iter(()))
            from_memory = db.load_by_id(run_id).export_hdf5(tmp_path / "in_memory.nc")
        with (
            xr.open_dataset(ours, engine="h5netcdf") as a,
            xr.open_dataset(from_memory, engine="h5netcdf") as b,
        ):
            assert _dtypes(a) == _dtypes(b), label
            xr.testing.assert_identical(a.load(), b.load())
