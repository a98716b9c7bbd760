"""Absurd values in a file written by genuine QCoDeS 0.58 and then damaged with plain sqlite3:
declared shapes that are negative, zero, huge, not integers, nested, strings, booleans, for
parameters that do not exist or with more or fewer axes than setpoints; paramtypes QCoDeS
does not know; ``.npy`` headers that lie about their data.

For each, QCoDeS itself reads a copy (``get_parameter_data``, ``export("netcdf")``) and qcsql
reads another: where QCoDeS gives a result, qcsql gives the same (the same arrays, a file
that reads the same); where QCoDeS fails, qcsql raises one typed :class:`qcsql.QcsqlError`
naming the file and the run, and leaves no file behind. The exports go through qcsql's
streamed plans wherever those apply (checked: the in-memory plan is not used).
"""

from __future__ import annotations

import ast
import contextlib
import shutil
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
import qcsql.export.run
import qcsql.export.streamed
from tests.helpers import layout_differs_from_058, unless_qcodes_058_differs
from tests.qcodes_build import new_database, parameters

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.test_export_matches_qcodes import assert_same_dataset  # noqa: E402

pytestmark = pytest.mark.requires_qcodes

GRID, LINE, SPECTRA, EMPTY, SCALAR, LARGE = 1, 2, 3, 4, 5, 6


@pytest.fixture(scope="module")
def base_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QCoDeS 0.58 runs: a shaped 6 x 5 grid whose inner axis falls (so QCoDeS' direct
    layout, which keeps the measured order, and its sorted grid differ), a shaped line of
    30 points, spectra against an array setpoint, a shaped 2-D run without rows, one
    standalone value, and a shaped 60 x 50 grid (falling inner axis) that streams in many
    batches."""
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("absurd") / "absurd.db"
    experiment = new_database(path, "absurd values")
    x, y, z, freq, spec = parameters("x", "y", "z", "freq", "spec")

    def grid(name: str, outer: int, inner: int, rows: int) -> None:
        measurement = Measurement(exp=experiment, name=name)
        measurement.register_parameter(x)
        measurement.register_parameter(y)
        measurement.register_parameter(z, setpoints=(x, y))
        measurement.set_shapes({"z": (outer, inner)})
        points = [(a, b) for a in np.linspace(0, 1, outer) for b in np.linspace(1, 0, inner)]
        with measurement.run() as saver:
            for a, b in points[:rows]:
                saver.add_result((x, a), (y, b), (z, a * 10 + b))

    grid("grid", 6, 5, 30)
    line = Measurement(exp=experiment, name="line")
    line.register_parameter(x)
    line.register_parameter(z, setpoints=(x,))
    line.set_shapes({"z": (30,)})
    with line.run() as saver:
        for a in np.linspace(0, 1, 30):
            saver.add_result((x, a), (z, a * 10))
    spectra = Measurement(exp=experiment, name="spectra")
    spectra.register_parameter(freq, paramtype="array")
    spectra.register_parameter(spec, setpoints=(freq,), paramtype="array")
    with spectra.run() as saver:
        for i in range(4):
            saver.add_result((freq, np.arange(7.0)), (spec, np.arange(7.0) + i))
    grid("empty", 6, 5, 0)
    scalar = Measurement(exp=experiment, name="standalone")
    scalar.register_parameter(z)
    with scalar.run() as saver:
        saver.add_result((z, 3.0))
    grid("large grid", 60, 50, 3000)
    experiment.conn.close()  # type: ignore[attr-defined]
    return path


# -- damaging a copy -------------------------------------------------------------------------


def _copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copyfile(source, target)
    return target


def _set_shapes(path: Path, run_id: int, shapes: str) -> None:
    """Replace the run's stored ``"shapes": ...`` (QCoDeS writes it last) by the JSON text
    ``shapes``, which may hold what Python's json reads but does not write, such as NaN."""
    with sqlite3.connect(path) as conn:
        (text,) = conn.execute(
            "SELECT run_description FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        head = text[: text.index('"shapes": ')]
        conn.execute(
            "UPDATE runs SET run_description = ? WHERE run_id = ?",
            (f'{head}"shapes": {shapes}}}', run_id),
        )
    conn.close()


def _replace_in_description(path: Path, run_id: int, old: str, new: str) -> None:
    with sqlite3.connect(path) as conn:
        (text,) = conn.execute(
            "SELECT run_description FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        assert old in text
        conn.execute(
            "UPDATE runs SET run_description = ? WHERE run_id = ?",
            (text.replace(old, new), run_id),
        )
    conn.close()


# -- what QCoDeS and qcsql make of a copy ---------------------------------------------------


@dataclass
class Outcome:
    """What reading a run gave: the error of loading it, or its parameters, its data (or the
    error of reading them) and its export (or the error of writing it)."""

    load: BaseException | None = None
    specs: dict[str, tuple[str, str, tuple[str, ...]]] | None = None
    data: dict[str, dict[str, Any]] | BaseException | None = None
    export: Path | BaseException | None = None


def _qcodes(path: Path, run_id: int, folder: Path) -> Outcome:
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    conn = connect(str(_copy(path, folder / "qcodes-db")))
    try:
        try:
            dataset = load_by_id(run_id, conn=conn)
        except Exception as exc:  # QCoDeS raises TypeError, AttributeError, ValueError...
            return Outcome(load=exc)
        outcome = Outcome(
            specs={
                s.name: (s.type, s.unit, tuple(s.depends_on_)) for s in dataset.paramspecs.values()
            }
        )
        try:
            outcome.data = dataset.get_parameter_data()
        except Exception as exc:
            outcome.data = exc
        (folder / "qcodes").mkdir()
        try:
            dataset.export("netcdf", path=str(folder / "qcodes"))
            outcome.export = Path(dataset.export_info.export_paths["nc"])
        except Exception as exc:
            outcome.export = exc
        return outcome
    finally:
        conn.close()


def _qcsql(path: Path, run_id: int) -> Outcome:
    folder = path.parent
    with qcsql.open_database(path) as db:
        run = db.load_by_id(run_id)
        try:
            specs = {s.name: (s.paramtype, s.unit, s.depends_on) for s in run.paramspecs.values()}
        except qcsql.QcsqlError as exc:
            return Outcome(load=exc)
        outcome = Outcome(specs=specs)
        try:
            outcome.data = run.get_parameter_data()
        except qcsql.QcsqlError as exc:
            outcome.data = exc
        (folder / "ours").mkdir()
        try:
            outcome.export = run.export_hdf5(folder / "ours")
        except qcsql.QcsqlError as exc:
            outcome.export = exc
        return outcome


def _assert_typed(error: Any, path: Path, run_id: int, what: str) -> None:
    assert isinstance(error, qcsql.QcsqlError), f"{what}: {error!r} is not a QcsqlError"
    assert error.path == path and error.run_id == run_id, f"{what}: {error!r}"
    assert str(path) in str(error) and f"run {run_id}" in str(error), f"{what}: {error}"


def _assert_like_qcodes(theirs: Outcome, ours: Outcome, path: Path, run_id: int) -> None:
    if theirs.load is not None:
        _assert_typed(ours.load, path, run_id, f"QCoDeS cannot load it ({theirs.load!r})")
        return
    assert ours.load is None, ours.load
    assert ours.specs == theirs.specs
    if isinstance(theirs.data, BaseException):
        _assert_typed(ours.data, path, run_id, f"QCoDeS' get_parameter_data: {theirs.data!r}")
    else:
        assert isinstance(ours.data, dict), ours.data
        _assert_same_data(ours.data, theirs.data)
    folder = path.parent / "ours"
    if isinstance(theirs.export, BaseException):
        _assert_typed(ours.export, path, run_id, f"QCoDeS' export: {theirs.export!r}")
        assert list(folder.iterdir()) == [], "a failed export left a file"
    else:
        assert isinstance(ours.export, Path), ours.export
        assert theirs.export is not None
        for engine in ("h5netcdf", "netcdf4"):
            with (
                xr.open_dataset(theirs.export, engine=engine) as a,
                xr.open_dataset(ours.export, engine=engine) as b,
            ):
                assert_same_dataset(b.load(), a.load(), f"run {run_id} ({engine})")


def _assert_same_data(ours: dict[str, dict[str, Any]], theirs: Any) -> None:
    assert list(ours) == list(theirs)
    for top, tree in theirs.items():
        assert list(ours[top]) == list(tree), top
        for column, expected in tree.items():
            got = ours[top][column]
            assert got.shape == expected.shape, f"{top}/{column}: {got.shape} != {expected.shape}"
            assert got.dtype == expected.dtype, f"{top}/{column}"
            np.testing.assert_allclose(got, expected, rtol=2e-14, err_msg=f"{top}/{column}")


@pytest.fixture
def memory_plans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The run ids whose export was laid out in memory (not streamed); and streamed rows
    go into the file in batches of 128, so that the large grid takes many."""
    used: list[int] = []
    real_plan, real_batches = qcsql.export.run.plan_run, qcsql.export.streamed._batches

    def plan(run: Any) -> Any:
        used.append(run.run_id)
        return real_plan(run)

    monkeypatch.setattr(qcsql.export.run, "plan_run", plan)
    monkeypatch.setattr(
        qcsql.export.streamed, "_batches", lambda chunks, rows=128: real_batches(chunks, rows)
    )
    yield used


# -- declared shapes -------------------------------------------------------------------------

# (run, stored shapes, whether qcsql's export streams it)
SHAPES = [
    (GRID, '{"z": [-6, 5]}', True),  # QCoDeS never reshapes: the product is negative
    (GRID, '{"z": [6, -5]}', True),
    (GRID, '{"z": [-6, -5]}', False),  # the product is the size: numpy refuses the shape
    (GRID, '{"z": [0, 5]}', True),
    (GRID, '{"z": []}', True),
    (GRID, '{"z": [1000000, 1000000]}', True),
    (GRID, '{"z": [4294967296, 4294967296]}', False),  # np.prod wraps around to 0
    (GRID, '{"z": [18446744073709551616]}', True),
    (GRID, '{"z": [123456789012345678901234567890, 1]}', True),
    (GRID, '{"z": [6.0, 5.0]}', True),  # equal to (6, 5): QCoDeS' direct layout
    (GRID, '{"z": [6.9, 5.9]}', True),  # reshaped to (6, 5), but laid out as a sorted grid
    (GRID, '{"z": [2.5, 12]}', True),
    (GRID, '{"z": [1e300, 1]}', True),
    (GRID, '{"z": [[6], 5]}', False),
    (GRID, '{"z": [null, 5]}', False),
    (GRID, '{"z": ["a", 5]}', False),
    (GRID, '{"z": ["6", "5"]}', True),
    (GRID, '{"z": "65"}', True),  # QCoDeS' tuple("65"): ("6", "5")
    (GRID, '{"z": {"6": 1, "5": 2}}', True),
    (GRID, '{"z": [NaN, 5]}', False),
    (GRID, '{"z": [Infinity, 5]}', False),
    (GRID, '{"z": [true, 30]}', True),  # (1, 30) == (True, 30): the direct layout
    (GRID, '{"z": [false, 30]}', True),
    (GRID, '{"z": 30}', False),  # QCoDeS cannot load these runs at all
    (GRID, '{"z": null}', False),
    (GRID, "[]", False),
    (GRID, '"abc"', False),
    (GRID, "5", False),
    (GRID, "false", False),
    (GRID, '{"nope": 5}', False),
    (GRID, "{}", True),
    (GRID, '{"nope": [-6, 5]}', True),  # shapes of parameters the run does not have
    (GRID, '{"nope": [[1]]}', True),
    (GRID, '{"x": [-6, 5]}', True),
    (GRID, '{"z": [30]}', False),  # fewer axes than setpoints, and the data fit
    (GRID, '{"z": [6, 5, 1]}', False),  # more axes than setpoints
    (GRID, '{"z": [1, 30]}', True),
    (GRID, '{"z": [30, 1]}', True),
    (LINE, '{"z": [30, 1]}', False),
    (LINE, '{"z": [-30]}', True),
    (LINE, '{"z": [30.5]}', True),
    (LINE, '{"z": [6, 5]}', False),
    (LINE, '{"z": []}', True),
    (SPECTRA, '{"spec": [4, 7]}', False),  # as QCoDeS' set_shapes would declare it
    (SPECTRA, '{"spec": [-4, 7]}', False),
    (SPECTRA, '{"spec": [-4, -7]}', False),
    (SPECTRA, '{"spec": [28]}', False),
    (SPECTRA, '{"spec": [4, 7.0]}', False),
    (SPECTRA, '{"spec": [2, 2, 7]}', False),
    (EMPTY, '{"z": [0, 5]}', False),  # the direct layout of no rows has no first line
    (EMPTY, '{"z": [0, -5]}', False),
    (EMPTY, '{"z": [4294967296, 4294967296]}', False),
    (EMPTY, '{"z": [-6, 5]}', False),  # h5py's OverflowError, once
    (SCALAR, '{"z": []}', False),
    (SCALAR, '{"z": [1]}', False),
    (SCALAR, '{"z": [-1]}', False),
    (SCALAR, '{"z": [1, 1]}', False),
    (LARGE, '{"z": [-60, 50]}', True),
    (LARGE, '{"z": [-60, -50]}', False),
    (LARGE, '{"z": [60.0, 50.0]}', True),
    (LARGE, '{"z": [60.5, 50.5]}', True),
    (LARGE, '{"z": ["60", "50"]}', True),
    (LARGE, '{"z": [true, 3000]}', True),
    (LARGE, '{"z": [3000]}', False),
]


@pytest.mark.parametrize(("run_id", "shapes", "streams"), SHAPES)
def test_declared_shapes_read_and_export_like_qcodes(
    base_db: Path,
    tmp_path: Path,
    memory_plans: list[int],
    run_id: int,
    shapes: str,
    streams: bool,
) -> None:
    damaged = _copy(base_db, tmp_path / "damaged")
    _set_shapes(damaged, run_id, shapes)
    theirs = _qcodes(damaged, run_id, tmp_path / "qcodes-side")
    ours = _qcsql(damaged, run_id)
    run, difference = _layout_difference(damaged, run_id)
    with unless_qcodes_058_differs(run, difference):  # where QCoDeS 0.62's layout differs
        _assert_like_qcodes(theirs, ours, damaged, run_id)
    if streams and difference is None:
        assert memory_plans == [], "the export was laid out in memory, not streamed"


def _layout_difference(path: Path, run_id: int) -> tuple[Any, str | None]:
    """The run and where QCoDeS 0.62 lays it out otherwise than 0.58 (None where its data
    cannot be read: both fail alike then)."""
    with qcsql.open_database(path) as db:
        try:
            run = db.load_by_id(run_id)
        except qcsql.QcsqlError:
            return None, None
        try:
            return run, layout_differs_from_058(run)
        except qcsql.QcsqlError:
            return run, None


def test_declared_shapes_are_kept_as_qcodes_keeps_them(base_db: Path, tmp_path: Path) -> None:
    """``run.shapes`` holds what QCoDeS reshapes to (its ``int()`` of each entry), also of
    entries that are strings or booleans, and leaves out the entries int() refuses."""
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    damaged = _copy(base_db, tmp_path / "damaged")
    _set_shapes(damaged, GRID, '{"z": "65", "x": [true, 2.5], "y": [[1]], "nope": [-1]}')
    conn = connect(str(_copy(damaged, tmp_path / "qcodes")))
    try:
        declared = load_by_id(GRID, conn=conn).description.shapes
    finally:
        conn.close()
    with qcsql.open_database(damaged) as db:
        shapes = db.load_by_id(GRID).shapes
    assert shapes == {
        name: tuple(int(n) for n in shape) for name, shape in declared.items() if name != "y"
    }


# -- paramtypes and relations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"name": "z", "paramtype": "numeric"', '"name": "z", "paramtype": "float64"'),
        ('"name": "z", "paramtype": "numeric"', '"name": "z", "paramtype": "NUMERIC"'),
        ('"dependencies": {"z": ["x", "y"]}', '"dependencies": {"z": ["x", "w"]}'),
    ],
    ids=["unknown paramtype", "upper-case paramtype", "setpoint not described"],
)
def test_odd_parameter_descriptions_read_like_qcodes(
    base_db: Path, tmp_path: Path, old: str, new: str
) -> None:
    damaged = _copy(base_db, tmp_path / "damaged")
    with sqlite3.connect(damaged) as conn:
        (text,) = conn.execute("SELECT run_description FROM runs WHERE run_id = 1").fetchone()
    conn.close()
    start = text.index('"interdependencies_"')  # QCoDeS reads the new-style graph
    with sqlite3.connect(damaged) as conn:
        conn.execute(
            "UPDATE runs SET run_description = ? WHERE run_id = 1",
            (text[:start] + text[start:].replace(old, new, 1),),
        )
    conn.close()
    theirs = _qcodes(damaged, GRID, tmp_path / "qcodes-side")
    ours = _qcsql(damaged, GRID)
    _assert_like_qcodes(theirs, ours, damaged, GRID)


# -- .npy headers ----------------------------------------------------------------------------


def _npy(header: dict[str, Any] | str, body: bytes, pad_to: int = 0) -> bytes:
    text = header if isinstance(header, str) else repr(header)
    text = text + " " * max(0, pad_to - len(text) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1") + body


def _set_blob(path: Path, run_id: int, column: str, row: int, blob: bytes) -> None:
    with sqlite3.connect(path) as conn:
        (table,) = conn.execute(
            "SELECT result_table_name FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        ids = [i for (i,) in conn.execute(f'SELECT id FROM "{table}" ORDER BY id')]
        conn.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE id = ?', (blob, ids[row]))
    conn.close()


def _body_of(path: Path, run_id: int, column: str) -> tuple[dict[str, Any], bytes]:
    with sqlite3.connect(path) as conn:
        (table,) = conn.execute(
            "SELECT result_table_name FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        (blob,) = conn.execute(f'SELECT "{column}" FROM "{table}" ORDER BY id LIMIT 1').fetchone()
    conn.close()
    start = 10 if blob[6] == 1 else 12  # the header length takes 2 bytes in format 1.0, else 4
    length = int.from_bytes(blob[8:start], "little")
    text = blob[start : start + length].decode("utf-8")
    return ast.literal_eval(text), blob[start + length :]


HEADERS = {
    # a terabyte of doubles promised, 56 bytes given: never allocated
    "huge shape, short body": lambda h, body: _npy({**h, "shape": (10**12,)}, body),
    "header longer than numpy reads": lambda h, body: _npy(h, body, pad_to=12_000),
    "fortran_order not a bool": lambda h, body: _npy({**h, "fortran_order": "yes"}, body),
    "negative shape": lambda h, body: _npy({**h, "shape": (-7,)}, body),
    "unhashable literal": lambda h, body: _npy("{[1]: 2}", body),
    # QCoDeS reads this one: a single value, spread over the row like any size-1 array
    "64 dimensions": lambda h, body: _npy({**h, "shape": (1,) * 64}, body[:8]),
}


def _damaged_spectra(base_db: Path, tmp_path: Path, damage: str, row: int) -> Path:
    damaged = _copy(base_db, tmp_path / "damaged")
    header, body = _body_of(damaged, SPECTRA, "spec")
    _set_blob(damaged, SPECTRA, "spec", row, HEADERS[damage](header, body))
    return damaged


@pytest.mark.parametrize("row", [0, 2], ids=["first row", "third row"])
@pytest.mark.parametrize("damage", list(HEADERS))
def test_lying_npy_headers_read_like_qcodes(
    base_db: Path, tmp_path: Path, memory_plans: list[int], damage: str, row: int
) -> None:
    """The blob of the first row plans the fast path; a later one makes it fall back."""
    damaged = _damaged_spectra(base_db, tmp_path, damage, row)
    theirs = _qcodes(damaged, SPECTRA, tmp_path / "qcodes-side")
    ours = _qcsql(damaged, SPECTRA)
    _assert_like_qcodes(theirs, ours, damaged, SPECTRA)
    if isinstance(ours.data, qcsql.QcsqlError):
        assert isinstance(ours.data, qcsql.DataDecodeError)
        assert ours.data.table is not None and ours.data.column == "spec"


def test_items_of_no_bytes_are_refused(base_db: Path, tmp_path: Path) -> None:
    """A header promising 10**12 items of the zero-byte dtype ``|V0`` over an empty body:
    numpy's read_array gives QCoDeS that array (it holds nothing, and QCoDeS' export fails
    on it); qcsql refuses it, since no value of a measurement has zero bytes."""
    damaged = _copy(base_db, tmp_path / "damaged")
    header, _ = _body_of(damaged, SPECTRA, "spec")
    _set_blob(
        damaged, SPECTRA, "spec", 2, _npy({**header, "descr": "|V0", "shape": (10**12,)}, b"")
    )
    theirs = _qcodes(damaged, SPECTRA, tmp_path / "qcodes-side")
    assert isinstance(theirs.data, dict) and theirs.data["spec"]["spec"].dtype == object
    assert isinstance(theirs.export, BaseException)
    ours = _qcsql(damaged, SPECTRA)
    _assert_typed(ours.data, damaged, SPECTRA, "a zero-byte dtype")
    assert isinstance(ours.data, qcsql.DataDecodeError)
    _assert_typed(ours.export, damaged, SPECTRA, "a zero-byte dtype")
    assert list((damaged.parent / "ours").iterdir()) == []


# -- ids far apart ---------------------------------------------------------------------------


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: a loop over the ids of a gap of 2**62 never ends."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_row_at_a_huge_id_streams_without_walking_the_gap(
    tmp_path: Path, memory_plans: list[int]
) -> None:
    """A text sweep with one row inserted at id 2**62: the streamed export goes from the
    last row before the gap to that one at once, and the file reads like QCoDeS' export."""
    from qcodes.dataset import Measurement

    path = tmp_path / "sparse" / "sparse.db"
    path.parent.mkdir()
    experiment = new_database(path, "sparse ids")
    x, label = parameters("x", "label")
    measurement = Measurement(exp=experiment, name="text sweep")
    measurement.register_parameter(x)
    measurement.register_parameter(label, setpoints=(x,), paramtype="text")
    with measurement.run() as saver:
        for step in range(20):
            saver.add_result((x, step), (label, f"point {step}"))
    experiment.conn.close()  # type: ignore[attr-defined]
    with sqlite3.connect(path) as conn:
        (table,) = conn.execute("SELECT result_table_name FROM runs WHERE run_id = 1").fetchone()
        conn.execute(f'INSERT INTO "{table}" (id, x, label) VALUES (?, 99, ?)', (2**62, "last"))
    conn.close()
    theirs = _qcodes(path, 1, tmp_path / "qcodes-side")
    assert isinstance(theirs.export, Path)
    (path.parent / "ours").mkdir()
    with _deadline(30), qcsql.open_database(path) as db:
        ours = db.load_by_id(1).export_hdf5(path.parent / "ours")
    assert memory_plans == []
    with xr.open_dataset(theirs.export) as a, xr.open_dataset(ours) as b:
        assert_same_dataset(b.load(), a.load(), "sparse ids")
