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

import sqlite3  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import qcsql.sqlite.connection  # noqa: E402
from tests.helpers import FileState, TracedStatements, all_databases  # noqa: E402
from tests.qcodes_build import new_database, parameters  # noqa: E402


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
def traced_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[TracedStatements]:
    """Every statement qcsql's connections to files send to SQLite, but those to its own
    private snapshot copies (a WAL file's copy, checkpointed in qcsql's temporary folder,
    see ``ReadOnlyConnection._checkpointed``): the user's files are what must only be read."""
    statements = TracedStatements()
    real_connect = sqlite3.connect
    private = str(Path(tempfile.gettempdir()) / "qcsql-snapshot-")

    def connect(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        connection = real_connect(database, *args, **kwargs)  # type: ignore[arg-type]
        path = urllib.request.url2pathname(str(database).removeprefix("file:").split("?")[0])
        if path.startswith(private):
            connection.set_trace_callback(statements.to_private_copies.append)
        elif database != ":memory:":
            connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(qcsql.sqlite.connection.sqlite3, "connect", connect)
    yield statements


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


@pytest.fixture(scope="session")
def array_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Array runs as QCoDeS 0.58 writes them: spectra against an array setpoint, spectra
    against a numeric outer setpoint (integers of growing width), and two array
    dependents written in separate calls (interleaved trees)."""
    pytest.importorskip("qcodes")
    from qcodes.dataset import Measurement

    path = tmp_path_factory.mktemp("arrays") / "arrays.db"
    experiment = new_database(path, "blob pages")
    gate, freq, spectrum, phase = parameters("gate", "freq", "spectrum", "phase")
    rng = np.random.default_rng(5)
    frequencies = np.linspace(4e9, 8e9, 700)

    plain = Measurement(exp=experiment, name="spectra")
    plain.register_parameter(freq, paramtype="array")
    plain.register_parameter(spectrum, setpoints=(freq,), paramtype="array")
    with plain.run() as saver:
        for _ in range(1200):
            saver.add_result((freq, frequencies), (spectrum, rng.normal(size=700)))

    outer = Measurement(exp=experiment, name="spectra over a gate")
    outer.register_parameter(gate)
    outer.register_parameter(freq, paramtype="array")
    outer.register_parameter(spectrum, setpoints=(gate, freq), paramtype="array")
    with outer.run() as saver:
        for step in range(900):
            saver.add_result(
                (gate, step * 37 - 300), (freq, frequencies), (spectrum, rng.normal(size=700))
            )

    two = Measurement(exp=experiment, name="two dependents, separate calls")
    two.register_parameter(freq, paramtype="array")
    two.register_parameter(spectrum, setpoints=(freq,), paramtype="array")
    two.register_parameter(phase, setpoints=(freq,), paramtype="array")
    with two.run() as saver:
        for _ in range(700):
            saver.add_result((freq, frequencies), (spectrum, rng.normal(size=700)))
            saver.add_result((freq, frequencies[:10]), (phase, rng.normal(size=10)))
    experiment.conn.close()  # type: ignore[attr-defined]
    return path
