"""Permutation importance of multiclass and regression models (the task's metric on its scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conveyor import tasks
from conveyor.evaluation.explain import importance_markdown, permutation_importance_table
from unit.evaluation.task_support import (
    MC_TRUE,
    REG_TRUE,
    make_frame,
    make_spec,
    multiclass_proba,
    regression_prediction,
)

pytestmark = pytest.mark.unit


def _regression_model(frame: pd.DataFrame) -> np.ndarray:
    """The true regression model: reads x1 (weight 3) and x2 (weight -2), never plan."""
    return regression_prediction(REG_TRUE, frame)


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2", "mape"])
def test_regression_importance_ranks_the_features_the_model_reads(metric: str) -> None:
    spec = make_spec("regression")
    frame = make_frame("regression", rows=400, seed=0)
    X, y = frame[["x1", "x2", "plan"]], tasks.encode_target(spec, frame["label"])
    table = permutation_importance_table(_regression_model, X, y, metric, spec=spec, n_repeats=4, seed=2)
    means = table.means()
    assert [f.feature for f in table.features] == ["x1", "x2", "plan"]  # |3| > |-2| > unread
    assert means["x1"] > means["x2"] > 0  # positive = worse without it, for error metrics too
    assert means["plan"] == 0.0
    assert table.baseline == pytest.approx(tasks.metric(spec, metric, y, _regression_model(X)))
    if metric == "rmse":
        # the rise of the error when x1 is shuffled: about sqrt(1 + 4 + 2 * 9) - 1 for N(0, 1) features
        assert means["x1"] == pytest.approx(np.sqrt(23) - table.baseline, rel=0.25)
        assert "drop in rmse (rise of the error)" in importance_markdown({"challenger": table})


def test_multiclass_importance_on_the_probability_matrix() -> None:
    spec = make_spec("multiclass")
    frame = make_frame("multiclass", rows=400, seed=1)
    X, y = frame[["x1", "x2", "plan"]], tasks.encode_target(spec, frame["label"])

    def model(features: pd.DataFrame) -> np.ndarray:
        return multiclass_proba(MC_TRUE, features)

    for metric in ("accuracy", "log_loss", "roc_auc_ovr"):
        table = permutation_importance_table(model, X, y, metric, spec=spec, n_repeats=3, seed=0)
        means = table.means()
        assert means["x1"] > 0.05 and means["x2"] > 0.05 and means["plan"] == 0.0, metric
        assert table.baseline == pytest.approx(tasks.metric(spec, metric, y, model(X)))


def test_a_metric_of_another_task_is_refused() -> None:
    spec = make_spec("regression")
    frame = make_frame("regression", rows=20)
    with pytest.raises(ValueError, match=r"unknown metric 'roc_auc' for a regression model; use one of"):
        permutation_importance_table(_regression_model, frame[["x1"]], frame["label"], "roc_auc", spec=spec)
