"""Task types in the spec (``task``, ``data.classes``, the target range) and ``conveyor.tasks``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from conveyor import tasks
from conveyor.config import TASK_METRICS, ModelSpec, load_spec
from conveyor.pyfunc_outputs import configured_output_frame


def _spec(task: str = "binary", **changes: Any) -> ModelSpec:
    raw = load_spec("churn").model_dump(mode="json")
    raw["task"] = task
    raw["gate"] = {}
    raw["monitor"]["min_live_accuracy"] = None
    raw["tuning"] = None
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    return ModelSpec.model_validate(raw)


def test_a_spec_without_task_is_binary_with_classes_0_1() -> None:
    spec = load_spec("churn")
    assert spec.task == "binary"
    assert spec.classes == (0, 1)
    assert spec.gate.primary_metric == "roc_auc"
    assert spec.metric_names == TASK_METRICS["binary"]


@pytest.mark.parametrize(("task", "primary"), [("multiclass", "accuracy"), ("regression", "rmse")])
def test_each_task_defaults_its_primary_metric(task: str, primary: str) -> None:
    extra = {"data__classes": ["a", "b", "c"]} if task == "multiclass" else {}
    assert _spec(task, **extra).gate.primary_metric == primary


def test_multiclass_needs_its_label_set() -> None:
    with pytest.raises(ValidationError, match=r"task multiclass needs data\.classes"):
        _spec("multiclass")


def test_metrics_of_another_task_are_refused_naming_the_field() -> None:
    with pytest.raises(
        ValidationError, match=r"gate.floors names 'roc_auc', which is not a regression metric"
    ):
        _spec("regression", gate={"floors": {"roc_auc": 0.8}})
    with pytest.raises(ValidationError, match=r"gate.primary_metric names 'rmse', which is not a binary"):
        _spec("binary", gate={"primary_metric": "rmse"})


def test_target_settings_must_fit_the_task() -> None:
    with pytest.raises(ValidationError, match=r"data\.classes is a classification label set"):
        _spec("regression", data__classes=[1, 2])
    with pytest.raises(ValidationError, match="bound a regression target"):
        _spec("binary", data__target_min=0)
    with pytest.raises(ValidationError, match="positive_label 1 is not one of"):
        _spec("binary", data__classes=["no", "yes"])
    with pytest.raises(ValidationError, match=r"monitor\.max_live_rmse is for regression"):
        _spec("binary", monitor={"max_live_rmse": 3.0})


def test_encode_target_per_task() -> None:
    binary = _spec("binary", data__classes=["no", "yes"], data__positive_label="yes")
    assert tasks.encode_target(binary, ["yes", "no", "yes"]).tolist() == [1, 0, 1]
    multi = _spec("multiclass", data__classes=[3, 5, 7])
    # "5" as a CSV reads it is the class 5; 7.0 from a float column is the class 7
    assert tasks.encode_target(multi, pd.Series([3, "5", 7.0], dtype=object)).tolist() == [0, 1, 2]
    with pytest.raises(tasks.TargetError, match=r"labels \['4'\] outside data.classes \[3, 5, 7\]"):
        tasks.encode_target(multi, [3, 4])
    reg = _spec("regression")
    assert tasks.encode_target(reg, ["1.5", 2]).tolist() == [1.5, 2.0]
    with pytest.raises(tasks.TargetError, match="non-numeric values"):
        tasks.encode_target(reg, ["x", 1])


def test_the_output_contract_per_task() -> None:
    multi = _spec("multiclass", data__classes=["cat", "dog", "emu"])
    frame = tasks.outputs(multi, np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]))
    assert list(frame.columns) == ["prediction", "probability_cat", "probability_dog", "probability_emu"]
    assert frame["prediction"].tolist() == ["dog", "cat"]
    tasks.check_outputs(multi, frame, 2)
    assert tasks.output_types(multi)[0] == ("prediction", "string")

    ints = _spec("multiclass", data__classes=[0, 1, 2])
    assert tasks.outputs(ints, np.eye(3))["prediction"].dtype == np.int64
    assert tasks.output_types(ints)[0] == ("prediction", "long")

    reg = _spec("regression")
    out = configured_output_frame(tasks.model_config(reg), [[1.5], [2.5]])
    assert list(out.columns) == ["prediction"] and out["prediction"].tolist() == [1.5, 2.5]
    tasks.check_outputs(reg, out, 2)


def test_check_outputs_names_what_is_wrong() -> None:
    multi = _spec("multiclass", data__classes=["a", "b"])
    frame = tasks.outputs(multi, np.array([[0.2, 0.8]]))
    with pytest.raises(tasks.OutputContractError, match="do not sum to 1"):
        tasks.check_outputs(multi, frame.assign(probability_a=0.5), 1)
    with pytest.raises(tasks.OutputContractError, match="not its most probable class"):
        tasks.check_outputs(multi, frame.assign(prediction="a"), 1)
    with pytest.raises(
        tasks.OutputContractError, match=r"the regression output contract is \['prediction'\]"
    ):
        tasks.check_outputs(_spec("regression"), frame, 1)


def test_metrics_per_task_match_sklearn() -> None:
    from sklearn import metrics as skm

    multi = _spec("multiclass", data__classes=["a", "b", "c"])
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    scored = tasks.metrics(multi, y, p)
    assert set(scored) == set(TASK_METRICS["multiclass"])
    assert scored["accuracy"] == pytest.approx(0.75)
    assert scored["f1_macro"] == pytest.approx(skm.f1_score(y, p.argmax(1), average="macro"))
    assert scored["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))

    reg = _spec("regression")
    scored = tasks.metrics(reg, [1.0, 2.0, 4.0], [1.0, 3.0, 4.0])
    assert scored["rmse"] == pytest.approx(np.sqrt(1 / 3))
    assert scored["mae"] == pytest.approx(1 / 3)
    assert tasks.improvement("rmse", 1.0, 2.0) == 1.0  # lower is better
