"""Plain records of what the ``runs`` and ``experiments`` tables hold.

They are built from one query each and never touch the database again, so a
listing of thousands of runs costs one round trip and no JSON parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

from qcsql.errors import DataDecodeError, Where

__all__ = ["QCODES_TIME_FORMAT", "Experiment", "Link", "MetadataValue", "RunRow", "local_time"]

# How QCoDeS 0.59 and later format run and completion times, in `run_timestamp()` and
# in the attributes of datasets and exports: the local time with its UTC offset
# ("2026-12-02 17:43:41+0100"), since the stored epoch time says nothing of the zone
# the run was measured in. QCoDeS 0.58 and earlier wrote "%Y-%m-%d %H:%M:%S", the
# local time alone.
QCODES_TIME_FORMAT = "%Y-%m-%d %H:%M:%S%z"


def local_time(
    raw: float | None, fmt: str = QCODES_TIME_FORMAT, *, where: Where | None = None
) -> str | None:
    """A stored epoch time in the local time zone, as QCoDeS formats it; None for None.

    Rendered as QCoDeS 0.59+ renders it (an aware datetime in UTC, then the local zone
    that held at that instant, so a summer run gets the summer offset). The seconds are
    those of ``datetime``, which rounds the epoch time to the microsecond first: within
    half a microsecond of the next second they are that second's, where QCoDeS 0.58's
    ``time.localtime`` truncated. A time no date can be given for (beyond the years 1 to
    9999, or the platform's time_t), on which QCoDeS fails, raises ``DataDecodeError``
    naming ``where`` (the stored column)."""
    if raw is None:
        return None
    try:
        return datetime.fromtimestamp(raw, tz=timezone.utc).astimezone().strftime(fmt)
    except (OverflowError, OSError, ValueError) as exc:
        raise DataDecodeError(
            f"{where}: the time {raw!r} (seconds since 1970) is no date ({exc}); "
            "QCoDeS 0.62 cannot format it either",
            where=where,
        ) from None


MetadataValue = str | int | float | bytes


class Experiment(BaseModel):
    """One row of ``experiments``."""

    model_config = ConfigDict(frozen=True)

    exp_id: int
    name: str | None
    sample_name: str | None
    start_time: float | None
    end_time: float | None
    run_counter: int | None
    format_string: str | None


class Link(BaseModel):
    """A parent-dataset link (``runs.parent_datasets``): this run (head) came from tail."""

    model_config = ConfigDict(frozen=True)

    head: str
    tail: str
    edge_type: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class RunRow:
    """The light columns of one run, as stored; fallbacks for old schemas already applied."""

    run_id: int
    exp_id: int | None
    name: str | None
    table_name: str | None
    counter: int | None
    run_timestamp_raw: float | None
    completed_timestamp_raw: float | None
    is_completed: bool
    parameters: str | None
    guid: str | None
    captured_run_id: int | None
    captured_counter: int | None
    parent_datasets_raw: str | None
    exp_name: str | None
    sample_name: str | None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    raw_data_db_path: str | None = None  # QCoDeS >= 0.59: a separate raw-data file
