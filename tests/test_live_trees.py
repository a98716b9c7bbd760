"""The live file never loses a tree: trees whose rows start after the file was laid out
are in it, and rows it cannot hold end it with a typed error, never silently."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import qcsql
from qcsql.sync.live_file import LiveFile
from tests.helpers import EXAMPLE_DB
from tests.qcodes_build import new_database, parameters

pytest.importorskip("qcodes")


def _read(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(path, "r", libver="latest", swmr=True) as live:
        return {
            top: {name: dataset[:] for name, dataset in group.items()}
            for top, group in live.items()
        }


def test_a_dependent_that_starts_after_the_first_poll_is_in_the_live_file(
    tmp_path: Path,
) -> None:
    """QCoDeS writes y(x) first; the follower polls (and lays out the live file); only
    then does z(x) get rows, and an array tree later still. All of them are in the live
    file, equal to ``get_parameter_data`` of the completed run."""
    from qcodes.dataset import Measurement

    path = tmp_path / "late.db"
    experiment = new_database(path)
    x, y, z, f, s = parameters("x", "y", "z", "f", "s")
    measurement = Measurement(exp=experiment, name="late dependent")
    measurement.register_parameter(x)
    measurement.register_parameter(y, setpoints=(x,))
    measurement.register_parameter(z, setpoints=(x,))
    measurement.register_parameter(f, paramtype="array")
    measurement.register_parameter(s, setpoints=(f,), paramtype="array")
    live = LiveFile(tmp_path / "late.live.h5")
    with qcsql.open_database(path) as db:
        with measurement.run() as saver:
            follow = db.load_by_id(saver.run_id).follow(poll_interval=0, yield_empty=True)
            for value in range(5):
                saver.add_result((x, value), (y, value * 2.0))
            saver.flush_data_to_database(block=True)
            first = next(follow)
            assert set(first.data) == {"y"}  # the layout is made while only y has rows
            live.append(first.data, {"run_id": saver.run_id}, first.description)
            for value in range(7):
                saver.add_result((x, value + 0.5), (z, -value))  # integers, then floats
            saver.add_result((f, np.linspace(0, 1, 3)), (s, np.arange(3.0)))
            saver.flush_data_to_database(block=True)
            live.append(next(follow).data, {})
        for chunk in follow:
            live.append(chunk.data, {}, chunk.description)
        assert chunk.reason == "completed"
        expected = db.load_by_id(1).get_parameter_data()
    live.close()
    got = _read(live.path)
    assert set(got) == {"y", "z", "s"}
    for top, tree in expected.items():
        assert set(got[top]) == set(tree)
        for name, values in tree.items():
            np.testing.assert_array_equal(got[top][name], values.reshape(-1))
    assert live.rows == {"y": 5, "z": 7, "s": 3}


def test_rows_that_do_not_fit_end_the_live_file_with_a_typed_error(tmp_path: Path) -> None:
    with qcsql.open_database(EXAMPLE_DB) as db:
        run = next(r for r in db.runs() if r.started and r.number_of_results)
        data = run.get_parameter_data()
        description = run.description
    live = LiveFile(tmp_path / "run.live.h5")
    live.append(data, {}, description)
    top = next(iter(data))
    column = next(iter(data[top]))
    text = {top: {**data[top], column: np.array(["a"] * len(data[top][column]))}}
    with pytest.raises(qcsql.LiveFileError, match=f"column {column!r}.*cannot hold"):
        live.append(text, {})
    with pytest.raises(qcsql.LiveFileError, match="ends here"):
        live.append(data, {})  # ended: nothing more is written
    with pytest.raises(qcsql.LiveFileError, match="did not have"):
        other = LiveFile(tmp_path / "other.live.h5")
        other.append(data, {}, description)
        other.append({"no such tree": data[top]}, {})
    got = _read(live.path)
    for name, values in data[top].items():  # the rows before the error are kept
        np.testing.assert_array_equal(got[top][name], values.reshape(-1))


def test_a_bounded_follow_reads_a_long_run_window_by_window(tmp_path: Path) -> None:
    """``max_ids``: a follower far behind (a sync restarted) reads a few ids per chunk,
    and says the run completed only once it has read every row."""
    from qcsql.data.follow import follow

    with qcsql.open_database(EXAMPLE_DB) as db:
        run = db.load_by_id(3)
        expected = run.get_parameter_data()
        chunks = list(follow(run, poll_interval=0, max_ids=7))
    assert len(chunks) > 2 and all(chunk.rows <= 7 for chunk in chunks)
    assert [chunk.reason for chunk in chunks] == [None] * (len(chunks) - 1) + ["completed"]
    for top, tree in expected.items():
        for name, values in tree.items():
            got = np.concatenate([c.data[top][name] for c in chunks if top in c.data])
            np.testing.assert_array_equal(got, values)
