"""conveyor.spec_tools: drafting rules (ranges, ids, times, left-out columns) and the stage plan."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from conveyor import spec_tools
from conveyor.config import ModelSpec, list_spec_names, load_spec
from conveyor.data.contracts import build_suite, validate_batch
from conveyor.spec_tools import SpecDraftError, contract_checks, draft_spec, read_sample, spec_plan

pytestmark = pytest.mark.unit


def frame(n: int = 60, **extra: Any) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = {
        "record_id": np.arange(n),
        "seen_at": pd.date_range("2024-05-01", periods=n, freq="h"),
        "amount": rng.uniform(10, 20, n),
        "delta": rng.uniform(-5, -1, n),
        "kind": rng.choice(["a", "b"], n),
        "label": np.arange(n) % 2,
    }
    return pd.DataFrame({**base, **extra})


def test_bounds_widen_by_the_margin_and_keep_their_sign() -> None:
    bounds = spec_tools._bounds
    assert bounds(10, 20, 0.1, integer=False) == (9, 21)
    assert bounds(1, 20, 0.5, integer=True) == (0, 30)  # non-negative: not below zero
    assert bounds(-5, -1, 0.5, integer=True) == (-7, 0)  # non-positive: not above zero
    assert bounds(-1, 1, 0.1, integer=False) == (-1.2, 1.2)
    low, high = bounds(0.0123, 0.0456, 0.0, integer=False)
    assert low <= 0.0123 and high >= 0.0456
    assert bounds(5, 5, 0.1, integer=True) == (4, 6)  # constant: widened around the value


def test_draft_picks_id_time_and_features() -> None:
    draft = draft_spec(frame(), name="toy", target="label")
    spec = draft.spec
    assert (spec.data.id_column, spec.data.event_time_column, spec.data.target) == (
        "record_id",
        "seen_at",
        "label",
    )
    numeric = {f.name: (f.min, f.max) for f in spec.numeric_features}
    assert numeric["amount"][0] >= 0 and numeric["delta"][1] <= 0
    assert [(c.name, c.categories) for c in spec.categorical_features] == [("kind", ("a", "b"))]
    assert validate_batch(spec, frame()).success


def test_columns_that_cannot_be_features_are_left_out_with_a_reason() -> None:
    n = 60
    df = frame(
        n,
        flag=np.arange(n) % 3 == 0,
        email=[f"u{i}@x.org" for i in range(n)],
        born=pd.date_range("1980-01-01", periods=n, freq="D"),
        empty=[None] * n,
    )
    draft = draft_spec(df, name="toy", target="label", time_column="seen_at")
    left = {c.name: c.detail for c in draft.columns if c.role == "left_out"}
    assert set(left) == {"flag", "email", "born", "empty"}
    assert "boolean" in left["flag"] and "distinct values" in left["email"]
    assert "# Left out" in draft.text and "#   email:" in draft.text
    assert validate_batch(draft.spec, df).success


@pytest.mark.parametrize("name", ["CustomerID", "order_uuid", "id"])
def test_id_columns_are_found_by_name(name: str) -> None:
    df = frame().rename(columns={"record_id": name})
    assert draft_spec(df, name="toy", target="label").spec.data.id_column == name


def test_an_id_that_repeats_is_refused_with_the_reason() -> None:
    df = frame()
    df.loc[1, "record_id"] = 0
    with pytest.raises(SpecDraftError, match="'record_id' repeats 1 values"):
        draft_spec(df, name="toy", target="label")


def test_dates_stored_as_date32_are_an_event_time(tmp_path: Path) -> None:
    df = frame()
    df["day"] = df.pop("seen_at").dt.date  # Parquet date32; read back as datetime.date objects
    df.to_parquet(tmp_path / "x.parquet")
    sample = read_sample(str(tmp_path / "x.parquet"))
    assert draft_spec(sample.frame, name="toy", target="label").spec.data.event_time_column == "day"


def test_labels_that_are_not_0_1_are_refused() -> None:
    df = frame(label=np.where(np.arange(60) % 2, "yes", "no"))
    with pytest.raises(SpecDraftError, match="Map the labels to 0/1"):
        draft_spec(df, name="toy", target="label")
    with pytest.raises(SpecDraftError, match="both 0 and 1"):
        draft_spec(frame(label=np.zeros(60, dtype=int)), name="toy", target="label")


def test_a_rare_class_lowers_min_class_share_so_the_sample_passes() -> None:
    n = 400
    df = frame(n, label=(np.arange(n) == 7).astype(int))
    draft = draft_spec(df, name="toy", target="label")
    assert draft.spec.data.min_class_share < 1 / n
    assert any("min_class_share" in note for note in draft.notes)
    assert validate_batch(draft.spec, df).success


def test_small_samples_lower_min_rows() -> None:
    df = frame(12)
    spec = draft_spec(df, name="toy", target="label").spec
    assert spec.data.min_rows == 12
    assert validate_batch(spec, df).success


def test_read_sample_reads_globs_and_stops_at_max_rows(tmp_path: Path) -> None:
    for day in ("2024-05-01", "2024-05-02", "2024-05-03"):
        folder = tmp_path / f"date={day}"
        folder.mkdir()
        frame(10).to_parquet(folder / "part.parquet")
        (folder / "notes.txt").write_text("not data")
    sample = read_sample(str(tmp_path), max_rows=15)
    assert len(sample.frame) == 15 and sample.truncated
    assert sample.partitions == ["2024-05-01", "2024-05-02"]
    assert len(read_sample(f"{tmp_path}/date=2024-05-0[23]/*.parquet").frame) == 20
    with pytest.raises(SpecDraftError, match=r"no \.parquet"):
        read_sample(f"{tmp_path}/*/*.txt")


@pytest.mark.parametrize("name", list_spec_names())
def test_contract_checks_match_build_suite(name: str) -> None:
    spec = load_spec(name)
    built = [(e.expectation_type, getattr(e, "column", None)) for e in build_suite(spec).expectations]
    assert contract_checks(spec) == built


def _with(spec: ModelSpec, **changes: Any) -> ModelSpec:
    raw = spec.model_dump()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return ModelSpec.model_validate(raw)


def test_plan_explains_the_gate_rule_and_warns_about_likely_mistakes() -> None:
    churn = load_spec("churn")
    sections, warnings = spec_plan(churn)
    assert [title for title, _ in sections] == [
        "model",
        "data",
        "validate (data contract)",
        "train",
        "gate",
        "compress",
        "deploy",
        "monitor",
    ]
    assert warnings == []
    gate = dict(sections)["gate"]
    assert any("non-inferiority margin" in line and "0.005 worse" in line for line in gate)

    stricter = _with(churn, gate__min_improvement=0.01, gate__decide_on="point_estimate")
    gate = dict(spec_plan(stricter)[0])["gate"]
    assert any("beat the champion by at least 0.01" in line and "point estimate" in line for line in gate)

    odd = _with(
        churn,
        trainer__kind="sklearn_pipeline",
        trainer__params={"C": 1.0, "hidden_units": [4]},
        data__severities={"expect_column_values_to_be_betwen": "warn"},
    )
    _, warnings = spec_plan(odd)
    text = "\n".join(warnings)
    assert "['hidden_units'] are not parameters of sklearn_pipeline" in text
    with pytest.raises(ValidationError, match="'auc', which is not a binary metric"):
        _with(churn, gate__floors={"auc": 0.7})  # refused when it loads, before any plan
    assert "'expect_column_values_to_be_betwen' matches no check" in text
    assert "do nothing for a sklearn_pipeline trainer" in text


def test_plan_counts_severities() -> None:
    spec = _with(load_spec("churn"), data__severities={"expect_column_values_to_be_between": "quarantine"})
    contract = dict(spec_plan(spec)[0])["validate (data contract)"]
    assert any("5 quarantine" in line for line in contract)
    assert any("quarantined rows are set aside" in line for line in contract)


def test_plan_names_the_data_source_and_the_tuning_budget() -> None:
    churn = load_spec("churn")
    assert any("/landing/churn/date=YYYY-MM-DD" in line for line in dict(spec_plan(churn)[0])["data"])
    files = _with(churn, data__source={"kind": "files", "uri": "s3://b/exports", "format": "csv"})
    assert "reads csv files under s3://b/exports/date=YYYY-MM-DD/" in dict(spec_plan(files)[0])["data"]
    query = "SELECT * FROM t WHERE event_date >= :start AND event_date <= :end"
    sql = _with(churn, data__source={"kind": "sql", "conn_id": "warehouse", "query": query})
    assert any("connection 'warehouse'" in line for line in dict(spec_plan(sql)[0])["data"])
    raw = churn.model_dump()
    raw["tuning"] = {
        "n_trials": 8,
        "timeout_minutes": 2,
        "space": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.01}},
    }
    train = dict(spec_plan(ModelSpec.model_validate(raw))[0])["train"]
    assert any("tunes ['learning_rate']" in line and "8 trials and 2 min" in line for line in train), train


def test_validation_problems_name_the_field() -> None:
    raw = load_spec("churn").model_dump()
    raw["numeric_features"][1]["min"] = "low"
    raw["data"]["window_days"] = 0
    with pytest.raises(ValidationError) as caught:
        ModelSpec.model_validate(raw)
    fields = [p.field for p in spec_tools.validation_problems(caught.value)]
    assert fields == ["data.window_days", "numeric_features[1].min"]


def test_draft_header_says_where_the_sample_came_from() -> None:
    draft = draft_spec(frame(), name="toy", target="label", source="s3://bucket/x", today=dt.date(2025, 1, 2))
    assert draft.text.startswith("# Drafted by `conveyor spec draft` on 2025-01-02 from s3://bucket/x:")


def test_contract_checks_follow_each_task_type() -> None:
    churn = load_spec("churn")
    binary = [c for c in contract_checks(churn) if c[1] == "churned"]
    assert binary == [
        ("expect_column_to_exist", "churned"),
        ("expect_column_values_to_not_be_null", "churned"),
        ("expect_column_values_to_be_in_set", "churned"),
    ]
    diabetes = load_spec("diabetes")
    assert [c for c in contract_checks(diabetes) if c[1] == "progression"][-2:] == [
        ("expect_column_values_to_be_in_type_list", "progression"),
        ("expect_column_values_to_be_between", "progression"),
    ]


def labelled(labels: Any) -> pd.DataFrame:
    n = len(labels)
    return frame(n).assign(label=labels)


def test_draft_multiclass_writes_the_observed_label_set() -> None:
    n = 90
    df = labelled(np.array(["cat", "dog", "bird"])[np.arange(n) % 3])
    draft = draft_spec(df, name="toy", target="label", task="multiclass")
    spec = draft.spec
    assert spec.task == "multiclass" and spec.classes == ("bird", "cat", "dog")
    assert spec.gate.primary_metric == "accuracy" and spec.monitor.max_live_rmse is None
    assert "classes: [bird, cat, dog]" in draft.text and "TODO: every label" in draft.text
    assert "multiclass metrics: accuracy, f1_macro" in draft.text
    # always predicting the commonest label scores 1/3: the drafted floor is above it
    assert spec.gate.floors["accuracy"] > 1 / 3
    assert validate_batch(spec, df).success

    numbered = draft_spec(labelled(np.arange(n) % 4 + 1.0), name="toy", target="label", task="multiclass")
    assert numbered.spec.classes == (1, 2, 3, 4)
    assert validate_batch(numbered.spec, labelled((np.arange(n) % 4 + 1).astype(str))).success


def test_draft_multiclass_lowers_min_class_share_for_a_rare_label() -> None:
    labels = np.where(np.arange(400) == 7, 2, np.arange(400) % 2)
    draft = draft_spec(labelled(labels), name="toy", target="label", task="multiclass")
    assert draft.spec.data.min_class_share < 1 / 400
    assert any("rarest class" in note for note in draft.notes)
    assert validate_batch(draft.spec, labelled(labels)).success


def test_draft_regression_writes_the_range_and_an_rmse_ceiling() -> None:
    values = np.linspace(25, 346, 60)
    df = labelled(values)
    draft = draft_spec(df, name="toy", target="label", task="regression")
    spec = draft.spec
    assert spec.task == "regression" and spec.classes == ()
    assert spec.data.target_min == 0 and 346 < spec.data.target_max <= 380  # non-negative: stays >= 0
    assert spec.gate.primary_metric == "rmse"
    std = float(np.std(values))
    assert (
        std <= spec.gate.floors["rmse"] < std * 1.01
        and spec.monitor.max_live_rmse == spec.gate.floors["rmse"]
    )
    assert spec.monitor.min_live_accuracy is None and spec.trainer.params == {"alpha": 1.0}
    assert "regression metrics: rmse, mae, r2, mape" in draft.text and "a ceiling" in draft.text
    assert validate_batch(spec, df).success
    target = next(c for c in draft.columns if c.role == "target")
    assert target.detail.startswith("[0, ")

    negative = draft_spec(labelled(np.linspace(-10, 10, 60)), name="toy", target="label", task="regression")
    assert negative.spec.data.target_min < -10 and negative.spec.data.target_max > 10


@pytest.mark.parametrize(
    ("task", "labels", "message"),
    [
        ("regression", np.array(["a", "b"])[np.arange(60) % 2], "not numbers: a regression target"),
        ("regression", np.full(60, 3.0), "is 3 in every row of the sample"),
        ("multiclass", np.linspace(0, 1, 60), "fractional numbers"),
        ("multiclass", np.zeros(60, dtype=int), "two labels or more"),
        ("multiclass", np.arange(60), "more than 50 classes"),
        ("binary", np.arange(60) % 3, "Draft a multiclass model (--task multiclass"),
        ("ranking", np.arange(60) % 2, "--task 'ranking' is not a task type"),
    ],
)
def test_draft_refuses_a_target_its_task_cannot_take(task: str, labels: Any, message: str) -> None:
    with pytest.raises(SpecDraftError, match=re.escape(message)):
        draft_spec(labelled(labels), name="toy", target="label", task=task)


def test_plan_says_what_each_stage_does_per_task() -> None:
    digits = dict(spec_plan(load_spec("digits"))[0])
    assert any("task multiclass: predicts one of 10 labels of digit" in line for line in digits["model"])
    assert any("scored on accuracy, f1_macro" in line for line in digits["model"])
    assert any(
        "one of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in line and "class_share" in line
        for line in digits["validate (data contract)"]
    )
    assert any(
        "columns prediction, probability_0" in line and "probability_9" in line for line in digits["deploy"]
    )
    assert any("McNemar" in line for line in digits["gate"])
    assert any("below 0.85" in line for line in digits["monitor"])

    diabetes = dict(spec_plan(load_spec("diabetes"))[0])
    assert any("predicts the number progression" in line for line in diabetes["model"])
    assert any("rmse <= 70" in line and "mae <= 60" in line for line in diabetes["gate"])
    assert any("decrease in rmse" in line and "(rmse higher)" in line for line in diabetes["gate"])
    contract = diabetes["validate (data contract)"]
    assert any("a number, not null, within [0, 400]" in line for line in contract)
    assert any("quantiles" in line for line in contract) and not any(
        "class_share" in line for line in contract
    )
    assert any("output contract: columns prediction" in line for line in diabetes["deploy"])
    assert any("RMSE on labelled predictions rises above 75" in line for line in diabetes["monitor"])
    _, warnings = spec_plan(load_spec("diabetes"))
    assert warnings == []  # alpha is a parameter of a regression sklearn_pipeline

    churn = dict(spec_plan(load_spec("churn"))[0])
    assert any("columns probability, prediction" in line for line in churn["deploy"])
    assert any("one of [0, 1] (positive label 1)" in line for line in churn["validate (data contract)"])


def test_plan_of_the_tuned_python_trainer() -> None:
    sections, warnings = spec_plan(load_spec("breast_cancer"))
    train = dict(sections)["train"]
    assert any("calls conveyor_examples.sklearn_gbm:train" in line for line in train)
    assert any(
        "tunes ['learning_rate', 'max_iter', 'max_leaf_nodes']" in line and "6 trials and 2 min" in line
        for line in train
    ), train
    assert warnings == []
