"""The public surface is curated, and importing qcsql pulls in none of QCoDeS' stack."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

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


def _modules_loaded_by(code: str) -> set[str]:
    probe = code + "; import sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


HEAVY = {"sqlalchemy", "pydantic", "numpy", "h5py", "h5netcdf"}


def test_import_and_help_load_nothing_heavy() -> None:
    """``import qcsql`` and ``qcsql --help`` resolve names lazily (README: Architecture)."""
    assert _modules_loaded_by("import qcsql") & HEAVY == set()
    help_run = (
        "import io, qcsql.cli; qcsql.cli.main(['--help'], out=io.StringIO(), err=io.StringIO())"
    )
    assert _modules_loaded_by(help_run) & HEAVY == set()


def test_listing_runs_loads_neither_numpy_nor_h5py() -> None:
    example = Path(__file__).parent / "fixtures" / "example" / "example.db"
    listing = (
        "import io, qcsql.cli; "
        f"assert qcsql.cli.main(['runs', {str(example)!r}], out=io.StringIO()) == 0"
    )
    assert _modules_loaded_by(listing) & HEAVY == {"sqlalchemy", "pydantic"}
