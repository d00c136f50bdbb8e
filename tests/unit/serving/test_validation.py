"""Request validation against a signature, without a server or MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.serving.errors import InvalidInput
from conveyor.serving.validation import (
    ColumnSchema,
    batch_from_oip,
    batch_from_records,
    batch_from_scoring_body,
    parse_json,
)

pytestmark = pytest.mark.unit

COLUMNS = [
    ColumnSchema("x1", "double"),
    ColumnSchema("x2", "double", nullable=True),
    ColumnSchema("color", "string"),
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory, support_module: Any) -> Any:
    import yaml

    from conveyor.config import ModelSpec

    path: Path = support_module.write_spec(tmp_path_factory.mktemp("specs"))
    return ModelSpec.model_validate(yaml.safe_load(path.read_text()))


def _problem(excinfo: pytest.ExceptionInfo[InvalidInput]) -> tuple[int, str, list[dict[str, Any]]]:
    return excinfo.value.status, excinfo.value.message, excinfo.value.detail


def test_split_becomes_a_typed_frame_and_the_id_column_is_kept_apart(spec: Any) -> None:
    body = {
        "dataframe_split": {
            "columns": ["row_id", "color", "x1", "x2"],
            "data": [[10, "red", 1, None], ["b-7", "blue", 2.5, 0.5]],
        }
    }
    batch = batch_from_scoring_body(body, COLUMNS, spec)
    assert list(batch.frame.columns) == ["x1", "x2", "color"]  # signature order, id dropped
    assert batch.frame["x1"].dtype == np.float64
    assert np.isnan(batch.frame["x2"][0])
    assert batch.ids == [10, "b-7"]
    assert batch.n_rows == 2


def test_columnar_inputs_and_scalars(spec: Any) -> None:
    batch = batch_from_scoring_body({"inputs": {"x1": 1.0, "x2": 2.0, "color": "red"}}, COLUMNS, spec)
    assert batch.n_rows == 1 and batch.ids is None


def test_problems_are_collected_with_column_and_row(spec: Any) -> None:
    records = [
        {"x1": "1.0", "x2": 0.0, "color": "red"},
        {"x1": 1.0, "x2": float("inf"), "color": None},
    ]
    with pytest.raises(InvalidInput) as excinfo:
        batch_from_records(records, COLUMNS, spec)
    status, message, detail = _problem(excinfo)
    assert status == 422
    assert message.startswith("invalid input: column 'x1' row 0: expected a number (double), got string")
    assert "(and 2 more problem(s))" in message
    assert [(d["column"], d["row"]) for d in detail] == [("x1", 0), ("x2", 1), ("color", 1)]


def test_unknown_and_missing_columns_reported_together(spec: Any) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        batch_from_scoring_body(
            {"dataframe_split": {"columns": ["x1", "y"], "data": [[1, 2]]}}, COLUMNS, spec
        )
    _, _, detail = _problem(excinfo)
    assert {(d["column"], d["row"]) for d in detail} == {("y", None), ("x2", None), ("color", None)}


def test_problem_list_is_bounded(spec: Any) -> None:
    records = [{"x1": "bad", "x2": 0.0, "color": "red"}] * 500
    with pytest.raises(InvalidInput) as excinfo:
        batch_from_records(records, COLUMNS, spec)
    body = excinfo.value.body()
    assert len(body["detail"]) == 20
    assert body["detail_truncated"] == 30  # 50 collected, 20 shown


def test_size_limits(spec: Any) -> None:
    with pytest.raises(InvalidInput, match="empty batch"):
        batch_from_records([], COLUMNS, spec)
    with pytest.raises(InvalidInput, match="exceeds the limit of 2 rows"):
        batch_from_records([{"x1": 1, "x2": 1, "color": "r"}] * 3, COLUMNS, spec, max_rows=2)


def test_oip_shapes_datatypes_and_request_id(spec: Any) -> None:
    body = {
        "id": "abc",
        "inputs": [
            {"name": "x1", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
            {"name": "x2", "shape": [2], "datatype": "FP32", "data": [0.5, 1.5]},
            {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
        ],
        "outputs": [{"name": "probability"}],
    }
    batch = batch_from_oip(body, COLUMNS, spec)
    assert batch.request_id == "abc" and batch.requested_outputs == ("probability",)
    assert batch.frame["x1"].tolist() == [1.0, 2.0]

    body["inputs"][0]["shape"] = [1, 2]
    body["inputs"][0]["data"] = [1, 2]
    with pytest.raises(InvalidInput, match="not one value per row"):
        batch_from_oip(body, COLUMNS, spec)
    body["inputs"][0] = {"name": "x1", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}
    with pytest.raises(InvalidInput, match="tensor has 3 rows, earlier tensors have") as excinfo:
        batch_from_oip({"inputs": [body["inputs"][1], body["inputs"][0], body["inputs"][2]]}, COLUMNS, spec)
    assert excinfo.value.status == 422


def test_parse_json_points_at_the_error() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        parse_json(b'{"a": 1,\n "b": }')
    assert excinfo.value.status == 400
    assert "line 2 column" in excinfo.value.message
    with pytest.raises(InvalidInput, match="not UTF-8"):
        parse_json(b"\xff\xfe{")
