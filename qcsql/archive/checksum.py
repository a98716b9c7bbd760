"""A checksum of a run's data, to tell whether two copies of a run hold the same data.

Copies of a run made by ``extract_runs_into_db`` have the same guid but a new run_id,
results table name and file; what must agree is the data as QCoDeS reads them
(``get_parameter_data``: parameter names, dtypes, shapes and values), so that is what
is hashed, not the bytes of the files. Floats are hashed as QCoDeS sees them, rounded
to 15 significant digits (:func:`qcsql.export.keys.as_qcodes_sees`): QCoDeS reads
numbers through SQLite's text, so ``extract_runs_into_db`` writes the copy's values
rounded that way, and a copy that differs from its source only there holds the same
data for QCoDeS. Text and other object arrays are hashed
element by element (their ``repr``, stable where the objects' memory is not; nested
arrays by their bytes, since ``repr`` elides the middle of long ones).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from qcsql.database import Run
from qcsql.export.keys import as_qcodes_sees

__all__ = ["data_checksum"]


def data_checksum(run: Run) -> str:
    """SHA-256 (hex) of the run's ``get_parameter_data()``, independent of where it lives."""
    digest = hashlib.sha256()
    data = run.get_parameter_data()
    for top in sorted(data):
        digest.update(b"\x00tree\x00" + top.encode())
        for name in sorted(data[top]):
            _update(digest, name, np.asarray(data[top][name]))
    return digest.hexdigest()


def _update(digest: Any, name: str, array: np.ndarray[Any, Any]) -> None:
    digest.update(f"\x00{name}\x00{array.dtype.str}\x00{array.shape}\x00".encode())
    if array.dtype.hasobject:
        for item in array.ravel():
            if isinstance(item, np.ndarray):  # ragged data: repr() would elide the middle
                _update(digest, "", item)
            else:
                digest.update(repr(item).encode() + b"\x00")
    elif array.dtype.kind == "f":
        digest.update(as_qcodes_sees(array.ravel()).tobytes())
    else:
        digest.update(np.ascontiguousarray(array).tobytes())
