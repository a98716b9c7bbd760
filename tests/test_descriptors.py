"""The kept descriptors: one per file, never closed while the process may hold locks on it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import qcsql.sqlite.descriptors
from qcsql.sqlite.descriptors import kept_file
from tests.helpers import first_arguments_recorded

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_one_descriptor_per_file_and_release_keeps_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.db", b"0123456789")
    first = kept_file(path)
    first.release()
    second = kept_file(tmp_path / "." / "a.db")
    assert second.fd == first.fd and _is_open(first.fd)
    assert second.read(4, 3) == b"3456"
    assert second.read(100, 8) == b"89"  # short where the file ends


def test_a_replaced_file_gets_its_own_descriptor_and_the_old_one_stays(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.db", b"old")
    old = kept_file(path)
    connection = os.open(path, os.O_RDONLY)  # stands for an SQLite connection of the process
    replacement = _write(tmp_path / "b.db", b"new")
    os.replace(replacement, path)
    new = kept_file(path)
    assert new.fd != old.fd and new.read(3, 0) == b"new"
    # The old inode is linked nowhere now, but the connection may hold locks on it.
    assert _is_open(old.fd) and old.read(3, 0) == b"old"
    os.close(connection)


def test_a_deleted_file_is_closed_only_when_nothing_else_has_it_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qcsql.sqlite.descriptors, "LOOK_EVERY", 10**9)  # look at every new file
    path = _write(tmp_path / "gone.db", b"x" * 10)
    kept = kept_file(path)
    other = os.open(path, os.O_RDONLY)  # stands for an SQLite connection of the process
    path.unlink()
    kept_file(_write(tmp_path / "next.db", b"y"))  # a new file is when the registry looks
    assert _is_open(kept.fd), "closed while another descriptor of the process had the file"
    os.close(other)
    kept_file(_write(tmp_path / "third.db", b"z"))
    if Path("/proc/self/fd").is_dir():
        assert not _is_open(kept.fd) or os.fstat(kept.fd).st_ino != kept.inode


def test_folders_and_fifos_are_refused_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        kept_file(tmp_path)
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="Not a regular file"):
        kept_file(fifo)


def test_a_forked_child_reads_through_the_inherited_registry(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.db", b"forked")
    kept_file(path)
    code = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from qcsql.sqlite.descriptors import kept_file
kept_file({str(path)!r})
pid = os.fork()
if pid == 0:
    os._exit(0 if kept_file({str(path)!r}).read(6, 0) == b"forked" else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 0


def test_reading_the_header_keeps_an_in_process_writer_lock(tmp_path: Path) -> None:
    """The smallest case of the rule: a rollback-journal file, a writer of this process
    holding RESERVED, and qcsql opening the file once; another process stays locked out.
    (tests/test_process_locks.py runs every entry point this way.)"""
    import qcsql

    path = tmp_path / "plain.db"
    setup = sqlite3.connect(path)
    setup.executescript(
        "CREATE TABLE experiments (exp_id INTEGER PRIMARY KEY);"
        "CREATE TABLE runs (run_id INTEGER PRIMARY KEY);"
    )
    setup.close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with qcsql.open_database(path):
            pass
        probe = (
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({str(path)!r}, timeout=0, isolation_level=None)\n"
            "try:\n    c.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError:\n"
            "    sys.exit(0)\nsys.exit(1)\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], timeout=60)
        assert done.returncode == 0, "another process got the write lock this process holds"
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_kept_files_are_looked_at_a_few_times_each_however_many_are_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalogue opens thousands of files: looking at every kept descriptor for deleted
    files at each new one cost n²/2 looks; now each is looked at a few times, and a
    deleted file's descriptor still goes once nothing else of the process has it open."""
    looked = first_arguments_recorded(monkeypatch, qcsql.sqlite.descriptors, "_deleted")
    gone = kept_file(_write(tmp_path / "gone.db", b"x"))
    (tmp_path / "gone.db").unlink()
    files = 400
    for index in range(files):
        kept_file(_write(tmp_path / f"{index}.db", b"y"))
    kept = len(qcsql.sqlite.descriptors._REGISTRY.by_inode)
    assert len(looked) < 2 * qcsql.sqlite.descriptors.LOOK_EVERY * (kept + files)
    if Path("/proc/self/fd").is_dir():  # forgotten, and so closed (its number may be reused)
        registry = qcsql.sqlite.descriptors._REGISTRY.by_inode
        assert registry.get((gone.device, gone.inode)) is not gone
