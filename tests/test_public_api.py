"""The public surface is curated, and importing qcsql pulls in none of QCoDeS' stack."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import qcsql


def test_all_is_sorted_and_complete() -> None:
    assert qcsql.__all__ == sorted(qcsql.__all__)
    for name in qcsql.__all__:
        assert hasattr(qcsql, name), name
    public = {name for name in vars(qcsql) if not name.startswith("_")}
    modules = {module.name for module in pkgutil.iter_modules(qcsql.__path__)}
    assert public - set(qcsql.__all__) <= modules


def test_import_does_not_load_qcodes_xarray_or_pandas() -> None:
    code = (
        "import sys, qcsql, qcsql.cli;"
        "loaded = {m.split('.')[0] for m in sys.modules};"
        "print(sorted(loaded & {'qcodes', 'xarray', 'pandas'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
