"""Property tests of the .npy and numeric decoders against numpy's and QCoDeS' own writers."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qcsql.data.npy import decode_one, decode_uniform, parse_header

DTYPES = st.sampled_from(
    ["<f8", "<f4", "<i8", "<i2", "<u1", "<c16", "<c8", ">f8", "?", "<U7", "<M8[ns]"]
)
FORMATS = st.sampled_from([(1, 0), (2, 0), (3, 0)])


def npy_bytes(array: np.ndarray, version: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    array=DTYPES.flatmap(
        lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3, max_side=5))
    ),
    version=FORMATS,
    fortran=st.booleans(),
)
def test_decode_one_equals_numpy(
    array: np.ndarray, version: tuple[int, int], fortran: bool
) -> None:
    if fortran:
        array = np.asfortranarray(array)
    blob = npy_bytes(array, version)
    expected = np.lib.format.read_array(io.BytesIO(blob), allow_pickle=False)
    decoded = decode_one(blob)
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    np.testing.assert_array_equal(decoded, expected)


@settings(max_examples=200, deadline=None)
@given(
    arrays=st.tuples(DTYPES, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6)).flatmap(
        lambda spec: st.lists(hnp.arrays(np.dtype(spec[0]), spec[1]), min_size=1, max_size=8)
    ),
    version=FORMATS,
)
def test_decode_uniform_equals_stacking(arrays: list[np.ndarray], version: tuple[int, int]) -> None:
    blobs = [npy_bytes(a, version) for a in arrays]
    header = parse_header(blobs[0])
    stacked = decode_uniform(blobs, header, blobs[0][: header.data_offset])
    assert stacked is not None
    expected = np.array([np.lib.format.read_array(io.BytesIO(b)) for b in blobs])
    assert stacked.dtype == expected.dtype and stacked.shape == expected.shape
    np.testing.assert_array_equal(stacked, expected)


def test_decode_uniform_refuses_a_different_header() -> None:
    blobs = [npy_bytes(np.arange(3.0), (3, 0)), npy_bytes(np.arange(4.0), (3, 0))]
    header = parse_header(blobs[0])
    assert decode_uniform(blobs, header, blobs[0][: header.data_offset]) is None


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        (b"", "not in .npy format"),
        (b"\x93NUMPY\x09\x00\x10\x00", "unknown"),
        (npy_bytes(np.arange(3.0), (1, 0))[:-1], "promises"),
        (npy_bytes(np.arange(3.0), (1, 0)).replace(b"'<f8'", b"'<q9'"), "dtype"),
        (
            npy_bytes(np.array([None, 1], dtype=object)[:0].astype("<f8"), (1, 0)).replace(
                b"'<f8'", b"'|O' "
            ),
            "objects",
        ),
    ],
    ids=["empty", "version", "truncated", "bad-dtype", "pickle"],
)
def test_corrupt_blobs_are_refused_with_a_reason(blob: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_header(blob)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(min_value=-(2**53), max_value=2**53),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_numeric_values_stored_by_qcodes_read_back_exactly(values: list[float]) -> None:
    """Bound through QCoDeS' own float adapter (NaN becomes the text 'nan'), read by qcsql."""
    pytest.importorskip("qcodes")
    from qcodes.dataset.sqlite.database import _adapt_float

    from qcsql.data.parameter_data import _numeric

    conn = sqlite3.connect(":memory:")
    conn.execute('CREATE TABLE "results-1-1" (id INTEGER PRIMARY KEY, "x" numeric)')
    conn.executemany(
        'INSERT INTO "results-1-1" ("x") VALUES (?)',
        [(_adapt_float(v) if isinstance(v, float) else v,) for v in values],
    )
    stored = [v for (v,) in conn.execute('SELECT "x" FROM "results-1-1" ORDER BY id')]
    decoded = _numeric(None, "x", stored)  # type: ignore[arg-type]
    expected = np.array([float(v) for v in values])
    assert decoded.dtype == np.float64
    np.testing.assert_array_equal(decoded, expected)
