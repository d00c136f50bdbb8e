"""``trainer.kind: python``: the examples train through ``train``; bad entrypoints fail permanently."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from conveyor.config import ModelSpec, TrainerSpec, load_spec
from conveyor.errors import PermanentError
from conveyor.training import (
    EntrypointError,
    PredictionContractError,
    UnsupportedModelError,
    train,
)
from conveyor.training.sklearn_pipeline import train_sklearn_pipeline

from .support import breast_cancer_frame, cancer_spec, churn_frame

pytestmark = pytest.mark.unit

CANCER = breast_cancer_frame()
CANCER_TRAIN, CANCER_EVAL = CANCER.iloc[::2], CANCER.iloc[1::2]
CHURN = churn_frame(600, seed=4)
CHURN_TRAIN, CHURN_EVAL = CHURN.iloc[:480], CHURN.iloc[480:]


def python_spec(entrypoint: str, base: str = "breast_cancer", **params: Any) -> ModelSpec:
    spec = load_spec(base)
    trainer = TrainerSpec(kind="python", entrypoint=entrypoint, seed=7, params=params)
    return spec.model_copy(update={"trainer": trainer, "tuning": None})


def test_spec_requires_a_well_formed_entrypoint_for_python_only() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"needs trainer.entrypoint"):
        TrainerSpec(kind="python")
    with pytest.raises(pydantic.ValidationError, match=r"not 'package.module:function'"):
        TrainerSpec(kind="python", entrypoint="conveyor_examples/sklearn_gbm.py")
    with pytest.raises(pydantic.ValidationError, match=r"only read with trainer.kind 'python'"):
        TrainerSpec(kind="sklearn_pipeline", entrypoint="conveyor_examples.sklearn_gbm:train")
    assert TrainerSpec(kind="python", entrypoint="a.b_c:fit").entrypoint == "a.b_c:fit"


def test_sklearn_example_trains_logs_and_serves_like_a_built_in(
    new_run: Callable[[], str], tracking: dict[str, str], check_model_contract: Callable[..., Any]
) -> None:
    from mlflow import MlflowClient

    spec = python_spec("conveyor_examples.sklearn_gbm:train", max_iter=50)
    run_id = new_run()

    result = train(spec, CANCER_TRAIN, CANCER_EVAL, run_id)

    assert result.trainer == "python" and result.model_uri.startswith("models:/")
    assert result.metrics["roc_auc"] > 0.95
    assert result.params == {"max_iter": 50, "seed": 7, "entrypoint": "conveyor_examples.sklearn_gbm:train"}
    check_model_contract(spec, result.model_uri, CANCER_EVAL)
    client = MlflowClient(tracking["uri"])
    run = client.get_run(run_id)
    assert run.data.params["trainer.kind"] == "python"
    assert run.data.params["trainer.entrypoint"] == "conveyor_examples.sklearn_gbm:train"
    logged = client.get_logged_model(result.model_uri.removeprefix("models:/"))
    assert logged.tags["conveyor.trainer"] == "python"
    assert logged.tags["conveyor.entrypoint"] == "conveyor_examples.sklearn_gbm:train"


def test_keras_example_with_categoricals_trains_logs_and_serves(
    new_run: Callable[[], str], check_model_contract: Callable[..., Any], tmp_path: Path
) -> None:
    spec = python_spec("conveyor_examples.keras_custom:train", base="churn", epochs=4, units=8)

    result = train(spec, CHURN_TRAIN, CHURN_EVAL, new_run())

    assert result.trainer == "python" and result.metrics["roc_auc"] > 0.6
    model = check_model_contract(spec, result.model_uri, CHURN_EVAL)
    rows = CHURN_EVAL[spec.feature_names].head(2).copy()
    rows.loc[rows.index[0], "contract"] = "lifetime"  # unknown: the out-of-vocabulary slot
    rows.loc[rows.index[1], "total_charges"] = np.nan  # imputed inside the model
    assert np.isfinite(model.predict(rows)["probability"]).all()
    artifacts = tmp_path / "contract-model" / "artifacts"  # where check_model_contract downloaded it
    # built on context.keras_preprocessing, so it carries what TFLite compression needs
    assert sorted(p.name for p in artifacts.iterdir()) == [
        "golden_rows.json",
        "model.keras",
        "preprocessing.json",
        "reference.parquet",
    ]


def test_a_built_in_fit_function_is_a_valid_entrypoint(new_run: Callable[[], str]) -> None:
    spec = python_spec("conveyor.training.sklearn_pipeline:fit_sklearn_pipeline")
    built_in = cancer_spec().model_copy(update={"trainer": TrainerSpec(kind="sklearn_pipeline", seed=7)})
    as_python = train(spec, CANCER_TRAIN, CANCER_EVAL, new_run())
    as_built_in = train_sklearn_pipeline(built_in, CANCER_TRAIN, CANCER_EVAL, new_run())
    assert as_python.metrics == as_built_in.metrics


@pytest.mark.parametrize(
    ("entrypoint", "error", "message"),
    [
        ("no_such_package.models:train", EntrypointError, r"no module 'no_such_package'"),
        ("conveyor_examples.sklearn_gbm:fit", EntrypointError, r"has no function 'fit'"),
        ("unit.training.entrypoints:NOT_A_FUNCTION", EntrypointError, r"is a int, not a function"),
        (
            "unit.training.entrypoints:raises",
            EntrypointError,
            r"raised ValueError: the user.s code broke \(at .*entrypoints\.py:\d+ in raises: raise Val",
        ),
        ("unit.training.entrypoints:returns_string", UnsupportedModelError, r"returned builtins\.str"),
        (
            "unit.training.entrypoints:returns_regressor",
            UnsupportedModelError,
            r"Pipeline, which has no predict_proba",
        ),
        ("unit.training.entrypoints:returns_unfitted", UnsupportedModelError, r"unfitted LogisticRegression"),
        (
            "unit.training.entrypoints:keras_scores_not_probabilities",
            PredictionContractError,
            r"outside \[0, 1\]",
        ),
        (
            "unit.training.entrypoints:keras_two_outputs",
            PredictionContractError,
            r"output shape \(None, 2\); .* Dense\(1, activation='sigmoid'\)",
        ),
        (
            "unit.training.entrypoints:keras_one_matrix_input",
            UnsupportedModelError,
            r"taking inputs \['x'\]; .* one named input",
        ),
    ],
)
def test_bad_entrypoints_and_models_fail_permanently_naming_the_entrypoint(
    entrypoint: str, error: type[Exception], message: str, new_run: Callable[[], str]
) -> None:
    with pytest.raises(error, match=message) as caught:
        train(python_spec(entrypoint), CANCER_TRAIN, CANCER_EVAL, new_run())
    assert isinstance(caught.value, PermanentError)
    assert f"trainer entrypoint {entrypoint!r}" in str(caught.value)


def test_user_exception_is_chained_for_the_full_traceback(new_run: Callable[[], str]) -> None:
    with pytest.raises(EntrypointError) as caught:
        train(python_spec("unit.training.entrypoints:raises"), CANCER_TRAIN, CANCER_EVAL, new_run())
    assert isinstance(caught.value.__cause__, ValueError)
