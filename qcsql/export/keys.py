"""Numbers as QCoDeS sees them: the keys that decide layouts.

QCoDeS reads numbers through SQLite's text, which keeps 15 significant digits, so
two doubles that differ beyond the 15th digit are one grid level, one duplicate,
one merged coordinate for it. Every layout decision in qcsql uses these keys, while
the values written stay the stored doubles.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["as_qcodes_sees", "has_nan", "same_as_qcodes_sees"]


def as_qcodes_sees(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Floats rounded to 15 significant digits, as QCoDeS reads them through SQLite's text.

    qcsql keeps exact doubles, but which setpoint values count as equal (grid levels,
    duplicates, merging trees) must be decided as QCoDeS decides it, or the structure of
    the dataset would differ: 0.1 + 0.2 and 0.3 are one level for QCoDeS.

    The 15-digit mantissa comes from one correctly rounded multiplication (or division)
    by a power of ten, exact up to 10**22. Values within that rounding error of a tie
    between two mantissas are decided exactly, with Dekker's error-free product. Exact
    ties, and the few values beyond 10**22 and 1e+-290, are given SQLite's own text:
    SQLite does not round ties to even (3.40 turns 1234567890123.125 into
    1234567890123.13 but 583534127382743.5 into 583534127382743.0), and the sqlite3
    module here is the one QCoDeS reads through. Equal 15-digit decimals give equal
    keys, in the same order.
    """
    if values.dtype.kind != "f" or not len(values):
        return values
    keys = values.astype(np.float64, copy=True)
    for start in range(0, len(keys), _KEYS_PER_PASS):  # temporaries that stay in cache
        _round_to_15_digits(keys[start : start + _KEYS_PER_PASS])
    return keys


_KEYS_PER_PASS = 1 << 15


def _round_to_15_digits(keys: npt.NDArray[np.float64]) -> None:
    """:func:`as_qcodes_sees` of one slice, in place."""
    original = keys.copy()
    size = np.abs(keys)
    chosen = np.flatnonzero((size >= 1e-290) & (size <= 1e290))
    exact = keys[chosen]
    magnitude = np.floor(np.log10(size[chosen])).astype(np.int64)
    shift = 14 - magnitude  # moves the 15th significant digit to the units
    scaled = _times_power_of_ten(exact, shift)
    mantissa = np.rint(scaled)
    # One rounding of at most half an ulp (a second one beyond 10**22): unsure within it.
    near = np.abs(shift) <= 22
    error = np.where(near, 0.5, 1.5) * np.spacing(np.abs(scaled))
    unsure = np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) <= error
    decide = np.flatnonzero(unsure & near)
    mantissa[decide], tied = _rounded_exactly(exact[decide], shift[decide], scaled[decide])
    carry = np.abs(mantissa) >= 1e15
    mantissa[carry] = np.rint(mantissa[carry] / 10)
    magnitude[carry] += 1
    keys[chosen] = _times_power_of_ten(mantissa, magnitude - 14)
    by_sqlite = np.isfinite(size) & (size != 0) & ((size < 1e-290) | (size > 1e290))
    by_sqlite[chosen[unsure & ~near]] = True
    by_sqlite[chosen[decide[tied]]] = True
    if by_sqlite.any():
        keys[by_sqlite] = _as_sqlite_text_reads(original[by_sqlite])


_POWERS_OF_TEN = np.power(10.0, np.arange(0, 309), dtype=np.float64)  # exact up to 10**22


def _times_power_of_ten(
    values: npt.NDArray[np.float64], exponents: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """``values * 10**exponents``, with one rounding where ``|exponent| <= 22``."""
    steps = np.abs(exponents)
    factor = _POWERS_OF_TEN[np.minimum(steps, 22)]
    beyond = np.flatnonzero(steps > 22)
    factor[beyond] *= _POWERS_OF_TEN[np.minimum(steps[beyond] - 22, len(_POWERS_OF_TEN) - 1)]
    rising = exponents >= 0
    out = np.empty_like(values)
    np.multiply(values, factor, out=out, where=rising)
    np.divide(values, factor, out=out, where=~rising)
    return out


def _rounded_exactly(
    values: npt.NDArray[np.float64], shift: npt.NDArray[np.int64], scaled: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """``values * 10**shift`` rounded to the nearest integer, for products too close to
    ``floor + 0.5`` for their rounded value to tell, and which are exact ties (rounded to
    even here; SQLite decides those). With ``shift >= 0`` the exact product is compared
    with ``floor + 0.5``, else ``values`` with the exact ``(floor + 0.5) * 10**-shift``
    (``|shift| <= 22``: the powers are exact doubles)."""
    power = _POWERS_OF_TEN[np.abs(shift)]
    below = np.floor(scaled)
    half = below + 0.5
    rising = shift >= 0
    # rising: compare values * power (= high + low exactly) with half;
    # falling: compare values with half * power (= high + low exactly).
    high, low = _exact_product(np.where(rising, values, half), power)
    difference = np.where(rising, (high - half) + low, -((high - values) + low))
    up = (difference > 0) | ((difference == 0) & (np.fmod(below, 2) != 0))
    return np.asarray(below + up, dtype=np.float64), difference == 0


def _as_sqlite_text_reads(values: npt.NDArray[np.float64]) -> list[float]:
    """Each value as QCoDeS reads it: SQLite's text of the double, then ``float``. (A
    private in-memory database: the doubles are bound exactly, and many cost one query.)"""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE value (x REAL)")
        conn.executemany("INSERT INTO value VALUES (?)", ((value,) for value in values.tolist()))
        texts = conn.execute("SELECT CAST(x AS TEXT) FROM value ORDER BY rowid").fetchall()
    return [float(text) for (text,) in texts]


def _exact_product(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``a * b`` as ``high + low`` exactly (Dekker's TwoProduct, Veltkamp's split)."""
    high = a * b
    a_high, a_low = _split(a)
    b_high, b_low = _split(b)
    low = ((a_high * b_high - high) + a_high * b_low + a_low * b_high) + a_low * b_low
    return high, low


def _split(
    value: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    scaled = 134217729.0 * value  # 2**27 + 1
    high = scaled - (scaled - value)
    return high, value - high


def same_as_qcodes_sees(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    """Equal as QCoDeS' merge sees them (floats at its 15-digit precision; only the floats
    that differ exactly are rounded, see :func:`each_as_qcodes_sees`)."""
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return each_as_qcodes_sees(a.ravel(), b.ravel())
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def has_nan(values: npt.NDArray[Any]) -> bool:
    """Whether a float or complex array holds NaN, which QCoDeS' grids keep out of their
    levels (pandas drops it), so a layout with one is decided in memory."""
    return values.dtype.kind in "fc" and bool(np.isnan(values).any())


def has_repeats(values: npt.NDArray[Any]) -> bool:
    """Whether two of ``values`` are one value as QCoDeS reads them (NaN being one value,
    as ``np.unique(equal_nan=True)`` of QCoDeS 0.62's direct layout counts them)."""
    return len(np.unique(as_qcodes_sees(values), equal_nan=True)) != len(values)


def each_as_qcodes_sees(values: npt.NDArray[Any], expected: npt.NDArray[Any]) -> bool:
    """Whether each value is its ``expected`` one as QCoDeS reads them (NaN being NaN):
    compared exactly first, as a grid's setpoints mostly are, and only the values that
    differ rounded to QCoDeS' 15 digits."""
    same = values == expected
    if same.all():
        return True
    missed = np.flatnonzero(~same)
    found, wanted = as_qcodes_sees(values[missed]), as_qcodes_sees(expected[missed])
    equal = found == wanted
    if found.dtype.kind in "fc" and wanted.dtype.kind in "fc":
        equal |= np.isnan(found) & np.isnan(wanted)
    return bool(equal.all())
