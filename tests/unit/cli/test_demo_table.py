"""The demo's prediction table shows each task's output contract, and the demo covers every shipped spec."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from conveyor.config import list_spec_names, load_spec
from conveyor.demo import DEMO_DAYS, predict_table, prediction_columns

pytestmark = pytest.mark.unit


def rendered(model: str, predictions: list[dict[str, Any]], labels: list[Any]) -> str:
    spec = load_spec(model)
    records = [{spec.data.id_column: f"id{i}"} for i in range(len(predictions))]
    console = Console(record=True, width=200)
    console.print(predict_table(model, records, labels, predictions))
    return console.export_text()


def test_binary_rows_show_probability_and_prediction() -> None:
    text = rendered("churn", [{"probability": 0.8123456, "prediction": 1}], [0])
    header = next(line for line in text.splitlines() if "customer_id" in line)
    assert "customer_id" in header and "probability" in header and "prediction" in header
    assert "0.8123" in text and "id0" in text


def test_multiclass_rows_show_the_class_and_its_probability() -> None:
    prediction: dict[str, Any] = {"prediction": 7, **{f"probability_{c}": 0.01 for c in range(10)}}
    prediction["probability_7"] = 0.91
    text = rendered("digits", [prediction], [7])
    assert "probability (top class)" in text and "(multiclass;" in text
    row = next(line for line in text.splitlines() if "id0" in line)
    assert row.split() == ["│", "id0", "│", "7", "│", "0.9100", "│", "7", "│"]


def test_regression_rows_show_the_predicted_value() -> None:
    text = rendered("diabetes", [{"prediction": 151.23456}], [140.0])
    row = next(line for line in text.splitlines() if "id0" in line)
    assert "151.23" in row and "140.00" in row and "probability" not in text
    assert prediction_columns("regression") == ["prediction"]


def test_the_demo_lands_and_trains_every_shipped_spec() -> None:
    assert sorted(DEMO_DAYS) == list_spec_names()
    for name, days in DEMO_DAYS.items():
        spec = load_spec(name)
        assert days <= spec.data.window_days, name  # a window holds every landed day
