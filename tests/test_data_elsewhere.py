"""Runs whose data are not in the main file (QCoDeS 0.62 fixtures): per-dataset raw-data
files, metadata-only databases and DataSetInMem runs pointing to netCDF exports.

The fixtures record absolute paths of the machine that made them (now dangling), as a
lab's files moved to another computer would: qcsql finds the side files under the
database's folder and reads the same values QCoDeS 0.62 read there (verify_*.json).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from tests.helpers import FIXTURES, FileState

SPLIT = FIXTURES / "split"
REFERENCE = json.loads((SPLIT / "verify_qcodes-0.62_paths-intact.json").read_text())["dbs"]
CASES = [
    (db, run["run_id"], run)
    for db, views in REFERENCE.items()
    for run in views["cwd_db_folder"]["runs"]
]


@pytest.mark.parametrize(
    ("db", "run_id", "theirs"), CASES, ids=lambda v: str(v) if not isinstance(v, dict) else ""
)
def test_reads_what_qcodes_062_read(db: str, run_id: int, theirs: dict[str, Any]) -> None:
    path = SPLIT / db
    before = FileState.of(path)
    with qcsql.open_database(path) as database:
        run = database.load_by_id(run_id)
        assert run.guid == theirs["guid"]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", qcsql.DataNotFoundWarning)
                ours = run.get_parameter_data()
        except qcsql.DataElsewhereError as exc:
            assert theirs["data"] == {}, f"QCoDeS read data qcsql could not: {exc}"
            assert "does not exist" in str(exc)
            return
    assert FileState.of(path) == before
    # QCoDeS warns "No raw data stored" for the run never exported, and there only
    ours_warned = [str(w.message) for w in caught if w.category is qcsql.DataNotFoundWarning]
    theirs_warned = [w for w in theirs["warnings"] if "raw data" in w]
    assert bool(ours_warned) == bool(theirs_warned), (ours_warned, theirs_warned)
    assert all(f"guid {theirs['guid']}" in w for w in ours_warned)
    assert list(ours) == list(theirs["data"])
    for top, tree in theirs["data"].items():
        assert sorted(ours[top]) == sorted(tree)
        for name, expected in tree.items():
            got = ours[top][name]
            assert list(got.shape) == expected["shape"] and str(got.dtype) == expected["dtype"]
            np.testing.assert_allclose(
                got.ravel(), np.ravel(expected["values"]), rtol=2e-14, atol=1e-15
            )


def test_missing_side_file_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "per_dataset.db"
    copy.write_bytes((SPLIT / "per_dataset" / "per_dataset.db").read_bytes())  # without its folder
    with qcsql.open_database(copy) as db:
        with pytest.raises(
            qcsql.DataElsewhereError, match="raw data are in .*per_dataset_db.*does not exist"
        ):
            db.load_by_id(2).get_parameter_data()
        assert db.load_by_id(1).get_parameter_data()  # the run in the main file still reads


def test_exports_and_audit_of_runs_stored_elsewhere(tmp_path: Path) -> None:
    from qcsql.audit import audit

    with qcsql.open_database(SPLIT / "per_dataset" / "per_dataset.db") as db:
        assert db.load_by_id(3).export_hdf5(tmp_path).exists()
    report = audit(SPLIT / "inmem" / "inmem.db", deep=True)
    errors = {(f.code, f.run_id) for f in report.findings if f.level == "error"}
    assert errors == {("data_not_found", 4)}  # never exported: the only run without data
