"""One numeric column of a results table from its leaf pages, at fixed offsets, page by page.

Opening a large sweep reads its setpoint once, to settle QCoDeS' layout (a setpoint of
unique values is the sweep's dimension). :mod:`qcsql.sqlite.pages` decodes any cell of
any leaf page, each through its cell pointer, its varints and its record header: a dozen
gathers a cell, which is most of that pass. But a table QCoDeS fills by appending rows
of one record format has leaf pages that look alike: SQLite writes a page's cells from
its end downwards, so a full page of cells of one size holds them at one stride below
one first offset, and the value of a column sits at one offset in each. Such pages are
read here as strided views of the window's bytes, with no gather:

* a *model* page of the window gives the layout: its cell pointers fall at one stride,
  its cells have one payload size, one rowid varint length, one record header (the
  column a double, the tree's top a number, so every cell is a row of the tree) and
  fit in the page, without overflow;
* a page is *alike* when its cell count and pointers are the model's and every cell's
  bytes before the values are the model's (payload size and record header byte for
  byte, the rowid varint's continuation bits), and its rowids lie in the id range read;
* the column of alike pages is one strided view, copied out in one pass; every other
  page (the first and last ones, pages where the rowid varint grows a byte, pages with a
  whole number stored as an integer, ...) is decoded by :mod:`qcsql.sqlite.pages`.

Reads are only made inside :meth:`PageSource.window`, as the general reader's, and
anything unexpected gives the window back (None) for SQLite to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qcsql.sqlite.pages import (
    GIVE_UP,
    TABLE_LEAF,
    PageSource,
    decode_leaves,
    leaf_pages,
    serial_size,
    varints,
)

__all__ = ["COLUMN_LEAVES", "ColumnWindow", "read_column_window"]

# Leaf pages per window: 4 MB of 4 KiB pages, ~600,000 rows of a sweep; a window is read
# in about 10 ms (the pages' read transaction stays that short) and its temporaries stay
# a few MB.
COLUMN_LEAVES = 1024
# More stretches of pages unlike the model than this in a window: decoded whole by the
# general reader instead (each stretch is one call of it).
_MOST_STRETCHES = 16
_DOUBLE = 7  # serial type of an 8-byte IEEE float
_MAX_VARINT = 9


@dataclass(frozen=True)
class ColumnWindow:
    """The column's values at the rows of one window where the tree's top is not NULL,
    and the last rowid the window's pages hold."""

    values: npt.NDArray[np.float64]
    last_rowid: int


@dataclass(frozen=True)
class _Model:
    """The layout alike pages share (offsets within a page)."""

    count: int  # cells per page
    first: int  # offset of the page's first cell (slot 0, the smallest rowid)
    stride: int  # bytes between consecutive cells, downwards
    rowid_at: int  # offset of the rowid varint within a cell
    value_at: int  # offset of the column's double within a cell
    prefix: bytes  # a cell's bytes before its record's values, masked
    mask: bytes


def read_column_window(
    source: PageSource,
    root: int,
    column: int,
    top: int,
    after_id: int,
    upto_id: int,
    leaves: int = COLUMN_LEAVES,
) -> ColumnWindow | None:
    """Record column ``column`` of the rows with ``after_id < rowid <= upto_id`` whose
    record column ``top`` is not NULL, from up to ``leaves`` leaf pages; None when the
    pages cannot be read safely or hold something the page readers do not decode."""
    try:
        with source.window() as safe:
            if not safe:
                return None
            found = leaf_pages(source, root, after_id, max(1, min(leaves, COLUMN_LEAVES)))
            if not found:
                return ColumnWindow(np.empty(0), upto_id)
            pages = source.pages(found)
            decoded = _decode(source, pages, column, top, after_id, upto_id)
    except GIVE_UP:
        return None  # SQLite reads these rows instead (and reports damage)
    if decoded.last_rowid <= after_id:
        return None  # no progress: something about this tree is not what we expect
    return ColumnWindow(decoded.values, min(decoded.last_rowid, upto_id))


def _decode(
    source: PageSource,
    pages: npt.NDArray[np.uint8],
    column: int,
    top: int,
    after_id: int,
    upto_id: int,
) -> ColumnWindow:
    npages, size = pages.shape
    counts = (pages[:, 3].astype(np.int64) << 8) | pages[:, 4]
    model = None
    if np.all(pages[:, 0] == TABLE_LEAF):
        # the fullest page, and the middle one: either is a page like most, unless the
        # window holds few alike pages anyway
        for number in dict.fromkeys((npages // 2, int(np.argmax(counts)))):
            model = _model(pages[number], int(counts[number]), source.usable, column, top)
            if model is not None:
                break
    alike = np.zeros(npages, dtype=bool)
    last_ids = np.full(npages, -1, dtype=np.int64)
    if model is not None:
        alike, last_ids = _alike(pages, counts, model, after_id, upto_id)
    stretches = _stretches(alike)
    if model is None or len(stretches) > _MOST_STRETCHES:
        stretches = [(0, npages, False)]
    pieces: list[npt.NDArray[np.float64]] = []
    last = -1
    for start, stop, same in stretches:
        if same:
            assert model is not None
            values = _view(pages, model, model.value_at, ">f8")[start:stop]
            pieces.append(values.astype(np.float64).reshape(-1))
            last = max(last, int(last_ids[stop - 1]))
        else:
            decoded = decode_leaves(source, pages[start:stop], [top, column], 1, after_id, upto_id)
            pieces.append(decoded.values[1])
            last = max(last, decoded.last_rowid)
    values = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return ColumnWindow(values, last)


def _model(
    page: npt.NDArray[np.uint8], count: int, usable: int, column: int, top: int
) -> _Model | None:
    """The layout of ``page`` if its cells are alike and each a row of the tree whose
    ``column`` is a double; else None."""
    if count < 2 or 8 + 2 * count > usable:
        return None
    pointers = page[8 : 8 + 2 * count].view(">u2").astype(np.int64)
    first, stride = int(pointers[0]), int(pointers[0] - pointers[1])
    if stride <= 0 or not np.array_equal(pointers, first - stride * np.arange(count)):
        return None
    if int(pointers[-1]) < 8 + 2 * count or first + 1 + _MAX_VARINT + 1 > usable:
        return None
    cell = page[first:usable]
    payload = int(cell[0])  # one byte: records under 128 bytes, no overflow
    rowid = 1
    while rowid < _MAX_VARINT - 1 and cell[rowid] >= 0x80:
        rowid += 1  # the rowid varint ends at byte ``rowid`` of the cell
    if payload >= 0x80 or cell[rowid] >= 0x80 or 1 + rowid + payload > min(stride, len(cell)):
        return None
    record = 1 + rowid
    header_size = int(cell[record])
    serials = [int(serial) for serial in cell[record + 1 : record + header_size]]
    if header_size < 2 or header_size >= 0x80 or any(serial >= 0x80 for serial in serials):
        return None
    if column >= len(serials) or top >= len(serials) or serials[column] != _DOUBLE:
        return None
    if not 1 <= serials[top] <= 9:
        return None  # the top is a number, not NULL: each cell is a row of the tree
    sizes = [serial_size(serial) for serial in serials]
    if header_size + sum(sizes) != payload:
        return None
    mask = bytes([0xFF] + [0x80] * rowid + [0xFF] * header_size)
    prefix = bytes(int(byte) & bit for byte, bit in zip(cell[: len(mask)], mask, strict=True))
    return _Model(
        count=count,
        first=first,
        stride=stride,
        rowid_at=1,
        value_at=record + header_size + sum(sizes[:column]),
        prefix=prefix,
        mask=mask,
    )


def _view(pages: npt.NDArray[np.uint8], model: _Model, offset: int, dtype: str) -> npt.NDArray[Any]:
    """``(pages, cells)`` values of ``dtype`` at ``offset`` in each cell of the model's
    layout: one strided view of the window's bytes (each within its page, see _model)."""
    npages, size = pages.shape
    view: npt.NDArray[Any] = np.ndarray(
        (npages, model.count),
        dtype,
        buffer=pages,
        offset=model.first + offset,
        strides=(size, -model.stride),
    )
    return view


def _alike(
    pages: npt.NDArray[np.uint8],
    counts: npt.NDArray[np.int64],
    model: _Model,
    after_id: int,
    upto_id: int,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Which pages have the model's layout, every cell the model's prefix, and rowids in
    ``(after_id, upto_id]``; and the last rowid of each of those pages. The window's pages
    are in key order from the one that holds ``after_id + 1``: only the first one can
    hold smaller rowids, only the last ones larger."""
    npages = len(pages)
    expected = (model.first - model.stride * np.arange(model.count)).astype(">u2")
    pointers = np.ndarray(
        (npages, model.count), ">u2", buffer=pages, offset=8, strides=(pages.shape[1], 2)
    )
    alike = (counts == model.count) & (pointers == expected).all(axis=1)
    for start in range(0, len(model.mask), 8):
        # 8 bytes at a time, compared under the mask (the rest of a word: zero in the mask;
        # the record's values follow the prefix, so the word stays within the cell)
        mask = np.uint64(int.from_bytes(model.mask[start : start + 8].ljust(8, b"\0"), "little"))
        want = np.uint64(int.from_bytes(model.prefix[start : start + 8].ljust(8, b"\0"), "little"))
        words = _view(pages, model, start, "<u8")
        alike &= ((words & mask) == want).all(axis=1)
    last_ids = np.full(npages, -1, dtype=np.int64)
    chosen = np.flatnonzero(alike)
    if len(chosen):
        last_ids[chosen] = _rowids(pages, chosen, model, model.count - 1)
        alike &= last_ids <= upto_id
    if alike[0]:
        alike[0] = _rowids(pages, np.zeros(1, dtype=np.intp), model, 0)[0] > after_id
    return alike, last_ids


def _rowids(
    pages: npt.NDArray[np.uint8], chosen: npt.NDArray[np.intp], model: _Model, slot: int
) -> npt.NDArray[np.int64]:
    """The rowid of cell ``slot`` of each page ``chosen`` (pages alike with the model)."""
    at = chosen.astype(np.int64) * pages.shape[1] + model.first - model.stride * slot
    ids, _ = varints(pages.reshape(-1), at + model.rowid_at)
    return ids


def _stretches(alike: npt.NDArray[np.bool_]) -> list[tuple[int, int, bool]]:
    """``(start, stop, alike)`` of the runs of consecutive pages alike or not."""
    if not len(alike):
        return []
    edges = np.flatnonzero(alike[1:] != alike[:-1]) + 1
    bounds = [0, *edges.tolist(), len(alike)]
    return [(a, b, bool(alike[a])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
