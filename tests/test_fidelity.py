"""Corners where qcsql once answered differently from QCoDeS 0.58, each built with QCoDeS'
own Measurement / DataSet APIs and compared with what QCoDeS itself reads (on a copy).

* in-memory runs (``DataSetInMem``): their ``export_info`` metadata tag and completion;
* the key order of a tree holding text beside array parameters;
* text stored for a numeric parameter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from qcsql.errors import DataDecodeError
from tests.helpers import EXAMPLE_DB, copy_database
from tests.qcodes_build import new_database, parameters

pytestmark = pytest.mark.requires_qcodes
pytest.importorskip("qcodes")

RTOL = 2e-14  # QCoDeS reads doubles through SQLite's 15-digit text, qcsql reads them exactly
MANY = 150_000  # rows enough for the page readers to read a numeric window before the text


@dataclass(frozen=True)
class Built:
    """The databases of this module and the run ids in them, by what they hold."""

    path: Path
    copied_in_memory: Path  # a never-started in-memory run written into another database
    runs: dict[str, int]


@contextmanager
def qcodes_copy(path: Path, folder: Path) -> Iterator[Any]:
    """A QCoDeS connection to a copy of ``path`` (QCoDeS upgrades what it opens)."""
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(copy_database(path, folder)))
    try:
        yield conn
    finally:
        conn.close()


def _in_memory_runs(exp: Any, path: Path, other: Path) -> dict[str, int]:
    from qcodes.dataset import Measurement
    from qcodes.dataset.data_set_in_memory import DataSetInMem
    from qcodes.dataset.data_set_protocol import DataSetType

    x, y = parameters("x", "y")
    meas = Measurement(exp=exp)
    meas.register_parameter(x)
    meas.register_parameter(y, setpoints=(x,))
    with meas.run(dataset_class=DataSetType.DataSetInMem) as saver:
        for i in range(3):
            saver.add_result((x, float(i)), (y, 2.0 * i))
    measured = saver.dataset.run_id
    # Created but never started: no timestamps. Copying it into another database (QCoDeS'
    # own write_metadata_to_db) marks it completed there, still without timestamps.
    never = DataSetInMem._create_new_run(name="never started", path_to_db=str(path))
    never.write_metadata_to_db(path_to_db=str(other))
    return {"in_memory": measured, "never_started": never.run_id}


def _text_beside_arrays(exp: Any) -> dict[str, int]:
    from qcodes.dataset import Measurement

    runs: dict[str, int] = {}
    # A dependent whose setpoints are an array, a text and a numeric parameter, in that order.
    arr, txt, x, y = parameters("arr", "txt", "x", "y")
    meas = Measurement(exp=exp)
    meas.register_parameter(arr, paramtype="array")
    meas.register_parameter(txt, paramtype="text")
    meas.register_parameter(x)
    meas.register_parameter(y, setpoints=(arr, txt, x), paramtype="array")
    with meas.run() as saver:
        for i in range(3):
            saver.add_result(
                (arr, np.arange(4.0)), (txt, "ab"), (x, float(i)), (y, i * np.arange(4.0))
            )
    runs["array_text_setpoints"] = saver.run_id
    # ps6 depends on ps3 and ps4, inferred from ps1 and ps2; ps3 is text, ps4 and ps6 arrays.
    ps1, ps2, ps3, ps4, ps6 = parameters("ps1", "ps2", "ps3", "ps4", "ps6")
    meas = Measurement(exp=exp)
    meas.register_parameter(ps1)
    meas.register_parameter(ps2)
    meas.register_parameter(ps3, basis=(ps1,), paramtype="text")
    meas.register_parameter(ps4, basis=(ps2,), paramtype="array")
    meas.register_parameter(ps6, setpoints=(ps3, ps4), paramtype="array")
    with meas.run() as saver:
        for i in range(3):
            saver.add_result(
                (ps1, float(i)),
                (ps2, 2.0 * i),
                (ps3, f"t{i}"),
                (ps4, np.arange(3.0) + i),
                (ps6, np.arange(3.0) * i),
            )
    runs["inferred_text_array"] = saver.run_id
    return runs


def _text_in_numbers(exp: Any) -> dict[str, int]:
    """QCoDeS' test_string_saved_and_loaded_as_numeric_via_dataset, and its neighbours
    (through the DataSet API: the Measurement API refuses text for numeric parameters)."""
    from qcodes.dataset import new_data_set
    from qcodes.dataset.descriptions.dependencies import InterDependencies_
    from qcodes.parameters import ParamSpecBase

    def run(name: str, interdeps: Any, results: list[dict[str, Any]]) -> int:
        ds = new_data_set(name, exp_id=exp.exp_id, conn=exp.conn)
        ds.set_interdependencies(interdeps)
        ds.mark_started()
        ds.add_results(results)
        ds.mark_completed()
        return int(ds.run_id)

    x, y = ParamSpecBase("x", "numeric"), ParamSpecBase("y", "numeric")
    xy = InterDependencies_(dependencies={y: (x,)})
    many: list[dict[str, Any]] = [
        {"x": float(i), "y": "oops" if i == MANY - 3 else 0.5 * i} for i in range(MANY)
    ]
    many.append({"x": 1.0e9, "y": "2.5"})  # text that spells a number
    many.append({"x": 1.0e9 + 1, "y": None})
    a, b = ParamSpecBase("a", "numeric"), ParamSpecBase("b", "array")
    return {
        "text_only": run(
            "text as numeric", InterDependencies_(standalones=(x,)), [{"x": "some text"}]
        ),
        "text_among_many": run("text among numbers", xy, many),
        "undecodable": run("blob", xy, [{"x": 1.0, "y": 2.0}]),  # the blob is put in below
        "text_setpoint_of_array": run(
            "text setpoint",
            InterDependencies_(dependencies={b: (a,)}),
            [{"a": "text", "b": np.arange(3.0)}],
        ),
    }


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("fidelity")
    path = folder / "fidelity.db"
    other = folder / "copied_in_memory.db"
    exp = new_database(path)
    try:
        runs = _in_memory_runs(exp, path, other)
        runs |= _text_beside_arrays(exp)
        runs |= _text_in_numbers(exp)
    finally:
        exp.conn.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        (table,) = conn.execute(
            "SELECT result_table_name FROM runs WHERE run_id = ?", (runs["undecodable"],)
        ).fetchone()
        conn.execute(f'UPDATE "{table}" SET y = ?', (b"\xff\xfe not UTF-8",))
    return Built(path, other, runs)


def _qcodes_run(conn: Any, run_id: int) -> Any:
    from qcodes.dataset import load_by_id

    return load_by_id(run_id, conn=conn)


def _same_values(ours: np.ndarray, theirs: np.ndarray, where: str) -> None:
    """Equal dtype, shape and values; in object arrays, each value of the same type."""
    assert ours.dtype == theirs.dtype, f"{where}: dtype {ours.dtype} != {theirs.dtype}"
    assert ours.shape == theirs.shape, f"{where}: shape {ours.shape} != {theirs.shape}"
    if ours.dtype == object:
        for i, (a, b) in enumerate(zip(ours.ravel(), theirs.ravel(), strict=True)):
            assert type(a) is type(b), f"{where}[{i}]: {a!r} != {b!r}"
            assert a == b or (a != a and b != b), f"{where}[{i}]: {a!r} != {b!r}"
    else:
        np.testing.assert_array_equal(ours, theirs, err_msg=where)


def _same_data(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    assert list(ours) == list(theirs), f"{where}: requested parameters differ"
    for top, tree in theirs.items():
        assert list(ours[top]) == list(tree), f"{where}/{top}: keys differ"
        for name, array in tree.items():
            _same_values(ours[top][name], array, f"{where}/{top}/{name}")


# -- in-memory runs -----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["in_memory", "never_started"])
def test_in_memory_metadata_has_export_info_like_qcodes(
    built: Built, which: str, tmp_path: Path
) -> None:
    run_id = built.runs[which]
    for path in (built.path, built.copied_in_memory):
        if which == "in_memory" and path == built.copied_in_memory:
            continue
        if which == "never_started" and path == built.copied_in_memory:
            run_id = 1  # the only run of the database it was copied into
        with qcodes_copy(path, tmp_path / path.stem) as conn:
            theirs = _qcodes_run(conn, run_id)
            assert type(theirs).__name__ == "DataSetInMem"
            expected = dict(theirs.metadata)
        with qcsql.open_database(path) as db:
            run = db.load_by_id(run_id)
            assert run.metadata == expected
            assert list(run.metadata) == list(expected)
            assert run.in_memory
        run_id = built.runs[which]


def test_in_memory_export_info_is_in_the_dataset_attributes_qcodes_writes(
    built: Built, tmp_path: Path
) -> None:
    """What QCoDeS' own export of the loaded run writes as dataset attributes (its
    to_xarray_dataset, which the netCDF export writes; the run keeps no data to export)."""
    from qcsql.export.attributes import dataset_attrs

    run_id = built.runs["in_memory"]
    with qcodes_copy(built.path, tmp_path) as conn:
        theirs = _qcodes_run(conn, run_id).to_xarray_dataset().attrs
    with qcsql.open_database(built.path) as db:
        ours = dataset_attrs(db.load_by_id(run_id))
    assert ours["export_info"] == theirs["export_info"]
    assert list(ours)[-1] == list(theirs)[-1] == "export_info"


def test_never_started_in_memory_run_is_not_completed_like_qcodes(
    built: Built, tmp_path: Path
) -> None:
    stored = sqlite3.connect(f"file:{built.copied_in_memory}?mode=ro", uri=True)
    with closing(stored):
        row = stored.execute(
            "SELECT is_completed, run_timestamp, completed_timestamp FROM runs"
        ).fetchone()
    assert row == (1, None, None)  # the case: marked completed, never started
    cases = [(built.copied_in_memory, 1), (built.path, built.runs["never_started"])]
    cases.append((built.path, built.runs["in_memory"]))
    for path, run_id in cases:
        with qcodes_copy(path, tmp_path / f"{path.stem}-{run_id}") as conn:
            expected = _qcodes_run(conn, run_id).completed
        with qcsql.open_database(path) as db:
            assert db.load_by_id(run_id).completed is expected, (path.name, run_id)


def test_summary_counts_the_runs_qcodes_calls_completed(built: Built, tmp_path: Path) -> None:
    for path in (built.path, built.copied_in_memory):
        with qcodes_copy(path, tmp_path / path.stem) as conn:
            from qcodes.dataset.sqlite.queries import get_runs

            expected = sum(bool(_qcodes_run(conn, run_id).completed) for run_id in get_runs(conn))
        with qcsql.open_database(path) as db:
            assert db.summary().completed_runs == expected, path.name


# -- key order ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["array_text_setpoints", "inferred_text_array"])
def test_tree_keys_keep_qcodes_order_with_text_beside_arrays(
    built: Built, which: str, tmp_path: Path
) -> None:
    run_id = built.runs[which]
    with qcodes_copy(built.path, tmp_path) as conn:
        theirs = _qcodes_run(conn, run_id).get_parameter_data()
    with qcsql.open_database(built.path) as db:
        ours = db.load_by_id(run_id).get_parameter_data()
    _same_data(ours, theirs, which)


# -- text in numeric columns ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["text_only", "text_among_many"])
def test_text_in_a_numeric_column_reads_like_qcodes(
    built: Built, which: str, tmp_path: Path
) -> None:
    run_id = built.runs[which]
    with qcodes_copy(built.path, tmp_path) as conn:
        theirs = _qcodes_run(conn, run_id).get_parameter_data()
        sliced = _qcodes_run(conn, run_id).get_parameter_data(start=2, end=MANY)
    assert any(a.dtype == object for tree in theirs.values() for a in tree.values())
    with qcsql.open_database(built.path) as db:
        run = db.load_by_id(run_id)
        _same_data(run.get_parameter_data(), theirs, which)
        _same_data(run.get_parameter_data(start=2, end=MANY), sliced, f"{which}[2:{MANY}]")


@pytest.mark.parametrize("which", ["text_only", "text_among_many"])
def test_text_in_a_numeric_column_is_not_exported_as_qcodes_cannot(
    built: Built, which: str, tmp_path: Path
) -> None:
    """QCoDeS reads the text but its export fails; qcsql's export gives one typed error
    naming the column, whichever plan the run takes, and leaves no file."""
    run_id = built.runs[which]
    with qcodes_copy(built.path, tmp_path / "qcodes") as conn:
        with pytest.raises(ValueError):
            _qcodes_run(conn, run_id).export("netcdf", path=str(tmp_path / "qcodes"))
    folder = tmp_path / "ours"
    folder.mkdir()
    with qcsql.open_database(built.path) as db:
        with pytest.raises(DataDecodeError) as caught:
            db.load_by_id(run_id).export_hdf5(folder)
    assert caught.value.run_id == run_id and caught.value.column is not None
    assert list(folder.iterdir()) == []


def test_numbers_qcodes_cannot_read_stay_a_typed_error(built: Built, tmp_path: Path) -> None:
    """Bytes that are neither a number nor UTF-8 text (QCoDeS' conversion fails), and text
    as the setpoint of an array (QCoDeS fails to expand it): one DataDecodeError naming
    the column."""
    for which, column in (("undecodable", "y"), ("text_setpoint_of_array", "a")):
        run_id = built.runs[which]
        with qcodes_copy(built.path, tmp_path / which) as conn:
            with pytest.raises((ValueError, UnicodeDecodeError)):
                _qcodes_run(conn, run_id).get_parameter_data()
        with qcsql.open_database(built.path) as db:
            with pytest.raises(DataDecodeError) as caught:
                db.load_by_id(run_id).get_parameter_data()
        assert caught.value.column == column, which
        assert caught.value.run_id == run_id


def _close_values(ours: np.ndarray, theirs: np.ndarray, where: str) -> None:
    """As :func:`_same_values`, numbers within RTOL (an int in QCoDeS' object array is a
    double it read as an integral 15-digit text)."""
    assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape), where
    if ours.dtype != object:
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0, equal_nan=True, err_msg=where)
        return
    for i, (a, b) in enumerate(zip(ours.ravel(), theirs.ravel(), strict=True)):
        if isinstance(b, str) or b is None:
            assert type(a) is type(b) and a == b, f"{where}[{i}]: {a!r} != {b!r}"
        else:
            assert isinstance(a, (int, float)) and not isinstance(a, bool), f"{where}[{i}]"
            assert np.isclose(a, b, rtol=RTOL, atol=0, equal_nan=True), f"{where}[{i}]"


@pytest.mark.parametrize(
    ("column", "value"),
    [("dmm_current", "'broken'"), ("dac_plunger", "X'0102'"), ("dac_plunger", "X'FF02'")],
    ids=["text", "blob-that-is-text", "blob-that-is-not-text"],
)
def test_damaged_numeric_column_reads_like_qcodes(tmp_path: Path, column: str, value: str) -> None:
    """A value put into a numeric column of a real measurement: text (and a blob that is
    UTF-8 text) QCoDeS reads into an object array, and so does qcsql; a blob that is not
    text QCoDeS cannot convert, and qcsql raises its DataDecodeError."""
    copy = copy_database(EXAMPLE_DB, tmp_path / "damaged")
    run_id = 3
    with qcsql.open_database(copy) as db:
        table = db.load_by_id(run_id).table_name
    with closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute(f'UPDATE "{table}" SET {column} = {value} WHERE id = 3')
    with qcodes_copy(copy, tmp_path / "qcodes") as conn:
        try:
            theirs: dict[str, Any] | None = _qcodes_run(conn, run_id).get_parameter_data()
        except (ValueError, UnicodeDecodeError):
            theirs = None
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(run_id)
        assert (theirs is None) == (value == "X'FF02'")  # the case is what it says
        if theirs is None:
            with pytest.raises(DataDecodeError) as caught:
                run.get_parameter_data()
            assert caught.value.column == column
            return
        ours = run.get_parameter_data()
    assert any(a.dtype == object for tree in theirs.values() for a in tree.values())
    assert list(ours) == list(theirs)
    for top, tree in theirs.items():
        assert list(ours[top]) == list(tree)
        for name, array in tree.items():
            _close_values(ours[top][name], array, f"{top}/{name}")
