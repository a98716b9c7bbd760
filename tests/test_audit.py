"""`qcsql audit` reports what is odd about each run, and agrees with the corpus MANIFEST."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
from pathlib import Path

import pytest

from qcsql.audit import audit
from qcsql.cli import main
from tests.helpers import CORPUS, EXAMPLE_DB, copy_database, corpus_databases


def _manifest() -> dict[str, dict[str, set[int]]]:
    """Per corpus file, the run lists MANIFEST.md gives: 'not completed' and '0-row runs'."""
    text = (CORPUS / "MANIFEST.md").read_text()
    out: dict[str, dict[str, set[int]]] = {}
    for section in text.split("\n### `")[1:]:
        name = section.split("`", 1)[0]
        lists = {}
        for key, pattern in (
            ("not_completed", r"- not completed: runs \[([\d, ]*)\]"),
            ("no_rows", r"- 0-row runs: \[([\d, ]*)\]"),
        ):
            found = re.search(pattern, section)
            lists[key] = (
                {int(n) for n in found.group(1).split(",") if n.strip()} if found else set()
            )
        out[name] = lists
    return out


@pytest.mark.parametrize("path", corpus_databases(), ids=lambda p: p.name)
def test_audit_agrees_with_the_manifest(path: Path) -> None:
    report = audit(path)
    manifest = _manifest()[path.name]
    by_code: dict[str, set[int]] = {}
    for finding in report.findings:
        by_code.setdefault(finding.code, set()).add(finding.run_id)  # type: ignore[arg-type]
    not_completed = by_code.get("never_completed", set()) | by_code.get("never_started", set())
    assert not_completed == manifest["not_completed"]
    assert by_code.get("no_rows", set()) == manifest["no_rows"]
    if "4a" in path.name and not path.name.startswith("v9_"):
        assert by_code["run_description_4a"] == {r for r in range(1, report.runs_checked + 1)}
    if "prototype" in path.name:
        assert None in by_code["no_layouts_table"]
    assert report.quick_check == ["ok"]
    assert not {"run_unreadable", "data_undecodable", "run_description", "cannot_open"} & set(
        by_code
    )


def test_audit_of_the_example(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["audit", str(EXAMPLE_DB), "--json"], out=out) == 1
    report = json.loads(out.getvalue())
    found = {(f["code"], f["run_id"]) for f in report["findings"]}
    assert found == {
        ("measurement_exception", 4),
        ("shape_incomplete", 4),
        ("never_completed", 12),
        ("never_started", 13),
        ("no_rows", 13),
    }


def test_healthy_file_exits_0() -> None:
    healthy = next((p for p in corpus_databases() if p.name == "v5_fixture_some_runs.db"), None)
    if healthy is None:
        pytest.skip("needs ../shared/corpus")
    assert main(["audit", str(healthy)], out=io.StringIO()) == 0


def test_deep_audit_finds_a_damaged_blob_in_the_middle(tmp_path: Path) -> None:
    copy = copy_database(EXAMPLE_DB, tmp_path)
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("UPDATE \"results-2-1\" SET spectrum = X'0011' WHERE id = 6")
    assert not {f.code for f in audit(copy).findings} & {"data_undecodable"}
    deep = [f for f in audit(copy, deep=True).findings if f.code == "data_undecodable"]
    assert [f.run_id for f in deep] == [5] and "spectrum" in deep[0].message


def test_audit_of_something_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not a database")
    report = audit(tmp_path / "notes.db")
    assert [f.code for f in report.findings] == ["cannot_open"]
    assert main(["audit", str(tmp_path / "notes.db")], out=io.StringIO()) == 1


def test_quick_audit_samples_the_last_row_of_each_tree(tmp_path: Path) -> None:
    copy = copy_database(EXAMPLE_DB, tmp_path)
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        last = conn.execute('SELECT max(id) FROM "results-2-1"').fetchone()[0]
        conn.execute(f"UPDATE \"results-2-1\" SET spectrum = X'0011' WHERE id = {last}")
    found = [f for f in audit(copy).findings if f.code == "data_undecodable"]
    assert [f.run_id for f in found] == [5]
