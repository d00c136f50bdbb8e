"""The hot path's shortcuts answer exactly what the plain path answers.

* the logged model's own ``predict`` (MLflow's per-call schema check skipped once Conveyor validated
  the same signature) gives the output frame ``pyfunc.predict`` gives;
* small requests joined into one model call while a predict runs each get their own rows, and a bad
  one among them still gets its own 422;
* a whole column passed at once by the vectorised check holds no cell the cell-by-cell check refuses.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .test_app import FEATURES, _rows, _split

pytestmark = pytest.mark.unit


def test_the_direct_predict_equals_the_pyfunc_predict(app_client: Any, store: Any) -> None:
    from conveyor.serving.loader import model_outputs

    _, model = app_client.app.state.server.serving("tiny")
    rows = _rows(store, 40)[FEATURES]
    direct = model.predict(rows)
    plain = model_outputs(model.spec, model.pyfunc.predict(rows), len(rows))
    pd.testing.assert_frame_equal(direct, plain)


def test_concurrent_single_rows_answer_as_one_batch_and_a_bad_one_alone(app_client: Any, store: Any) -> None:
    rows = _rows(store, 48)[FEATURES]
    batch = app_client.post("/models/tiny/invocations", json=_split(rows))
    assert batch.status_code == 200, batch.text
    expected = batch.json()["predictions"]

    bad = {"dataframe_split": {"columns": FEATURES, "data": [[0.1, "not a number", "red"]]}}

    def one(k: int) -> Any:
        body = bad if k == len(rows) else _split(rows.iloc[[k]])
        return app_client.post("/models/tiny/invocations", json=body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(len(rows) + 1)))
    for k, answer in enumerate(answers[:-1]):
        assert answer.status_code == 200, answer.text
        (got,) = answer.json()["predictions"]
        # the same row, whatever else shared its model call (floating point: a batch may sum in
        # another order, so the last digit may differ)
        assert got["prediction"] == expected[k]["prediction"], k
        assert got["probability"] == pytest.approx(expected[k]["probability"], rel=1e-12, abs=1e-15), k
    refused = answers[-1]
    assert refused.status_code == 422 and "x2" in refused.json()["error"], refused.text


_COLUMN_KINDS = ["double", "float", "long", "integer", "string", "boolean"]
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(kind=st.sampled_from(_COLUMN_KINDS), nullable=st.booleans(), values=st.lists(_VALUES, max_size=6))
def test_a_column_passed_whole_holds_no_cell_the_cell_check_refuses(
    kind: str, nullable: bool, values: list[Any]
) -> None:
    from conveyor.serving.validation import ColumnSchema, _all_fine, _cell_problem

    col = ColumnSchema(name="c", kind=kind, nullable=nullable)
    if _all_fine(col, values):
        problems = [_cell_problem(col, v) for v in values]
        assert problems == [None] * len(values), (kind, values, problems)


def test_doubtful_columns_are_left_to_the_cell_check() -> None:
    from conveyor.serving.validation import ColumnSchema, _all_fine

    double = ColumnSchema(name="c", kind="double")
    for doubtful in ([math.inf], [math.nan], [True], [10**400], ["1"], [None]):
        assert not _all_fine(double, doubtful), doubtful
    assert _all_fine(double, [0.5, 3, -2.0]) and _all_fine(ColumnSchema(name="s", kind="string"), ["a", ""])
