"""One numeric column of a results table from its leaf pages, at fixed offsets, page by page.

Opening a large sweep reads its setpoint once, to settle QCoDeS' layout (a setpoint of
unique values is the sweep's dimension). :mod:`qcsql.sqlite.pages` decodes any cell of
any leaf page, each through its cell pointer, its varints and its record header: a dozen
gathers a cell, which is most of that pass. But a table QCoDeS fills by appending rows
of one record format has leaf pages that look alike: SQLite writes a page's cells from
its end downwards, so a full page of cells of one size holds them at one stride below
one first offset, and the value of a column sits at one offset in each. Such pages are
read here as strided views of the window's bytes, with no gather:

* a *model* page of the window gives a layout (up to three per window): its cell pointers fall at one stride,
  its cells have one payload size, one rowid varint length, one record header (the
  column a double or an integer of one width, the tree's top a number, so that every
  cell is a row of the tree) and fit in the page, without overflow;
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
# general reader instead (each stretch is one call of it, ~0.5 ms; a whole window ~35 ms).
_MOST_STRETCHES = 64
# Layouts tried per window: a window where the rowid varint grows a byte, or where the
# integers of a sweep of whole numbers do, holds pages of two.
_MOST_MODELS = 3
_DOUBLE = 7  # serial type of an 8-byte IEEE float
_INTEGER_WIDTHS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}  # serial type: bytes of a signed integer
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
    value_at: int  # offset of the column's value within a cell
    serial: int  # its serial type: a double, or an integer of 1 to 8 bytes
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
    """The window's column: pages alike with one of a few models as strided views, the
    stretches of other pages through the general decoder (or all of them, where there
    are too many stretches for that to pay)."""
    npages = len(pages)
    counts = (pages[:, 3].astype(np.int64) << 8) | pages[:, 4]
    models: list[_Model] = []
    which = np.full(npages, -1, dtype=np.int64)  # the model each page is alike with, or -1
    last_ids = np.full(npages, -1, dtype=np.int64)
    while np.all(pages[:, 0] == TABLE_LEAF) and len(models) < _MOST_MODELS:
        left = np.flatnonzero(which < 0)
        model = _model_among(pages, counts, left, source.usable, column, top)
        if model is None:
            break
        alike, ids = _alike(pages, counts, model, after_id, upto_id)
        alike &= which < 0
        if not alike.any():
            break  # the model's own page is out of the id range: the rest go one by one
        which[alike] = len(models)
        last_ids[alike] = ids[alike]
        models.append(model)
    stretches = _stretches(which)
    if sum(number < 0 for _, _, number in stretches) > _MOST_STRETCHES:
        stretches = [(0, npages, -1)]
    pieces: list[npt.NDArray[np.float64]] = []
    last = -1
    for start, stop, number in stretches:
        if number >= 0:
            pieces.append(_values(pages[start:stop], models[number]))
            last = max(last, int(last_ids[stop - 1]))
        else:
            decoded = decode_leaves(source, pages[start:stop], [top, column], 1, after_id, upto_id)
            pieces.append(decoded.values[1])
            last = max(last, decoded.last_rowid)
    values = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return ColumnWindow(values, last)


def _model_among(
    pages: npt.NDArray[np.uint8],
    counts: npt.NDArray[np.int64],
    left: npt.NDArray[np.intp],
    usable: int,
    column: int,
    top: int,
) -> _Model | None:
    """The layout of one of the pages ``left``, tried at a few places spread over them,
    the middle first: the first that gives a layout is one that most of them share,
    unless few of them are alike anyway."""
    if not len(left):
        return None
    for place in dict.fromkeys(len(left) * k // 8 for k in (4, 2, 6, 1, 3, 5, 7)):
        number = int(left[place])
        model = _model(pages[number], int(counts[number]), usable, column, top)
        if model is not None:
            return model
    return None


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
    if column >= len(serials) or top >= len(serials):
        return None
    if serials[column] != _DOUBLE and serials[column] not in _INTEGER_WIDTHS:
        return None  # NULL, 0 or 1 (no bytes at all), text or a blob: the general reader
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
        serial=serials[column],
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


def _values(pages: npt.NDArray[np.uint8], model: _Model) -> npt.NDArray[np.float64]:
    """The column of ``pages`` (alike with the model) in key order, as float64, as the
    general reader decodes it: a double as it is, an integer converted."""
    if model.serial == _DOUBLE:
        doubles = _view(pages, model, model.value_at, ">f8")
        return doubles.astype(np.float64).reshape(-1)
    # The 8 big-endian bytes that end with the integer's (the bytes before it are the
    # record's header, the rowid or the page's own: all within the page), shifted left
    # and back right so that its sign fills the rest.
    width = _INTEGER_WIDTHS[model.serial]
    words = _view(pages, model, model.value_at + width - 8, ">i8").astype(np.int64)
    if width < 8:
        words <<= 64 - 8 * width
        words >>= 64 - 8 * width
    return words.astype(np.float64).reshape(-1)


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


def _stretches(which: npt.NDArray[np.int64]) -> list[tuple[int, int, int]]:
    """``(start, stop, model)`` of the runs of consecutive pages alike with one model
    (-1: with none)."""
    if not len(which):
        return []
    edges = np.flatnonzero(which[1:] != which[:-1]) + 1
    bounds = [0, *edges.tolist(), len(which)]
    return [(a, b, int(which[a])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
