"""A lab's archive as one input: every QCoDeS database under some folders.

``from qcsql.archive import build_catalog, write_catalog, read_catalog``

The catalogue (:mod:`qcsql.archive.catalog`) lists every run of every database found
(:mod:`qcsql.archive.discover`), and is stored as an SQLite file of qcsql's own or as
JSON lines (:mod:`qcsql.archive.store`). The fan-out (:mod:`qcsql.archive.fanout`)
exports or audits the runs of many databases over local processes or a Dask cluster.

Importing this package imports no database reader: a catalogue of an unchanged archive
needs none (see :mod:`qcsql.archive.catalog`). ``catalog_database``, which reads a
database, is resolved on first use.
"""

import typing as _typing

from qcsql.archive.catalog import build_catalog
from qcsql.archive.discover import Discovery, Problem, discover
from qcsql.archive.entries import Catalog, Duplicate, FileEntry, Parameter, RunEntry
from qcsql.archive.store import catalog_records, read_catalog, write_catalog

if _typing.TYPE_CHECKING:
    from qcsql.archive.scan import catalog_database


def __getattr__(name: str) -> object:
    if name != "catalog_database":
        raise AttributeError(f"module 'qcsql.archive' has no attribute {name!r}")
    from qcsql.archive.scan import catalog_database

    globals()[name] = catalog_database
    return catalog_database


__all__ = [
    "Catalog",
    "Discovery",
    "Duplicate",
    "FileEntry",
    "Parameter",
    "Problem",
    "RunEntry",
    "build_catalog",
    "catalog_database",
    "catalog_records",
    "discover",
    "read_catalog",
    "write_catalog",
]
