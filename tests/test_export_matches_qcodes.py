"""Exported files open like QCoDeS' own exports: a matrix of writers x readers.

For every run QCoDeS 0.58 can export (on a copy), both files are opened with
xarray's h5netcdf and netCDF4 engines and must hold the same dataset: variables,
coordinates, dims, dtypes, values (rtol 2e-14), variable and dataset attributes
(run_description as parsed JSON). qcsql's files must also load with
``qcodes.dataset.load_from_netcdf``.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from tests.helpers import (
    all_databases,
    comparable_description,
    copy_database,
    timestamps_set_aside,
)

xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.qcodes_build import export_where_058_differs  # noqa: E402
from tests.qcodes_reference import _connect_like_a_user, _raw_run_ids_of  # noqa: E402

ENGINES = ("h5netcdf", "netcdf4")
_KEEP = Path(tempfile.mkdtemp(prefix="qcsql-exports-"))


@functools.cache
def exports(path: Path) -> tuple[Path, dict[int, tuple[Path, Path] | str]]:
    """QCoDeS' and qcsql's export of every run: ``{run_id: (theirs, ours) or error}``."""
    from qcodes.dataset import load_by_id

    folder = _KEEP / path.name
    theirs_folder, ours_folder = folder / "qcodes", folder / "qcsql"
    theirs_folder.mkdir(parents=True, exist_ok=True)
    ours_folder.mkdir(exist_ok=True)
    out: dict[int, tuple[Path, Path] | str] = {}
    conn, _ = _connect_like_a_user(path, folder / "db")
    db_copy = Path(conn.path_to_dbfile)
    try:
        for run_id in _raw_run_ids_of(path):
            try:
                dataset = load_by_id(run_id, conn=conn)
                dataset.export("netcdf", path=str(theirs_folder / str(run_id)))
                out[run_id] = (Path(dataset.export_info.export_paths["nc"]), Path())
            except Exception as exc:
                out[run_id] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    with qcsql.open_database(copy_database(path, folder / "ours_db")) as db:
        for run_id, value in list(out.items()):
            run = db.load_by_id(run_id)
            if run.description.source == "results_table":
                out[run_id] = "QCoDeS sees no parameters in it; qcsql reads its columns"
            elif isinstance(value, tuple):
                difference = export_where_058_differs(path, run_id, folder / f"{run_id}-0.58")
                if difference is not None:  # shown real there; 0.62's compared elsewhere
                    out[run_id] = f"QCoDeS 0.62 lays it out otherwise: {difference}"
                    continue
                (ours_folder / str(run_id)).mkdir(exist_ok=True)
                out[run_id] = (value[0], run.export_hdf5(ours_folder / str(run_id)))
    return db_copy, out


def _attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in attrs.items():
        if key == "run_description":
            value = comparable_description(value)
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def assert_same_dataset(
    ours: Any, theirs: Any, where: str, *, export_info: bool = False, qcodes_058: bool = True
) -> None:
    """Same variables, coordinates, dims, dtypes, values and attributes; ``export_info``
    compared too when QCoDeS' file was written from the stored metadata (not from a copy
    that QCoDeS had exported before). With ``qcodes_058`` (``theirs`` from QCoDeS 0.58)
    the two timestamp attributes are set aside (:func:`timestamps_set_aside`); a
    reference of QCoDeS 0.62 has them exactly as qcsql."""
    assert list(ours.variables) == list(theirs.variables), f"{where}: variables or their order"
    assert list(ours.coords) == list(theirs.coords), f"{where}: coordinates or their order"
    assert dict(ours.sizes) == dict(theirs.sizes), where
    for name in theirs.variables:
        a, b = ours.variables[name], theirs.variables[name]
        at = f"{where}/{name}"
        assert a.dims == b.dims, at
        assert a.dtype == b.dtype, f"{at}: {a.dtype} != {b.dtype}"
        if a.dtype.kind in "fc" or a.dtype.names:
            # Complex numbers part by part (NaN + 0j is not NaN + NaNj), and so the
            # compound of r and i that netCDF4 reads complex numbers as.
            parts = (
                [(a.values[f], b.values[f]) for f in a.dtype.names]
                if a.dtype.names
                else [(a.values.real, b.values.real), (a.values.imag, b.values.imag)]
            )
            for mine, theirs_part in parts:
                np.testing.assert_allclose(
                    mine, theirs_part, rtol=2e-14, atol=0, equal_nan=True, err_msg=at
                )
        else:
            np.testing.assert_array_equal(a.values, b.values, err_msg=at)
        assert _attrs(dict(a.attrs)) == _attrs(dict(b.attrs)), at
        assert list(a.attrs) == list(b.attrs), f"{at}: attribute order"
    ours_attrs, theirs_attrs = _attrs(dict(ours.attrs)), _attrs(dict(theirs.attrs))
    if not export_info:
        theirs_attrs.pop("export_info", None)  # QCoDeS' record of an earlier export of the copy
    if qcodes_058:
        ours_attrs, theirs_attrs = timestamps_set_aside(ours_attrs, theirs_attrs)
    assert ours_attrs == theirs_attrs, where
    assert list(ours_attrs) == list(theirs_attrs), f"{where}: dataset attribute order"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("path", all_databases(), ids=lambda p: p.name)
def test_exports_read_like_qcodes_exports(path: Path, engine: str) -> None:
    _, files = exports(path)
    for run_id, pair in files.items():
        if isinstance(pair, str):
            continue
        theirs, ours = pair
        # no bloat: a streamed small run once took a whole 1 MiB chunk per variable
        assert ours.stat().st_size <= 2 * theirs.stat().st_size + 16384, f"run {run_id} file size"
        with xr.open_dataset(theirs, engine=engine) as a, xr.open_dataset(ours, engine=engine) as b:
            assert_same_dataset(b.load(), a.load(), f"{path.name} run {run_id} ({engine})")


@pytest.mark.parametrize("path", all_databases(), ids=lambda p: p.name)
def test_exports_load_with_qcodes_load_from_netcdf(path: Path) -> None:
    from qcodes.dataset import load_from_netcdf

    db_copy, files = exports(path)
    for run_id, pair in files.items():
        if isinstance(pair, str):
            continue
        theirs, ours = pair
        loaded_ours = load_from_netcdf(ours, path_to_db=db_copy)
        loaded_theirs = load_from_netcdf(theirs, path_to_db=db_copy)
        assert loaded_ours.guid == loaded_theirs.guid
        assert loaded_ours.metadata.keys() - {"export_info"} == loaded_theirs.metadata.keys() - {
            "export_info"
        }
        ours_data = loaded_ours.get_parameter_data()
        theirs_data = loaded_theirs.get_parameter_data()
        assert ours_data.keys() == theirs_data.keys(), f"run {run_id}"
