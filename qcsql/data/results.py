"""Read a results table in short, id-ordered chunks that never stand in a writer's way.

A QCoDeS writer in rollback-journal mode cannot commit while any reader holds
the file, and after its 5 s busy timeout it drops the rows it wanted to write.
So nothing here runs one long statement: rows are counted and fetched in id
ranges (keyset pagination, never ``OFFSET`` over the table), every chunk is one
statement fetched at once, and no transaction stays open between chunks.

Statements are built with SQLAlchemy Core on a model of the table read from
the file, compiled once, and run on the plain sqlite3 connection, because the
rows of a large run are too many for SQLAlchemy's row objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from qcsql.errors import SchemaError, Where
from qcsql.sqlite.blob_cells import ColumnTarget
from qcsql.sqlite.blob_pages import PageMemory, fill_from_pages
from qcsql.sqlite.column_pages import COLUMN_LEAVES, ColumnWindow, read_column_window
from qcsql.sqlite.connection import ReadOnlyConnection
from qcsql.sqlite.files import quote_identifier, side_file
from qcsql.sqlite.pages import NumericColumns, PageSource, read_numeric_window

__all__ = ["ResultsTable", "RowRange", "Span"]

# Rows counted per statement when locating rows: a count of this many ids takes
# a few milliseconds, even on slow disks a small fraction of a second.
COUNT_SPAN = 262_144
_DIALECT = sqlite.dialect()
# Rows of numbers a 4 KiB leaf page holds at least (a cell of a few doubles takes under 40
# bytes): a read of a few rows asks the page reader for a few leaves, not a whole window.
ROWS_PER_LEAF_AT_LEAST = 100


Span = tuple[int, int, int]  # (after id, up to id, rows of a tree among those ids)


@dataclass(frozen=True)
class RowRange:
    """The rows of one parameter tree to read: ids in (after_id, upto_id], ``rows`` of them
    (or, when not ``exact``, at most ``rows``: an upper bound to allocate for)."""

    after_id: int
    upto_id: int
    rows: int
    exact: bool = True


@dataclass(frozen=True)
class _Statement:
    """A statement compiled once: its SQL, and how to order the values of its parameters."""

    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]

    def values(self, given: dict[str, Any]) -> list[Any]:
        merged = {**self.defaults, **given}
        return [merged[name] for name in self.names]


def _compiled(statement: sa.Select[Any]) -> _Statement:
    compiled = statement.compile(dialect=_DIALECT)
    return _Statement(str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))


class ResultsTable:
    """One run's results table, with the columns it really has."""

    def __init__(self, connection: ReadOnlyConnection, run_id: int, name: str) -> None:
        self._conn = connection
        self.run_id = run_id
        self.name = name
        with connection.reading_raw(run_id=run_id, table=name) as raw:
            info = raw.execute(f"PRAGMA table_info({quote_identifier(name)})").fetchall()
        if not info:
            raise SchemaError(
                f"{connection.path}, run {run_id}: the results table {name!r} does not exist",
                path=connection.path,
                run_id=run_id,
                table=name,
            )
        self.declared_types = {row[1]: str(row[2] or "").lower() for row in info}
        if "id" not in self.declared_types:
            raise SchemaError(
                f"{connection.path}, run {run_id}: the results table {name!r} has no 'id' "
                f"column (it has {', '.join(self.declared_types)})",
                path=connection.path,
                run_id=run_id,
                table=name,
                column="id",
            )
        self._by_lower = {column.lower(): column for column in self.declared_types}
        self._page_memory = PageMemory()  # kept by fill_from_pages between calls
        self._statements: dict[tuple[Any, ...], _Statement] = {}
        self.model = sa.Table(
            name,
            sa.MetaData(),
            *(
                sa.Column(column, sa.types.NullType(), primary_key=column == "id")
                for column in self.declared_types
            ),
        )

    def column(self, parameter: str) -> sa.Column[Any]:
        """The column of ``parameter`` (SQLite column names are case-insensitive)."""
        actual = self._by_lower.get(parameter.lower())
        if actual is None:
            raise SchemaError(
                f"{self._conn.path}, run {self.run_id}: the results table {self.name!r} has no "
                f"column {parameter!r} (it has {', '.join(self.declared_types)})",
                path=self._conn.path,
                run_id=self.run_id,
                table=self.name,
                column=parameter,
            )
        column: sa.Column[Any] = self.model.c[actual]
        return column

    def _statement(self, key: tuple[Any, ...], build: Callable[[], sa.Select[Any]]) -> _Statement:
        """The statement ``build`` makes, compiled once per ``key`` for this table: a
        window loop asks for the same few statements again and again, and building and
        compiling one with SQLAlchemy takes longer than SQLite takes to run it (0.6 ms).
        Threads reading the same table may both compile a statement the first time; each
        gets an equal one, and the dict keeps one of them."""
        found = self._statements.get(key)
        if found is None:
            found = self._statements[key] = _compiled(build())
        return found

    def _fetch(self, statement: _Statement, **values: Any) -> list[Any]:
        with self._conn.reading_raw(run_id=self.run_id, table=self.name) as raw:
            return raw.execute(statement.sql, statement.values(values)).fetchall()

    def count_rows(self) -> int:
        statement = self._statement(
            ("count",), lambda: sa.select(sa.func.count()).select_from(self.model)
        )
        return int(self._fetch(statement)[0][0])

    def min_id(self) -> int:
        """The smallest id (0 for an empty table): with ids 1..max_id all held, the table
        has no other row exactly when it is positive, which SQLite tells from one b-tree
        descent where counting visits every leaf page."""
        statement = self._statement(("min id",), lambda: sa.select(sa.func.min(self.model.c.id)))
        value = self._fetch(statement)[0][0]
        return int(value or 0)

    def max_id(self) -> int:
        statement = self._statement(("max id",), lambda: sa.select(sa.func.max(self.model.c.id)))
        value = self._fetch(statement)[0][0]
        return int(value or 0)

    @property
    def path(self) -> Path:
        """The database file that holds the table."""
        return self._conn.path

    @property
    def where(self) -> Where:
        """The file, run and table, for errors about the table's rows."""
        return Where(self._conn.path, self.run_id, self.name)

    def file_bytes(self) -> int:
        """The size of the table's file and its WAL: an upper bound for what its rows fill."""
        files = (self._conn.path, side_file(self._conn.path, "-wal"))
        return sum(path.stat().st_size for path in files if path.exists())

    def next_id(self, after_id: int) -> int | None:
        """The smallest id above ``after_id``, None when there is none: ids need not be
        dense (a row inserted at id 2**62), so loops over windows of ids jump gaps with it
        instead of walking through them."""
        ids = self.model.c.id
        statement = self._statement(
            ("next id",), lambda: sa.select(sa.func.min(ids)).where(ids > sa.bindparam("after"))
        )
        found = self._fetch(statement, after=after_id)[0][0]
        return None if found is None else int(found)

    def skip_gap(self, low: int, upto_id: int) -> int:
        """Where a window loop that just found nothing above ``low`` goes on from."""
        following = self.next_id(low)
        return upto_id if following is None else max(low, min(following - 1, upto_id))

    def all_rows(self, upto_id: int) -> RowRange:
        """Every row up to ``upto_id``: an upper bound for any one tree's rows. Ids are
        unique and positive, so there are at most ``upto_id`` rows; only where the ids
        are too sparse for that bound to be useful (a row takes at least 8 bytes of the
        file) does SQLite count them, since counting visits every leaf page (60 ms for 10
        million rows)."""
        size = self.file_bytes()
        rows = upto_id if upto_id <= size // 8 else min(upto_id, self.count_rows())
        return RowRange(after_id=0, upto_id=upto_id, rows=rows, exact=False)

    def locate(
        self, top: str, start: int | None, end: int | None, upto_id: int, after_id: int = 0
    ) -> RowRange:
        """Which ids hold rows ``start``..``end`` (1-based, inclusive) of the rows where ``top``
        is not NULL (among the ids above ``after_id``): QCoDeS' meaning of start/end, found
        with short counting statements."""
        spans = self.row_spans(top, upto_id, after_id)
        total = sum(count for _, _, count in spans)
        first = max(start - 1, 0) if start is not None else 0
        last = min(end, total) if end is not None else total
        if last <= first:
            return RowRange(after_id=upto_id, upto_id=upto_id, rows=0)
        return self.rows_at(top, spans, first, last - first)

    def row_spans(self, top: str, upto_id: int, after_id: int = 0) -> list[Span]:
        """``(after id, up to id, rows of top)`` for consecutive spans of ids above
        ``after_id``: where the rows of ``top``'s tree are, counted once (a lazy array keeps
        them to find the ids of any of its rows with one short statement)."""
        ids = self.model.c.id
        not_null = self.column(top).is_not(None)
        count = self._statement(
            ("rows of", top),
            lambda: sa.select(sa.func.count()).where(
                ids > sa.bindparam("lo"), ids <= sa.bindparam("hi"), not_null
            ),
        )
        spans: list[Span] = []
        low = after_id
        while low < upto_id:
            high = min(low + COUNT_SPAN, upto_id)
            counted = self._fetch(count, lo=low, hi=high)[0][0]
            spans.append((low, high, int(counted)))
            low = high if counted else self.skip_gap(high, upto_id)
        return spans

    def blob_spans(
        self, top: str, columns: Sequence[str], upto_id: int
    ) -> tuple[list[Span], dict[str, tuple[int, int, int]]]:
        """:meth:`row_spans` of ``top``, and for each of ``columns`` over those rows: how
        many are not NULL, the least and the most bytes a value has. SQLite takes a
        blob's length from its record header without reading the blob (its overflow
        pages), so this costs what counting the rows does."""
        ids = self.model.c.id
        selected: list[sa.ColumnElement[Any]] = [sa.func.count()]
        for name in columns:
            column = self.column(name)
            length = sa.func.length(column)
            selected += [sa.func.count(column), sa.func.min(length), sa.func.max(length)]
        statement = _compiled(
            sa.select(*selected).where(
                ids > sa.bindparam("lo"),
                ids <= sa.bindparam("hi"),
                self.column(top).is_not(None),
            )
        )
        spans: list[Span] = []
        found = {name: (0, -1, -1) for name in columns}
        low = 0
        while low < upto_id:
            high = min(low + COUNT_SPAN, upto_id)
            counted, *sizes = self._fetch(statement, lo=low, hi=high)[0]
            spans.append((low, high, int(counted)))
            for number, name in enumerate(columns):
                present, least, most = sizes[3 * number : 3 * number + 3]
                if present:
                    before, low_so_far, high_so_far = found[name]
                    found[name] = (
                        before + int(present),
                        int(least) if low_so_far < 0 else min(low_so_far, int(least)),
                        max(high_so_far, int(most)),
                    )
            low = high if counted else self.skip_gap(high, upto_id)
        return spans, found

    def rows_at(self, top: str, spans: Sequence[Span], first: int, rows: int) -> RowRange:
        """The ids of ``rows`` rows of ``top``'s tree from its ``first`` (0-based), by the
        ``spans`` of :meth:`row_spans`."""
        not_null = self.column(top).is_not(None)
        return RowRange(
            after_id=self._id_of_row(first, spans, not_null) - 1,
            upto_id=self._id_of_row(first + rows - 1, spans, not_null),
            rows=rows,
        )

    def _id_of_row(
        self, index: int, spans: Sequence[Span], not_null: sa.ColumnElement[bool]
    ) -> int:
        """The id of the ``index``-th (0-based) not-NULL row, an OFFSET bounded by one span
        (none where every id of the span holds a row of the tree)."""
        ids = self.model.c.id
        before = 0
        for low, high, count in spans:
            if index < before + count:
                if count == high - low:  # dense: the ids are the positions
                    return low + 1 + index - before
                statement = _compiled(
                    sa.select(ids)
                    .where(ids > sa.bindparam("lo"), ids <= sa.bindparam("hi"), not_null)
                    .order_by(ids)
                    .limit(1)
                    .offset(sa.bindparam("skip"))
                )
                found = self._fetch(statement, lo=low, hi=high, skip=index - before)
                return int(found[0][0])
            before += count
        raise IndexError(index)  # pragma: no cover - callers never ask past the total

    def record_index(self, parameter: str) -> int:
        """Position of ``parameter``'s value in the table's records (its column id)."""
        return list(self.declared_types).index(self.column(parameter).name)

    def root_page(self) -> int:
        def build() -> sa.Select[Any]:
            master = sa.table(
                "sqlite_master", sa.column("rootpage"), sa.column("type"), sa.column("name")
            )
            return sa.select(master.c.rootpage).where(
                master.c.type == "table", master.c.name == self.name
            )

        statement = self._statement(("root page",), build)
        return int(self._fetch(statement)[0][0])

    def numeric_windows(
        self, columns: Sequence[str], rows: RowRange, tops: int = 1
    ) -> Iterator[tuple[RowRange, NumericColumns | None]]:
        """Decode all-numeric rows straight from the table's pages, window by window: the
        rows where any of the first ``tops`` columns (the tree's parameters) is not NULL.

        Yields ``(rows still to read, window)``; a window of None means the pages cannot
        be used from here on, and the caller reads the rows still to read through SQLite.
        """
        source = PageSource(self._conn)
        try:
            indices = [self.record_index(name) for name in columns]
            root = self.root_page()
            after, left = rows.after_id, rows.rows
            while after < rows.upto_id and left > 0:
                remaining = RowRange(after, rows.upto_id, left)
                leaves = 1 + left // ROWS_PER_LEAF_AT_LEAST
                window = read_numeric_window(
                    source, root, indices, tops, after, rows.upto_id, leaves
                )
                yield remaining, window
                if window is None:
                    return
                after, left = window.last_rowid, left - window.rows
        finally:
            source.close()

    def column_windows(
        self, column: str, top: str, rows: RowRange
    ) -> Iterator[tuple[RowRange, ColumnWindow | None]]:
        """Decode only ``column`` of the rows where ``top`` is not NULL straight from the
        table's pages (:mod:`qcsql.sqlite.column_pages`), window by window, as
        :meth:`numeric_windows` decodes whole rows: a window of None means the pages cannot
        be used from here on, and the caller reads the rows still to read through SQLite."""
        index, top_index = self.record_index(column), self.record_index(top)
        root = self.root_page()
        source = PageSource(self._conn)
        try:
            after, left = rows.after_id, rows.rows
            while after < rows.upto_id and left > 0:
                remaining = RowRange(after, rows.upto_id, left)
                leaves = min(COLUMN_LEAVES, 1 + left // ROWS_PER_LEAF_AT_LEAST)
                window = read_column_window(
                    source, root, index, top_index, after, rows.upto_id, leaves
                )
                yield remaining, window
                if window is None:
                    return
                after, left = window.last_rowid, left - len(window.values)
        finally:
            source.close()

    def fill_from_pages(self, targets: Sequence[ColumnTarget], rows: RowRange) -> tuple[int, int]:
        """Fill ``targets`` (the first is the tree's top column) with the rows of ``rows``
        straight from the table's pages, as far as :mod:`qcsql.sqlite.blob_pages` can; returns
        ``(rows filled, last id covered)``: SQLite reads the rows after that id."""
        source = PageSource(self._conn)
        try:
            return fill_from_pages(
                source,
                self.root_page(),
                targets,
                rows.after_id,
                rows.upto_id,
                rows.rows,
                self._page_memory,
            )
        finally:
            source.close()

    def _window(self, columns: Sequence[str], top: str) -> sa.Select[Any]:
        """``columns`` of the rows with ``:after < id <= :upto`` where ``top`` is not NULL."""
        ids = self.model.c.id
        return (
            sa.select(*(self.column(name) for name in columns))
            .where(
                ids > sa.bindparam("after"),
                ids <= sa.bindparam("upto"),
                self.column(top).is_not(None),
            )
            .order_by(ids)
        )

    def first_row(self, columns: Sequence[str], top: str, rows: RowRange) -> tuple[Any, ...]:
        """The first row of ``rows``, to plan how to decode the rest."""
        statement = self._statement(
            ("first row", tuple(columns), top), lambda: self._window(columns, top).limit(1)
        )
        found = self._fetch(statement, after=rows.after_id, upto=rows.upto_id)
        return tuple(found[0]) if found else ()

    def chunks(
        self, columns: Sequence[str], top: str, rows: RowRange, ids_per_chunk: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``rows`` in id order, one statement per window of ``ids_per_chunk`` ids.

        Windows of ids (keyset pagination on the rowid) need no id column in the result
        and no LIMIT, so each statement returns just the values, as fast as SQLite can.
        """
        statement = self._statement(
            ("window", tuple(columns), top), lambda: self._window(columns, top)
        )
        low = rows.after_id
        while low < rows.upto_id:
            high = min(low + max(ids_per_chunk, 1), rows.upto_id)
            chunk = self._fetch(statement, after=low, upto=high)
            if chunk:
                yield chunk
                low = high
            else:
                low = self.skip_gap(high, rows.upto_id)
