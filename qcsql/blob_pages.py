"""Copy the ``.npy`` blobs of array runs straight from the table's pages into the output.

Through sqlite3, every blob is copied twice: into a Python ``bytes`` object, then
into the output array, and each row costs a few microseconds of Python. A row
of an array run is one b-tree cell whose payload starts on a leaf page and
continues through a chain of overflow pages, and within a run nearly every row
has the same record header (same blob sizes, same serial types), so every
value sits at the same offset of every row's payload. This module reads a window
of pages with one positional read, maps payload offsets to buffer offsets once
per header, and moves each piece of each column for all rows of the window with
one numpy copy (a strided copy when the rows lie at a fixed distance, as they do
when QCoDeS appends them). Where windows need no lock (a WAL file without a
writer), the two halves of a run are read on two threads, one per core: the
positional reads and numpy's copies both release the GIL.

Like :mod:`qcsql.pages`, this is only an accelerator: it reads pages only while
SQLite guarantees they cannot change (:meth:`PageSource.window`), checks every
overflow chain it follows and every blob's ``.npy`` header against the run's,
and stops at the first row it does not understand, after which the caller reads
the rest through SQLite (which then decides, as before, whether the run is
irregular). Overflow chains are assumed to run through consecutive pages, as
SQLite allocates them when appending to a file; a chain that does not is read
through SQLite.

File format: https://www.sqlite.org/fileformat2.html (cell payload overflow).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from qcsql import pages
from qcsql.pages import PageSource, Unsupported, decode_numbers, varints

__all__ = ["ColumnTarget", "fill_from_pages"]

WINDOW_PAGES = 4096  # pages between the first and last leaf of a window (16 MB at 4 kB pages)
BUFFER_PAGES = 2 * WINDOW_PAGES  # the last rows' overflow pages follow the last leaf
SPLIT_ROWS = 512  # from this many ids on, lock-free reads split the range over two threads
GATHER_ROWS = 64  # rows per fancy-indexed copy: the temporary stays in the CPU cache
MAX_HEADER = 256  # bytes of record header this reader parses
MAX_GROUPS = 16  # distinct record headers in a window; more are read through SQLite


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


@dataclass(frozen=True)
class _Piece:
    """A stretch of one column that lies on one page for every row of a header group."""

    source: npt.NDArray[np.int64]  # buffer offset of the stretch, per row
    length: int
    into: int  # offset in the column's bytes


@dataclass(frozen=True)
class _Group:
    """Rows of a window sharing one record header, and their places in the output."""

    positions: npt.NDArray[np.int64]  # row numbers within the window's rows
    serials: list[int]
    value_at: list[int]  # payload offset of each record column
    segment_base: npt.NDArray[np.int64]  # (rows, segments): buffer offset of each segment
    local: int  # payload bytes on the leaf page (the first segment)
    overflow_size: int  # payload bytes on each overflow page (the later segments)
    numbers: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)  # by record index


@dataclass(frozen=True)
class _Window:
    span: _Span
    groups: list[_Group]
    rows: int
    last_rowid: int


def fill_from_pages(
    source: PageSource,
    root: int,
    targets: Sequence[ColumnTarget],
    after_id: int,
    upto_id: int,
    capacity: int,
    buffers: list[npt.NDArray[np.uint8]],
) -> tuple[int, int]:
    """Fill ``targets`` (``capacity`` rows long; the first is the tree's top column) from
    row 0 with the tree's rows in ``after_id < rowid <= upto_id``. ``buffers`` keeps page
    buffers between calls, so that a run read window by window does not fault fresh
    memory for each.

    Returns ``(rows filled, last rowid covered)``; the caller reads the rows after that
    rowid through SQLite (all of them when this returns ``(0, after_id)``).

    Where windows need no lock (:attr:`PageSource.lock_free`) and the output has room for
    one row per id, the two halves of the id range are read on two threads: the second
    half is written from row ``mid - after_id`` (no more rows than ids precede it) and
    moved down afterwards if the first half held fewer rows than ids.
    """
    reader = _Reader(source, root, targets, buffers)
    ids = upto_id - after_id
    if not (source.lock_free and capacity >= ids >= SPLIT_ROWS):
        return reader.fill(after_id, upto_id, 0, capacity)
    mid = after_id + ids // 2
    offset = mid - after_id
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qcsql-pages") as pool:
        later = pool.submit(reader.fill, mid, upto_id, offset, capacity)
        filled, covered = reader.fill(after_id, mid, 0, offset)
        more, further = later.result()
    if covered < mid:
        return filled, covered  # SQLite reads on from here, over whatever the second half wrote
    if more and filled < offset:
        for target in targets:
            target.out[filled : filled + more] = target.out[offset : offset + more]
    return filled + more, max(further, covered)


@dataclass(frozen=True)
class _Reader:
    """One tree's table, where its columns go, and the page buffers to reuse."""

    source: PageSource
    root: int
    targets: Sequence[ColumnTarget]
    buffers: list[npt.NDArray[np.uint8]]

    def fill(self, after_id: int, upto_id: int, position: int, capacity: int) -> tuple[int, int]:
        """Window after window, the rows of ``after_id < rowid <= upto_id`` into output rows
        ``position`` onwards (not past ``capacity``): ``(rows filled, last rowid covered)``."""
        span = _Span(self.source, self.buffers.pop() if self.buffers else None)
        filled, covered = 0, after_id
        try:
            while covered < upto_id:
                window = _read_window(self, span, covered, upto_id)
                if window is None or window.last_rowid <= covered:
                    break
                if position + filled + window.rows > capacity:
                    break  # more rows than room: the file changed; SQLite reads the rest
                _copy_groups(window, window.groups, self.targets, position + filled)
                filled += window.rows
                covered = min(window.last_rowid, upto_id)
        finally:
            self.buffers.append(span.buffer)
        return filled, covered


class _Span:
    """Consecutive pages of the file from ``first`` on, read as far as a window needs."""

    def __init__(self, source: PageSource, buffer: npt.NDArray[np.uint8] | None) -> None:
        self._source = source
        self.lead = 0  # SQLite writes a row's overflow pages just before its new leaf
        # Pages are read only as far as needed, so the rest of the buffer costs no memory.
        size = BUFFER_PAGES * source.page_size + 16  # slack for gathers at the very end
        self.buffer = (
            buffer if buffer is not None and len(buffer) == size else np.empty(size, np.uint8)
        )
        self.first = 0
        self.loaded = 0  # pages read

    def start(self, first: int) -> None:
        self.first, self.loaded = first, 0

    def ensure(self, last: int) -> None:
        """Read up to page ``last`` (within the buffer and the file)."""
        size = self._source.page_size
        want = min(last - self.first + 1, BUFFER_PAGES, self._source.page_count() - self.first + 1)
        if want <= self.loaded:
            return
        into = self.buffer[self.loaded * size : want * size]
        self._source.read_into(
            memoryview(into.data).cast("B"), (self.first - 1 + self.loaded) * size
        )
        self.loaded = want

    def holds(self, page: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        return (page >= self.first) & (page < self.first + BUFFER_PAGES)


def _read_window(reader: _Reader, span: _Span, after_id: int, upto_id: int) -> _Window | None:
    source = reader.source
    try:
        with source.window() as safe:
            if not safe:
                return None
            leaves = pages.leaf_pages(source, reader.root, after_id, WINDOW_PAGES)
            if not leaves:
                return None
            start = max(1, leaves[0] - span.lead)
            for _ in range(2):
                held = _leading_leaves(leaves, start)
                if not held:
                    return None
                span.start(start)
                span.ensure(max(held))  # leaves of reused pages need not rise
                window = _parse_window(source, span, held, reader.targets, after_id, upto_id)
                if isinstance(window, _Window):
                    return window
                span.lead = leaves[0] - window  # the first row's chain starts before its leaf
                start = window
    except (Unsupported, OSError, IndexError, ValueError, OverflowError, MemoryError):
        return None
    return None


def _leading_leaves(leaves: list[int], start: int) -> list[int]:
    """The leaves, in key order, up to the first one outside the buffer from ``start``
    (a window must not skip a leaf: its rows would be lost between the rows around it)."""
    held = []
    for page in leaves:
        if not start <= page < start + WINDOW_PAGES:
            break
        held.append(page)
    return held


@dataclass(frozen=True)
class _Cells:
    """The cells of a window's leaves, in key order: where each record starts in the
    buffer, how much of its payload the leaf holds, and its chain of overflow pages."""

    rowids: npt.NDArray[np.int64]
    record: npt.NDArray[np.int64]  # buffer offset of the record (its header size varint)
    local: npt.NDArray[np.int64]  # payload bytes on the leaf
    overflow_pages: npt.NDArray[np.int64]
    first_overflow: npt.NDArray[np.int64]  # 0 where the payload does not spill

    @property
    def last_page(self) -> npt.NDArray[np.int64]:
        chain_end = self.first_overflow + self.overflow_pages - 1
        return np.where(self.overflow_pages > 0, chain_end, 0)


def _parse_window(
    source: PageSource,
    span: _Span,
    leaves: list[int],
    targets: Sequence[ColumnTarget],
    after_id: int,
    upto_id: int,
) -> _Window | int:
    """The window's rows, or the page to start the buffer from when the first row's
    overflow chain lies before it (the first rows of a table, written before its root split)."""
    cells = _read_cells(span, leaves, source.page_size, source.usable)
    try:
        held = _rows_held(span, cells, after_id)
    except _ChainBefore as before:
        return before.page
    last_rowid = int(cells.rowids[held - 1])
    in_range = (cells.rowids > after_id) & (cells.rowids <= upto_id)
    chosen = np.flatnonzero((np.arange(len(cells.rowids)) < held) & in_range)
    groups = _header_groups(span, cells, chosen, targets[0].record_index, source)
    window = _Window(span, groups, sum(len(group.positions) for group in groups), last_rowid)
    for group in groups:
        _check_group(window, group, targets)
    return window


def _read_cells(span: _Span, leaves: list[int], size: int, usable: int) -> _Cells:
    buffer = span.buffer
    starts = (np.asarray(leaves, dtype=np.int64) - span.first) * size
    header_at = np.where(np.asarray(leaves) == 1, 100, 0)
    if np.any(buffer[starts + header_at] != pages.TABLE_LEAF):
        raise Unsupported
    counts = (buffer[starts + header_at + 3].astype(np.int64) << 8) | buffer[starts + header_at + 4]
    page_of_cell = np.repeat(np.arange(len(leaves)), counts)
    slot = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    pointer_at = starts[page_of_cell] + header_at[page_of_cell] + 8 + 2 * slot
    cell = starts[page_of_cell] + (
        (buffer[pointer_at].astype(np.int64) << 8) | buffer[pointer_at + 1]
    )
    payload, payload_len = varints(buffer, cell)
    rowid_at = cell + payload_len
    rowids, rowid_len = varints(buffer, rowid_at)
    if np.any(np.diff(rowids) <= 0):
        raise Unsupported  # keys must rise through the leaves
    local = _local_sizes(payload, usable)
    spills = payload > local
    cell_end = cell - starts[page_of_cell] + payload_len + rowid_len + local + 4 * spills
    if np.any(cell_end > usable):
        raise Unsupported  # a cell running off its page: damage, which SQLite reports
    record = rowid_at + rowid_len
    return _Cells(
        rowids=rowids,
        record=record,
        local=local,
        overflow_pages=np.where(spills, -(-(payload - local) // (usable - 4)), 0),
        first_overflow=_first_overflow(buffer, record + local, spills),
    )


class _ChainBefore(Exception):
    """The first row's overflow chain starts before the buffer, at ``page``."""

    def __init__(self, page: int) -> None:
        super().__init__(page)
        self.page = page


def _rows_held(span: _Span, cells: _Cells, after_id: int) -> int:
    """How many leading cells have all their pages in the buffer (reading them now)."""
    last_page = cells.last_page
    fits = (cells.overflow_pages == 0) | (span.holds(cells.first_overflow) & span.holds(last_page))
    fits |= cells.rowids <= after_id  # rows read by the previous window are not needed
    held = int(np.argmin(fits)) if not fits.all() else len(fits)
    if held == 0:
        if 0 < cells.first_overflow[0] < span.first:
            raise _ChainBefore(int(cells.first_overflow[0]))
        raise Unsupported  # a row larger than the buffer: SQLite reads it
    needed = int(last_page[:held].max())
    span.ensure(needed)
    if needed >= span.first + span.loaded:
        raise Unsupported  # the chains claim pages past the end of the file
    return held


def _header_groups(
    span: _Span,
    cells: _Cells,
    chosen: npt.NDArray[np.int64],
    top: int,
    source: PageSource,
) -> list[_Group]:
    """The chosen rows grouped by record header, without the rows of other trees (whose
    ``top`` column is NULL); each group knows where its rows go among the window's."""
    if not len(chosen):
        return []
    buffer, record = span.buffer, cells.record
    header_size, header_len = varints(buffer, record[chosen])
    if np.any(header_size > np.minimum(cells.local[chosen], MAX_HEADER)):
        raise Unsupported
    widest = int(header_size.max())
    header_bytes = buffer[record[chosen, None] + np.arange(widest)]
    header_bytes[np.arange(widest) >= header_size[:, None]] = 0
    keys = np.ascontiguousarray(header_bytes).view(np.dtype((np.void, widest))).ravel()
    unique, inverse = np.unique(keys, return_inverse=True)
    if len(unique) > MAX_GROUPS:
        raise Unsupported  # rows too varied to group: SQLite reads them
    kept = np.zeros(len(chosen), dtype=bool)
    plans: list[tuple[npt.NDArray[np.int64], list[int], list[int]]] = []
    for group_index in range(len(unique)):
        members = np.flatnonzero(inverse == group_index)
        first = members[0]
        serials, value_at = _parse_header(
            buffer, int(record[chosen[first]]), int(header_size[first]), int(header_len[first])
        )
        if top >= len(serials) or serials[top] == 0:
            continue  # rows of another tree interleaved in this table
        kept[members] = True
        plans.append((members, serials, value_at))
    ordinal = np.zeros(len(chosen), dtype=np.int64)
    ordinal[kept] = np.arange(int(kept.sum()))
    groups = []
    for members, serials, value_at in plans:
        rows = chosen[members]
        bases = _segments(buffer, rows, cells, span.first, source.page_size)
        local = int(cells.local[rows[0]])
        groups.append(_Group(ordinal[members], serials, value_at, bases, local, source.usable - 4))
    return groups


def _local_sizes(payload: npt.NDArray[np.int64], usable: int) -> npt.NDArray[np.int64]:
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


def _parse_header(
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
        offset += _serial_size(serial)
    return serials, value_at


def _serial_size(serial: int) -> int:
    if serial >= 12:
        return (serial - 12) // 2
    if serial in (10, 11):
        raise Unsupported
    return (0, 1, 2, 3, 4, 6, 8, 8, 0, 0)[serial]


def _segments(
    buffer: npt.NDArray[np.uint8],
    rows: npt.NDArray[np.int64],
    cells: _Cells,
    first_page: int,
    size: int,
) -> npt.NDArray[np.int64]:
    """Buffer offset of each segment of each row's payload (the leaf part, then each
    overflow page's content), with every chain checked to run through the pages assumed."""
    count = int(cells.overflow_pages[rows[0]])
    chain = cells.first_overflow[rows, None] + np.arange(count)
    page_start = (chain - first_page) * size
    expected_next = np.where(np.arange(count) < count - 1, chain + 1, 0)
    actual_next = np.zeros_like(chain)
    for byte in range(4):
        actual_next = (actual_next << 8) | buffer[page_start + byte]
    if np.any(actual_next != expected_next):
        raise Unsupported  # a chain through scattered pages: SQLite follows it
    return np.concatenate([cells.record[rows, None], page_start + 4], axis=1)


def _pieces(group: _Group, start: int, length: int) -> list[_Piece]:
    """The stretches of payload bytes ``start .. start + length`` for every row of ``group``."""
    found = []
    for segment in range(group.segment_base.shape[1]):
        low = 0 if segment == 0 else group.local + (segment - 1) * group.overflow_size
        high = group.local + segment * group.overflow_size
        begin, end = max(start, low), min(start + length, high)
        if begin < end:
            found.append(
                _Piece(group.segment_base[:, segment] + (begin - low), end - begin, begin - start)
            )
    if sum(piece.length for piece in found) != length:
        raise Unsupported  # the value runs past the payload: not a record we understand
    return found


Into = Callable[[slice, npt.NDArray[np.uint8]], None]


def _gather(buffer: npt.NDArray[np.uint8], piece: _Piece, into: Into) -> None:
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


def _into(out: npt.NDArray[np.uint8], piece: _Piece, rows: npt.NDArray[np.int64] | slice) -> Into:
    """Write gathered bytes into ``out[rows]`` at the piece's byte offset."""
    columns = slice(piece.into, piece.into + piece.length)
    if isinstance(rows, slice):
        offset = rows.start

        def into_slice(part: slice, data: npt.NDArray[np.uint8]) -> None:
            out[offset + part.start : offset + part.stop, columns] = data

        return into_slice

    def into_rows(part: slice, data: npt.NDArray[np.uint8]) -> None:
        out[rows[part], columns] = data

    return into_rows


def _raw_values(
    buffer: npt.NDArray[np.uint8], group: _Group, start: int, length: int, width: int
) -> npt.NDArray[np.uint8]:
    """The ``length`` payload bytes from ``start`` of every row, as ``(rows, width)``."""
    scratch = np.zeros((len(group.positions), width), dtype=np.uint8)
    whole = slice(0, len(group.positions))
    for piece in _pieces(group, start, length):
        _gather(buffer, piece, _into(scratch, piece, whole))
    return scratch


def _check_group(window: _Window, group: _Group, targets: Sequence[ColumnTarget]) -> None:
    """Every array value is a blob with the run's exact header; numbers are numbers."""
    for target in targets:
        index = target.record_index
        serial = group.serials[index] if index < len(group.serials) else 0
        if target.prefix is None:
            if not (serial <= 9 or (serial >= 13 and serial % 2 == 1 and serial <= 29)):
                raise Unsupported  # blobs or long text in a numeric column: SQLite decides
            at = group.value_at[index] if serial else 0  # a short record lacks the column: NULL
            raw = _raw_values(window.span.buffer, group, at, _serial_size(serial), 8)
            group.numbers[index] = decode_numbers(  # raises Unsupported for text not a number
                np.concatenate([raw.reshape(-1), np.zeros(16, np.uint8)]),
                np.full(len(raw), serial, dtype=np.int64),
                np.arange(len(raw), dtype=np.int64) * 8,
            )
            continue
        if serial != 12 + 2 * (len(target.prefix) + target.data_nbytes):
            raise Unsupported  # NULL, or a blob of another size: SQLite decides
        prefix = np.frombuffer(target.prefix, dtype=np.uint8)
        found = _raw_values(
            window.span.buffer, group, group.value_at[index], len(prefix), len(prefix)
        )
        if np.any(found != prefix):
            raise Unsupported  # another dtype or shape somewhere: SQLite decides


def _copy_groups(
    window: _Window, groups: list[_Group], targets: Sequence[ColumnTarget], position: int
) -> None:
    """Copy every column of the rows of ``groups`` to their places from output row ``position``."""
    for group in groups:
        if not len(group.positions):
            continue
        rows = group.positions + position
        contiguous = bool(rows[-1] - rows[0] == len(rows) - 1)
        spread = (len(rows), *(1,) * (targets[0].out.ndim - 1))
        for target in targets:
            index = target.record_index
            if target.prefix is None:
                target.out[rows] = group.numbers[index].reshape(spread)
                continue
            start = group.value_at[index] + len(target.prefix)
            if target.direct:
                flat = target.out.reshape(len(target.out), -1).view(np.uint8)
                where: npt.NDArray[np.int64] | slice = (
                    slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows
                )
                for piece in _pieces(group, start, target.data_nbytes):
                    _gather(window.span.buffer, piece, _into(flat, piece, where))
                continue
            raw = _raw_values(
                window.span.buffer, group, start, target.data_nbytes, target.data_nbytes
            )
            values = raw.view(target.dtype)
            if values.shape[1] == 1:
                target.out[rows] = values.reshape(spread)
            else:
                target.out[rows] = values.reshape(len(rows), *target.out.shape[1:])
