"""Every run of :mod:`tests.qcodes_suite_runs` (the kinds of run QCoDeS 0.58's own dataset
tests write) reads and exports as QCoDeS 0.58 reads and exports it, on a copy.

One test id per run and per aspect: ``get_parameter_data`` (keys, their order, dtypes,
shapes, values within rtol 2e-14, text and integers exact), the run's fields (metadata,
completion, timestamps, number of results, paramspecs, links, ...) and the exported file
against QCoDeS' own netCDF export (dims, coordinates, variables, dtypes, attributes).
Where QCoDeS itself fails, qcsql gives one typed error or a file that opens.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import qcsql
from tests.helpers import (
    copy_database,
    layout_differs_from_058,
    timestamps_set_aside,
    unless_qcodes_058_differs,
)
from tests.qcodes_suite_runs import SUITE_LABELS, Suite, build_suite

pytestmark = pytest.mark.requires_qcodes
xr = pytest.importorskip("xarray")
pytest.importorskip("qcodes")
from tests.qcodes_reference import _describe_run  # noqa: E402
from tests.test_export_matches_qcodes import assert_same_dataset  # noqa: E402
from tests.test_parameter_data_matches_qcodes import assert_same_data  # noqa: E402
from tests.test_runs_match_qcodes import _expected, _ours  # noqa: E402


@dataclass
class Reference:
    """What QCoDeS says of each run of the suite: a value, or the error it raised."""

    fields: dict[int, dict[str, Any] | str] = field(default_factory=dict)
    data: dict[tuple[int, Request], dict[str, Any] | str] = field(default_factory=dict)
    exports: dict[int, Path | str] = field(default_factory=dict)


# What get_parameter_data is asked: (start, end, only the last top-level parameter)
Request = tuple[int | None, int | None, bool]
REQUESTS: list[Request] = [
    (None, None, False),
    (None, None, True),
    (2, 3, False),
    (None, 2, True),
    (3, None, True),
]


def _requests(label: str) -> list[Request]:
    """The whole run only, for the runs larger than a window (QCoDeS reads them slowly)."""
    return REQUESTS[:1] if label.startswith("large ") else REQUESTS


def _tops(whole: dict[str, Any] | str) -> list[str]:
    """The parameters of QCoDeS' whole-run answer, in its order (none if it failed)."""
    return [] if isinstance(whole, str) else list(whole)


def _ask(run: Any, request: Request, tops: list[str]) -> Any:
    """``get_parameter_data`` of QCoDeS' data set or qcsql's run, as ``request`` asks
    (``tops``: the run's parameters, of which the last is asked for alone)."""
    start, end, last = request
    return run.get_parameter_data(*(tops[-1:] if last else []), start=start, end=end)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Lenient:
    """A QCoDeS data set whose missing attributes read as absent (a DataSetInMem has no
    ``table_name`` nor ``snapshot_raw``): the fields named in ``missing`` are not compared."""

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset
        self.missing: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._dataset, name)
        except AttributeError:
            self.missing.add(name)
            return None


def _fields(dataset: Any) -> dict[str, Any]:
    lenient = _Lenient(dataset)
    fields = _describe_run(lenient) | {
        "run_timestamp": dataset.run_timestamp(),
        "completed_timestamp": dataset.completed_timestamp(),
    }
    return {k: v for k, v in fields.items() if k not in lenient.missing}


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Suite:
    return build_suite(tmp_path_factory.mktemp("qcodes-suite"))


@pytest.fixture(scope="session")
def reference(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """QCoDeS' view of every run, on one copy: fields and data first, then the exports
    (an export records itself in the copy's metadata)."""
    from qcodes.dataset import load_by_id
    from qcodes.dataset.sqlite.database import connect

    folder = tmp_path_factory.mktemp("qcodes-suite-reference")
    conn = connect(str(copy_database(suite.path, folder / "db")))
    out = Reference()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for label, run_id in suite.runs.items():
                try:
                    out.fields[run_id] = _fields(load_by_id(run_id, conn=conn))
                except Exception as exc:
                    out.fields[run_id] = _error(exc)
                for request in _requests(label):
                    try:
                        dataset = load_by_id(run_id, conn=conn)
                        tops = _tops(out.data[run_id, REQUESTS[0]]) if request[2] else []
                        out.data[run_id, request] = _ask(dataset, request, tops)
                    except Exception as exc:
                        out.data[run_id, request] = _error(exc)
            for run_id in suite.runs.values():
                try:
                    dataset = load_by_id(run_id, conn=conn)
                    dataset.export("netcdf", path=str(folder / "exports" / str(run_id)))
                    out.exports[run_id] = Path(dataset.export_info.export_paths["nc"])
                except Exception as exc:
                    out.exports[run_id] = _error(exc)
    finally:
        conn.close()
    return out


def _load(suite: Suite, label: str) -> tuple[qcsql.Database, qcsql.Run]:
    db = qcsql.open_database(suite.path)
    return db, db.load_by_id(suite.runs[label])


@pytest.mark.parametrize("label", SUITE_LABELS)
def test_parameter_data_like_qcodes(suite: Suite, reference: Reference, label: str) -> None:
    """The whole run, a slice of rows, one parameter: what QCoDeS returns, or (where it
    fails) a typed error."""
    db, run = _load(suite, label)
    with db, warnings.catch_warnings():
        warnings.simplefilter("ignore", qcsql.DataNotFoundWarning)
        whole = reference.data[suite.runs[label], REQUESTS[0]]
        tops = _tops(whole)
        for request in _requests(label):
            theirs = reference.data[suite.runs[label], request]
            if isinstance(theirs, str):
                _typed_error_or_data(run, request, tops)
            elif run.in_memory and request != REQUESTS[0]:
                assert not isinstance(whole, str)
                _subset_or_typed_error(run, request, whole)
            else:
                assert_same_data(_ask(run, request, tops), theirs, f"{label} {request}")


def _typed_error_or_data(run: qcsql.Run, request: Request, tops: list[str]) -> None:
    """Where QCoDeS fails (a parameter named ``index`` breaks its SQL, say), qcsql raises
    one typed error or reads the run (and then gives what was asked for)."""
    try:
        data = _ask(run, request, tops)
    except qcsql.QcsqlError:
        return
    if request[2] and tops:
        assert list(data) == tops[-1:]


def _subset_or_typed_error(run: qcsql.Run, request: Request, whole: dict[str, Any]) -> None:
    """QCoDeS' DataSetInMem ignores the parameters, start and end asked for (with a
    warning that this "will be an error in the future") and returns everything. qcsql
    gives the parameters asked for and refuses start/end with DataElsewhereError."""
    start, end, _ = request
    tops = list(whole)
    if whole == {}:  # its data are nowhere: {} whatever is asked, as QCoDeS
        assert _ask(run, request, tops) == {}
        return
    if start is not None or end is not None:
        with pytest.raises(qcsql.DataElsewhereError):
            _ask(run, request, tops)
        return
    ours = _ask(run, request, tops)
    assert_same_data(ours, {top: whole[top] for top in ours}, f"{run.name} {request}")
    assert list(ours) == (tops[-1:] if request[2] else tops)


@pytest.mark.parametrize("label", SUITE_LABELS)
def test_run_fields_like_qcodes(suite: Suite, reference: Reference, label: str) -> None:
    theirs = reference.fields[suite.runs[label]]
    assert not isinstance(theirs, str), f"QCoDeS cannot load it: {theirs}"
    db, run = _load(suite, label)
    with db:
        ours = _ours(run) | {
            "run_timestamp": run.run_timestamp(),
            "completed_timestamp": run.completed_timestamp(),
        }
        expected = _expected(theirs, db.schema_version)
        ours_fields, theirs_fields = timestamps_set_aside(
            {k: v for k, v in ours.items() if k in theirs},
            {k: v for k, v in expected.items() if k in theirs},
        )
        assert ours_fields == theirs_fields


@pytest.mark.parametrize("label", SUITE_LABELS)
def test_export_like_qcodes(suite: Suite, reference: Reference, label: str, tmp_path: Path) -> None:
    theirs = reference.exports[suite.runs[label]]
    db, run = _load(suite, label)
    with db, warnings.catch_warnings():
        warnings.simplefilter("ignore", qcsql.DataNotFoundWarning)
        if isinstance(theirs, str):
            try:
                ours = run.export_hdf5(tmp_path)
            except qcsql.QcsqlError:
                return
            with xr.open_dataset(ours, engine="h5netcdf") as opened:
                opened.load()
            return
        # where QCoDeS 0.62 lays the run out otherwise (qcsql follows it), set aside
        with unless_qcodes_058_differs(run, layout_differs_from_058(run)):
            ours = run.export_hdf5(tmp_path)
            with (
                xr.open_dataset(theirs, engine="h5netcdf") as a,
                xr.open_dataset(ours, engine="h5netcdf") as b,
            ):
                assert_same_dataset(b.load(), a.load(), label, export_info=True)
