"""scikit-learn Pipeline trainer: impute + scale numerics, one-hot categoricals, logistic regression.

The fitted pipeline is saved with skops (no pickle) and served through the models-from-code file
``pyfunc_sklearn.py``.
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

DEFAULT_PARAMS: dict[str, Any] = {"C": 1.0, "max_iter": 1000}


def effective_params(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The spec's trainer params over the defaults, plus the seed."""
    return {**DEFAULT_PARAMS, **params, "seed": seed}


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
    """The unfitted Pipeline: :func:`build_preprocessor` → LogisticRegression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    classifier = LogisticRegression(
        C=float(params["C"]), max_iter=int(params["max_iter"]), random_state=int(params["seed"])
    )
    return Pipeline([("preprocess", build_preprocessor(spec)), ("classifier", classifier)])


def fit_sklearn_pipeline(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Fitted:
    """The ``sklearn_pipeline`` fit function (see :mod:`conveyor.training.interface`)."""
    params = effective_params(params, seed)
    pipeline = build_pipeline(context.spec, params)
    started = time.perf_counter()
    pipeline.fit(context.features(train_df), context.labels(train_df))
    return Fitted(model=pipeline, params=params, train_seconds=time.perf_counter() - started)


def train_sklearn_pipeline(
    spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, run_id: str
) -> TrainResult:
    """Fit the spec's pipeline, log it as a pyfunc into run ``run_id`` and score it on ``eval_df``.

    Raises:
        FeatureSchemaError: the frames lack features or a binary target.
    """
    return fit_and_log(spec, fit_sklearn_pipeline, train_df, eval_df, run_id, trainer=TRAINER)
