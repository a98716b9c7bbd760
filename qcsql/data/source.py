"""What the layers below the public facade read of a run: :class:`RunSource`.

The data and export layers work on runs without knowing ``qcsql.Run`` (which sits
above them and is one such source): a protocol keeps the imports pointing down and
lets tests hand them any object with these members.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from qcsql.data.parameter_data import ParameterData
from qcsql.data.results import ResultsTable
from qcsql.schema.description import RunDescription

__all__ = ["LiveRunSource", "RunSource"]


class RunSource(Protocol):
    """A run as the data and export layers read it."""

    @property
    def run_id(self) -> int: ...

    @property
    def path_to_db(self) -> Path:
        """The database file (for error messages and side files)."""
        ...

    @property
    def description(self) -> RunDescription: ...

    def results_table(self) -> ResultsTable:
        """The run's results table, wherever it lives (see :mod:`qcsql.data.location`)."""
        ...

    def get_parameter_data(
        self, *params: str, start: int | None = None, end: int | None = None
    ) -> ParameterData: ...


class LiveRunSource(RunSource, Protocol):
    """A run that may still be measured: looked at again at every poll."""

    @property
    def completed(self) -> bool: ...

    @property
    def started(self) -> bool: ...

    def reload(self) -> LiveRunSource:
        """The same run as the file holds it now."""
        ...
