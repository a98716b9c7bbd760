"""A running measurement followed into its live file: the one poll loop of ``qcsql follow``
and of the sync (:mod:`qcsql.sync.mirror`).

Each :meth:`LiveFollow.step` polls the database once (:func:`qcsql.data.follow.follow`,
at most :data:`FOLLOW_WINDOW` row ids at a time, so that a run far ahead of the follower
is read in bounded memory) and appends what it found to the live file
(:class:`~qcsql.sync.live_file.LiveFile`). The mirror steps every run it follows once per
poll of its own; :func:`follow_into` steps one run until it is over.

Rows the live file cannot hold (:class:`~qcsql.LiveFileError`) are treated as the caller
says: ``qcsql follow`` stops with the error, as the live file is what it was asked for;
the sync goes on following (the run's final export does not depend on the live file), and
:attr:`LiveFollow.live_error` says why its live file ended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qcsql.database import Database, Run, open_database
from qcsql.errors import LiveFileError
from qcsql.sync.live_file import LiveFile

__all__ = ["FOLLOW_WINDOW", "FollowResult", "LiveFollow", "follow_into"]

FOLLOW_WINDOW = 500_000  # row ids per poll of a live run: bounds memory when it is far behind

LiveErrors = Literal["raise", "keep following"]


@dataclass(frozen=True)
class FollowResult:
    """How a follow ended: ``reason`` (``completed`` or ``idle``), rows read, and the
    error that ended the live file early, if any (the follow itself went on)."""

    reason: str | None
    rows: int
    live_error: LiveFileError | None = None


class LiveFollow:
    """One run followed into its live file ``path``, one poll of the database per
    :meth:`step`; ``rows`` counts the rows read, ``reason`` says why it ended.

    An existing file at ``path`` is unlinked first (a reader of it keeps its inode, and
    the new file starts at row 1). ``poll_interval`` is the wait before each poll but the
    first (none while the run is far ahead of the follower); a caller that paces the steps
    itself gives 0. With ``own_database`` the follow reads through a connection of its own,
    closed with it (the mirror reopens its own when the file's schema changes)."""

    def __init__(
        self,
        run: Run,
        path: Path,
        *,
        idle_timeout: float | None = None,
        poll_interval: float = 0.0,
        live_errors: LiveErrors = "keep following",
        own_database: bool = False,
    ) -> None:
        self.path = path
        self.run_id = run.run_id
        self.reason: str | None = None
        self.rows = 0
        self.live_error: LiveFileError | None = None
        self._attrs = {"guid": run.stable_guid, "run_id": run.run_id}
        self._raise = live_errors == "raise"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._db: Database | None = None
        if own_database:
            self._db = open_database(run.path_to_db)
            run = self._db.load_by_id(run.run_id)
        self._live = LiveFile(path)
        self._chunks = run.follow(
            poll_interval=poll_interval,
            idle_timeout=idle_timeout,
            yield_empty=True,
            max_ids=FOLLOW_WINDOW,
        )

    def step(self) -> bool:
        """One poll; True when the follow is over (``reason`` says why)."""
        chunk = next(self._chunks)
        self.rows += chunk.rows
        if self.live_error is None:
            try:
                self._live.append(chunk.data, self._attrs, chunk.description)
            except LiveFileError as exc:
                if self._raise:
                    raise
                self.live_error = exc
        if chunk.reason is not None:
            self.reason = chunk.reason
            return True
        return False

    @property
    def result(self) -> FollowResult:
        return FollowResult(self.reason, self.rows, self.live_error)

    def close(self) -> None:
        """Let go of the run (the follow's generator), the live file and the connection."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._live.close()
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> LiveFollow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def follow_into(
    run: Run,
    path: Path,
    *,
    poll_interval: float = 0.2,
    idle_timeout: float | None = None,
    live_errors: LiveErrors = "keep following",
    on_step: Callable[[LiveFollow], None] | None = None,
) -> FollowResult:
    """Follow ``run`` into the live file ``path`` until it completes (or stays idle for
    ``idle_timeout`` s); readers may open ``path`` with h5py SWMR meanwhile. ``on_step``
    hears of every poll (progress)."""
    with LiveFollow(
        run, path, idle_timeout=idle_timeout, poll_interval=poll_interval, live_errors=live_errors
    ) as follower:
        while not follower.step():
            if on_step is not None:
                on_step(follower)
        if on_step is not None:
            on_step(follower)
        return follower.result
