"""The pieces of SQLite's cell format that the array page readers need.

:mod:`qcsql.sqlite.blob_pages` finds the cells, records and overflow chains of the leaf pages
it read into a buffer together with their overflow pages, and copies a column's
stretches out of them with strided gathers. :mod:`qcsql.sqlite.blob_scatter`, which sends
overflow pages straight to the output, learns its pattern from those cells and decodes
the numbers of the rows it scattered the same way (:func:`numbers_in`).

File format: https://www.sqlite.org/fileformat2.html (b-tree pages, cell payload overflow,
record format).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qcsql.sqlite.pages import Unsupported, decode_numbers, leaf_cells, serial_size, varints

__all__ = [
    "ColumnTarget",
    "Cells",
    "Piece",
    "gather",
    "into_rows",
    "local_sizes",
    "numbers_in",
    "parse_header",
    "read_cells",
]

GATHER_ROWS = 64  # rows per fancy-indexed copy: the temporary stays in the CPU cache
MAX_HEADER = 256  # bytes of record header the readers parse


@dataclass(frozen=True)
class ColumnTarget:
    """Where one column of the tree goes.

    ``prefix`` is the exact ``.npy`` header of the run's blobs (None for a numeric
    column); ``out`` is the tree's output array for the column, ``(rows, *shape)``.
    The blob's data bytes are copied straight into ``out`` when ``direct``, else
    viewed as ``dtype`` and broadcast into it (size-1 arrays, foreign byte order).
    """

    record_index: int
    prefix: bytes | None
    data_nbytes: int
    dtype: np.dtype[np.generic]
    out: npt.NDArray[np.generic]
    direct: bool

    def holds(self, serial: int) -> bool:
        """Whether a record value of this serial type is one the page readers decode:
        for an array column, a blob of the run's exact size; for a numeric column, a
        number, NULL or short text (QCoDeS' 'nan'). Anything else is left to SQLite."""
        if self.prefix is None:
            return serial <= 9 or (13 <= serial <= 29 and serial % 2 == 1)
        return serial == 12 + 2 * (len(self.prefix) + self.data_nbytes)


@dataclass(frozen=True)
class Cells:
    """The cells of a window's leaves, in key order: where each record starts in the
    buffer, how much of its payload the leaf holds, and its chain of overflow pages."""

    counts: npt.NDArray[np.int64]  # cells on each leaf
    rowids: npt.NDArray[np.int64]
    payload: npt.NDArray[np.int64]  # bytes of record, on the leaf and its overflow pages
    record: npt.NDArray[np.int64]  # buffer offset of the record (its header size varint)
    local: npt.NDArray[np.int64]  # payload bytes on the leaf
    overflow_pages: npt.NDArray[np.int64]
    first_overflow: npt.NDArray[np.int64]  # 0 where the payload does not spill

    @property
    def last_page(self) -> npt.NDArray[np.int64]:
        chain_end = self.first_overflow + self.overflow_pages - 1
        return np.where(self.overflow_pages > 0, chain_end, 0)


def read_cells(
    buffer: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.int64],
    header_at: npt.NDArray[np.int64],
    usable: int,
) -> Cells:
    """The cells of the table leaf pages at buffer offsets ``starts`` (whose b-tree page
    header is ``header_at`` bytes in: 100 on page 1)."""
    counts, page_of_cell, cell = leaf_cells(buffer, starts, header_at)
    payload, payload_len = varints(buffer, cell)
    rowid_at = cell + payload_len
    rowids, rowid_len = varints(buffer, rowid_at)
    if np.any(np.diff(rowids) <= 0):
        raise Unsupported  # keys must rise through the leaves
    local = local_sizes(payload, usable)
    spills = payload > local
    cell_end = cell - starts[page_of_cell] + payload_len + rowid_len + local + 4 * spills
    if np.any(cell_end > usable):
        raise Unsupported  # a cell running off its page: damage, which SQLite reports
    record = rowid_at + rowid_len
    return Cells(
        counts=counts,
        rowids=rowids,
        payload=payload,
        record=record,
        local=local,
        overflow_pages=np.where(spills, -(-(payload - local) // (usable - 4)), 0),
        first_overflow=_first_overflow(buffer, record + local, spills),
    )


def local_sizes(payload: npt.NDArray[np.int64], usable: int) -> npt.NDArray[np.int64]:
    """Bytes of each cell's payload stored on the leaf page itself (SQLite's rule)."""
    most = usable - 35
    least = ((usable - 12) * 32 // 255) - 23
    spill = least + (payload - least) % (usable - 4)
    return np.where(payload <= most, payload, np.where(spill <= most, spill, least))


def _first_overflow(
    buffer: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], spills: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """The 4-byte big-endian page number after each spilling cell's local payload."""
    number = np.zeros(len(at), dtype=np.int64)
    where = np.flatnonzero(spills)
    for byte in range(4):
        number[where] = (number[where] << 8) | buffer[at[where] + byte]
    return number


def parse_header(
    buffer: npt.NDArray[np.uint8], record: int, size: int, size_len: int
) -> tuple[list[int], list[int]]:
    """Serial types of one record, and the payload offset of each value."""
    serials: list[int] = []
    position = size_len
    while position < size:
        value, length = varints(buffer, np.array([record + position]))
        serials.append(int(value[0]))
        position += int(length[0])
    if position != size:
        raise Unsupported
    value_at = []
    offset = size
    for serial in serials:
        value_at.append(offset)
        offset += serial_size(serial)
    return serials, value_at


def numbers_in(rows: npt.NDArray[np.uint8], serial: int, at: int) -> npt.NDArray[np.float64]:
    """The values of serial type ``serial`` at byte ``at`` of each row of ``rows``, as
    QCoDeS returns numbers (see :func:`qcsql.sqlite.pages.decode_numbers`)."""
    flat = np.concatenate([rows.reshape(-1), np.zeros(16, np.uint8)])  # slack for gathers
    positions = np.arange(len(rows), dtype=np.int64) * rows.shape[1] + at
    return decode_numbers(flat, np.full(len(rows), serial, dtype=np.int64), positions)


@dataclass(frozen=True)
class Piece:
    """A stretch of one column that lies on one page for every row of a header group."""

    source: npt.NDArray[np.int64]  # buffer offset of the stretch, per row
    length: int
    into: int  # offset in the column's bytes


Into = Callable[[slice, npt.NDArray[np.uint8]], None]


def gather(buffer: npt.NDArray[np.uint8], piece: Piece, into: Into) -> None:
    """Hand ``into(rows, bytes)`` the piece's bytes of all rows.

    Rows QCoDeS appended lie at a fixed distance from each other, except where SQLite
    put an interior page between them; each such run of rows is one strided view, copied
    in one go. Rows scattered more than that are gathered a few at a time, so that the
    gathered temporary stays in the CPU cache.
    """
    source, length = piece.source, piece.length
    rows = len(source)
    steps = np.diff(source)
    step = int(steps[len(steps) // 2]) if len(steps) else 1
    starts = np.flatnonzero(steps != step) + 1
    if step and len(starts) <= max(4, rows // 64):
        bounds = [0, *starts.tolist(), rows]
        for first, end in zip(bounds[:-1], bounds[1:], strict=False):
            if first == end:
                continue
            run = np.lib.stride_tricks.as_strided(
                buffer[int(source[first]) :],
                shape=(end - first, length),
                strides=(step, 1),
                writeable=False,
            )
            into(slice(first, end), run)
        return
    sliding = np.lib.stride_tricks.as_strided(
        buffer, shape=(len(buffer) - length + 1, length), strides=(1, 1), writeable=False
    )
    for first in range(0, rows, GATHER_ROWS):
        part = slice(first, min(first + GATHER_ROWS, rows))
        into(part, sliding[source[part]])


def into_rows(
    out: npt.NDArray[np.uint8], piece: Piece, rows: npt.NDArray[np.int64] | slice
) -> Into:
    """Write gathered bytes into ``out[rows]`` at the piece's byte offset."""
    columns = slice(piece.into, piece.into + piece.length)
    if isinstance(rows, slice):
        offset = rows.start

        def into_slice(part: slice, data: npt.NDArray[np.uint8]) -> None:
            out[offset + part.start : offset + part.stop, columns] = data

        return into_slice

    def into_listed(part: slice, data: npt.NDArray[np.uint8]) -> None:
        out[rows[part], columns] = data

    return into_listed
