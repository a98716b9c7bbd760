"""The catalogue of an archive timed in a fresh process, as ``qcsql catalog`` runs it.

    python -m benchmarks.catalog_probe ARCHIVE SCRATCH [ROUNDS]

A process of its own, holding nothing but qcsql: the benchmark's pytest process also
holds QCoDeS, xarray, pandas and pytest (about 135,000 objects that Python's cyclic
garbage collector walks at each full collection, 75-95 ms here), which the command line
never has. Imports and the first-use set-up are done by a warm-up catalogue before the
clock starts, as QCoDeS' listing runs after its import. Each round writes a new
catalogue (``SCRATCH/catalog.db`` removed first), then catalogues the unchanged archive
again against it (the second run). Prints JSON: the seconds of every first and second run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from qcsql.archive import build_catalog, read_catalog, write_catalog


def catalogue(root: Path, target: Path) -> int:
    previous = read_catalog(target)
    catalog = build_catalog([root], previous, exclude=[target])
    write_catalog(catalog, target, previous)
    return catalog.run_count()  # as the command's summary line counts them


def main() -> None:
    root, scratch = Path(sys.argv[1]), Path(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    target = scratch / "catalog.db"
    target.unlink(missing_ok=True)
    catalogue(root, target)  # warm-up
    first: list[float] = []
    second: list[float] = []
    for _ in range(rounds):
        target.unlink()
        started = time.perf_counter()
        runs = catalogue(root, target)
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        catalogue(root, target)
        second.append(time.perf_counter() - started)
    print(json.dumps({"runs": runs, "first": first, "second": second}))


if __name__ == "__main__":
    main()
