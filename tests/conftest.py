"""Shared fixtures: where the databases are, and proof that qcsql leaves them alone.

QCoDeS (the reference implementation) is imported only by the tests that need
it, always on copies, with HOME redirected so it never touches a real
``~/experiments.db`` or ``~/.qcodes``.
"""

from __future__ import annotations

import os
import tempfile

# Before anything can import qcodes: it reads and may create files under HOME.
os.environ["HOME"] = tempfile.mkdtemp(prefix="qcsql-tests-home-")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import FileState, all_databases  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "qcodes" in item.fixturenames or "reference" in item.fixturenames:
            item.add_marker(pytest.mark.requires_qcodes)


@pytest.fixture(params=all_databases(), ids=lambda p: p.name)
def any_database(request: pytest.FixtureRequest) -> Path:
    """Every database the tests know: corpus (if ../shared exists), legacy fixtures, example."""
    path: Path = request.param
    return path


@pytest.fixture
def guard() -> Iterator[list[Path]]:  # a list whose append() records the state to keep
    """Register paths to be checked byte-for-byte (and their folders file-for-file) at teardown."""
    before: dict[Path, FileState] = {}

    class Watch(list[Path]):
        def append(self, path: Path) -> None:
            super().append(path)
            before[path] = FileState.of(path)

    box = Watch()
    yield box
    for path, state in before.items():
        assert FileState.of(path) == state, f"{path} or its folder changed"
