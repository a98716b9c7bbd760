"""A/B of the page readers of two qcsql source trees: ``get_parameter_data`` of the
benchmark databases (10,000,000-point numeric run, 10,000 x 1,000-point arrays) in
fresh processes, the two trees interleaved so that a busy moment of the machine falls
on both alike.

    python benchmarks/page_reads_ab.py BEFORE_TREE AFTER_TREE [ROUNDS] [READS]

Needs the databases that ``pytest benchmarks --benchmark-only`` builds into
``benchmarks/.cache/``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
DATABASES = {
    "numeric": CACHE / "numeric_10000000.db",
    "arrays": CACHE / "arrays_10000x1000.db",
}
READ = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import qcsql
assert qcsql.__file__.startswith(sys.argv[1]), qcsql.__file__
out = {}
for name, path in json.loads(sys.argv[3]).items():
    times = []
    for _ in range(int(sys.argv[2])):
        started = time.perf_counter()
        with qcsql.open_database(path) as db:
            db.load_by_id(1).get_parameter_data()
        times.append(time.perf_counter() - started)
    out[name] = times
print(json.dumps(out))
"""


def main() -> None:
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    reads = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    trees = {"before": before, "after": after}
    paths = json.dumps({name: str(path) for name, path in DATABASES.items()})
    times: dict[str, dict[str, list[float]]] = {k: {n: [] for n in DATABASES} for k in trees}
    for round_ in range(rounds):
        order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
        for label in order:
            done = subprocess.run(
                [sys.executable, "-c", READ, trees[label], str(reads), paths],
                capture_output=True,
                text=True,
                check=True,
                cwd="/",
            )
            for name, values in json.loads(done.stdout).items():
                times[label][name] += values
    for name in DATABASES:
        b, a = times["before"][name], times["after"][name]
        print(
            f"{name}: before median {statistics.median(b) * 1e3:.1f} ms, fastest "
            f"{min(b) * 1e3:.1f} ms; after median {statistics.median(a) * 1e3:.1f} ms, "
            f"fastest {min(a) * 1e3:.1f} ms; after/before: median "
            f"{statistics.median(a) / statistics.median(b):.3f}, fastest {min(a) / min(b):.3f} "
            f"({len(a)} reads each)"
        )


if __name__ == "__main__":
    main()
