"""Every run of the corpus against its oracle (``corpus/oracle/<db>.json``, what QCoDeS
0.58 read from a copy when the corpus was made): the keys of ``get_parameter_data`` and
their order, each array's dtype and shape, its NaN count, first values and sum, and
``number_of_results``. QCoDeS is not needed, so this holds where it is not installed;
the live comparisons (test_parameter_data_matches_qcodes, test_export_matches_qcodes)
check the values and the exported files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qcsql
from tests.helpers import CORPUS

RTOL = 2e-14  # QCoDeS read the doubles through SQLite's 15-digit text
ORACLES = sorted((CORPUS / "oracle").glob("*.json")) if CORPUS.is_dir() else []

pytestmark = pytest.mark.requires_corpus


def _summary(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": str(array.dtype), "shape": list(array.shape)}


@pytest.mark.skipif(not ORACLES, reason="no ../shared/corpus")
@pytest.mark.parametrize("oracle", ORACLES, ids=lambda p: p.name.removesuffix(".json"))
def test_corpus_runs_read_like_the_oracle(oracle: Path) -> None:
    recorded = json.loads(oracle.read_text())
    compared = 0
    with qcsql.open_database(CORPUS / recorded["db"]) as db:
        for expected in recorded["runs"]:
            run = db.load_by_id(expected["run_id"])
            where = f"{recorded['db']} run {run.run_id}"
            assert run.number_of_results == expected["number_of_results"], where
            theirs = expected["parameter_data"]
            if run.description.source == "results_table":
                assert theirs == {}, where  # QCoDeS sees no parameters; qcsql reads columns
                continue
            ours = run.get_parameter_data()
            assert list(ours) == list(theirs), f"{where}: parameters or their order"
            for top, tree in theirs.items():
                assert list(ours[top]) == list(tree), f"{where}/{top}: keys or their order"
                for name, summary in tree.items():
                    array, at = ours[top][name], f"{where}/{top}/{name}"
                    assert _summary(array) == {k: summary[k] for k in ("dtype", "shape")}, at
                    assert int(np.isnan(array).sum()) == summary["n_nan"], at
                    first = np.asarray(summary["first"], dtype=array.dtype)
                    np.testing.assert_allclose(
                        array.ravel()[: first.size], first, rtol=RTOL, atol=0, err_msg=at
                    )
                    if "nansum" in summary:  # not recorded for empty arrays
                        np.testing.assert_allclose(
                            np.nansum(array), summary["nansum"], rtol=1e-9, err_msg=at
                        )
            compared += 1
    assert (
        compared or not recorded["runs"] or all(not r["parameter_data"] for r in recorded["runs"])
    )
