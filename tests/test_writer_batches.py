"""The writer's own rules for streamed plans: regions grow unlimited dimensions, nothing
lands past a fixed one, compared values must agree, and a plan that gives up leaves no
file. The streamed plans of real runs are checked against QCoDeS elsewhere
(test_export_streaming.py); these are the rules every such plan relies on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5netcdf
import numpy as np
import pytest

from qcsql.export.layout import Batch, DatasetPlan, NotStreamable, Variable
from qcsql.export.writer import write_plan


def _plan(batches: list[Batch], unlimited: bool) -> DatasetPlan:
    def source() -> Iterator[Batch]:
        yield from batches

    return DatasetPlan(
        dims={"index": 0 if unlimited else 4},
        variables={
            "index": Variable(
                "index", ("index",), np.empty(0, np.int64), is_coord=True, streamed=True
            ),
            "v": Variable("v", ("index",), np.empty(0), streamed=True),
        },
        attrs={},
        source=source,
        unlimited=frozenset({"index"}) if unlimited else frozenset(),
    )


def _values(path: Path) -> tuple[list[int], list[float]]:
    with h5netcdf.File(path, "r") as handle:
        return handle["index"][...].tolist(), handle["v"][...].tolist()


def test_regions_grow_an_unlimited_dimension(tmp_path: Path) -> None:
    batches = [
        Batch("index", (slice(0, 2),), np.arange(2)),
        Batch("v", (slice(0, 2),), np.array([1.0, 2.0])),
        Batch("index", (slice(2, 5),), np.arange(2, 5)),
        Batch("v", (slice(2, 5),), np.array([3.0, 4.0, 5.0])),
    ]
    written = write_plan(_plan(batches, unlimited=True), tmp_path / "grown.nc")
    assert _values(written) == ([0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 5.0])


@pytest.mark.parametrize(
    "batches",
    [
        [Batch("v", (slice(2, 5),), np.ones(3))],  # past the fixed end
        [
            Batch("index", (slice(0, 4),), np.arange(4)),
            Batch("index", (slice(0, 4),), np.arange(1, 5), compare=True),  # differs
        ],
    ],
    ids=["past-a-fixed-dimension", "compared-values-differ"],
)
def test_a_plan_that_does_not_fit_gives_up_and_leaves_no_file(
    tmp_path: Path, batches: list[Batch]
) -> None:
    with pytest.raises(NotStreamable):
        write_plan(_plan(batches, unlimited=False), tmp_path / "given_up.nc")
    assert list(tmp_path.iterdir()) == []


def test_compared_values_that_agree_are_not_written_again(tmp_path: Path) -> None:
    batches = [
        Batch("index", (slice(0, 4),), np.arange(4)),
        Batch("index", (slice(0, 4),), np.arange(4), compare=True),
        Batch("v", (slice(0, 4),), np.arange(4.0)),
    ]
    written = write_plan(_plan(batches, unlimited=False), tmp_path / "compared.nc")
    assert _values(written) == ([0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0])
