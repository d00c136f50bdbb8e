"""A scikit-learn ``trainer.kind: python`` example: histogram gradient boosting behind Conveyor's
preprocessing, for any task type (a classifier for ``binary``/``multiclass``, a regressor for
``regression``).

Spec::

    trainer:
      kind: python
      entrypoint: conveyor_examples.sklearn_gbm:train
      seed: 7
      params: {max_iter: 200, learning_rate: 0.1, max_leaf_nodes: 15}
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline

from conveyor.training import TrainContext


def train(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Pipeline:
    """Fit ``preprocess → HistGradientBoosting{Classifier,Regressor}`` on ``train_df``; Conveyor logs and
    scores it.

    ``params`` (the spec's ``trainer.params``) go to the estimator; ``eval_df`` is not used here
    (Conveyor scores the returned model on it). The target (``context.labels``) is already encoded for
    ``context.task``: 0/1, class indices, or values.
    """
    estimator = (
        HistGradientBoostingRegressor if context.task == "regression" else HistGradientBoostingClassifier
    )
    model = estimator(
        max_iter=int(params.get("max_iter", 200)),
        learning_rate=float(params.get("learning_rate", 0.1)),
        max_leaf_nodes=int(params.get("max_leaf_nodes", 15)),
        random_state=seed,
    )
    pipeline = Pipeline([("preprocess", context.sklearn_preprocessor()), ("model", model)])
    pipeline.fit(context.features(train_df), context.labels(train_df))
    return pipeline
