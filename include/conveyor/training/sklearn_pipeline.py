"""scikit-learn Pipeline trainer: impute + scale numerics, one-hot categoricals, then a linear model.

- ``binary`` and ``multiclass``: ``LogisticRegression`` (multinomial over the k classes), params
  ``C`` (inverse regularisation strength) and ``max_iter``;
- ``regression``: ``Ridge``, param ``alpha`` (L2 regularisation strength).

Other ``trainer.params`` are ignored. The fitted pipeline is saved with skops (no pickle) and served
through the models-from-code file ``pyfunc_sklearn.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from conveyor.config import ModelSpec
from conveyor.training.base import TrainResult
from conveyor.training.fitting import SKOPS_FILE as SKOPS_FILE  # the file name inside the model
from conveyor.training.fitting import fit_and_log
from conveyor.training.interface import Fitted, TrainContext

TRAINER = "sklearn_pipeline"
#: Missing categories are one category of their own.
MISSING_CATEGORY = "__missing__"

#: The classifier's params (binary, multiclass) and their defaults.
DEFAULT_PARAMS: dict[str, Any] = {"C": 1.0, "max_iter": 1000}
#: The regressor's params (regression) and their defaults.
REGRESSION_DEFAULT_PARAMS: dict[str, Any] = {"alpha": 1.0}


def default_params(task: str = "binary") -> dict[str, Any]:
    """The params the trainer reads for ``task``, with their defaults."""
    return dict(REGRESSION_DEFAULT_PARAMS if task == "regression" else DEFAULT_PARAMS)


def effective_params(params: dict[str, Any], seed: int, task: str = "binary") -> dict[str, Any]:
    """The spec's trainer params over the task's defaults, plus the seed."""
    return {**default_params(task), **params, "seed": seed}


def build_preprocessor(spec: ModelSpec) -> Any:
    """The unfitted ColumnTransformer: numerics imputed (median) and scaled, categoricals one-hot.

    A missing category is a category of its own; values outside the spec's categories are ignored.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers: list[tuple[str, Any, list[str]]] = []
    if spec.numeric_features:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("numeric", numeric, [f.name for f in spec.numeric_features]))
    if spec.categorical_features:
        categorical = Pipeline(
            [
                (
                    "impute",
                    SimpleImputer(missing_values=None, strategy="constant", fill_value=MISSING_CATEGORY),
                ),
                (
                    "one_hot",
                    OneHotEncoder(
                        categories=[list(f.categories) for f in spec.categorical_features],
                        handle_unknown="ignore",
                    ),
                ),
            ]
        )
        transformers.append(("categorical", categorical, [f.name for f in spec.categorical_features]))
    return ColumnTransformer(transformers)


def build_pipeline(spec: ModelSpec, params: dict[str, Any]) -> Any:
    """The unfitted Pipeline: :func:`build_preprocessor` → LogisticRegression (classification) or
    Ridge (regression); ``params`` as :func:`effective_params` gives them."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline

    if spec.task == "regression":
        return Pipeline(
            [("preprocess", build_preprocessor(spec)), ("regressor", Ridge(alpha=float(params["alpha"])))]
        )
    classifier = LogisticRegression(
        C=float(params["C"]), max_iter=int(params["max_iter"]), random_state=int(params["seed"])
    )
    return Pipeline([("preprocess", build_preprocessor(spec)), ("classifier", classifier)])


def fit_sklearn_pipeline(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Fitted:
    """The ``sklearn_pipeline`` fit function (see :mod:`conveyor.training.interface`) for any task."""
    params = effective_params(params, seed, context.task)
    pipeline = build_pipeline(context.spec, params)
    started = time.perf_counter()
    pipeline.fit(context.features(train_df), context.labels(train_df))
    return Fitted(model=pipeline, params=params, train_seconds=time.perf_counter() - started)


def train_sklearn_pipeline(
    spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, run_id: str
) -> TrainResult:
    """Fit the spec's pipeline, log it as a pyfunc into run ``run_id`` and score it on ``eval_df``.

    Raises:
        FeatureSchemaError: the frames lack features or a target of the spec's task.
    """
    return fit_and_log(spec, fit_sklearn_pipeline, train_df, eval_df, run_id, trainer=TRAINER)
