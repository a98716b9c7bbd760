"""Read the pages of an array run straight into the output arrays.

A window of :mod:`qcsql.sqlite.blob_pages` reads its pages into a buffer and copies each
blob out of it, so every blob byte crosses memory twice after the kernel's copy. But
rows as QCoDeS appends them follow a pattern: one cell per leaf page, flush against
the end of the page, its overflow chain a fixed number of pages from the leaf, the
same record header (so the same payload size and the same value offsets) in every
row, and ids that follow one another. Once a buffered window has shown that pattern
(:func:`learn_pattern`), the next window's page layout follows from its leaf page
numbers alone, which the interior pages give. One scattered read
(:mod:`qcsql.sqlite.scatter_read`) then puts the blob bytes of every page at their final
place in the output arrays, and the page heads, chain links and the few other payload
bytes (record and ``.npy`` headers, numbers) into small buffers.

Everything predicted is then checked against what was read, row by row: the page
type, one cell at the predicted place, the payload size, the rowid, the first overflow
page, every chain link, the record header and every ``.npy`` header. The window ends
before the first row that differs (what the read put in later output rows is
overwritten by whoever reads them next), and :mod:`qcsql.sqlite.blob_pages` reads on from
there with its buffer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from qcsql.sqlite import pages, scatter_read
from qcsql.sqlite.blob_cells import Cells, ColumnTarget, numbers_in
from qcsql.sqlite.pages import GIVE_UP, TABLE_LEAF, PageSource, Unsupported, serial_size, varints

__all__ = ["ChainPattern", "Scattered", "learn_pattern", "scatter_windows"]

SCATTER_PAGES = 8192  # pages one scattered window spans (32 MB at 4 kB pages)
IN_FLIGHT = 3  # windows planned and reading at once, when reads go to a pool
# What a window that cannot be read as predicted raises: the buffered reader takes over.


@dataclass(frozen=True)
class ChainPattern:
    """How one tree's rows have been lying in the file: one cell per leaf page, an
    overflow chain of ``chain_pages`` consecutive pages starting ``chain_offset`` pages
    from the leaf, and the same record ``header`` in every row. (That each cell sits
    flush against its page's end and that ids follow one another is checked window by
    window, like the rest.)"""

    top: int  # record index of the tree's top column
    chain_offset: int
    chain_pages: int
    payload: int  # bytes of record per row
    local: int  # of which on the leaf page
    header: bytes
    serials: tuple[int, ...]
    value_at: tuple[int, ...]  # payload offset of each record column


def learn_pattern(
    buffer: npt.NDArray[np.uint8],
    cells: Cells,
    leaves: npt.NDArray[np.int64],
    chosen: npt.NDArray[np.int64],
    targets: Sequence[ColumnTarget],
    serials: list[int],
    value_at: list[int],
) -> ChainPattern | None:
    """The pattern of a window's ``chosen`` rows (all of one record header, whose
    ``serials`` and ``value_at`` are given), or None if they do not show one or scattered
    reads cannot put them into ``targets`` (whose first is the tree's top column): a
    pattern nobody can use would only keep the reader from sharing the rows between
    threads, window after window."""
    if len(chosen) < 2 or len(cells.counts) != len(leaves) or np.any(cells.counts != 1):
        return None
    spilled = cells.overflow_pages[chosen]
    offsets = cells.first_overflow[chosen] - leaves[chosen]
    if spilled[0] == 0 or np.any(spilled != spilled[0]) or np.any(offsets != offsets[0]):
        return None
    record = int(cells.record[chosen[0]])
    header_size, _ = varints(buffer, np.array([record]))
    local = int(cells.local[chosen[0]])
    if int(header_size[0]) > local:
        return None
    pattern = ChainPattern(
        top=targets[0].record_index,
        chain_offset=int(offsets[0]),
        chain_pages=int(spilled[0]),
        payload=int(cells.payload[chosen[0]]),
        local=local,
        header=buffer[record : record + int(header_size[0])].tobytes(),
        serials=tuple(serials),
        value_at=tuple(value_at),
    )
    if not scatter_read.AVAILABLE or _layout(pattern, targets) is None:
        return None
    return pattern


@dataclass(frozen=True)
class _Stretch:
    """Payload bytes ``start .. end`` of every row: one column's blob data (``column``,
    an index into the targets), or bytes kept in the window's small buffer (-1)."""

    start: int
    end: int
    column: int
    into: int  # byte offset in the column's row, or in the row's kept bytes


@dataclass(frozen=True)
class _Layout:
    stretches: list[_Stretch]
    kept: int  # bytes kept per row
    rows: list[npt.NDArray[np.uint8] | None]  # each target's output as (rows, bytes)

    def kept_at(self, payload_offset: int) -> int:
        for stretch in self.stretches:
            if stretch.column < 0 and stretch.start <= payload_offset < stretch.end:
                return stretch.into + payload_offset - stretch.start
        raise Unsupported  # pragma: no cover - every value outside blob data is kept


def _layout(pattern: ChainPattern, targets: Sequence[ColumnTarget]) -> _Layout | None:
    """Where each payload byte of a row goes, or None for targets this reader leaves to
    the buffered one (converted arrays, other blob sizes, blobs in a numeric column)."""
    serials, data = pattern.serials, []
    rows: list[npt.NDArray[np.uint8] | None] = []
    for column, target in enumerate(targets):
        index = target.record_index
        if not target.holds(serials[index] if index < len(serials) else 0):
            return None
        if target.prefix is None:
            rows.append(None)
            continue
        out = target.out
        if not (target.direct and out.flags.c_contiguous):
            return None
        flat = out.reshape(len(out), -1).view(np.uint8)
        if flat.shape[1] != target.data_nbytes:
            return None
        start = pattern.value_at[index] + len(target.prefix)
        data.append((start, start + target.data_nbytes, column))
        rows.append(flat)
    stretches, at, kept = [], 0, 0
    for start, end, column in sorted(data):
        if start < at:
            return None
        if start > at:
            stretches.append(_Stretch(at, start, -1, kept))
            kept += start - at
        stretches.append(_Stretch(start, end, column, 0))
        at = end
    if at < pattern.payload:
        stretches.append(_Stretch(at, pattern.payload, -1, kept))
        kept += pattern.payload - at
    return _Layout(stretches, kept, rows)


@dataclass(frozen=True)
class Scattered:
    """What :func:`scatter_windows` read: ``rows`` filled, up to rowid ``covered``, and
    whether the rows still ``follow`` the pattern there (they do when the reads stopped at
    the end of the ids or of the room; after a row that differs they do not, and reading
    on from it with the pattern would only read a window to find that again)."""

    rows: int
    covered: int
    follow: bool


def scatter_windows(
    source: PageSource,
    root: int,
    pattern: ChainPattern,
    targets: Sequence[ColumnTarget],
    after_id: int,
    upto_id: int,
    position: int,
    room: int,
    pool: Executor | None = None,
) -> Scattered | None:
    """Read the rows after ``after_id`` (not past ``upto_id``) that follow ``pattern`` into
    output rows ``position`` onwards, at most ``room`` of them; None if not even the first
    row follows the pattern.

    Without ``pool``, one window, inside its own read transaction
    (:meth:`PageSource.window`), so that a writer waits for one window at most. With a
    pool, for a source that needs no lock (:attr:`PageSource.lock_free`), window after
    window for as long as the rows follow the pattern: reading a window's pages is kernel
    work that releases the GIL, planning and checking one is numpy work that does not, so
    the reads go to ``pool`` and the next windows are planned while they run, on the
    assumption that every row follows the pattern. Windows planned beyond a row that
    does not are dropped once their reads end (they wrote only to output rows that
    whoever reads on overwrites)."""
    layout = _layout(pattern, targets) if room > 0 and scatter_read.AVAILABLE else None
    if layout is None:
        return None
    try:
        with source.window() as safe:
            if not safe:
                return None
            found = _read_windows(
                source, root, pattern, layout, targets, after_id, upto_id, position, room, pool
            )
    except GIVE_UP:
        return None  # the file changed while it was read: what was read cannot be trusted
    return found


def _read_windows(
    source: PageSource,
    root: int,
    pattern: ChainPattern,
    layout: _Layout,
    targets: Sequence[ColumnTarget],
    after_id: int,
    upto_id: int,
    position: int,
    room: int,
    pool: Executor | None,
) -> Scattered | None:
    ahead = 1 if pool is None else IN_FLIGHT  # windows planned and not yet checked
    pending: deque[tuple[_Window, Future[None] | None]] = deque()
    filled, covered = 0, after_id
    planned, rows = after_id, 0  # the windows planned so far end there
    fits = follow = True  # the pattern fits the next leaves; the rows read follow it
    try:
        while True:
            while fits and len(pending) < ahead and planned < upto_id and rows < room:
                window = _Window.plan(
                    source, root, pattern, layout, planned, upto_id, position + rows, room - rows
                )
                if window is None:
                    fits = False
                    break
                pending.append((window, None if pool is None else pool.submit(window.read)))
                planned, rows = planned + window.count, rows + window.count
            if not pending:
                break
            window, reading = pending.popleft()
            if reading is None:
                window.read()
            else:
                reading.result()
            found = window.finish(targets, upto_id)
            if found is not None:
                filled, covered = filled + found[0], found[1]
            if found is None or found[0] < window.count:
                follow = False
                break
            if pool is None or covered >= upto_id:
                break
    except GIVE_UP:
        follow = False  # the windows checked so far stand
    finally:
        wait([reading for _, reading in pending if reading is not None])  # none may go on
    return Scattered(filled, covered, follow and fits) if filled else None


@dataclass
class _Window:
    """One scattered read's page heads, chain links and kept bytes, to check and finish.

    A QCoDeS leaf page holds its one cell flush against the end of the usable area, so
    its layout follows from the payload size and the row's id (whose varint length
    shifts the cell by a byte at 128, 16384, ...): the page head (b-tree header, cell
    pointer, free space, the cell's payload size and rowid) up to the record, then the
    record's first ``local`` bytes, then the first overflow page's number. Ids are
    predicted to follow one another; a gap ends the window there like any other
    difference.
    """

    source: PageSource
    pattern: ChainPattern
    layout: _Layout
    leaves: npt.NDArray[np.int64]
    chains: npt.NDArray[np.int64]  # (rows, chain pages): the pages predicted
    rowids: npt.NDArray[np.int64]  # predicted
    position: int
    heads: npt.NDArray[np.uint8]  # (rows, head bytes): each leaf page up to its record
    # (rows, chain pages + 1, 4): the next-page numbers at the end of the leaf's cell and
    # at the start of each overflow page
    links: npt.NDArray[np.uint8]
    kept: npt.NDArray[np.uint8]  # (rows, kept bytes)
    discard: npt.NDArray[np.uint8]  # one page: where bytes nobody needs are read to
    vectors: npt.NDArray[np.uint64] = field(default_factory=lambda: np.empty((0, 2), np.uint64))
    offset: int = 0  # in the file, of the first page read

    @classmethod
    def plan(
        cls,
        source: PageSource,
        root: int,
        pattern: ChainPattern,
        layout: _Layout,
        after_id: int,
        upto_id: int,
        position: int,
        room: int,
    ) -> _Window | None:
        """The window of the rows after ``after_id``, as the pattern predicts them, ready
        to :meth:`read`; None if the pattern does not fit even its first leaf. It ends at
        ``upto_id`` (rows are predicted to have consecutive ids)."""
        size = source.page_size
        most = min(room, upto_id - after_id, max(1, SCATTER_PAGES // (pattern.chain_pages + 1)))
        leaves = np.asarray(pages.leaf_pages(source, root, after_id, most), dtype=np.int64)
        fitting = _fitting(leaves, pattern, source.page_count())
        if fitting is None:
            return None  # the buffered reader decides
        leaves, chains, first, others = fitting
        count = len(leaves)
        head = source.usable - pattern.local - 4
        if head < 10 + _varint_length(np.array([pattern.payload]))[0] + 1:
            return None  # no room for a page header and a cell: not a page SQLite writes
        window = cls(
            source,
            pattern,
            layout,
            leaves,
            chains,
            after_id + 1 + np.arange(count, dtype=np.int64),
            position,
            np.empty((count, head), dtype=np.uint8),
            np.empty((count, pattern.chain_pages + 1, 4), dtype=np.uint8),
            np.empty((count, max(layout.kept, 1)), dtype=np.uint8),
            np.empty(size, dtype=np.uint8),
        )
        window.offset = (first - 1) * size
        window.vectors = window.plan_vectors(others)
        pages_spanned = count * (pattern.chain_pages + 1) + len(others)
        lengths = window.vectors[:, 1]
        if not lengths.all() or int(lengths.sum()) != pages_spanned * size:
            raise Unsupported  # pragma: no cover - every page is read exactly once
        return window

    @property
    def count(self) -> int:
        """Rows predicted."""
        return len(self.leaves)

    def read(self) -> None:
        self.source.read_scattered(self.vectors, self.offset)

    def plan_vectors(self, others: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
        """``(address, length)`` of every stretch of every page, in file order; each block of
        addresses is checked to lie inside the array it is meant for."""
        pattern, size, usable = self.pattern, self.source.page_size, self.source.usable
        discard = self.discard
        blocks: list[tuple[npt.NDArray[np.int64], int, npt.NDArray[np.int64], int]] = []

        def add(
            page: npt.NDArray[np.int64],
            order: int,
            inside: npt.NDArray[np.uint8],
            offset: int,
            stride: int,
            length: int,
        ) -> int:
            base = inside.ctypes.data
            lowest = offset + min(0, stride * (len(page) - 1))
            highest = offset + max(0, stride * (len(page) - 1)) + length
            if not (length > 0 and lowest >= 0 and highest <= inside.nbytes):
                raise Unsupported  # a stretch outside its array: never read into it
            blocks.append((page, order, base + offset + stride * np.arange(len(page)), length))
            return order + 1

        def add_payload(page: npt.NDArray[np.int64], order: int, begin: int, end: int) -> int:
            """The record bytes ``begin .. end`` of every row, as they lie on ``page``."""
            for stretch in self.layout.stretches:
                low, high = max(begin, stretch.start), min(end, stretch.end)
                if low >= high:
                    continue
                into = stretch.into + low - stretch.start
                if stretch.column < 0:
                    order = add(page, order, self.kept, into, self.kept.shape[1], high - low)
                    continue
                out = self.layout.rows[stretch.column]
                assert out is not None
                width = out.shape[1]
                order = add(page, order, out, self.position * width + into, width, high - low)
            return order

        links_per_row = 4 * (pattern.chain_pages + 1)
        order = add(self.leaves, 0, self.heads, 0, self.heads.shape[1], self.heads.shape[1])
        order = add_payload(self.leaves, order, 0, pattern.local)
        order = add(self.leaves, order, self.links, 0, links_per_row, 4)
        if size > usable:
            add(self.leaves, order, discard, 0, 0, size - usable)
        add(others, 0, discard, 0, 0, size)
        step = usable - 4
        for page in range(pattern.chain_pages):
            numbers = self.chains[:, page]
            order = add(numbers, 0, self.links, 4 * (page + 1), links_per_row, 4)
            begin = pattern.local + page * step
            end = min(pattern.payload, begin + step)
            order = add_payload(numbers, order, begin, end)
            if size - 4 - (end - begin) > 0:
                add(numbers, order, discard, 0, 0, size - 4 - (end - begin))
        # A page's vectors go in ``order``, after those of the pages before it in the file.
        in_span = np.concatenate([block[0] for block in blocks]) - self.offset // size - 1
        per_page = np.bincount(in_span)
        place = (np.cumsum(per_page) - per_page)[in_span]
        place += np.concatenate([np.full(len(block[0]), block[1]) for block in blocks])
        vectors = np.zeros((len(place), 2), dtype=np.uint64)  # a place left out keeps length 0
        vectors[place, 0] = np.concatenate([block[2] for block in blocks])
        vectors[place, 1] = np.concatenate([np.full(len(block[0]), block[3]) for block in blocks])
        return vectors

    def finish(self, targets: Sequence[ColumnTarget], upto_id: int) -> tuple[int, int] | None:
        """Check the rows read and decode their numbers: ``(rows, last rowid covered)``."""
        pattern, usable, heads = self.pattern, self.source.usable, self.heads
        count, head = heads.shape
        rows = np.arange(count, dtype=np.int64)
        payload_length = int(_varint_length(np.array([pattern.payload]))[0])
        cell = usable - (payload_length + _varint_length(self.rowids) + pattern.local + 4)
        flat = np.concatenate([heads.reshape(-1), np.zeros(16, np.uint8)])
        pointer = (heads[:, 8].astype(np.int64) << 8) | heads[:, 9]
        payload, _ = varints(flat, rows * head + np.minimum(cell, head - 1))
        rowid, _ = varints(flat, rows * head + np.minimum(cell + payload_length, head - 1))
        links = self.links.view(">u4")[..., 0].astype(np.int64)
        following = np.where(
            np.arange(self.chains.shape[1]) < self.chains.shape[1] - 1, self.chains + 1, 0
        )
        header = np.frombuffer(pattern.header, dtype=np.uint8)
        at = self.layout.kept_at(0)
        good = (
            (heads[:, 0] == TABLE_LEAF)
            & (heads[:, 3] == 0)
            & (heads[:, 4] == 1)
            & (pointer == cell)
            & (payload == pattern.payload)
            & (rowid == self.rowids)
            & np.all(links == np.concatenate([self.chains[:, :1], following], axis=1), axis=1)
            & np.all(self.kept[:, at : at + len(header)] == header, axis=1)
        )
        in_range = self.rowids <= upto_id
        taken = _leading_true(good & in_range)
        # The row after the last one taken follows the pattern but lies past upto_id.
        ended = taken < count and bool(good[taken]) and not bool(in_range[taken])
        checked = self._check_prefixes(targets, taken)
        if checked < taken:
            taken, ended = checked, False
        if taken:
            self._write_numbers(targets, taken)
        if ended:
            return taken, upto_id
        return (taken, int(self.rowids[taken - 1])) if taken else None

    def _check_prefixes(self, targets: Sequence[ColumnTarget], rows: int) -> int:
        """Rows before the first whose ``.npy`` headers differ from the run's."""
        good = np.ones(rows, dtype=bool)
        for target in targets:
            if target.prefix is None:
                continue
            at = self.layout.kept_at(self.pattern.value_at[target.record_index])
            prefix = np.frombuffer(target.prefix, dtype=np.uint8)
            good &= np.all(self.kept[:rows, at : at + len(prefix)] == prefix, axis=1)
        return _leading_true(good)

    def _write_numbers(self, targets: Sequence[ColumnTarget], rows: int) -> None:
        for target in targets:
            if target.prefix is not None:
                continue
            index = target.record_index
            serial = self.pattern.serials[index] if index < len(self.pattern.serials) else 0
            at = self.layout.kept_at(self.pattern.value_at[index]) if serial_size(serial) else 0
            values = numbers_in(self.kept[:rows], serial, at)
            spread = (rows, *(1,) * (target.out.ndim - 1))
            target.out[self.position : self.position + rows] = values.reshape(spread)


def _fitting(
    leaves: npt.NDArray[np.int64], pattern: ChainPattern, page_count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int, npt.NDArray[np.int64]] | None:
    """The leading leaves whose predicted chains fit the file (inside it, on no page
    predicted twice, within a bounded span), their chains ``(leaves, chain pages)``, the
    first page of the span and the span's pages predicted for no row (read to nowhere);
    halving finds them in a few steps."""
    while len(leaves):
        chains = leaves[:, None] + pattern.chain_offset + np.arange(pattern.chain_pages)
        predicted = np.concatenate([leaves, chains.ravel()])
        first, last = int(predicted.min()), int(predicted.max())
        widest = 2 * max(SCATTER_PAGES, len(leaves) * (pattern.chain_pages + 1))
        if first >= 2 and last <= page_count and last - first < widest:
            times = np.bincount(predicted - first, minlength=last - first + 1)
            if int(times.max()) == 1:
                return leaves, chains, first, np.flatnonzero(times == 0) + first
        leaves = leaves[: len(leaves) // 2]
    return None


def _varint_length(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Bytes of SQLite's varint of each (non-negative) value: 7 bits a byte, 9 at most."""
    length = np.ones(len(values), dtype=np.int64)
    for bits in range(7, 57, 7):
        length += values >= (1 << bits)
    return np.minimum(length, 9)


def _leading_true(flags: npt.NDArray[np.bool_]) -> int:
    return len(flags) if flags.all() else int(np.argmin(flags))
