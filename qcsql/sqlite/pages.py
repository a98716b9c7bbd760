"""Read numeric columns of a results table straight from its b-tree pages, with numpy.

Python's sqlite3 module turns every value into a Python object, about 0.3 us a
row, which is most of the time a large numeric run takes to read. The pages of a
table hold the same values as big-endian doubles and small integers in a simple
record format, so whole windows of leaf pages can be decoded with a handful of
vectorised numpy operations instead.

This reader is only ever an accelerator: it reads pages only while SQLite
itself guarantees they cannot change (see :meth:`PageSource.window`), it
handles only what it understands (table leaf pages without overflow, one-byte
serial types, numeric values and the text 'nan'), and it answers None for
anything else, after which the caller reads the same rows through SQLite.
The tests compare it with the SQLite path on every database they know.

File format: https://www.sqlite.org/fileformat2.html (b-tree pages, varints,
record format, serial types).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qcsql.sqlite import scatter_read
from qcsql.sqlite.connection import Access, ReadOnlyConnection
from qcsql.sqlite.descriptors import KeptFile
from qcsql.sqlite.files import side_file

__all__ = ["NumericColumns", "decode_leaves", "read_numeric_window", "table_leaves_digests"]

TABLE_LEAF, TABLE_INTERIOR = 13, 5
LEAVES_PER_WINDOW = 256  # ~1 MB of pages, ~40,000 rows: a few milliseconds per window
_MAX_VARINT = 9

# Content size in bytes of each one-byte serial type (0..127): NULL, ints, float, 0, 1,
# reserved, then blobs (even) and text (odd) of (type - 12) // 2 bytes.
_SERIAL_SIZE = np.array(
    [0, 1, 2, 3, 4, 6, 8, 8, 0, 0, 0, 0] + [(t - 12) // 2 for t in range(12, 128)], dtype=np.int64
)


class Unsupported(Exception):
    """Something this reader does not decode; the caller falls back to SQLite."""


# What makes a page reader give up on a window and hand it to SQLite: pages it does not
# decode, a file that changed or shrank, or numbers that do not fit where they should.
GIVE_UP = (Unsupported, OSError, IndexError, ValueError, OverflowError, MemoryError)


def serial_size(serial: int) -> int:
    """Content size in bytes of any serial type (blobs and text may have long ones)."""
    if serial >= 12:
        return (serial - 12) // 2
    if serial in (10, 11):
        raise Unsupported  # reserved
    return int(_SERIAL_SIZE[serial])


@dataclass(frozen=True)
class NumericColumns:
    """Decoded values of one window: one float64 array per requested column, for the rows
    where any of the leading ``tops`` columns is not NULL, and the last rowid the window
    covered. ``has[:, t]`` says which of those rows hold top column ``t`` (QCoDeS writes
    each parameter's tree in rows of its own, so a row usually holds just one)."""

    values: list[npt.NDArray[np.float64]]
    last_rowid: int
    has: npt.NDArray[np.bool_] | None = None

    @property
    def rows(self) -> int:
        return len(self.values[0]) if self.values else 0


@dataclass(frozen=True)
class _Decoding:
    """One window's bytes (``flat``, with each cell's ``record`` offset), the columns to
    decode, and the buffers their values go to: one row per cell of the window, filled
    by the same-header and the any-header decoder alike."""

    flat: npt.NDArray[np.uint8]
    record: npt.NDArray[np.int64]
    column_indices: Sequence[int]
    tops: int
    values: list[npt.NDArray[np.float64]]
    found: npt.NDArray[np.bool_]  # which top columns are not NULL
    numeric_text: bool = True  # text that reads as a number is that number (else Unsupported)

    @classmethod
    def of(
        cls,
        flat: npt.NDArray[np.uint8],
        record: npt.NDArray[np.int64],
        column_indices: Sequence[int],
        tops: int,
        numeric_text: bool = True,
    ) -> _Decoding:
        cells = len(record)
        values = [np.empty(cells, dtype=np.float64) for _ in column_indices]
        found = np.zeros((cells, tops), dtype=bool)
        return cls(flat, record, column_indices, tops, values, found, numeric_text)


class PageSource:
    """The pages of one database file, readable only inside :meth:`window`."""

    def __init__(self, connection: ReadOnlyConnection) -> None:
        self._conn = connection
        self.page_size = connection.header.page_size
        self.usable = self.page_size - connection.header.reserved_bytes
        # The connection's kept descriptor, never one of our own: closing a descriptor of
        # the file would drop every lock the process holds on it (see qcsql.sqlite.descriptors).
        # A private snapshot copy is read through the connection's descriptor of the copy
        # where the copy holds the whole database, else through SQLite alone.
        self._kept: KeptFile | None = (
            connection.snapshot_file
            if connection.access is Access.SNAPSHOT_COPY
            else connection.header.file
        )

    @property
    def _file(self) -> KeptFile:
        if self._kept is None:
            raise Unsupported
        return self._kept

    def close(self) -> None:
        """Done reading (the descriptor belongs to the connection)."""

    def read_into(self, buffer: memoryview, offset: int) -> None:
        """Fill ``buffer`` from ``offset`` with one positional read."""
        if self._file.read_into(buffer, offset) != len(buffer):
            raise Unsupported  # the file ends early: not a page this reader can trust

    def read_scattered(self, vectors: npt.NDArray[np.uint64], offset: int) -> None:
        """Fill the ``(address, length)`` rows of ``vectors`` with consecutive bytes from
        ``offset`` (see :mod:`qcsql.sqlite.scatter_read`; the caller vouches for the addresses)."""
        if not scatter_read.read_scattered(self._file.fd, vectors, offset):
            raise Unsupported  # the file ends early: not a page this reader can trust

    @property
    def lock_free(self) -> bool:
        """Whether :meth:`window` takes no lock, so that several threads may read at once."""
        return self._conn.access is Access.IMMUTABLE

    def page_count(self) -> int:
        """Whole pages in the file now (only meaningful inside :meth:`window`)."""
        return self._file.size() // self.page_size

    def page(self, number: int) -> bytes:
        data = bytearray(self.page_size)
        self.read_into(memoryview(data), (number - 1) * self.page_size)
        return bytes(data)

    def pages(self, numbers: Sequence[int]) -> npt.NDArray[np.uint8]:
        """The pages ``numbers`` as rows; runs of consecutive pages are read with one call."""
        out = np.empty((len(numbers), self.page_size), dtype=np.uint8)
        start = 0
        while start < len(numbers):
            end = start + 1
            while end < len(numbers) and numbers[end] == numbers[end - 1] + 1:
                end += 1
            self.read_into(
                memoryview(out[start:end].data).cast("B"), (numbers[start] - 1) * self.page_size
            )
            start = end
        return out

    @contextlib.contextmanager
    def window(self) -> Iterator[bool]:
        """While inside, the file's pages cannot change; yields False where that cannot be
        promised (a WAL file whose -wal holds frames, a private snapshot copy that could
        not be checkpointed)."""
        conn = self._conn
        if self._kept is None:
            yield False
            return
        if conn.access is Access.SNAPSHOT_COPY:
            # A private copy that holds the whole database: nobody writes it. Read under
            # the connection's lock all the same, since closing the connection closes
            # the copy's own descriptor (a closed database raises here, as in SQLite's).
            with conn.reading_raw():
                yield True
            return
        if conn.access is Access.IMMUTABLE:
            before = _stat(conn.path)
            yield before is not None
            if _stat(conn.path) != before:
                raise Unsupported  # a writer connected meanwhile: what was read may be stale
            return
        if conn.access is not Access.READ_ONLY:
            yield False
            return
        if conn.header.wal_mode and not _wal_is_empty(conn.path):
            yield False  # committed pages may be in the -wal: SQLite reads them
            return
        # Rollback journal: a read transaction holds SHARED, so no writer can change the file.
        # WAL: a snapshot taken while the -wal is empty reads the file alone and holds
        # SQLite's read lock 0, which no checkpoint may write the file under; the -wal is
        # looked at again once the snapshot is held, since a writer may have committed
        # between the first look and the BEGIN. Frames committed later stay in the -wal.
        with conn.reading_raw() as raw:
            raw.execute("BEGIN")
            try:
                raw.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                if conn.header.wal_mode and not _wal_is_empty(conn.path):
                    yield False
                    return
                size_before = self._file.size()
                yield True
                if self._file.size() != size_before:
                    raise Unsupported  # cannot happen under the snapshot; never trust it if it did
            finally:
                raw.execute("COMMIT")


def _wal_is_empty(path: Path) -> bool:
    """Whether the database's ``-wal`` holds no frame. An empty one is what a read-only
    connection (a viewer's ``mode=ro`` open) leaves behind after every writer has gone:
    SQLite itself then reads the database file alone. Looked at by ``stat``, never through
    a descriptor of our own (closing one would drop the process's locks on the file)."""
    try:
        return side_file(path, "-wal").stat().st_size == 0
    except FileNotFoundError:
        return False  # not while we are connected; whatever happened, let SQLite read


def _stat(path: Path) -> tuple[int, int] | None:
    if side_file(path, "-wal").exists():
        return None
    info = path.stat()
    return info.st_mtime_ns, info.st_size


def varints(
    buffer: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """SQLite varints starting at ``offsets``: (values, lengths). The first byte is decoded
    for all at once; later bytes only for the varints still going (most end early)."""
    first = buffer[offsets].astype(np.int64)
    values = first & 0x7F
    lengths = np.ones(len(offsets), dtype=np.int64)
    going = np.flatnonzero(first >= 0x80)
    for position in range(1, _MAX_VARINT):
        if not len(going):
            break
        byte = buffer[offsets[going] + position].astype(np.int64)
        if position == 8:
            values[going] = (values[going] << 8) | byte
            lengths[going] = 9
            break
        values[going] = (values[going] << 7) | (byte & 0x7F)
        lengths[going] += 1
        going = going[byte >= 0x80]
    return values, lengths


def leaf_cells(
    buffer: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], header_at: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The cells of the table leaf pages at buffer offsets ``starts`` (their b-tree page
    header ``header_at`` bytes in: 100 on page 1), in key order: each page's cell count,
    each cell's page (an index into ``starts``) and the buffer offset where it begins."""
    at = starts + header_at
    if np.any(buffer[at] != TABLE_LEAF):
        raise Unsupported
    counts = (buffer[at + 3].astype(np.int64) << 8) | buffer[at + 4]
    page_of_cell = np.repeat(np.arange(len(starts), dtype=np.int64), counts)
    first_cell = np.cumsum(counts) - counts
    slot = np.arange(len(page_of_cell), dtype=np.int64) - np.repeat(first_cell, counts)
    pointers: npt.NDArray[Any] = np.ndarray((len(buffer) - 1,), ">u2", buffer, strides=(1,))
    cell = starts[page_of_cell] + pointers[at[page_of_cell] + 8 + 2 * slot].astype(np.int64)
    return counts, page_of_cell, cell


def leaf_pages(source: PageSource, root: int, after_id: int, limit: int) -> list[int]:
    """Up to ``limit`` table leaf pages, in key order, from the one that holds ``after_id + 1``.

    All children of an interior page sit at the same depth, so once one child is a leaf
    the wanted children are taken from the parent's cells without reading them one by one.
    """
    found: list[int] = []

    def descend(number: int) -> None:
        data = source.page(number)
        start = 100 if number == 1 else 0
        kind = data[start]
        if kind == TABLE_LEAF:
            found.append(number)
            return
        if kind != TABLE_INTERIOR:
            raise Unsupported
        children = _wanted_children(data, start, after_id)
        if not children:
            return
        first = source.page(children[0])
        if first[100 if children[0] == 1 else 0] == TABLE_LEAF:
            found.extend(children[: limit - len(found)])
            return
        for child in children:
            if len(found) >= limit:
                return
            descend(child)

    descend(root)
    return found[:limit]


def table_leaves_digests(
    source: PageSource, roots: Sequence[int], digests: Sequence[Any]
) -> list[bool]:
    """Each of ``digests`` updated with the table b-tree under the matching ``roots`` as
    its leaf pages hold it: each leaf's header and cell pointers, then its cells, leaf by
    leaf in key order. Two tables of equal digests hold the same rows in the same records,
    whatever pages and files they are in (their interior pages, which name page numbers,
    are left out). False (that digest is then of no use) where this cannot be told from
    the leaves: a cell spills into overflow pages (the leaf names them, their bytes are
    elsewhere), a page is not a table b-tree page. All the tables' leaves are read and
    looked at together: a file's results tables are mostly a page each. Read inside
    :meth:`PageSource.window`."""
    size, usable = source.page_size, source.usable
    tops = source.pages(roots) if len(roots) else np.empty((0, size), np.uint8)
    kinds = tops[:, 0].tolist()
    alone = [kind == TABLE_LEAF and root != 1 for root, kind in zip(roots, kinds, strict=True)]
    below: list[list[int]] = []  # the leaves of each table whose root is an interior page
    for root, kind in zip(roots, kinds, strict=True):
        numbers: list[int] = []
        if kind == TABLE_INTERIOR and root != 1:
            with contextlib.suppress(Unsupported):
                numbers = leaf_pages(source, root, -(2**63), 1 << 62)
        below.append(numbers)
    more = [number for numbers in below for number in numbers]
    # The leaves, in the order of ``spans``: the roots that are leaves, then the others'.
    chosen = tops[np.asarray(alone, dtype=bool)]
    leaves = np.concatenate([chosen, source.pages(more)]) if more else chosen
    spans: list[range] = []
    first_alone, first_below = 0, sum(alone)
    for is_alone, numbers in zip(alone, below, strict=True):
        if is_alone:
            spans.append(range(first_alone, first_alone + 1))
            first_alone += 1
        else:
            spans.append(range(first_below, first_below + len(numbers)))
            first_below += len(numbers)
    if not len(leaves):
        return [False] * len(roots)
    flat = np.concatenate([leaves.reshape(-1), np.zeros(_MAX_VARINT, dtype=np.uint8)])
    starts = np.arange(len(leaves), dtype=np.int64) * size
    try:  # any page that is not a table leaf (page 1 among them) fails them all here
        counts, page_of_cell, cells = leaf_cells(flat, starts, np.zeros(len(leaves), np.int64))
        payloads, _ = varints(flat, cells)
    except (Unsupported, IndexError):
        return [False] * len(roots)
    # SQLite keeps at most usable - 35 bytes of a payload on a table leaf; more spills.
    spilling = np.zeros(len(leaves), dtype=bool)
    spilling[page_of_cell[payloads > usable - 35]] = True
    content = (leaves[:, 5].astype(np.int64) << 8) | leaves[:, 6]
    content[content == 0] = 65536
    ends = 8 + 2 * counts
    spilling |= (content < ends) | (content > usable)
    spills, heads, bodies = spilling.tolist(), ends.tolist(), content.tolist()
    memory = leaves.reshape(-1).data  # format B: slices are bytes of the pages, not copies
    done: list[bool] = []
    for span, digest in zip(spans, digests, strict=True):
        if not span or any(spills[row] for row in span):
            done.append(False)
            continue
        for row in span:
            base = row * size
            head = memory[base : base + heads[row]]
            body = memory[base + bodies[row] : base + usable]
            digest.update(len(head).to_bytes(4, "big"))
            digest.update(head)
            digest.update(len(body).to_bytes(4, "big"))
            digest.update(body)
        done.append(True)
    return done


def _wanted_children(data: bytes, start: int, after_id: int) -> list[int]:
    """Children of an interior table page that may hold keys above ``after_id``, in order."""
    cells = int.from_bytes(data[start + 3 : start + 5], "big")
    page = np.frombuffer(data + bytes(_MAX_VARINT), dtype=np.uint8)
    slots = start + 12 + 2 * np.arange(cells, dtype=np.int64)
    pointers = (page[slots].astype(np.int64) << 8) | page[slots + 1]
    children = (
        (page[pointers].astype(np.int64) << 24)
        | (page[pointers + 1].astype(np.int64) << 16)
        | (page[pointers + 2].astype(np.int64) << 8)
        | page[pointers + 3]
    )
    keys, _ = varints(page, pointers + 4)
    wanted: list[int] = children[keys > after_id].tolist()  # a child holds the keys <= its key
    wanted.append(int.from_bytes(data[start + 8 : start + 12], "big"))  # right-most: the rest
    return wanted


def decode_leaves(
    source: PageSource,
    page_bytes: npt.NDArray[np.uint8],
    column_indices: Sequence[int],
    tops: int,
    after_id: int,
    upto_id: int,
    numeric_text: bool = True,
) -> NumericColumns:
    """The rows of the table leaf pages ``page_bytes`` (one page a row, read inside
    :meth:`PageSource.window`) with ``after_id < rowid <= upto_id``; raises one of
    :data:`GIVE_UP` for pages it does not decode. Public for readers that decode most
    pages of a window another way (:mod:`qcsql.sqlite.column_pages`)."""
    npages, size = page_bytes.shape
    flat = np.concatenate([page_bytes.reshape(-1), np.zeros(_MAX_VARINT + 16, dtype=np.uint8)])
    starts = np.arange(npages, dtype=np.int64) * size
    counts, page_of_cell, cell = leaf_cells(flat, starts, np.zeros(npages, dtype=np.int64))
    total = len(cell)
    payload, payload_len = varints(flat, cell)
    if np.any(payload > source.usable - 35):
        raise Unsupported  # overflowing records: not numeric rows
    rowid_at = cell + payload_len
    record = rowid_at + _varint_lengths(flat, rowid_at)
    wanted, last = _in_id_range(flat, rowid_at, counts, page_of_cell, after_id, upto_id)
    header_size = flat[record].astype(np.int64)
    if np.any(header_size >= 0x80):
        raise Unsupported
    into = _Decoding.of(flat, record, column_indices, tops, numeric_text)
    done = np.zeros(total, dtype=bool)
    for rows, header in _shared_headers(flat, record, header_size):
        _decode_same_header(into, rows, header)
        done[rows] = True
    rest = np.flatnonzero(~done)
    if len(rest):
        _decode_any_header(into, rest, header_size[rest])
    keep = into.found.any(axis=1) & wanted
    found = into.found[keep] if tops > 1 else None
    return NumericColumns([v[keep] for v in into.values], last, found)


_SHARED_HEADERS = 8  # a header shared by at least 1/8 of a window's records is decoded alone


def _shared_headers(
    flat: npt.NDArray[np.uint8], record: npt.NDArray[np.int64], header_size: npt.NDArray[np.int64]
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]]:
    """The record headers a good share of the records have, each with its records.

    Usually every record of a window has one header. Parameters measured on the same
    setpoints alternate a few: QCoDeS writes each parameter's tree in rows of its own,
    the other parameters' columns NULL, and a numeric column stores a whole number as an
    integer (a sweep's first and last values): each header decoded at fixed offsets
    beats decoding them record by record (the few left over are)."""
    if not len(record):
        return []
    if int(header_size.max()) > 8:
        common = _common_header(flat, record, header_size)
        return [] if common is None else [common]
    # Each header in one 8-byte gather, shifted right past the bytes that follow it (its
    # first byte is its size, so headers of different sizes differ).
    words = _eight_bytes(flat, record, ">u8")
    keys = words >> (8 * (8 - header_size)).astype(np.uint64)
    # The candidates: the headers of records spread over the window (a header of 1/8 of
    # the records escapes 33 samples once in a hundred windows, which then only decode
    # slower), each compared with every record in one pass.
    samples = np.linspace(0, len(record) - 1, 33).astype(np.int64)
    shared = []
    for candidate in np.unique(keys[samples]):
        rows = np.flatnonzero(keys == candidate)
        if len(rows) * _SHARED_HEADERS >= len(record):
            shared.append((rows, int(rows[0])))
    groups = []
    for rows, example in shared:
        at = int(record[example])
        header = flat[at : at + int(header_size[example])]
        if not np.any(header[1:] >= 0x80):  # multi-byte serial types: record by record
            groups.append((rows, header))
    return groups


def _varint_lengths(
    buffer: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Just the lengths of the varints at ``offsets`` (the values are not needed)."""
    lengths = np.ones(len(offsets), dtype=np.int64)
    going = buffer[offsets] >= 0x80
    for position in range(1, _MAX_VARINT):
        if not going.any():
            break
        lengths += going
        if position < 8:
            going &= buffer[offsets + position] >= 0x80
    return lengths


def _in_id_range(
    flat: npt.NDArray[np.uint8],
    rowid_at: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    page_of_cell: npt.NDArray[np.int64],
    after_id: int,
    upto_id: int,
) -> tuple[npt.NDArray[np.bool_], int]:
    """Which cells have ``after_id < rowid <= upto_id``, and the window's last rowid.

    Keys rise through the leaves, so only the first page (which holds ``after_id + 1``)
    and pages whose last key passes ``upto_id`` need their rowids decoded."""
    wanted = np.ones(len(rowid_at), dtype=bool)
    if not len(rowid_at):
        return wanted, -1
    ends = np.cumsum(counts) - 1
    filled = counts > 0
    last_ids, _ = varints(flat, rowid_at[ends[filled]])
    pages = np.flatnonzero(filled)
    check = set(pages[last_ids > upto_id].tolist())
    check.add(int(pages[0]))
    cells = np.flatnonzero(np.isin(page_of_cell, list(check)))
    ids, _ = varints(flat, rowid_at[cells])
    wanted[cells] = (ids > after_id) & (ids <= upto_id)
    return wanted, int(last_ids.max())


def _mask(total: int, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(total, dtype=bool)
    mask[rows] = True
    return mask


def _common_header(
    flat: npt.NDArray[np.uint8], record: npt.NDArray[np.int64], header_size: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]] | None:
    """The rows whose record header is byte for byte the first row's, and that header."""
    if not len(record):
        return None
    size = int(header_size[0])
    first = flat[record[0] : record[0] + size]
    if np.any(first[1:] >= 0x80):
        return None
    if size <= 8:  # one 8-byte gather per record, compared under a mask of the header bytes
        words = _eight_bytes(flat, record, ">u8")
        mask = np.uint64((1 << 64) - (1 << (8 * (8 - size))))
        same = (words & mask) == (words[0] & mask)
    else:
        same = (flat[record[:, None] + np.arange(size)] == first).all(axis=1)
    return np.flatnonzero(same & (header_size == size)), first


def _decode_same_header(
    into: _Decoding, rows: npt.NDArray[np.int64], header: npt.NDArray[np.uint8]
) -> None:
    """Records with one header: every value sits at the same offset from its record."""
    flat, record = into.flat, into.record[rows]
    serials = header[1:].astype(np.int64)
    offsets = len(header) + np.concatenate([[0], np.cumsum(_SERIAL_SIZE[serials])])
    for out, column in zip(into.values, into.column_indices, strict=True):
        serial = int(serials[column]) if column < len(serials) else 0
        at = record + int(offsets[min(column, len(serials))])
        if serial == 7:
            out[rows] = _big_endian_doubles(flat, at)
        else:
            serials_of_rows = np.full(len(rows), serial, dtype=np.int64)
            out[rows] = decode_numbers(flat, serials_of_rows, at, numeric_text=into.numeric_text)
    for position, column in enumerate(into.column_indices[: into.tops]):
        into.found[rows, position] = column < len(serials) and int(serials[column]) != 0


def _decode_any_header(
    into: _Decoding, rows: npt.NDArray[np.int64], header_size: npt.NDArray[np.int64]
) -> None:
    """Records with different headers (``header_size`` of each of ``rows``): serial types
    and offsets row by row, vectorised."""
    flat, record = into.flat, into.record[rows]
    count = len(record)
    widest = int(max(into.column_indices)) + 1
    types = np.zeros((count, widest), dtype=np.int64)  # NULL where a short record lacks the column
    sizes = np.zeros((count, widest), dtype=np.int64)
    for column in range(widest):
        has = header_size > column + 1
        serial = flat[record + 1 + column].astype(np.int64)
        if np.any(serial[has] >= 0x80):
            raise Unsupported
        types[has, column] = serial[has]
        sizes[has, column] = _SERIAL_SIZE[serial[has]]
    value_at = (record + header_size)[:, None] + np.cumsum(sizes, axis=1) - sizes
    for out, column in zip(into.values, into.column_indices, strict=True):
        out[rows] = decode_numbers(
            flat, types[:, column], value_at[:, column], numeric_text=into.numeric_text
        )
    into.found[rows] = types[:, list(into.column_indices[: into.tops])] != 0


def _big_endian_doubles(
    flat: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """The 8-byte big-endian doubles at byte offsets ``at``, in one gather."""
    return _eight_bytes(flat, at, ">f8").astype(np.float64)


def _eight_bytes(
    flat: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], dtype: str
) -> npt.NDArray[Any]:
    """The 8-byte values of ``dtype`` at each offset ``at``, in one gather: element i of a
    view of the buffer with a stride of one byte is the value in its bytes i..i+7."""
    sliding: npt.NDArray[Any] = np.ndarray(
        shape=(len(flat) - 7,), dtype=dtype, buffer=flat, strides=(1,)
    )
    return sliding[at]


def decode_numbers(
    flat: npt.NDArray[np.uint8],
    types: npt.NDArray[np.int64],
    at: npt.NDArray[np.int64],
    *,
    numeric_text: bool = True,
) -> npt.NDArray[np.float64]:
    """Values of one column as QCoDeS returns them: float64, NULL and 'nan' as NaN.
    With ``numeric_text`` False any text is :class:`Unsupported`, for a reader that must
    tell text from the number it spells (a checksum)."""
    out = np.full(len(types), np.nan, dtype=np.float64)
    floats = np.flatnonzero(types == 7)
    if len(floats):
        out[floats] = _big_endian_doubles(flat, at[floats])
    out[types == 8] = 0.0
    out[types == 9] = 1.0
    for serial, width in ((1, 1), (2, 2), (3, 3), (4, 4), (5, 6), (6, 8)):
        chosen = types == serial
        if chosen.any():
            raw = flat[at[chosen, None] + np.arange(width)].astype(np.int64)
            number = np.zeros(int(chosen.sum()), dtype=np.int64)
            for byte in range(width):
                number = (number << 8) | raw[:, byte]
            if width < 8:
                sign = np.int64(1) << (8 * width - 1)
                number = (number ^ sign) - sign
            out[chosen] = number.astype(np.float64)
    text = (types >= 13) & (types % 2 == 1)
    if not numeric_text and text.any():
        raise Unsupported
    for index in np.flatnonzero(text):
        length = int((types[index] - 13) // 2)
        content = flat[at[index] : at[index] + length].tobytes()
        try:
            out[index] = float(content)
        except ValueError:
            raise Unsupported from None  # not a number: let the SQLite path name it
    if np.any((types >= 12) & (types % 2 == 0)) or np.any((types == 10) | (types == 11)):
        raise Unsupported  # blobs in a numeric column: the SQLite path reports them
    return out


def read_numeric_window(
    source: PageSource,
    root: int,
    column_indices: Sequence[int],
    tops: int,
    after_id: int,
    upto_id: int,
    leaves: int = LEAVES_PER_WINDOW,
    *,
    numeric_text: bool = True,
) -> NumericColumns | None:
    """The rows with ``after_id < rowid <= upto_id`` (from up to ``leaves`` leaf pages: a
    read of a few rows need not decode a whole window), or None when the pages cannot be
    read safely or hold something unusual (text, with ``numeric_text`` False)."""
    try:
        with source.window() as safe:
            if not safe:
                return None
            found = leaf_pages(source, root, after_id, max(1, min(leaves, LEAVES_PER_WINDOW)))
            if not found:
                return NumericColumns([np.empty(0) for _ in column_indices], upto_id)
            pages = source.pages(found)
            decoded = decode_leaves(
                source, pages, column_indices, tops, after_id, upto_id, numeric_text
            )
    except GIVE_UP:
        return None  # whatever these pages are, SQLite reads them (and reports damage) instead
    if decoded.last_rowid <= after_id:
        return None  # no progress: something about this tree is not what we expect
    return NumericColumns(decoded.values, min(decoded.last_rowid, upto_id), decoded.has)
