"""Permutation feature importance of a model on the evaluation snapshot, for the gate report.

A feature's importance is how much the model's score on ``metric`` drops when that one column's
values are shuffled across rows (the other columns and the labels stay in place): a model that
ignores a feature loses nothing, one that leans on it loses a lot. The arithmetic is
scikit-learn's :func:`sklearn.inspection.permutation_importance`; the model is any function from a
feature DataFrame to its scores in ``conveyor.tasks``' form (binary P(label == 1), multiclass the
``(n, k)`` class probabilities, regression the predicted values), scored with
``conveyor.tasks.metric_function`` on the spec's task, so pyfunc models of every flavor and task
work, on DataFrames with numeric and string (categorical) columns alike (scikit-learn shuffles a
DataFrame's columns in place and keeps their dtypes).

Cost: ``2 + n_features * n_repeats`` predictions on at most ``max_rows`` rows (the unshuffled
baseline is scored twice: once for the table, once inside scikit-learn); for a scikit-learn
Pipeline on 700 rows x 14 features with ``n_repeats=5`` that is 72 predictions, a fraction of a
second.

Importance is evidence for people reading the report; it never decides the gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from conveyor.config import LOWER_IS_BETTER
from conveyor.evaluation.gate import JsonFloat
from conveyor.evaluation.metrics import task_of

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec


class FeatureScore(BaseModel):
    """One feature's importance.

    Attributes:
        feature: The column shuffled.
        mean: Mean drop of the metric over the repeats (positive = the model relies on it; around
            0 = it does not; negative = shuffling it happened to help, i.e. noise).
        std: Standard deviation of the drop over the repeats.
    """

    model_config = ConfigDict(frozen=True)

    feature: str
    mean: JsonFloat
    std: JsonFloat


class FeatureImportance(BaseModel):
    """A model's permutation importance table (``report.json`` holds it as JSON, NaN-safe).

    Attributes:
        metric: The metric whose drop is measured (oriented: for lower-is-better metrics such as
            ``log_loss`` or ``rmse`` the drop is the *increase* of the error, so positive always
            means "worse without the feature").
        n_repeats: Shuffles per feature.
        n_rows: Rows scored (the snapshot, sampled down to ``max_rows``).
        seed: Seed of the row sample and the shuffles.
        baseline: The metric on those rows, nothing shuffled (its usual orientation).
        features: One entry per feature, most important first (NaN last).
    """

    model_config = ConfigDict(frozen=True)

    metric: str
    n_repeats: int
    n_rows: int
    seed: int = 0
    baseline: JsonFloat = math.nan
    features: list[FeatureScore]

    def means(self) -> dict[str, float]:
        """Mean importance by feature."""
        return {f.feature: f.mean for f in self.features}


class _ScoreEstimator:
    """The least ``permutation_importance`` accepts: a "fitted estimator" (``fit``) to hand to the scorer."""

    def __init__(self, predict: Callable[[pd.DataFrame], np.ndarray], task: str) -> None:
        self._predict = predict
        self._task = task

    def fit(self, X: Any, y: Any = None) -> _ScoreEstimator:
        return self

    def scores(self, X: pd.DataFrame) -> np.ndarray:
        """The model's scores: ``(n, k)`` for multiclass, ``(n,)`` otherwise."""
        scores = np.asarray(self._predict(X), dtype=float)
        return scores if self._task == "multiclass" else scores.ravel()


def _scorer(spec: ModelSpec, metric: str) -> Callable[[_ScoreEstimator, pd.DataFrame, np.ndarray], float]:
    """A scikit-learn scorer callable: ``metric`` of ``spec``'s task oriented so that higher is better."""
    from conveyor import tasks

    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def score(estimator: _ScoreEstimator, X: pd.DataFrame, y: np.ndarray) -> float:
        return sign * tasks.metric(spec, metric, y, estimator.scores(X))

    return score


def _sort_key(item: FeatureScore) -> tuple[bool, float]:
    return (math.isnan(item.mean), -item.mean if not math.isnan(item.mean) else 0.0)


def permutation_importance_table(
    predict: Callable[[pd.DataFrame], np.ndarray],
    X: pd.DataFrame,
    y: np.ndarray,
    metric: str,
    *,
    spec: ModelSpec | None = None,
    n_repeats: int = 5,
    seed: int = 0,
    max_rows: int = 2000,
) -> FeatureImportance:
    """Permutation importance of a model on ``X`` (scikit-learn's ``permutation_importance``).

    Args:
        predict: The model: a feature DataFrame (``X``'s columns and dtypes) to its scores per row
            (``conveyor.tasks.scores_of`` of its output: binary P(label == 1), multiclass ``(n, k)``
            class probabilities, regression the predicted values).
        X: The features (numeric and string/categorical columns; other dtypes as the model takes).
        y: Encoded labels (``conveyor.tasks.encode_target``), one per row of ``X``.
        metric: One of the task's metrics (``spec.metric_names``); the gate uses its primary metric.
        spec: The model's spec (task and classes); ``None``: binary.
        n_repeats: Shuffles per feature.
        seed: Seed of the row sample and the shuffles (the same inputs give the same table).
        max_rows: Score at most this many rows (a seeded sample without replacement; all rows when
            there are fewer).

    Returns:
        The table, most important feature first. With a metric undefined on the rows (ROC AUC when
        the labels hold one class) every importance is NaN.

    Raises:
        ValueError: unknown metric, no rows or columns, rows of ``X`` and ``y`` differ, or a bad
            ``n_repeats``/``max_rows``.
    """
    from sklearn.inspection import permutation_importance

    spec = task_of(spec)
    if metric not in spec.metric_names:
        raise ValueError(
            f"unknown metric {metric!r} for a {spec.task} model; use one of {list(spec.metric_names)}"
        )
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1, got {n_repeats}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    labels = np.asarray(y).ravel()
    if len(X) != labels.size:
        raise ValueError(f"X has {len(X)} rows but y has {labels.size} labels")
    if len(X) == 0 or X.shape[1] == 0:
        raise ValueError(f"permutation importance needs rows and columns, got shape {X.shape}")

    rows = len(X)
    if rows > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
        X, labels = X.iloc[keep], labels[keep]
    # A fresh positional index: scikit-learn re-aligns each shuffled column on it.
    frame = X.reset_index(drop=True)
    estimator = _ScoreEstimator(predict, spec.task)
    scorer = _scorer(spec, metric)
    baseline = scorer(estimator, frame, labels)
    result = permutation_importance(
        estimator,
        frame,
        labels,
        scoring=scorer,
        n_repeats=n_repeats,
        random_state=seed,
        n_jobs=None,  # in-process: a loaded model need not be picklable
    )
    features = sorted(
        (
            FeatureScore(feature=str(name), mean=float(mean), std=float(std))
            for name, mean, std in zip(
                frame.columns, result.importances_mean, result.importances_std, strict=True
            )
        ),
        key=_sort_key,
    )
    return FeatureImportance(
        metric=metric,
        n_repeats=n_repeats,
        n_rows=len(frame),
        seed=seed,
        baseline=-baseline if metric in LOWER_IS_BETTER else baseline,
        features=features,
    )


def _cell(score: FeatureScore | None) -> str:
    if score is None:
        return "—"
    if math.isnan(score.mean):
        return "NaN"
    std = "NaN" if math.isnan(score.std) else f"{score.std:.4f}"
    return f"{score.mean:+.4f} ± {std}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _rise(metric: str) -> str:
    if metric not in LOWER_IS_BETTER:
        return ""
    return " (rise of the loss)" if metric == "log_loss" else " (rise of the error)"


def importance_markdown(tables: Mapping[str, FeatureImportance]) -> str:
    """The importance tables as one Markdown table: a row per feature, a column per model label.

    Features come in the first table's order (most important first), then any feature only the
    other tables have. A sentence under the table says what the numbers are.
    """
    if not tables:
        return "_No permutation importance was measured._"
    by_label = {label: {f.feature: f for f in table.features} for label, table in tables.items()}
    order: list[str] = []
    for table in tables.values():
        order += [f.feature for f in table.features if f.feature not in order]
    labels = list(tables)
    lines = [
        "| feature | " + " | ".join(_escape(label) for label in labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for feature in order:
        cells = [_cell(by_label[label].get(feature)) for label in labels]
        lines.append(f"| `{_escape(feature)}` | " + " | ".join(cells) + " |")
    described = sorted({(t.metric, t.n_repeats, t.n_rows) for t in tables.values()})
    how = "; ".join(
        f"drop in {metric}{_rise(metric)} when the "
        f"feature's values are shuffled, mean ± std over {repeats} shuffles of {rows} rows"
        for metric, repeats, rows in described
    )
    metrics = {t.metric for t in tables.values()}
    baselines = ", ".join(
        f"{_escape(label)}{'' if len(metrics) == 1 else f' ({t.metric})'} "
        + ("NaN" if math.isnan(t.baseline) else f"{t.baseline:.4f}")
        for label, t in tables.items()
    )
    lines += [
        "",
        f"Importance = {how}. Higher = the model relies on the feature more; about 0 = it ignores it. "
        f"Unshuffled {'metric' if len(metrics) > 1 else next(iter(metrics))}: {baselines}.",
    ]
    return "\n".join(lines)
