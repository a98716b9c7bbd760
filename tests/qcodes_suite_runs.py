"""Many small runs of the kinds QCoDeS 0.58's own dataset tests write, written with QCoDeS'
Measurement / DataSet / DataSetInMem / doNd APIs into one database (built once per session).

Each builder writes exactly one run and is registered under a label; the labels are known
at import, so tests can be parametrized by them before the database exists. What they
cover, beyond the project's other fixtures: every paramtype as setpoint and as dependent;
arrays of one to four dimensions, empty arrays; zero-row runs of every paramtype;
ParameterWithSetpoints with and without shapes; inferred_from chains; standalones;
several dependents on different setpoints, trees written interleaved; in-memory runs
exported or not; interrupted and never-started runs; metadata added after the run;
parent links; doNd grids, complete and interrupted; unicode names and units; NaN and
infinities; integers, booleans and mixed number types in one column.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.qcodes_build import new_database

__all__ = ["SUITE_LABELS", "Suite", "build_suite"]


@dataclass(frozen=True)
class Suite:
    """The database of the suite and the run id of each label."""

    path: Path
    runs: dict[str, int]


@dataclass(frozen=True)
class _Context:
    exp: Any
    path: Path
    folder: Path


_BUILDERS: dict[str, Callable[[_Context], None]] = {}


def _run(label: str) -> Callable[[Callable[[_Context], None]], Callable[[_Context], None]]:
    def register(builder: Callable[[_Context], None]) -> Callable[[_Context], None]:
        assert label not in _BUILDERS, label
        _BUILDERS[label] = builder
        return builder

    return register


@dataclass(frozen=True)
class _P:
    """A parameter to register: its name, paramtype, setpoints and basis by name."""

    name: str
    paramtype: str = "numeric"
    setpoints: tuple[str, ...] = ()
    basis: tuple[str, ...] = ()
    unit: str = ""
    label: str | None = None


def _manual(name: str, unit: str = "", label: str | None = None) -> Any:
    from qcodes.parameters import Parameter

    return Parameter(name, set_cmd=None, get_cmd=None, unit=unit, label=label)


def _measure(
    ctx: _Context,
    name: str,
    specs: list[_P],
    rows: list[dict[str, Any]],
    *,
    shapes: dict[str, tuple[int, ...]] | None = None,
    in_memory: bool = False,
    after: Callable[[Any], None] | None = None,
) -> Any:
    """One Measurement run of ``specs`` adding ``rows`` (one add_result each)."""
    from qcodes.dataset import Measurement
    from qcodes.dataset.data_set_protocol import DataSetType

    params = {spec.name: _manual(spec.name, spec.unit, spec.label) for spec in specs}
    meas = Measurement(exp=ctx.exp, name=name)
    for spec in specs:
        meas.register_parameter(
            params[spec.name],
            paramtype=spec.paramtype,
            setpoints=tuple(params[n] for n in spec.setpoints) or None,
            basis=tuple(params[n] for n in spec.basis) or None,
        )
    if shapes is not None:
        meas.set_shapes(shapes)
    kind = DataSetType.DataSetInMem if in_memory else DataSetType.DataSet
    with meas.run(dataset_class=kind) as saver:
        for row in rows:
            saver.add_result(*((params[n], v) for n, v in row.items()))
    if after is not None:
        after(saver.dataset)
    return saver.dataset


def _xy(values: list[Any], xs: list[Any] | None = None) -> list[dict[str, Any]]:
    return [
        {"x": x, "y": v}
        for x, v in zip(xs or [float(i) for i in range(len(values))], values, strict=True)
    ]


XY = [_P("x"), _P("y", setpoints=("x",))]

# -- numeric ---------------------------------------------------------------------------------


@_run("numeric 1d")
def _(ctx: _Context) -> None:
    _measure(ctx, "numeric 1d", XY, _xy([0.1 * i - 0.35 for i in range(9)]))


@_run("numeric nan inf")
def _(ctx: _Context) -> None:
    values = [1.0, float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1e308]
    xs = [0.0, 1.0, float("nan"), 3.0, float("inf"), 5.0, 6.0]
    _measure(ctx, "numeric nan inf", XY, _xy(values, xs))


@_run("numeric ints")
def _(ctx: _Context) -> None:
    _measure(ctx, "numeric ints", XY, _xy([3, -7, 0, 2**40, -(2**52)], [0, 1, 2, 3, 4]))


@_run("numeric bools")
def _(ctx: _Context) -> None:
    # the Measurement API refuses booleans for numeric parameters; the DataSet API stores them
    _dataset_run(
        ctx,
        "numeric bools",
        start=True,
        complete=True,
        rows=_xy([True, False, np.bool_(True)], [0, 1, 2]),
    )


@_run("numeric mixed types")
def _(ctx: _Context) -> None:
    values = [1, 2.5, np.float32(0.1), np.int8(-4), np.int64(2**53 + 1), 3.0, np.float16(0.5)]
    _measure(ctx, "numeric mixed types", XY, _xy(values))


@_run("numeric arrays per call")
def _(ctx: _Context) -> None:
    rows = [{"x": np.arange(5) + 5 * k, "y": np.linspace(0, 1, 5) * k} for k in range(3)]
    _measure(ctx, "numeric arrays per call", XY, rows)


@_run("numeric one row")
def _(ctx: _Context) -> None:
    _measure(ctx, "numeric one row", XY, _xy([42.0]))


@_run("numeric 2d unshaped")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y", setpoints=("x", "t"))]
    rows = [{"x": float(i), "t": 0.5 * j, "y": i * 10.0 + j} for i in range(4) for j in range(3)]
    _measure(ctx, "numeric 2d unshaped", specs, rows)


@_run("numeric 2d unshaped unsorted")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y", setpoints=("x", "t"))]
    rows = [
        {"x": float(3 - i), "t": 0.5 * ((j * 2) % 3), "y": i * 10.0 + j}
        for i in range(4)
        for j in range(3)
    ]
    _measure(ctx, "numeric 2d unshaped unsorted", specs, rows)


@_run("numeric 2d scattered")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y", setpoints=("x", "t"))]
    rng = np.random.default_rng(3)
    rows = [{"x": rng.normal(), "t": rng.normal(), "y": float(i)} for i in range(10)]
    _measure(ctx, "numeric 2d scattered", specs, rows)


@_run("numeric 2d duplicate setpoints")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y", setpoints=("x", "t"))]
    rows = [{"x": 1.0, "t": 2.0, "y": float(i)} for i in range(3)]
    rows += [{"x": 2.0, "t": 2.0, "y": 9.0}]
    _measure(ctx, "numeric 2d duplicate setpoints", specs, rows)


def _grid_rows(nx: int, ny: int, stop: int | None = None) -> list[dict[str, Any]]:
    rows = [
        {"x": float(i), "t": 0.25 * j, "y": float(i * ny + j)} for i in range(nx) for j in range(ny)
    ]
    return rows[:stop]


GRID = [_P("x"), _P("t"), _P("y", setpoints=("x", "t"))]


@_run("shaped grid complete")
def _(ctx: _Context) -> None:
    _measure(ctx, "shaped grid complete", GRID, _grid_rows(4, 3), shapes={"y": (4, 3)})


@_run("shaped grid interrupted")
def _(ctx: _Context) -> None:
    _measure(ctx, "shaped grid interrupted", GRID, _grid_rows(4, 3, 7), shapes={"y": (4, 3)})


@_run("shaped grid one row")
def _(ctx: _Context) -> None:
    _measure(ctx, "shaped grid one row", GRID, _grid_rows(4, 3, 1), shapes={"y": (4, 3)})


@_run("shaped grid overfull")
def _(ctx: _Context) -> None:
    _measure(ctx, "shaped grid overfull", GRID, _grid_rows(4, 3), shapes={"y": (2, 3)})


@_run("shaped grid no rows")
def _(ctx: _Context) -> None:
    _measure(ctx, "shaped grid no rows", GRID, [], shapes={"y": (4, 3)})


@_run("shaped 1d interrupted")
def _(ctx: _Context) -> None:
    _measure(ctx, "shaped 1d interrupted", XY, _xy([1.0, 2.0, 3.0]), shapes={"y": (10,)})


@_run("shaped 3d grid")
def _(ctx: _Context) -> None:
    specs = [_P("a"), _P("b"), _P("c"), _P("y", setpoints=("a", "b", "c"))]
    rows = [
        {"a": float(i), "b": float(j), "c": float(k), "y": float(i * 100 + j * 10 + k)}
        for i in range(2)
        for j in range(3)
        for k in range(2)
    ]
    _measure(ctx, "shaped 3d grid", specs, rows, shapes={"y": (2, 3, 2)})


@_run("shaped two dependents different shapes")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y", setpoints=("x", "t")), _P("z", setpoints=("x",))]
    rows: list[dict[str, Any]] = []
    for i in range(3):
        for j in range(2):
            rows.append({"x": float(i), "t": float(j), "y": float(i + j)})
        rows.append({"x": float(i), "z": float(-i)})
    _measure(
        ctx,
        "shaped two dependents different shapes",
        specs,
        rows,
        shapes={"y": (3, 2), "z": (3,)},
    )


# -- larger than one window of qcsql's readers (65,536 rows) --------------------------------

LARGE = 70_000


def _chunks(n: int, size: int = 5_000) -> list[np.ndarray]:
    return np.array_split(np.arange(n), n // size)


@_run("large sweep with nan and ints")
def _(ctx: _Context) -> None:
    rows = []
    for k, chunk in enumerate(_chunks(LARGE)):
        y = chunk * 3 if k % 2 else np.where(chunk % 997 == 0, np.nan, chunk * 0.5)
        rows.append({"x": chunk.astype(float), "y": y})
    _measure(ctx, "large sweep with nan and ints", XY, rows)


@_run("large shaped grid interrupted")
def _(ctx: _Context) -> None:
    side = 300
    rows = []
    for chunk in _chunks(LARGE):
        rows.append(
            {"x": (chunk // side).astype(float), "t": (chunk % side) * 0.1, "y": chunk * 1.5}
        )
    _measure(ctx, "large shaped grid interrupted", GRID, rows, shapes={"y": (side, side)})


@_run("large interleaved trees")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y1", setpoints=("x",)), _P("y2", "complex", setpoints=("t",))]
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(LARGE // 2):
        rows.append({"x": chunk * 1.0, "y1": np.sin(chunk)})
        rows.append({"t": -chunk * 1.0, "y2": np.exp(1j * chunk)})
    _measure(ctx, "large interleaved trees", specs, rows)


@_run("large text dependent")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("s", "text", setpoints=("x",))]
    rows = [
        {"x": chunk * 1.0, "s": np.array([f"v{i % 13}" for i in chunk])} for chunk in _chunks(LARGE)
    ]
    _measure(ctx, "large text dependent", specs, rows)


# -- text and complex ------------------------------------------------------------------------


@_run("text setpoint")
def _(ctx: _Context) -> None:
    specs = [_P("s", "text"), _P("y", setpoints=("s",))]
    rows = [{"s": name, "y": float(i)} for i, name in enumerate(["b", "a", "c", "a"])]
    _measure(ctx, "text setpoint", specs, rows)


@_run("text dependent")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("s", "text", setpoints=("x",))]
    values = ["plain", "", "Ωµ∆ unicode", "new\nline", "tab\t", "quote'\""]
    _measure(ctx, "text dependent", specs, [{"x": float(i), "s": v} for i, v in enumerate(values)])


@_run("text setpoint and dependent")
def _(ctx: _Context) -> None:
    specs = [_P("k", "text"), _P("v", "text", setpoints=("k",))]
    _measure(
        ctx, "text setpoint and dependent", specs, [{"k": "a", "v": "1"}, {"k": "b", "v": "2"}]
    )


@_run("text 2d grid")
def _(ctx: _Context) -> None:
    specs = [_P("s", "text"), _P("x"), _P("y", setpoints=("s", "x"))]
    rows = [
        {"s": s, "x": float(i), "y": float(i) + len(s)} for s in ("on", "off") for i in range(3)
    ]
    _measure(ctx, "text 2d grid", specs, rows)


@_run("complex dependent")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("c", "complex", setpoints=("x",))]
    values = [1 + 2j, -0.5j, complex(float("nan"), 1.0), complex(float("inf"), 0), np.complex64(3j)]
    _measure(
        ctx, "complex dependent", specs, [{"x": float(i), "c": v} for i, v in enumerate(values)]
    )


@_run("complex setpoint")
def _(ctx: _Context) -> None:
    specs = [_P("c", "complex"), _P("y", setpoints=("c",))]
    _measure(ctx, "complex setpoint", specs, [{"c": 1j * i + 1, "y": float(i)} for i in range(4)])


@_run("complex arrays per call")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("c", "complex", setpoints=("x",))]
    xs = np.linspace(0, 1, 6)
    _measure(ctx, "complex arrays per call", specs, [{"x": xs, "c": np.exp(1j * xs)}])


@_run("complex shaped grid")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("c", "complex", setpoints=("x", "t"))]
    rows = [{"x": float(i), "t": float(j), "c": complex(i, j)} for i in range(3) for j in range(2)]
    _measure(ctx, "complex shaped grid", specs, rows, shapes={"c": (3, 2)})


# -- arrays ----------------------------------------------------------------------------------


@_run("array 1d")
def _(ctx: _Context) -> None:
    specs = [_P("f", "array"), _P("s", "array", setpoints=("f",))]
    f = np.linspace(4e9, 5e9, 6)
    _measure(ctx, "array 1d", specs, [{"f": f, "s": np.sin(f * k)} for k in range(3)])


@_run("array over numeric")
def _(ctx: _Context) -> None:
    specs = [_P("g"), _P("f", "array"), _P("s", "array", setpoints=("g", "f"))]
    f = np.arange(5.0)
    _measure(
        ctx, "array over numeric", specs, [{"g": 0.1 * k, "f": f, "s": f * k} for k in range(4)]
    )


@_run("array dependent numeric setpoint only")
def _(ctx: _Context) -> None:
    specs = [_P("g"), _P("s", "array", setpoints=("g",))]
    _measure(
        ctx,
        "array dependent numeric setpoint only",
        specs,
        [{"g": float(k), "s": np.arange(3) * k} for k in range(3)],
    )


@_run("array setpoint numeric dependent")
def _(ctx: _Context) -> None:
    specs = [_P("f", "array"), _P("y", setpoints=("f",))]
    _measure(
        ctx,
        "array setpoint numeric dependent",
        specs,
        [{"f": np.arange(4.0), "y": np.arange(4.0) ** 2}],
    )


def _nd(dims: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for k in range(2):
        grids = np.meshgrid(*(np.arange(n, dtype=float) for n in dims), indexing="ij")
        rows.append({"a": grids[0], "b": grids[-1], "z": grids[0] * 10 + grids[-1] + k})
    return rows


for _dims in [(3, 2), (2, 3, 2), (2, 2, 2, 3)]:

    def _build(ctx: _Context, dims: tuple[int, ...] = _dims) -> None:
        specs = [_P("a", "array"), _P("b", "array"), _P("z", "array", setpoints=("a", "b"))]
        _measure(ctx, f"array {len(dims)}d", specs, _nd(dims))

    _run(f"array {len(_dims)}d")(_build)


@_run("array empty")
def _(ctx: _Context) -> None:
    specs = [_P("f", "array"), _P("s", "array", setpoints=("f",))]
    _measure(ctx, "array empty", specs, [{"f": np.array([]), "s": np.array([])}] * 2)


@_run("array empty then not")
def _(ctx: _Context) -> None:
    specs = [_P("f", "array"), _P("s", "array", setpoints=("f",))]
    rows = [{"f": np.array([]), "s": np.array([])}, {"f": np.arange(2.0), "s": np.ones(2)}]
    _measure(ctx, "array empty then not", specs, rows)


@_run("array ragged")
def _(ctx: _Context) -> None:
    specs = [_P("f", "array"), _P("s", "array", setpoints=("f",))]
    rows = [{"f": np.arange(n, dtype=float), "s": np.ones(n)} for n in (3, 5, 2)]
    _measure(ctx, "array ragged", specs, rows)


for _dtype in ["int64", "int32", "int8", "uint16", "float32", "complex128"]:

    def _build_typed(ctx: _Context, dtype: str = _dtype) -> None:
        specs = [_P("f", "array"), _P("s", "array", setpoints=("f",))]
        rows = [
            {"f": np.arange(4), "s": (np.arange(4) * (k + 1) % 3).astype(dtype)} for k in range(3)
        ]
        _measure(ctx, f"array {dtype}", specs, rows)

    _run(f"array {_dtype}")(_build_typed)


@_run("array bool")
def _(ctx: _Context) -> None:
    # the Measurement API refuses boolean arrays; the DataSet API stores them
    rows = [{"x": np.arange(4), "y": np.arange(4) % 2 == 0}]
    _dataset_run(ctx, "array bool", start=True, complete=True, rows=rows, paramtype="array")


@_run("array bool repeated")
def _(ctx: _Context) -> None:
    # enough rows of the same setpoints for qcsql's export to stream them
    spectrum = np.arange(100) % 7 == 0
    rows = [{"x": np.arange(100), "y": np.roll(spectrum, k)} for k in range(300)]
    _dataset_run(
        ctx, "array bool repeated", start=True, complete=True, rows=rows, paramtype="array"
    )


for _dtype in ["uint64", "float16", "int64 extremes"]:

    def _build_wide(ctx: _Context, dtype: str = _dtype) -> None:
        specs = [_P("f", "array"), _P("s", "array", setpoints=("f",))]
        if dtype == "int64 extremes":
            values = np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max])
        else:
            values = np.array([0, 1, 2, 3]).astype(dtype) * 3
        _measure(ctx, f"array {dtype}", specs, [{"f": np.arange(4.0), "s": values}] * 2)

    _run(f"array {_dtype}")(_build_wide)


@_run("array nan inf")
def _(ctx: _Context) -> None:
    specs = [_P("f", "array"), _P("s", "array", setpoints=("f",))]
    s = np.array([np.nan, np.inf, -np.inf, 1.0])
    _measure(ctx, "array nan inf", specs, [{"f": np.arange(4.0), "s": s}])


@_run("array complex setpoint")
def _(ctx: _Context) -> None:
    specs = [_P("f", "array"), _P("s", "array", setpoints=("f",))]
    _measure(ctx, "array complex setpoint", specs, [{"f": np.arange(3) * 1j, "s": np.arange(3.0)}])


@_run("array text setpoint")
def _(ctx: _Context) -> None:
    specs = [_P("k", "text"), _P("f", "array"), _P("s", "array", setpoints=("k", "f"))]
    rows = [{"k": k, "f": np.arange(3.0), "s": np.arange(3.0) + len(k)} for k in ("ab", "c")]
    _measure(ctx, "array text setpoint", specs, rows)


@_run("array shaped")
def _(ctx: _Context) -> None:
    specs = [_P("g"), _P("f", "array"), _P("s", "array", setpoints=("g", "f"))]
    rows = [{"g": float(k), "f": np.arange(4.0), "s": np.arange(4.0) * k} for k in range(3)]
    _measure(ctx, "array shaped", specs, rows, shapes={"s": (3, 4)})


@_run("array shaped interrupted")
def _(ctx: _Context) -> None:
    specs = [_P("g"), _P("f", "array"), _P("s", "array", setpoints=("g", "f"))]
    rows = [{"g": float(k), "f": np.arange(4.0), "s": np.arange(4.0) * k} for k in range(2)]
    _measure(ctx, "array shaped interrupted", specs, rows, shapes={"s": (3, 4)})


def _pws(n: int, dtype: Any = float) -> tuple[Any, Any]:
    from qcodes.parameters import Parameter, ParameterWithSetpoints
    from qcodes.validators import Arrays

    freq = Parameter(
        "freq",
        unit="Hz",
        get_cmd=lambda: np.linspace(0, 1, n),
        set_cmd=None,
        vals=Arrays(shape=(n,)),
    )
    counter = iter(range(10**6))
    spectrum = ParameterWithSetpoints(
        "spectrum",
        unit="V",
        get_cmd=lambda: (np.arange(n) * next(counter)).astype(dtype),
        setpoints=(freq,),
        vals=Arrays(shape=(n,)),
    )
    return freq, spectrum


def _pws_run(ctx: _Context, name: str, shaped: bool, lines: int, dtype: Any = float) -> None:
    from qcodes.dataset import Measurement
    from qcodes.dataset.descriptions.detect_shapes import detect_shape_of_measurement

    freq, spectrum = _pws(5, dtype)
    gate = _manual("gate", "V")
    meas = Measurement(exp=ctx.exp, name=name)
    meas.register_parameter(gate)
    meas.register_parameter(spectrum, setpoints=(gate,))
    if shaped:
        meas.set_shapes(detect_shape_of_measurement((spectrum,), (3,)))
    with meas.run() as saver:
        for k in range(lines):
            saver.add_result(
                (gate, 0.5 * k), (spectrum, spectrum())
            )  # add_result adds the setpoints of a ParameterWithSetpoints


@_run("pws shaped")
def _(ctx: _Context) -> None:
    _pws_run(ctx, "pws shaped", True, 3)


@_run("pws shaped interrupted")
def _(ctx: _Context) -> None:
    _pws_run(ctx, "pws shaped interrupted", True, 2)


@_run("pws unshaped")
def _(ctx: _Context) -> None:
    _pws_run(ctx, "pws unshaped", False, 3)


@_run("pws int unshaped")
def _(ctx: _Context) -> None:
    _pws_run(ctx, "pws int unshaped", False, 3, np.int64)


@_run("pws alone")
def _(ctx: _Context) -> None:
    from qcodes.dataset import Measurement

    freq, spectrum = _pws(4)
    meas = Measurement(exp=ctx.exp, name="pws alone")
    meas.register_parameter(spectrum, paramtype="array")
    with meas.run() as saver:
        for _ in range(2):
            saver.add_result((spectrum, spectrum()), (freq, freq()))


@_run("pws 2d")
def _(ctx: _Context) -> None:
    from qcodes.dataset import Measurement
    from qcodes.parameters import Parameter, ParameterWithSetpoints
    from qcodes.validators import Arrays

    n, m = 3, 4
    sx = Parameter(
        "sx", get_cmd=lambda: np.arange(n, dtype=float), set_cmd=None, vals=Arrays(shape=(n,))
    )
    sy = Parameter(
        "sy", get_cmd=lambda: np.arange(m, dtype=float), set_cmd=None, vals=Arrays(shape=(m,))
    )
    image = ParameterWithSetpoints(
        "image",
        get_cmd=lambda: np.arange(n * m, dtype=float).reshape(n, m),
        setpoints=(sx, sy),
        vals=Arrays(shape=(n, m)),
    )
    meas = Measurement(exp=ctx.exp, name="pws 2d")
    meas.register_parameter(image, paramtype="array")
    with meas.run() as saver:
        saver.add_result((image, image()))


class _Spectrometer:
    """An ArrayParameter and a MultiParameter (their setpoints come with them)."""

    @staticmethod
    def array_parameter() -> Any:
        from qcodes.parameters import ArrayParameter

        class Trace(ArrayParameter):
            def get_raw(self) -> Any:
                return np.arange(5.0) ** 2

        return Trace(
            "trace",
            shape=(5,),
            setpoints=(np.linspace(0, 1, 5),),
            setpoint_names=("trace_freq",),
            setpoint_units=("Hz",),
            unit="V",
        )

    @staticmethod
    def multi_parameter() -> Any:
        from qcodes.parameters import MultiParameter

        class Both(MultiParameter):
            def get_raw(self) -> Any:
                return (np.arange(3.0), np.arange(2.0) * 10)

        return Both(
            "both",
            names=("first", "second"),
            shapes=((3,), (2,)),
            setpoints=((np.arange(3.0) * 0.5,), (np.arange(2.0) + 7,)),
            setpoint_names=(("first_sp",), ("second_sp",)),
        )


for _paramtype in ["numeric", "array"]:

    def _build_array_parameter(ctx: _Context, paramtype: str = _paramtype) -> None:
        from qcodes.dataset import Measurement

        trace = _Spectrometer.array_parameter()
        gate = _manual("gate")
        meas = Measurement(exp=ctx.exp, name=f"ArrayParameter {paramtype}")
        meas.register_parameter(gate)
        meas.register_parameter(trace, setpoints=(gate,), paramtype=paramtype)
        with meas.run() as saver:
            for k in range(3):
                saver.add_result((gate, float(k)), (trace, trace.get()))

    _run(f"ArrayParameter {_paramtype}")(_build_array_parameter)


@_run("MultiParameter")
def _(ctx: _Context) -> None:
    from qcodes.dataset import Measurement

    both = _Spectrometer.multi_parameter()
    meas = Measurement(exp=ctx.exp, name="MultiParameter")
    meas.register_parameter(both)
    with meas.run() as saver:
        for _ in range(2):
            saver.add_result((both, both.get()))


@_run("numeric 2d arrays per call")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y", setpoints=("x", "t"))]
    xs, ts = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
    _measure(ctx, "numeric 2d arrays per call", specs, [{"x": xs, "t": ts, "y": xs * ts}])


@_run("shaped grid inverted axes")
def _(ctx: _Context) -> None:
    rows = [{"x": 3.0 - i, "t": 0.5 * j, "y": float(i * 2 + j)} for i in range(3) for j in range(2)]
    _measure(ctx, "shaped grid inverted axes", GRID, rows, shapes={"y": (3, 2)})


@_run("unshaped grid incomplete")
def _(ctx: _Context) -> None:
    _measure(ctx, "unshaped grid incomplete", GRID, _grid_rows(4, 3, 10))


@_run("arrays of different lengths in one call")
def _(ctx: _Context) -> None:
    specs = [_P("a", "array"), _P("b", "array"), _P("g"), _P("c", "array", setpoints=("g",))]
    rows = [{"a": np.arange(3.0), "b": np.arange(5.0), "g": 1.0, "c": np.arange(2.0)}]
    _measure(ctx, "arrays of different lengths in one call", specs, rows * 2)


@_run("two array dependents of different lengths")
def _(ctx: _Context) -> None:
    specs = [
        _P("g"),
        _P("f1", "array"),
        _P("f2", "array"),
        _P("s1", "array", setpoints=("g", "f1")),
        _P("s2", "array", setpoints=("g", "f2")),
    ]
    rows = [
        {
            "g": float(k),
            "f1": np.arange(3.0),
            "s1": np.ones(3) * k,
            "f2": np.arange(5.0),
            "s2": np.zeros(5) + k,
        }
        for k in range(2)
    ]
    _measure(ctx, "two array dependents of different lengths", specs, rows)


# -- parameter relations ---------------------------------------------------------------------


@_run("inferred chain")
def _(ctx: _Context) -> None:
    # QCoDeS 0.58 refuses a parameter inferred from an inferred one: one link per level
    specs = [_P("raw"), _P("x", basis=("raw",)), _P("t"), _P("y", setpoints=("x", "t"))]
    rows = [{"raw": float(i), "x": 4.0 * i, "t": 1.0, "y": float(i) ** 2} for i in range(4)]
    _measure(ctx, "inferred chain", specs, rows)


@_run("inferred from two")
def _(ctx: _Context) -> None:
    specs = [
        _P("p1"),
        _P("p2"),
        _P("p3", basis=("p1", "p2")),
        _P("p4"),
        _P("y", setpoints=("p3", "p4")),
    ]
    rows = [
        {"p1": 1.0 * i, "p2": 2.0 * i, "p3": 3.0 * i, "p4": 0.5, "y": 1.0 + i} for i in range(3)
    ]
    _measure(ctx, "inferred from two", specs, rows)


@_run("inferred dependent")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("y", setpoints=("x",)), _P("yc", basis=("y",))]
    rows = [{"x": float(i), "y": 2.0 * i, "yc": 20.0 * i} for i in range(3)]
    _measure(ctx, "inferred dependent", specs, rows)


@_run("inferred unwritten")
def _(ctx: _Context) -> None:
    # the Measurement API wants the basis with every result; the DataSet API does not
    from qcodes.dataset import new_data_set
    from qcodes.dataset.descriptions.dependencies import InterDependencies_
    from qcodes.parameters import ParamSpecBase

    raw, x, y = (ParamSpecBase(n, "numeric") for n in ("raw", "x", "y"))
    ds = new_data_set("inferred unwritten", exp_id=ctx.exp.exp_id, conn=ctx.exp.conn)
    ds.set_interdependencies(InterDependencies_(dependencies={y: (x,)}, inferences={x: (raw,)}))
    ds.mark_started()
    ds.add_results([{"x": float(i), "y": -1.0 * i} for i in range(3)])
    ds.mark_completed()


@_run("standalone one")
def _(ctx: _Context) -> None:
    _measure(ctx, "standalone one", [_P("v")], [{"v": float(i)} for i in range(5)])


@_run("standalones of every type")
def _(ctx: _Context) -> None:
    specs = [_P("n"), _P("s", "text"), _P("a", "array"), _P("c", "complex")]
    rows: list[dict[str, Any]] = [
        {"n": 1.0, "s": "one", "a": np.arange(3.0), "c": 1j},
        {"n": 2.0},
        {"s": "three"},
        {"a": np.arange(2.0)},
    ]
    _measure(ctx, "standalones of every type", specs, rows)


@_run("standalone beside a tree")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("y", setpoints=("x",)), _P("temp", unit="K")]
    rows = [{"x": float(i), "y": float(i) * 3, "temp": 0.01 * i} for i in range(4)]
    _measure(ctx, "standalone beside a tree", specs, rows)


@_run("two dependents same setpoints")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("y1", setpoints=("x",)), _P("y2", "text", setpoints=("x",))]
    rows = [{"x": float(i), "y1": float(-i), "y2": str(i)} for i in range(4)]
    _measure(ctx, "two dependents same setpoints", specs, rows)


@_run("two dependents different setpoints")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y1", setpoints=("x",)), _P("y2", setpoints=("t", "x"))]
    rows = [{"x": float(i), "t": 0.5, "y1": float(i), "y2": float(2 * i)} for i in range(3)]
    _measure(ctx, "two dependents different setpoints", specs, rows)


@_run("interleaved trees")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("t"), _P("y1", setpoints=("x",)), _P("y2", "complex", setpoints=("t",))]
    rows: list[dict[str, Any]] = []
    for i in range(4):
        rows.append({"x": float(i), "y1": float(i) ** 2})
        rows.append({"t": 10.0 - i, "y2": complex(i, -i)})
    _measure(ctx, "interleaved trees", specs, rows)


@_run("interleaved array trees")
def _(ctx: _Context) -> None:
    specs = [
        _P("f", "array"),
        _P("s1", "array", setpoints=("f",)),
        _P("g"),
        _P("s2", setpoints=("g",)),
    ]
    rows: list[dict[str, Any]] = []
    for i in range(3):
        rows.append({"f": np.arange(3.0), "s1": np.arange(3.0) * i})
        rows.append({"g": float(i), "s2": float(-i)})
    _measure(ctx, "interleaved array trees", specs, rows)


@_run("shared setpoint two trees partial")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("y1", setpoints=("x",)), _P("y2", setpoints=("x",))]
    rows = [{"x": 0.0, "y1": 1.0}, {"x": 1.0, "y2": 2.0}, {"x": 2.0, "y1": 3.0, "y2": 4.0}]
    _measure(ctx, "shared setpoint two trees partial", specs, rows)


# -- zero rows -------------------------------------------------------------------------------

for _paramtype in ["numeric", "text", "array", "complex"]:

    def _build_empty(ctx: _Context, paramtype: str = _paramtype) -> None:
        specs = [_P("x", paramtype), _P("y", paramtype, setpoints=("x",))]
        _measure(ctx, f"no rows {paramtype}", specs, [])

    _run(f"no rows {_paramtype}")(_build_empty)


@_run("no rows two trees and a standalone")
def _(ctx: _Context) -> None:
    specs = [
        _P("x"),
        _P("y1", setpoints=("x",)),
        _P("t", "text"),
        _P("y2", "array", setpoints=("t",)),
        _P("v"),
    ]
    _measure(ctx, "no rows two trees and a standalone", specs, [])


@_run("no parameters")
def _(ctx: _Context) -> None:
    _measure(ctx, "no parameters", [], [])


# -- run life --------------------------------------------------------------------------------


def _dataset_run(
    ctx: _Context,
    name: str,
    *,
    start: bool,
    complete: bool,
    rows: list[dict[str, Any]],
    paramtype: str = "numeric",
) -> Any:
    """A run of ``y(x)`` written with the DataSet API, which validates less than the
    Measurement API and can leave a run unstarted or uncompleted."""
    from qcodes.dataset import new_data_set
    from qcodes.dataset.descriptions.dependencies import InterDependencies_
    from qcodes.parameters import ParamSpecBase

    x, y = ParamSpecBase("x", paramtype), ParamSpecBase("y", paramtype, unit="V")
    ds = new_data_set(name, exp_id=ctx.exp.exp_id, conn=ctx.exp.conn)
    ds.set_interdependencies(InterDependencies_(dependencies={y: (x,)}))
    if start:
        ds.mark_started()
        if rows:
            ds.add_results(rows)
    if complete:
        ds.mark_completed()
    return ds


@_run("interrupted never completed")
def _(ctx: _Context) -> None:
    _dataset_run(ctx, "interrupted", start=True, complete=False, rows=_xy([1.0, 2.0]))


@_run("started without rows")
def _(ctx: _Context) -> None:
    _dataset_run(ctx, "started", start=True, complete=False, rows=[])


@_run("never started")
def _(ctx: _Context) -> None:
    _dataset_run(ctx, "never started", start=False, complete=False, rows=[])


@_run("never started no interdependencies")
def _(ctx: _Context) -> None:
    from qcodes.dataset import new_data_set

    new_data_set("bare", exp_id=ctx.exp.exp_id, conn=ctx.exp.conn)


@_run("rows with missing values")
def _(ctx: _Context) -> None:
    rows = [
        {"x": 1.0, "y": 2.0},
        {"x": 2.0},
        {"y": 3.0},
        {"x": None, "y": 4.0},
        {"x": 5.0, "y": None},
    ]
    _dataset_run(ctx, "missing values", start=True, complete=True, rows=rows)


@_run("exception inside the run")
def _(ctx: _Context) -> None:
    class Stop(Exception):
        pass

    def rows() -> Any:
        yield {"x": 0.0, "y": 1.0}
        raise Stop

    try:
        _measure_generator(ctx, "exception inside the run", rows())
    except Stop:
        pass


def _measure_generator(ctx: _Context, name: str, rows: Any) -> None:
    from qcodes.dataset import Measurement

    x, y = _manual("x"), _manual("y")
    meas = Measurement(exp=ctx.exp, name=name)
    meas.register_parameter(x)
    meas.register_parameter(y, setpoints=(x,))
    with meas.run() as saver:
        for row in rows:
            saver.add_result((x, row["x"]), (y, row["y"]))


@_run("metadata added after")
def _(ctx: _Context) -> None:
    def add(ds: Any) -> None:
        ds.add_metadata("note", "added after the run")
        ds.add_metadata("count", 3)
        ds.add_metadata("ratio", 0.25)
        ds.add_metadata("unicode_Ω", "µ")

    _measure(ctx, "metadata added after", XY, _xy([1.0, 2.0]), after=add)


@_run("metadata overwritten")
def _(ctx: _Context) -> None:
    def add(ds: Any) -> None:
        ds.add_metadata("tag", "first")
        ds.add_metadata("tag", "second")
        ds.add_metadata("number", 1)
        ds.add_metadata("number", 2.5)

    _measure(ctx, "metadata overwritten", XY, _xy([1.0]), after=add)


@_run("metadata of every type")
def _(ctx: _Context) -> None:
    def add(ds: Any) -> None:
        ds.add_metadata("flag", True)
        ds.add_metadata("big", 2**62)
        ds.add_metadata("tiny", 1e-300)
        ds.add_metadata("empty", "")
        ds.add_metadata("json_like", '{"a": [1, 2]}')

    _measure(ctx, "metadata of every type", XY, _xy([1.0]), after=add)


@_run("legacy ParamSpec API")
def _(ctx: _Context) -> None:
    from qcodes.dataset import new_data_set
    from qcodes.dataset.descriptions.param_spec import ParamSpec

    x = ParamSpec("x", "numeric", label="X", unit="V")
    t = ParamSpec("t", "numeric", inferred_from=["x"])
    y = ParamSpec("y", "numeric", depends_on=["x"])
    ds = new_data_set("legacy specs", exp_id=ctx.exp.exp_id, conn=ctx.exp.conn, specs=[x, t, y])
    ds.mark_started()
    ds.add_results([{"x": float(i), "t": 2.0 * i, "y": -float(i)} for i in range(3)])
    ds.mark_completed()


@_run("parameter named index")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("index", setpoints=("x",))]
    rows = [{"x": float(i % 2), "index": float(i)} for i in range(4)]
    _measure(ctx, "parameter named index", specs, rows)


@_run("empty names")
def _(ctx: _Context) -> None:
    specs = [_P("x", label=""), _P("y", setpoints=("x",), label="", unit="")]
    _measure(ctx, "", specs, _xy([1.0, 2.0]))


@_run("shaped text setpoint")
def _(ctx: _Context) -> None:
    specs = [_P("s", "text"), _P("x"), _P("y", setpoints=("s", "x"))]
    rows = [{"s": s, "x": float(i), "y": float(i)} for s in ("b", "a") for i in range(3)]
    _measure(ctx, "shaped text setpoint", specs, rows, shapes={"y": (2, 3)})


@_run("shaped grid with nan setpoint")
def _(ctx: _Context) -> None:
    rows = _grid_rows(3, 2)
    rows[3]["t"] = float("nan")
    _measure(ctx, "shaped grid with nan setpoint", GRID, rows, shapes={"y": (3, 2)})


@_run("parent links")
def _(ctx: _Context) -> None:
    from qcodes.dataset import Measurement, load_by_id

    parent = load_by_id(1, conn=ctx.exp.conn)
    x, y = _manual("x"), _manual("y")
    meas = Measurement(exp=ctx.exp, name="parent links")
    meas.register_parent(parent=parent, link_type="analysis", description="fit of run 1")
    meas.register_parent(parent=load_by_id(2, conn=ctx.exp.conn), link_type="raw")
    meas.register_parameter(x)
    meas.register_parameter(y, setpoints=(x,))
    with meas.run() as saver:
        saver.add_result((x, 1.0), (y, 2.0))


@_run("station snapshot")
def _(ctx: _Context) -> None:
    from qcodes.dataset import Measurement
    from qcodes.station import Station

    x, y = _manual("x", "V"), _manual("y", "A")
    station = Station(x, y)
    try:
        meas = Measurement(exp=ctx.exp, station=station, name="station snapshot")
        meas.register_parameter(x)
        meas.register_parameter(y, setpoints=(x,))
        with meas.run() as saver:
            saver.add_result((x, 1.0), (y, 2.0))
    finally:
        station.close_all_registered_instruments()


@_run("unicode names and units")
def _(ctx: _Context) -> None:
    specs = [
        _P("Δv", unit="µV", label="Δ voltage"),
        _P("Ω", setpoints=("Δv",), unit="Ω", label="résistance"),
    ]
    _measure(ctx, "unicode ☃ run", specs, [{"Δv": 0.1 * i, "Ω": 50.0 + i} for i in range(3)])


@_run("other experiment")
def _(ctx: _Context) -> None:
    from qcodes.dataset import Measurement, new_experiment

    exp = new_experiment("second ☃", sample_name="sample two", conn=ctx.exp.conn)
    x, y = _manual("x"), _manual("y")
    meas = Measurement(exp=exp, name="other experiment")
    meas.register_parameter(x)
    meas.register_parameter(y, setpoints=(x,))
    with meas.run() as saver:
        saver.add_result((x, 1.0), (y, 2.0))


@_run("extracted from another database")
def _(ctx: _Context) -> None:
    from qcodes.dataset import extract_runs_into_db
    from qcodes.dataset.sqlite.database import connect

    source = ctx.folder / "source.db"
    exp = new_database(source, "source experiment", "source sample")
    try:
        other = _Context(exp, source, ctx.folder)
        _measure(other, "first", XY, _xy([1.0]))
        _measure(other, "second", GRID, _grid_rows(2, 2), shapes={"y": (2, 2)})
    finally:
        exp.conn.close()
    ctx.exp.conn.commit()
    extract_runs_into_db(str(source), str(ctx.path), 2)
    del connect


# -- in-memory runs --------------------------------------------------------------------------


@_run("in memory not exported")
def _(ctx: _Context) -> None:
    _measure(ctx, "in memory not exported", XY, _xy([1.0, 2.0, 3.0]), in_memory=True)


def _export(folder: Path) -> Callable[[Any], None]:
    def export(ds: Any) -> None:
        ds.export("netcdf", path=str(folder))

    return export


@_run("in memory exported")
def _(ctx: _Context) -> None:
    _measure(
        ctx,
        "in memory exported",
        XY,
        _xy([1.0, 2.0, 3.0]),
        in_memory=True,
        after=_export(ctx.folder),
    )


@_run("in memory grid exported")
def _(ctx: _Context) -> None:
    _measure(
        ctx,
        "in memory grid exported",
        GRID,
        _grid_rows(3, 2),
        shapes={"y": (3, 2)},
        in_memory=True,
        after=_export(ctx.folder),
    )


@_run("in memory arrays exported")
def _(ctx: _Context) -> None:
    specs = [_P("g"), _P("f", "array"), _P("s", "array", setpoints=("g", "f"))]
    rows = [{"g": float(k), "f": np.arange(3.0), "s": np.arange(3.0) * k} for k in range(2)]
    _measure(
        ctx, "in memory arrays exported", specs, rows, in_memory=True, after=_export(ctx.folder)
    )


@_run("in memory text and complex exported")
def _(ctx: _Context) -> None:
    specs = [_P("x"), _P("s", "text", setpoints=("x",)), _P("c", "complex", setpoints=("x",))]
    rows = [{"x": float(i), "s": f"v{i}", "c": complex(i, 1)} for i in range(3)]
    _measure(
        ctx, "in memory text and complex", specs, rows, in_memory=True, after=_export(ctx.folder)
    )


@_run("in memory metadata exported")
def _(ctx: _Context) -> None:
    def add_then_export(ds: Any) -> None:
        ds.add_metadata("note", "before export")
        ds.export("netcdf", path=str(ctx.folder))
        ds.add_metadata("after", "after export")

    _measure(ctx, "in memory metadata", XY, _xy([5.0]), in_memory=True, after=add_then_export)


@_run("in memory no rows")
def _(ctx: _Context) -> None:
    _measure(ctx, "in memory no rows", XY, [], in_memory=True, after=_export(ctx.folder))


def _from_netcdf(ctx: _Context, name: str, write: Callable[[_Context], None]) -> None:
    """A run written by ``write`` into a database of its own, exported by QCoDeS, loaded
    back with load_from_netcdf and its metadata written here: an in-memory run whose data
    exist only in that file."""
    from qcodes.dataset import load_by_id, load_from_netcdf

    source = ctx.folder / f"{name.replace(' ', '_')}.db"
    exp = new_database(source, "netcdf source", "netcdf sample")
    try:
        write(_Context(exp, source, ctx.folder))
        dataset = load_by_id(1, conn=exp.conn)
        dataset.export("netcdf", path=str(ctx.folder / "from_netcdf"))
        exported = dataset.export_info.export_paths["nc"]
    finally:
        exp.conn.close()
    load_from_netcdf(exported, path_to_db=ctx.path).write_metadata_to_db(path_to_db=ctx.path)


@_run("in memory loaded from netcdf")
def _(ctx: _Context) -> None:
    def write(other: _Context) -> None:
        _measure(other, "grid", GRID, _grid_rows(3, 4, 10), shapes={"y": (3, 4)})

    _from_netcdf(ctx, "loaded grid", write)


@_run("in memory loaded from netcdf booleans")
def _(ctx: _Context) -> None:
    def write(other: _Context) -> None:
        rows = [{"x": np.arange(4), "y": np.arange(4) % 3 == 0}]
        _dataset_run(other, "booleans", start=True, complete=True, rows=rows, paramtype="array")

    _from_netcdf(ctx, "loaded booleans", write)


@_run("in memory never started")
def _(ctx: _Context) -> None:
    from qcodes.dataset.data_set_in_memory import DataSetInMem

    DataSetInMem._create_new_run(name="in memory never started", path_to_db=str(ctx.path))


# -- doNd ------------------------------------------------------------------------------------


def _instruments() -> tuple[Any, ...]:
    from qcodes.parameters import Parameter

    state = {"v": 0.0, "w": 0.0}

    def setter(key: str) -> Callable[[float], None]:
        def set_value(value: float) -> None:
            state[key] = value

        return set_value

    v = Parameter("v", unit="V", set_cmd=setter("v"), get_cmd=lambda: state["v"])
    w = Parameter("w", unit="V", set_cmd=setter("w"), get_cmd=lambda: state["w"])
    i = Parameter("i", unit="A", get_cmd=lambda: state["v"] * 2 + state["w"])
    q = Parameter("q", unit="", get_cmd=lambda: int(state["v"] * 10) % 3)
    return v, w, i, q


DOND = {"do_plot": False, "show_progress": False}


@_run("do0d")
def _(ctx: _Context) -> None:
    from qcodes.dataset import do0d

    _, _, i, q = _instruments()
    freq, spectrum = _pws(4)
    do0d(i, q, spectrum, exp=ctx.exp, measurement_name="do0d", **DOND)


@_run("do1d")
def _(ctx: _Context) -> None:
    from qcodes.dataset import do1d

    v, _, i, q = _instruments()
    do1d(v, 0, 1, 6, 0, i, q, exp=ctx.exp, measurement_name="do1d", **DOND)


@_run("do2d")
def _(ctx: _Context) -> None:
    from qcodes.dataset import do2d

    v, w, i, _ = _instruments()
    do2d(v, 0, 1, 3, 0, w, -1, 1, 4, 0, i, exp=ctx.exp, measurement_name="do2d", **DOND)


@_run("dond pws and scalar")
def _(ctx: _Context) -> None:
    from qcodes.dataset import LinSweep, dond

    v, _, i, _ = _instruments()
    freq, spectrum = _pws(5)
    dond(LinSweep(v, 0, 1, 3), i, spectrum, exp=ctx.exp, measurement_name="dond pws", **DOND)


@_run("dond array sweep")
def _(ctx: _Context) -> None:
    from qcodes.dataset import ArraySweep, LinSweep, dond

    v, w, i, q = _instruments()
    dond(
        ArraySweep(v, [0.3, -0.1, 0.2]),
        LinSweep(w, 0, 1, 2),
        i,
        q,
        exp=ctx.exp,
        measurement_name="dond array sweep",
        **DOND,
    )


@_run("dond together")
def _(ctx: _Context) -> None:
    from qcodes.dataset import LinSweep, TogetherSweep, dond

    v, w, i, _ = _instruments()
    dond(
        TogetherSweep(LinSweep(v, 0, 1, 4), LinSweep(w, 1, 0, 4)),
        i,
        exp=ctx.exp,
        measurement_name="dond together",
        **DOND,
    )


@_run("dond interrupted")
def _(ctx: _Context) -> None:
    from qcodes.dataset import LinSweep, dond
    from qcodes.parameters import Parameter

    v, w, _, _ = _instruments()
    calls = {"n": 0}

    def read() -> float:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return float(calls["n"])

    i = Parameter("i", unit="A", get_cmd=read)
    try:
        dond(
            LinSweep(v, 0, 1, 3),
            LinSweep(w, 0, 1, 3),
            i,
            exp=ctx.exp,
            measurement_name="dond interrupted",
            **DOND,
        )
    except KeyboardInterrupt:
        pass


SUITE_LABELS: list[str] = list(_BUILDERS)


def _last_run_id(path: Path) -> int:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        (found,) = conn.execute("SELECT MAX(run_id) FROM runs").fetchone()
    return int(found or 0)


def build_suite(folder: Path, labels: list[str] | None = None) -> Suite:
    """Write the runs of ``labels`` (default: every one of :data:`SUITE_LABELS`) into
    ``folder / "suite.db"`` (exports of its in-memory runs beside it); each builder must
    add exactly one run."""
    import qcodes

    path = folder / "suite.db"
    exp = new_database(path, "qcodes suite", "suite sample")
    runs: dict[str, int] = {}
    try:
        for label in SUITE_LABELS if labels is None else labels:
            builder = _BUILDERS[label]
            # A DataSetInMem writes its metadata to the default database, which creating a
            # side database (extract_runs_into_db, load_from_netcdf builders) changed.
            qcodes.config["core"]["db_location"] = str(path)
            before = _last_run_id(path)
            builder(_Context(exp, path, folder))
            exp.conn.commit()
            after = _last_run_id(path)
            if after != before + 1:
                raise RuntimeError(f"{label!r} wrote {after - before} runs, not one")
            runs[label] = after
    finally:
        exp.conn.close()
        del exp
        gc.collect()
    return Suite(path, runs)
