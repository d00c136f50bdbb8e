"""scikit-learn Pipeline trainer: impute + scale numerics, one-hot categoricals, logistic regression.

The fitted pipeline is saved with skops (no pickle) and served through the models-from-code file
``pyfunc_sklearn.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conveyor.config import ModelSpec
from conveyor.evaluation.metrics import binary_metrics
from conveyor.training.base import (
    GOLDEN_ROWS_FILE,
    REFERENCE_FILE,
    TrainResult,
    feature_frame,
    files_size,
    input_example,
    log_pyfunc_model,
    model_config_for,
    pinned_requirements,
    target_vector,
    write_golden_rows,
    write_reference,
)

TRAINER = "sklearn_pipeline"
SKOPS_FILE = "pipeline.skops"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_sklearn.py")
#: Missing categories are one category of their own.
MISSING_CATEGORY = "__missing__"

DEFAULT_PARAMS: dict[str, Any] = {"C": 1.0, "max_iter": 1000}


def effective_params(spec: ModelSpec) -> dict[str, Any]:
    """The spec's trainer params over the defaults, plus the seed."""
    return {**DEFAULT_PARAMS, **spec.trainer.params, "seed": spec.trainer.seed}


def build_pipeline(spec: ModelSpec, params: dict[str, Any]) -> Any:
    """The unfitted Pipeline: ColumnTransformer (numerics, categoricals) → LogisticRegression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
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
    classifier = LogisticRegression(
        C=float(params["C"]), max_iter=int(params["max_iter"]), random_state=int(params["seed"])
    )
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("classifier", classifier)])


def train_sklearn_pipeline(
    spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, run_id: str
) -> TrainResult:
    """Fit the spec's pipeline, log it as a pyfunc into run ``run_id`` and score it on ``eval_df``.

    Raises:
        FeatureSchemaError: the frames lack features or a binary target.
    """
    import skops.io
    from mlflow.pyfunc import PythonModelContext

    from conveyor.training.pyfunc_sklearn import SklearnBinaryClassifier

    params = effective_params(spec)
    train_features = feature_frame(spec, train_df)
    y_train = target_vector(spec, train_df)
    eval_features = feature_frame(spec, eval_df)
    y_eval = target_vector(spec, eval_df)

    pipeline = build_pipeline(spec, params)
    started = time.perf_counter()
    pipeline.fit(train_features, y_train)
    train_seconds = time.perf_counter() - started

    config = model_config_for(spec)
    with tempfile.TemporaryDirectory(prefix="conveyor-sklearn-") as tmp:
        folder = Path(tmp)
        model_path = folder / SKOPS_FILE
        skops.io.dump(pipeline, model_path)

        # Score and write golden rows through the very class that serves the model.
        served = SklearnBinaryClassifier()
        served.load_context(
            PythonModelContext(artifacts={"sklearn_model": str(model_path)}, model_config=config)
        )
        eval_proba = served.predict(None, eval_features)["probability"].to_numpy()
        metrics = binary_metrics(y_eval, np.asarray(eval_proba))

        golden = write_golden_rows(
            spec, lambda rows: served.predict(None, rows), eval_df, folder / GOLDEN_ROWS_FILE
        )
        reference = write_reference(spec, train_df, folder / REFERENCE_FILE)
        info = log_pyfunc_model(
            spec,
            PYFUNC_CODE,
            {"sklearn_model": model_path, "golden_rows": golden, "reference": reference},
            run_id,
            pip_requirements=pinned_requirements("scikit-learn", "scipy", "skops"),
            example=input_example(spec, eval_df),
            model_config=config,
            tags={"conveyor.trainer": TRAINER, "conveyor.compression": "none"},
        )
        size = files_size([model_path])

    return TrainResult(
        run_id=run_id,
        model_uri=info.model_uri,
        trainer=TRAINER,
        metrics=metrics,
        params=params,
        n_train=len(train_features),
        n_eval=len(eval_features),
        train_seconds=train_seconds,
        model_size_bytes=size,
    )
