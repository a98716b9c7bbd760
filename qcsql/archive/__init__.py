"""A lab's archive as one input: every QCoDeS database under some folders.

``from qcsql.archive import build_catalog, write_catalog, read_catalog``

The catalogue (:mod:`qcsql.archive.catalog`) lists every run of every database found
(:mod:`qcsql.archive.discover`), and is stored as an SQLite file of qcsql's own or as
JSON lines (:mod:`qcsql.archive.store`). The fan-out (:mod:`qcsql.archive.fanout`)
exports or audits the runs of many databases over local processes or a Dask cluster.
"""

from qcsql.archive.catalog import (
    Catalog,
    Duplicate,
    FileEntry,
    Parameter,
    RunEntry,
    build_catalog,
    catalog_database,
)
from qcsql.archive.discover import Discovery, Problem, discover
from qcsql.archive.store import catalog_records, read_catalog, write_catalog

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
