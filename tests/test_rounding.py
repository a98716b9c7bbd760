"""Which setpoint values QCoDeS counts as equal: those whose SQLite text is the same."""

from __future__ import annotations

import contextlib
import sqlite3

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import qcsql.export.keys


@settings(max_examples=3000, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False)
        | st.floats(-1e3, 1e3)
        | st.integers(-(10**17), 10**17).map(lambda n: n / 4)  # exact ties at the 15th digit
        | st.integers(1, 10**6).map(lambda n: n * 1e-9),
        min_size=1,
        max_size=50,
    )
)
def test_values_are_rounded_to_15_digits_as_qcodes_reads_them(values: list[float]) -> None:
    """as_qcodes_sees, vectorised, against what QCoDeS reads: SQLite's text of each double
    (its ``numeric`` converter gets the text SQLite makes), ties and extremes included.
    Beyond 10**22 qcsql's key may be a neighbour of the text's nearest double (two
    roundings), so keys are compared as 15-digit text."""
    keys = qcsql.export.keys.as_qcodes_sees(np.array(values))
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        texts = [conn.execute("SELECT CAST(? AS TEXT)", (v,)).fetchone()[0] for v in values]
    for value, key, text in zip(values, keys.tolist(), texts, strict=True):
        read = float(text)  # what QCoDeS' converter makes of it
        if value == 0 or np.isinf(read):  # inf: beyond the largest double once rounded
            assert key == read, (value, key, text)
            continue
        assert f"{key:.14e}" == f"{read:.14e}", (value, key, text)
