"""Fuzzing (hypothesis, bounded in examples): arbitrary damage to a genuine database, and
arbitrary bytes as .npy blobs, never produce anything but qcsql errors (or ValueError from
the npy parser, which its callers turn into qcsql errors)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qcsql
from qcsql.data.npy import decode_one, parse_header
from tests.helpers import LEGACY

SOURCE = (LEGACY / "v4_qcodes-0.2.1.db").read_bytes()  # rollback journal, small, varied runs
# CI runs a bounded number of examples; QCSQL_FUZZ_EXAMPLES=5000 for a longer hunt.
EXAMPLES = int(os.environ.get("QCSQL_FUZZ_EXAMPLES", "60"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    patches=st.lists(
        st.tuples(st.integers(0, len(SOURCE) - 1), st.binary(min_size=1, max_size=64)),
        min_size=1,
        max_size=6,
    )
)
def test_damaged_bytes_give_qcsql_errors_only(
    patches: list[tuple[int, bytes]], tmp_path: Path
) -> None:
    data = bytearray(SOURCE)
    for offset, patch in patches:
        data[offset : offset + len(patch)] = patch
    path = tmp_path / "fuzzed.db"
    path.write_bytes(bytes(data[: len(SOURCE)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", qcsql.QcsqlWarning)  # e.g. a damaged user_version
        _read_everything(path)


def _read_everything(path: Path) -> None:
    try:
        with qcsql.open_database(path) as db:
            for run in db.runs():
                try:
                    run.description
                    run.snapshot
                    run.get_parameter_data()
                except qcsql.QcsqlError:
                    pass
    except qcsql.QcsqlError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_blobs_are_refused_cleanly(blob: bytes) -> None:
    try:
        parse_header(blob)
        decode_one(blob)
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_npy_headers_are_refused_cleanly(tail: bytes) -> None:
    blob = b"\x93NUMPY\x01\x00" + len(tail).to_bytes(2, "little") + tail
    with pytest.raises(ValueError):
        header = parse_header(blob)
        if header.blob_size == len(blob):  # a valid empty array: fine
            raise ValueError("valid")
