"""Decode the ``.npy`` blobs QCoDeS stores for ``array`` and ``complex`` parameters.

QCoDeS writes one blob per row, and within a run nearly every blob of a column
has the same header: the same dtype and shape, so the same length. Parsing that
header once and slicing the data out of every blob of a chunk with one numpy
copy is what makes reading array runs fast; :func:`decode_uniform` does it and
says when a chunk is not uniform, so the caller can fall back to decoding blob
by blob (:func:`decode_one`), which accepts every header numpy writes
(format 1.0, 2.0 and 3.0, C or Fortran order).

Blobs are never unpickled: object dtypes are rejected, as QCoDeS'
``allow_pickle=False`` does. Every number of a header is checked before it sizes
anything: a header longer than numpy's 10000-character limit is refused (as
``numpy.lib.format.read_array`` refuses it), and the data must be exactly as long
as the shape and dtype promise, so a header claiming a huge shape over a short
body is an error, never an allocation.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["NpyHeader", "decode_one", "decode_uniform", "parse_header"]

MAGIC = b"\x93NUMPY"
_LENGTH_FIELD = {1: 2, 2: 4, 3: 4}  # bytes of the header-length field per major version
LARGE_BLOB = 2048  # from this size on, blobs are copied one by one instead of joined
MAX_HEADER_SIZE = 10_000  # numpy.lib.format's _MAX_HEADER_SIZE, which read_array enforces
MAX_DIMS = 64  # numpy's limit (the readers stack rows of more than 63 the slow way)


@dataclass(frozen=True)
class NpyHeader:
    """What an ``.npy`` header says, and where its data start."""

    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]
    fortran_order: bool
    data_offset: int

    def stacked_dtype(self, rows: int) -> np.dtype[np.generic]:
        """The dtype ``np.array(list_of_such_arrays)`` gives (as QCoDeS stacks them): a list of
        several is promoted to native byte order, a list of one keeps the blob's."""
        return self.dtype if self.dtype.isnative or rows == 1 else self.dtype.newbyteorder("=")

    @property
    def data_nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def blob_size(self) -> int:
        return self.data_offset + self.data_nbytes


def parse_header(blob: bytes) -> NpyHeader:
    """Parse the header of one ``.npy`` blob; :class:`ValueError` says what is wrong."""
    if not isinstance(blob, bytes):
        raise ValueError(f"expected an .npy BLOB, found a {type(blob).__name__} value {blob!r:.40}")
    if not blob.startswith(MAGIC) or len(blob) < 10:
        raise ValueError("the BLOB is not in .npy format (no \\x93NUMPY magic)")
    major = blob[6]
    field = _LENGTH_FIELD.get(major)
    if field is None:
        raise ValueError(f".npy format version {major}.{blob[7]} is unknown")
    start = 8 + field
    length = int.from_bytes(blob[8:start], "little")
    if length > MAX_HEADER_SIZE:
        raise ValueError(f"the .npy header is {length} bytes long, more than numpy reads")
    if len(blob) < start + length:
        raise ValueError(
            f"the .npy header is cut off ({len(blob)} bytes for a {length}-byte header)"
        )
    text = blob[start : start + length].decode("utf-8" if major >= 3 else "latin1")
    try:
        fields = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(f"the .npy header is not a Python literal: {text.strip()!r:.80}") from exc
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"the .npy header has unexpected fields: {text.strip()!r:.80}")
    shape = fields["shape"]
    if (
        not isinstance(shape, tuple)
        or len(shape) > MAX_DIMS
        or not all(isinstance(n, int) and n >= 0 for n in shape)
    ):
        raise ValueError(f"the .npy header has an invalid shape {shape!r:.80}")
    if not isinstance(fields["fortran_order"], bool):
        raise ValueError(f"the .npy header has fortran_order {fields['fortran_order']!r:.40}")
    try:
        dtype = np.lib.format.descr_to_dtype(fields["descr"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the .npy header has an invalid dtype {fields['descr']!r:.80}") from exc
    if dtype.hasobject:
        raise ValueError("the .npy BLOB holds Python objects, which are never unpickled")
    if dtype.itemsize == 0 or dtype.subdtype is not None:
        # Items of no bytes let any shape pass the length check; a sub-array dtype adds
        # dimensions the header does not list.
        raise ValueError(f"the .npy header has the unusable dtype {dtype!s:.80}")
    header = NpyHeader(dtype, shape, bool(fields["fortran_order"]), start + length)
    if len(blob) != header.blob_size:
        raise ValueError(
            f"the .npy BLOB has {len(blob)} bytes, its header promises {header.blob_size}"
        )
    return header


def decode_one(blob: bytes) -> npt.NDArray[np.generic]:
    """One blob as the array ``numpy.lib.format.read_array`` would return (a copy, writable)."""
    header = parse_header(blob)
    flat = np.frombuffer(
        blob, dtype=header.dtype, offset=header.data_offset, count=math.prod(header.shape)
    )
    shaped: npt.NDArray[np.generic] = flat.reshape(
        header.shape, order="F" if header.fortran_order else "C"
    )
    return shaped.copy(order="K")


def decode_uniform(
    blobs: Sequence[bytes],
    header: NpyHeader,
    prefix: bytes,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any] | None:
    """All ``blobs`` stacked into one ``(len(blobs), *header.shape)`` array (in native byte
    order, as ``np.array`` of the decoded blobs is), if every one starts with ``prefix``
    (the exact header bytes) and has the promised length; else None.

    With ``out`` (C-contiguous, ``(len(blobs), *header.shape)``, of the header's dtype) the
    values are written there directly, saving a copy of the whole chunk.
    """
    size = header.blob_size
    for blob in blobs:
        if type(blob) is not bytes or len(blob) != size or not blob.startswith(prefix):
            return None
    if header.fortran_order and len(header.shape) > 1:
        return None
    rows = len(blobs)
    direct = out is not None and out.dtype == header.dtype and out.flags.c_contiguous
    target = out if direct and out is not None else np.empty((rows, *header.shape), header.dtype)
    if header.data_nbytes and rows:
        flat = target.reshape(rows, -1)
        if size >= LARGE_BLOB:  # one copy per blob beats joining them first
            count = math.prod(header.shape)
            for index, blob in enumerate(blobs):
                flat[index] = np.frombuffer(blob, header.dtype, count, header.data_offset)
        else:
            raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(rows, size)
            flat.view(np.uint8)[:] = raw[:, header.data_offset :]
    if out is not None and not direct:
        out[...] = target
        return out
    if out is not None:
        return out
    stacked = header.stacked_dtype(rows)
    return target if stacked == target.dtype else target.astype(stacked)
