"""Permutation importance for the gate report, on tiny synthetic data."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor.evaluation.explain import (
    FeatureImportance,
    FeatureScore,
    _sort_key,
    importance_markdown,
    permutation_importance_table,
)
from conveyor.evaluation.metrics import binary_metrics

pytestmark = pytest.mark.unit


def _data(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """``signal`` decides the label (plus a little noise); ``noise`` and ``plan`` carry nothing."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    X = pd.DataFrame(
        {
            "noise": rng.normal(size=rows),
            "signal": signal,
            "plan": rng.choice(["basic", "pro"], size=rows),  # a string column the model ignores
        }
    )
    y = (signal + 0.3 * rng.normal(size=rows) > 0).astype(int)
    return X, y


def _model(X: pd.DataFrame) -> np.ndarray:
    """P(label == 1) from ``signal`` only, like a fitted logistic regression."""
    return 1.0 / (1.0 + np.exp(-3.0 * X["signal"].to_numpy(dtype=float)))


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    return _data()


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "log_loss"])
def test_informative_feature_ranks_above_noise(data: tuple[pd.DataFrame, np.ndarray], metric: str) -> None:
    X, y = data
    table = permutation_importance_table(_model, X, y, metric, n_repeats=5, seed=1)
    means = table.means()
    assert table.features[0].feature == "signal"
    assert means["signal"] > 0.1  # positive = worse without it, for log_loss too (the loss rises)
    # the model never reads them: shuffling them changes no prediction at all
    assert means["noise"] == 0.0 and means["plan"] == 0.0
    by_name = {f.feature: f for f in table.features}
    assert by_name["noise"].std == 0.0 and by_name["signal"].std >= 0.0
    assert (table.metric, table.n_repeats, table.n_rows, table.seed) == (metric, 5, len(X), 1)
    # baseline in the metric's own orientation (log_loss: the loss itself, positive)
    assert table.baseline == pytest.approx(binary_metrics(y, _model(X))[metric])


def test_log_loss_importance_is_the_rise_of_the_loss(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    table = permutation_importance_table(_model, X, y, "log_loss", n_repeats=3, seed=4)
    rng = np.random.default_rng(0)
    shuffled = X.assign(signal=rng.permutation(X["signal"].to_numpy()))
    loss_shuffled = binary_metrics(y, _model(shuffled))["log_loss"]
    assert loss_shuffled > table.baseline > 0
    # same order of magnitude as one hand-made shuffle, and of the right sign
    assert table.means()["signal"] == pytest.approx(loss_shuffled - table.baseline, rel=0.5)


def test_with_a_fitted_sklearn_model() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _data(rows=300, seed=3)
    numeric = X[["noise", "signal"]]
    model = LogisticRegression().fit(numeric, y)
    table = permutation_importance_table(
        lambda frame: model.predict_proba(frame)[:, 1], numeric, y, "roc_auc", n_repeats=10, seed=0
    )
    means = table.means()
    assert [f.feature for f in table.features] == ["signal", "noise"]
    assert means["signal"] > 0.2
    assert abs(means["noise"]) < 0.02  # a tiny learnt weight: about 0


def test_deterministic_for_a_seed(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data

    def noisy_model(frame: pd.DataFrame) -> np.ndarray:  # reads both numeric columns
        return _model(frame) * 0.8 + 0.2 / (1.0 + np.exp(-frame["noise"].to_numpy(dtype=float)))

    kwargs: dict[str, Any] = {"n_repeats": 4, "max_rows": 250}
    first = permutation_importance_table(noisy_model, X, y, "log_loss", seed=7, **kwargs)
    again = permutation_importance_table(noisy_model, X, y, "log_loss", seed=7, **kwargs)
    other = permutation_importance_table(noisy_model, X, y, "log_loss", seed=8, **kwargs)
    assert first == again
    assert first.model_dump() != other.model_dump()
    assert first.n_rows == 250


def test_max_rows_samples_rows_with_their_labels() -> None:
    """The sample keeps each row with its label (a shuffled pairing would make the baseline ~0.5)."""
    X, y = _data(rows=1000, seed=5)
    X.index = np.arange(5000, 6000)[::-1]  # a non-positional index must not matter
    table = permutation_importance_table(_model, X, y, "roc_auc", n_repeats=2, seed=0, max_rows=120)
    assert table.n_rows == 120
    assert table.baseline > 0.9
    assert table.features[0].feature == "signal"


def test_model_sees_the_columns_and_dtypes(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    X = X.assign(plan=X["plan"].astype("category"), region=pd.array(X["plan"], dtype="string"))
    seen: list[tuple[list[str], list[str]]] = []

    def model(frame: pd.DataFrame) -> np.ndarray:
        seen.append((list(frame.columns), [str(t) for t in frame.dtypes]))
        return _model(frame)

    permutation_importance_table(model, X, y, "accuracy", n_repeats=2)
    assert len(seen) == 2 + 4 * 2  # baseline twice + features x repeats (the docstring's cost)
    assert all(s == (list(X.columns), [str(t) for t in X.dtypes]) for s in seen)


def test_one_class_labels_give_nan_importance(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, _ = data
    table = permutation_importance_table(_model, X, np.ones(len(X)), "roc_auc", n_repeats=2)
    assert math.isnan(table.baseline)
    assert len(table.features) == 3 and all(math.isnan(f.mean) for f in table.features)
    # NaN-safe JSON (report.json)
    dumped = json.loads(table.model_dump_json())
    assert dumped["baseline"] == "NaN" and {f["mean"] for f in dumped["features"]} == {"NaN"}


def test_nan_importance_sorts_last() -> None:
    scores = [
        FeatureScore(feature="a", mean=math.nan, std=math.nan),
        FeatureScore(feature="b", mean=-0.01, std=0.0),
        FeatureScore(feature="c", mean=0.2, std=0.01),
    ]
    assert [s.feature for s in sorted(scores, key=_sort_key)] == ["c", "b", "a"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "auc"}, "unknown metric"),
        ({"n_repeats": 0}, "n_repeats"),
        ({"max_rows": 0}, "max_rows"),
        ({"y": np.zeros(3)}, "labels"),
        ({"X": pd.DataFrame(), "y": np.zeros(0)}, "rows and columns"),
        ({"X": pd.DataFrame(index=range(4)), "y": np.zeros(4)}, "rows and columns"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    X, y = _data(rows=10)
    args: dict[str, Any] = {"X": X, "y": y, "metric": "roc_auc", **kwargs}
    with pytest.raises(ValueError, match=message):
        permutation_importance_table(_model, **args)


def _table(metric: str, scores: dict[str, tuple[float, float]], baseline: float = 0.8) -> FeatureImportance:
    return FeatureImportance(
        metric=metric,
        n_repeats=5,
        n_rows=300,
        baseline=baseline,
        features=[FeatureScore(feature=f, mean=m, std=s) for f, (m, s) in scores.items()],
    )


def test_markdown_has_a_column_per_model_and_a_row_per_feature() -> None:
    md = importance_markdown(
        {
            "challenger": _table("roc_auc", {"signal": (0.25, 0.01), "noise": (0.0, 0.0)}, 0.91),
            "champion v3": _table(
                "roc_auc", {"signal": (0.2, 0.02), "tenure|months": (0.05, math.nan)}, 0.88
            ),
        }
    )
    lines = md.splitlines()
    assert lines[0] == "| feature | challenger | champion v3 |"
    assert lines[1] == "|---|---:|---:|"
    # first table's order, then the features only a later table has; "—" where a model lacks one
    assert lines[2] == "| `signal` | +0.2500 ± 0.0100 | +0.2000 ± 0.0200 |"
    assert lines[3] == "| `noise` | +0.0000 ± 0.0000 | — |"
    assert lines[4] == "| `tenure\\|months` | — | +0.0500 ± NaN |"  # the pipe cannot break the row
    assert lines[5] == ""
    assert "drop in roc_auc when the feature's values are shuffled" in lines[6]
    assert "5 shuffles of 300 rows" in lines[6]
    assert "Unshuffled roc_auc: challenger 0.9100, champion v3 0.8800." in lines[6]
    assert len(lines) == 7


def test_markdown_lower_is_better_nan_and_mixed_metrics() -> None:
    md = importance_markdown(
        {
            "challenger": _table("log_loss", {"x": (math.nan, math.nan)}, 0.41),
            "champion": _table("roc_auc", {"x": (0.1, 0.0)}, math.nan),
        }
    )
    assert "| `x` | NaN | +0.1000 ± 0.0000 |" in md
    assert "drop in log_loss (rise of the loss)" in md and "drop in roc_auc when" in md
    assert "Unshuffled metric: challenger (log_loss) 0.4100, champion (roc_auc) NaN." in md


def test_markdown_without_tables() -> None:
    assert importance_markdown({}) == "_No permutation importance was measured._"
