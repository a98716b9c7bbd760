"""Which setpoint values QCoDeS counts as equal: those whose 15-digit text is the same."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import qcsql.plan


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
def test_values_are_rounded_to_15_digits_as_their_text_is(values: list[float]) -> None:
    """as_qcodes_sees, vectorised, against Python's correctly rounded 15-digit text of each
    value (SQLite's text, which QCoDeS reads, agrees except at exact ties)."""
    keys = qcsql.plan.as_qcodes_sees(np.array(values))
    for value, key in zip(values, keys.tolist(), strict=True):
        if value == 0:
            assert key == 0
            continue
        text = f"{value:.14e}"
        if np.isinf(float(text)):  # beyond the largest double once rounded: QCoDeS reads inf
            assert key == float(text), (value, key)
            continue
        assert f"{key:.14e}" == text, (value, key)
