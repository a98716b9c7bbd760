"""Plain records of what the ``runs`` and ``experiments`` tables hold.

They are built from one query each and never touch the database again, so a
listing of thousands of runs costs one round trip and no JSON parsing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

__all__ = ["QCODES_TIME_FORMAT", "Experiment", "Link", "MetadataValue", "RunRow", "local_time"]

# How QCoDeS formats run and completion times (in the local time zone).
QCODES_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def local_time(raw: float | None, fmt: str = QCODES_TIME_FORMAT) -> str | None:
    """A stored epoch time in the local time zone, as QCoDeS formats it; None for None."""
    return None if raw is None else time.strftime(fmt, time.localtime(raw))


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
