"""Wall times of fresh processes: importing qcsql and its commands, beside the libraries
they need (medians of N runs; run as ``python benchmarks/import_times.py [N] [TREE]``,
TREE being a qcsql source tree to measure instead of the installed one)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "example" / "example.db"
CASES = {
    "python itself": "pass",
    "import sqlalchemy, pydantic": "import sqlalchemy, pydantic",
    "import sqlalchemy, pydantic, numpy": "import sqlalchemy, pydantic, numpy",
    "import qcsql": "import qcsql",
    "qcsql --help": "import sys, qcsql.cli; sys.argv = ['qcsql', '--help']; qcsql.cli.main()",
    "qcsql info": f"import qcsql.cli; qcsql.cli.main(['info', {str(EXAMPLE)!r}])",
    "qcsql runs": f"import qcsql.cli; qcsql.cli.main(['runs', {str(EXAMPLE)!r}])",
}


def median_seconds(code: str, runs: int, tree: str | None) -> float:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code], env=env, cwd="/", stdout=subprocess.DEVNULL, check=False
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    tree = sys.argv[2] if len(sys.argv) > 2 else None
    base = median_seconds("pass", runs, tree)
    for label, code in CASES.items():
        seconds = median_seconds(code, runs, tree)
        print(f"{label:40} {seconds * 1e3:7.0f} ms  ({(seconds - base) * 1e3:+.0f} ms over python)")


if __name__ == "__main__":
    main()
