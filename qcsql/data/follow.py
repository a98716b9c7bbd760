"""Follow a run while QCoDeS is still measuring it.

:func:`follow` polls the database with a few short statements each time (the
run's row, the results table's largest id, the new rows of each parameter tree)
and yields the rows committed since the last poll, decoded as ``get_parameter_data``
decodes them (flat, not reshaped). A QCoDeS writer is never kept from committing:
no read transaction outlives a statement, in rollback-journal as in WAL mode.

The follow ends when the run is marked completed and every row is read, or after
``idle_timeout`` seconds without a new row, with the reason in
:attr:`FollowChunk.reason` of the last chunk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy.typing as npt

from qcsql.data.parameter_data import read_rows_between

if TYPE_CHECKING:
    from qcsql.data.source import LiveRunSource
    from qcsql.schema.description import RunDescription

__all__ = ["FollowChunk", "follow"]

EndReason = Literal["completed", "idle"]


@dataclass(frozen=True)
class FollowChunk:
    """Rows committed since the previous chunk: ``{top: {column: array}}`` (empty when a
    poll found nothing new), up to row id ``last_id``; ``reason`` is set on the last one.
    ``description`` is the run's description as that poll read it (every tree the run
    will ever have, also those without rows yet)."""

    data: dict[str, dict[str, npt.NDArray[Any]]] = field(default_factory=dict)
    last_id: int = 0
    completed: bool = False
    reason: EndReason | None = None
    description: RunDescription | None = None

    @property
    def rows(self) -> int:
        return sum(len(next(iter(tree.values()))) for tree in self.data.values() if tree)


def follow(
    run: LiveRunSource,
    *,
    poll_interval: float = 0.2,
    idle_timeout: float | None = None,
    yield_empty: bool = False,
    max_ids: int | None = None,
) -> Iterator[FollowChunk]:
    """Yield the new rows of ``run`` until it completes (or stays idle ``idle_timeout`` s).

    ``max_ids`` bounds a chunk to that many row ids, so that following a run from its
    start when it already has millions of rows (a sync restarted) takes bounded memory;
    the next chunk then comes without waiting ``poll_interval``."""
    last_id = 0
    last_change = time.monotonic()
    while True:
        current = run.reload()  # fresh: completion, description, columns
        completed = current.completed  # read before the rows: rows committed before it are seen
        new_rows: dict[str, dict[str, npt.NDArray[Any]]] = {}
        top_id = last_id
        behind = False  # rows committed past this chunk's window
        if current.started and current.description.interdependencies.parameters:
            table = current.results_table()
            top_id = table.max_id()
            if max_ids is not None and top_id - last_id > max_ids:
                top_id, behind, completed = last_id + max_ids, True, False
            if top_id > last_id:
                new_rows = read_rows_between(table, current.description, last_id, top_id)
        now = time.monotonic()
        if top_id > last_id:
            last_change = now
        idle = idle_timeout is not None and now - last_change > idle_timeout
        # Completion was read before the rows, and QCoDeS commits its last rows before
        # marking the run completed: a completed poll has read everything.
        reason: EndReason | None = "completed" if completed else ("idle" if idle else None)
        last_id = top_id
        if new_rows or yield_empty or reason is not None:
            yield FollowChunk(new_rows, top_id, completed, reason, current.description)
        if reason is not None:
            return
        if not behind:
            time.sleep(poll_interval)
