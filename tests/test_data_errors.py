"""Damaged results get a typed error naming run, table and column; odd runs QCoDeS cannot
read are read where their data exist."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import qcsql
from tests.helpers import EXAMPLE_DB, copy_database

ARRAY_RUN, NUMERIC_RUN, COMPLEX_RUN = 5, 3, 6


def _damaged(tmp_path: Path, run_id: int, statement: str) -> tuple[Path, str]:
    """A copy of the example database with one results table changed by ``statement``,
    where ``{t}`` stands for that run's (quoted) table name."""
    copy = copy_database(EXAMPLE_DB, tmp_path)
    with qcsql.open_database(copy) as db:
        table = db.load_by_id(run_id).table_name
    assert table is not None
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute(statement.format(t=f'"{table}"'))
    return copy, table


@pytest.mark.parametrize(
    ("run_id", "statement", "column", "words"),
    [
        (
            ARRAY_RUN,
            "UPDATE {t} SET spectrum = X'00112233' WHERE id = 2",
            "spectrum",
            "not in .npy format",
        ),
        (
            ARRAY_RUN,
            "UPDATE {t} SET spectrum = substr(spectrum, 1, 150) WHERE id = 2",
            "spectrum",
            "bytes",
        ),
        (ARRAY_RUN, "UPDATE {t} SET spectrum = 'text' WHERE id = 2", "spectrum", "found a str"),
        # Text in a numeric column QCoDeS reads into an object array (tests/test_fidelity.py);
        # bytes that are neither a number nor UTF-8 text it cannot convert.
        (
            NUMERIC_RUN,
            "UPDATE {t} SET dac_plunger = X'FF02' WHERE id = 3",
            "dac_plunger",
            "neither a number nor text",
        ),
        (COMPLEX_RUN, "UPDATE {t} SET iq = X'93' WHERE id = 4", "iq", "npy"),
    ],
    ids=[
        "blob-not-npy",
        "blob-truncated",
        "text-in-array",
        "undecodable-blob-in-numeric",
        "complex-garbage",
    ],
)
def test_damaged_values(
    tmp_path: Path, run_id: int, statement: str, column: str, words: str
) -> None:
    copy, table = _damaged(tmp_path, run_id, statement)
    with qcsql.open_database(copy) as db:
        with pytest.raises(qcsql.DataDecodeError, match=words) as raised:
            db.load_by_id(run_id).get_parameter_data()
    error = raised.value
    assert (error.run_id, error.table, error.column) == (run_id, table, column)
    assert str(copy) in str(error) and f"run {run_id}" in str(error) and repr(column) in str(error)


def test_missing_results_table(tmp_path: Path) -> None:
    """QCoDeS loads a run whose results table is gone as a ``DataSetInMem`` without data
    (``{}`` and a warning; tests/test_no_data_runs.py compares that with QCoDeS)."""
    copy, table = _damaged(tmp_path, NUMERIC_RUN, "DROP TABLE {t}")
    with qcsql.open_database(copy) as db:
        run = db.load_by_id(NUMERIC_RUN)
        assert run.number_of_results == 0
        with pytest.warns(qcsql.DataNotFoundWarning, match=f"results table '{table}' is not"):
            assert run.get_parameter_data() == {}


def test_missing_column(tmp_path: Path) -> None:
    copy, table = _damaged(tmp_path, NUMERIC_RUN, "ALTER TABLE {t} DROP COLUMN dmm_voltage")
    with qcsql.open_database(copy) as db:
        with pytest.raises(qcsql.SchemaError, match="has no column 'dmm_voltage'") as raised:
            db.load_by_id(NUMERIC_RUN).get_parameter_data()
    assert raised.value.column == "dmm_voltage" and raised.value.table == table


def test_parameters_named_like_sql_keywords(tmp_path: Path) -> None:
    """QCoDeS registers them, fails every insert (unquoted names) and then cannot read the run."""
    pytest.importorskip("qcodes")
    from qcodes.dataset import (
        Measurement,
        initialise_or_create_database_at,
        load_by_id,
        load_or_create_experiment,
    )
    from qcodes.parameters import Parameter

    path = tmp_path / "keywords.db"
    initialise_or_create_database_at(str(path))
    experiment = load_or_create_experiment("keywords", sample_name="s")
    order = Parameter("order", set_cmd=None, get_cmd=None)
    select = Parameter("select", set_cmd=None, get_cmd=None)
    measurement = Measurement(exp=experiment, name="keywords")
    measurement.register_parameter(order)
    measurement.register_parameter(select, setpoints=(order,))
    with measurement.run() as saver:
        for value in range(3):
            saver.add_result((order, value), (select, 2 * value))
        run_id = saver.dataset.run_id
    with pytest.raises(Exception, match="syntax error"):
        load_by_id(run_id, conn=experiment.conn).get_parameter_data()
    experiment.conn.close()
    with qcsql.open_database(path) as db:
        data = db.load_by_id(run_id).get_parameter_data()
    assert list(data) == ["select"] and list(data["select"]) == ["select", "order"]
    assert all(
        array.shape == (0,) and array.dtype == np.float64 for array in data["select"].values()
    )
