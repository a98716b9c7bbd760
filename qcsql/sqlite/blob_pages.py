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
when QCoDeS appends them). Once a window shows that its rows follow a pattern
(one cell per leaf, chains at a fixed distance from their leaves), the next
windows skip the buffer: :mod:`qcsql.sqlite.blob_scatter` reads their overflow pages
straight into the output, checks what it predicted, and hands back to the
buffered windows where the pattern breaks. Small windows learn the pattern
first, growing while the rows follow none. Where windows need no lock (a WAL
file without a writer), the two halves of a run are read on two threads, one per
core: the positional reads and numpy's copies both release the GIL.

Like :mod:`qcsql.sqlite.pages`, this is only an accelerator: it reads pages only while
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

import dataclasses
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from qcsql.sqlite import pages
from qcsql.sqlite.blob_cells import (
    MAX_HEADER,
    Cells,
    ColumnTarget,
    Piece,
    gather,
    into_rows,
    numbers_in,
    parse_header,
    read_cells,
)
from qcsql.sqlite.blob_scatter import ChainPattern, learn_pattern, scatter_windows
from qcsql.sqlite.pages import GIVE_UP, PageSource, Unsupported, serial_size, varints

__all__ = ["PageMemory", "fill_from_pages"]

WINDOW_PAGES = 4096  # pages between the first and last leaf of a window (16 MB at 4 kB pages)
BUFFER_PAGES = 2 * WINDOW_PAGES  # the last rows' overflow pages follow the last leaf
SPLIT_ROWS = 512  # from this many ids on, lock-free reads share the work between two threads
LEARNING_LEAVES = 32  # leaves of the first window, when no pattern is known yet
MAX_GROUPS = 16  # distinct record headers in a window; more are read through SQLite


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
    pattern: ChainPattern | None = None  # how its rows lie, if regularly enough to scatter


@dataclass
class PageMemory:
    """What one table's page reads keep between calls: page buffers, so that a run read
    window by window does not fault fresh memory for each, and the pattern its rows were
    last seen to follow, so that windows scatter from the first (:mod:`qcsql.sqlite.blob_scatter`)."""

    buffers: list[npt.NDArray[np.uint8]] = field(default_factory=list)
    pattern: ChainPattern | None = None


def fill_from_pages(
    source: PageSource,
    root: int,
    targets: Sequence[ColumnTarget],
    after_id: int,
    upto_id: int,
    capacity: int,
    memory: PageMemory,
) -> tuple[int, int]:
    """Fill ``targets`` (``capacity`` rows long; the first is the tree's top column) from
    row 0 with the tree's rows in ``after_id < rowid <= upto_id``.

    Returns ``(rows filled, last rowid covered)``; the caller reads the rows after that
    rowid through SQLite (all of them when this returns ``(0, after_id)``).

    Where windows need no lock (:attr:`PageSource.lock_free`) and the output has room for
    one row per id, two threads share the work. Once the first rows show a pattern, one
    thread plans and checks scattered windows while the reads run on others
    (:func:`scatter_windows`). Otherwise the two halves of the id range are read at once:
    the second half is written from the row as far from the first as its first id (no
    more rows than ids precede it) and moved down afterwards if the first half held fewer
    rows than ids.
    """
    reader = _Reader(source, root, targets, memory)
    if not (source.lock_free and capacity >= upto_id - after_id >= SPLIT_ROWS):
        return reader.fill(after_id, upto_id, 0, capacity)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qcsql-pages")
    try:
        reader = dataclasses.replace(reader, pool=pool)
        filled, covered = 0, after_id
        if memory.pattern is None:  # how do the rows lie? Windows that grow until they show
            bound = after_id + SPLIT_ROWS // 2
            filled, covered = reader.fill(after_id, bound, 0, capacity, until_pattern=True)
            if covered < bound and memory.pattern is None:
                return filled, covered
        if memory.pattern is not None:
            more, covered = reader.fill(covered, upto_id, filled, capacity)
            return filled + more, covered
        mid = covered + (upto_id - covered) // 2
        offset = filled + mid - covered
        # The second half takes one of the two workers; should either half learn a pattern
        # later, its scattered reads queue for the other, which nothing else holds.
        later = pool.submit(reader.fill, mid, upto_id, offset, capacity)
        more, reached = reader.fill(covered, mid, filled, offset)
        rest, further = later.result()
    except BaseException:
        pool.shutdown(wait=True)  # no read may go on into the output once this returns
        raise
    finally:
        # Every read submitted has ended (each path above waits for its own): the idle
        # workers exit on their own, and joining them would only wait for the scheduler
        # to wake each (milliseconds per window on a busy machine).
        pool.shutdown(wait=False)
    filled += more
    if reached < mid:
        return filled, reached  # SQLite reads on from here, over whatever the second half wrote
    if rest and filled < offset:
        for target in targets:
            target.out[filled : filled + rest] = target.out[offset : offset + rest]
    return filled + rest, max(further, reached)


@dataclass(frozen=True)
class _Reader:
    """One tree's table, where its columns go, and what earlier reads kept."""

    source: PageSource
    root: int
    targets: Sequence[ColumnTarget]
    memory: PageMemory
    pool: Executor | None = None  # where scattered windows' reads may run while more are planned

    def fill(
        self, after_id: int, upto_id: int, position: int, capacity: int, until_pattern: bool = False
    ) -> tuple[int, int]:
        """Window after window, the rows of ``after_id < rowid <= upto_id`` into output rows
        ``position`` onwards (not past ``capacity``): ``(rows filled, last rowid covered)``.
        ``until_pattern`` stops once a window has shown a pattern, so that the caller can
        read on with a pool."""
        buffers = self.memory.buffers
        span = _Span(self.source, buffers.pop() if buffers else None)
        filled, covered = 0, after_id
        misses = 0  # windows in a row that found no pattern, or one that did not hold
        try:
            while covered < upto_id:
                scattered = self._scatter(covered, upto_id, position + filled, capacity)
                if scattered is not None:
                    filled += scattered[0]
                    covered = min(scattered[1], upto_id)
                    misses = 0
                    continue
                # Small windows first show whether the rows (still) follow a pattern; they
                # grow while the rows do not, so that irregular rows cost little more.
                most = min(WINDOW_PAGES, LEARNING_LEAVES << misses)
                misses += 1
                window = _read_window(self, span, covered, upto_id, most)
                if window is None or window.last_rowid <= covered:
                    break
                if position + filled + window.rows > capacity:
                    break  # more rows than room: the file changed; SQLite reads the rest
                _copy_groups(window, window.groups, self.targets, position + filled)
                filled += window.rows
                covered = min(window.last_rowid, upto_id)
                if window.pattern is not None:
                    self.memory.pattern = window.pattern
                    if until_pattern:
                        break
        finally:
            buffers.append(span.buffer)
        return filled, covered

    def _scatter(
        self, after_id: int, upto_id: int, position: int, capacity: int
    ) -> tuple[int, int] | None:
        """The next windows read straight into the output, if the rows so far followed a
        pattern and the next ones still do; forgets the pattern once they do not."""
        pattern = self.memory.pattern
        if pattern is None or pattern.top != self.targets[0].record_index:
            return None
        found = scatter_windows(
            self.source,
            self.root,
            pattern,
            self.targets,
            after_id,
            upto_id,
            position,
            capacity - position,
            self.pool,
        )
        if found is None or not found.follow:
            self.memory.pattern = None
        return None if found is None else (found.rows, found.covered)


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


def _read_window(
    reader: _Reader, span: _Span, after_id: int, upto_id: int, most_leaves: int = WINDOW_PAGES
) -> _Window | None:
    source = reader.source
    try:
        with source.window() as safe:
            if not safe:
                return None
            leaves = pages.leaf_pages(source, reader.root, after_id, most_leaves)
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
    except GIVE_UP:
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
    starts = (np.asarray(leaves, dtype=np.int64) - span.first) * source.page_size
    header_at = np.where(np.asarray(leaves) == 1, 100, 0)
    cells = read_cells(span.buffer, starts, header_at, source.usable)
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
    if len(groups) == 1 and len(groups[0].positions) == len(chosen):
        leaf_numbers = np.asarray(leaves, dtype=np.int64)
        group = groups[0]
        pattern = learn_pattern(
            span.buffer, cells, leaf_numbers, chosen, targets, group.serials, group.value_at
        )
        window = dataclasses.replace(window, pattern=pattern)
    return window


class _ChainBefore(Exception):
    """The first row's overflow chain starts before the buffer, at ``page``."""

    def __init__(self, page: int) -> None:
        super().__init__(page)
        self.page = page


def _rows_held(span: _Span, cells: Cells, after_id: int) -> int:
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
    cells: Cells,
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
        serials, value_at = parse_header(
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


def _segments(
    buffer: npt.NDArray[np.uint8],
    rows: npt.NDArray[np.int64],
    cells: Cells,
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


def _pieces(group: _Group, start: int, length: int) -> list[Piece]:
    """The stretches of payload bytes ``start .. start + length`` for every row of ``group``."""
    found = []
    for segment in range(group.segment_base.shape[1]):
        low = 0 if segment == 0 else group.local + (segment - 1) * group.overflow_size
        high = group.local + segment * group.overflow_size
        begin, end = max(start, low), min(start + length, high)
        if begin < end:
            found.append(
                Piece(group.segment_base[:, segment] + (begin - low), end - begin, begin - start)
            )
    if sum(piece.length for piece in found) != length:
        raise Unsupported  # the value runs past the payload: not a record we understand
    return found


def _raw_values(
    buffer: npt.NDArray[np.uint8], group: _Group, start: int, length: int, width: int
) -> npt.NDArray[np.uint8]:
    """The ``length`` payload bytes from ``start`` of every row, as ``(rows, width)``."""
    scratch = np.zeros((len(group.positions), width), dtype=np.uint8)
    whole = slice(0, len(group.positions))
    for piece in _pieces(group, start, length):
        gather(buffer, piece, into_rows(scratch, piece, whole))
    return scratch


def _check_group(window: _Window, group: _Group, targets: Sequence[ColumnTarget]) -> None:
    """Every array value is a blob with the run's exact header; numbers are numbers."""
    for target in targets:
        index = target.record_index
        serial = group.serials[index] if index < len(group.serials) else 0
        if not target.holds(serial):
            raise Unsupported  # a blob of another size, NULL arrays, blobs as numbers: SQLite
        if target.prefix is None:
            at = group.value_at[index] if serial else 0  # a short record lacks the column: NULL
            raw = _raw_values(window.span.buffer, group, at, serial_size(serial), 8)
            group.numbers[index] = numbers_in(raw, serial, 0)  # Unsupported for other text
            continue
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
                    gather(window.span.buffer, piece, into_rows(flat, piece, where))
                continue
            raw = _raw_values(
                window.span.buffer, group, start, target.data_nbytes, target.data_nbytes
            )
            values = raw.view(target.dtype)
            if values.shape[1] == 1:
                target.out[rows] = values.reshape(spread)
            else:
                target.out[rows] = values.reshape(len(rows), *target.out.shape[1:])
