"""Every trainer for every task type: multiclass (string classes) and regression (a diabetes-scale
target) train, log, load back and serve the task's output contract; a model of the wrong type fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor import tasks
from conveyor.config import TASK_METRICS
from conveyor.errors import PermanentError
from conveyor.training import (
    FeatureSchemaError,
    PredictionContractError,
    TrainContext,
    UnsupportedModelError,
    train,
)
from conveyor.training.base import labelled_frame, signature_for, target_vector, write_golden_rows
from conveyor.training.pyfunc_sklearn import class_columns, class_scores

from .support import TIERS, task_frame, task_spec

pytestmark = pytest.mark.unit

FRAMES = {task: task_frame(task, 600, seed=21) for task in ("multiclass", "regression")}
SPLITS = {task: (frame.iloc[:480], frame.iloc[480:]) for task, frame in FRAMES.items()}


def python_trainer(entrypoint: str, **params: Any) -> dict[str, Any]:
    return {"kind": "python", "entrypoint": entrypoint, "seed": 7, "params": params}


TRAINERS: dict[str, dict[str, Any]] = {
    "sklearn_pipeline": {"kind": "sklearn_pipeline", "seed": 3},
    "keras_mlp": {
        "kind": "keras_mlp",
        "seed": 3,
        "params": {"hidden_units": [16], "epochs": 10, "batch_size": 32, "learning_rate": 0.01},
    },
    "sklearn_gbm": python_trainer("conveyor_examples.sklearn_gbm:train", max_iter=30),
    "keras_custom": python_trainer("conveyor_examples.keras_custom:train", epochs=10, units=8),
}


@pytest.mark.parametrize("trainer", list(TRAINERS))
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_every_trainer_trains_logs_and_serves_the_task(
    task: str,
    trainer: str,
    new_run: Callable[[], str],
    tracking: dict[str, str],
    check_model_contract: Callable[..., Any],
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    spec = task_spec(task, TRAINERS[trainer])
    train_df, eval_df = SPLITS[task]

    result = train(spec, train_df, eval_df, new_run())

    assert set(result.metrics) == set(TASK_METRICS[task])
    if task == "multiclass":
        assert result.metrics["accuracy"] > 0.6, result.metrics  # chance is about 0.39
    else:  # learnt on the target's own scale (25..400), not near 0
        assert result.metrics["r2"] > 0.6, result.metrics
    model = check_model_contract(spec, result.model_uri, eval_df)
    out = model.predict(eval_df[spec.feature_names])
    y = tasks.encode_target(spec, eval_df["outcome"])
    assert tasks.metrics(spec, y, tasks.scores_of(spec, out)) == pytest.approx(result.metrics, rel=1e-5)

    golden = json.loads((tmp_path / "contract-model" / "artifacts" / "golden_rows.json").read_text())
    if task == "multiclass":
        assert list(golden["outputs"]) == ["prediction", *(f"probability_{c}" for c in TIERS)]
        assert set(golden["outputs"]["prediction"]) <= set(TIERS)
    else:
        assert list(golden["outputs"]) == ["prediction"]
        assert all(isinstance(v, float) for v in golden["outputs"]["prediction"])
    if trainer == "sklearn_pipeline":
        params = MlflowClient(tracking["uri"]).get_run(result.run_id).data.params
        if task == "regression":
            assert params["trainer.alpha"] == "1.0" and "trainer.C" not in params
        else:
            assert params["trainer.C"] == "1.0" and "trainer.alpha" not in params


def test_a_class_absent_from_training_gets_probability_zero(
    new_run: Callable[[], str], check_model_contract: Callable[..., Any]
) -> None:
    spec = task_spec("multiclass", TRAINERS["sklearn_pipeline"])
    train_df, eval_df = SPLITS["multiclass"]

    result = train(spec, train_df[train_df["outcome"] != "mid"], eval_df, new_run())

    out = check_model_contract(spec, result.model_uri, eval_df).predict(eval_df[spec.feature_names])
    assert (out["probability_mid"] == 0).all()
    assert "mid" not in set(out["prediction"])


@pytest.mark.parametrize(
    ("task", "function", "error", "message"),
    [
        (
            "regression",
            "returns_classifier",
            UnsupportedModelError,
            r"returned a Pipeline, a classifier .*: return a regressor",
        ),
        (
            "multiclass",
            "returns_regressor",
            UnsupportedModelError,
            r"Pipeline, which has no predict_proba: a multiclass model must give class probabilities",
        ),
        (
            "multiclass",
            "returns_label_classifier",
            UnsupportedModelError,
            r"fitted on classes \['high', 'low', 'mid'\]; fit it on the class-index \(0\.\.2",
        ),
        (
            "multiclass",
            "keras_two_outputs",
            PredictionContractError,
            r"output shape \(None, 2\); a multiclass model .* shape \(None, 3\): "
            r"end it in Dense\(3, activation='softmax'\)",
        ),
        (
            "multiclass",
            "keras_linear_per_class",
            PredictionContractError,
            r"multiclass prediction .* outside \[0, 1\]; end it in Dense\(3, activation='softmax'\)",
        ),
        (
            "regression",
            "keras_three_softmax",
            PredictionContractError,
            r"output shape \(None, 3\); a regression model outputs one predicted value per row, "
            r"shape \(None, 1\): end it in Dense\(1\)",
        ),
    ],
)
def test_a_model_of_the_wrong_type_fails_permanently_naming_the_entrypoint(
    task: str, function: str, error: type[Exception], message: str, new_run: Callable[[], str]
) -> None:
    entrypoint = f"unit.training.entrypoints:{function}"
    spec = task_spec(task, python_trainer(entrypoint))
    train_df, eval_df = SPLITS[task]
    with pytest.raises(error, match=message) as caught:
        train(spec, train_df, eval_df, new_run())
    assert isinstance(caught.value, PermanentError)
    assert f"trainer entrypoint {entrypoint!r}" in str(caught.value)


def test_regression_tuning_minimises_rmse(new_run: Callable[[], str]) -> None:
    spec = task_spec(
        "regression",
        TRAINERS["sklearn_pipeline"],
        tuning={
            "n_trials": 3,
            "space": {"alpha": {"type": "float", "low": 0.01, "high": 100.0, "log": True}},
        },
    )
    train_df, eval_df = SPLITS["regression"]

    result = train(spec, train_df, eval_df, new_run())

    assert result.tuning is not None
    assert (result.tuning.metric, result.tuning.direction) == ("rmse", "minimize")
    assert set(result.tuning.best_params) == {"alpha"}
    assert result.metrics["rmse"] == pytest.approx(result.tuning.best_value)


def test_tuning_refuses_a_param_the_task_s_estimator_does_not_read(new_run: Callable[[], str]) -> None:
    from conveyor.training.tuning import TuningError

    spec = task_spec(
        "regression",
        TRAINERS["sklearn_pipeline"],
        tuning={"n_trials": 2, "space": {"C": {"type": "float", "low": 0.1, "high": 10.0}}},
    )
    with pytest.raises(
        TuningError, match=r"names \['C'\], which the sklearn_pipeline trainer .* \['alpha'\]"
    ):
        train(spec, *SPLITS["regression"], new_run())


# --- the pieces, without MLflow ------------------------------------------------------------------------


def test_fit_functions_get_the_target_encoded_for_the_task() -> None:
    multiclass, regression = task_spec("multiclass"), task_spec("regression")
    frame = FRAMES["multiclass"].head(6)
    codes = target_vector(multiclass, frame)
    assert codes.dtype == np.int64
    assert [TIERS[i] for i in codes] == frame["outcome"].tolist()
    values = labelled_frame(regression, FRAMES["regression"].head(4))["outcome"]
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, FRAMES["regression"]["outcome"].head(4))
    context = TrainContext(spec=multiclass, run_id="r")
    assert (context.task, context.classes, context.n_outputs) == ("multiclass", TIERS, 3)
    assert context.labels(labelled_frame(multiclass, frame)).tolist() == codes.tolist()
    assert TrainContext(spec=regression, run_id="r").labels(values.to_frame()).dtype == np.float64

    unknown = frame.assign(outcome=["low", "mid", "gold", "high", "low", "platinum"])
    with pytest.raises(FeatureSchemaError, match=r"labels \['gold', 'platinum'\] outside data.classes"):
        target_vector(multiclass, unknown)
    with pytest.raises(FeatureSchemaError, match=r"non-numeric values \['lots'\]"):
        target_vector(regression, FRAMES["regression"].head(2).assign(outcome=[1.0, "lots"]))


def test_signature_outputs_follow_the_task() -> None:
    def outputs(task: str) -> list[tuple[str, str]]:
        return [(c.name, c.type.name) for c in signature_for(task_spec(task)).outputs.inputs]

    assert outputs("multiclass") == [
        ("prediction", "string"),
        *((f"probability_{c}", "double") for c in TIERS),
    ]
    assert outputs("regression") == [("prediction", "double")]


def test_golden_rows_store_every_output_column(tmp_path: Path) -> None:
    spec = task_spec("multiclass")
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])

    def predict(rows: pd.DataFrame) -> pd.DataFrame:
        return tasks.outputs(spec, np.resize(scores, (len(rows), 3)))

    golden = json.loads(
        write_golden_rows(spec, predict, FRAMES["multiclass"], tmp_path / "g.json").read_text()
    )
    assert len(golden["inputs"]) == spec.deploy.golden_rows
    assert golden["outputs"]["prediction"][:2] == ["low", "high"]
    assert golden["outputs"]["probability_mid"][:2] == [0.2, 0.3]

    regression = task_spec("regression")
    values = tasks.outputs(regression, np.arange(spec.deploy.golden_rows, dtype=float) * 10)
    golden = json.loads(
        write_golden_rows(
            regression, lambda rows: values, FRAMES["regression"], tmp_path / "r.json"
        ).read_text()
    )
    assert golden["outputs"] == {"prediction": [float(10 * i) for i in range(spec.deploy.golden_rows)]}
    with pytest.raises(PredictionContractError, match=r"columns \['probability', 'prediction'\]"):
        write_golden_rows(
            regression,
            lambda rows: tasks.output_frame("binary", (), np.zeros(len(rows))),
            FRAMES["regression"],
            tmp_path / "bad.json",
        )


def test_class_scores_place_predict_proba_by_classes() -> None:
    class TwoOfThree:
        classes_ = np.array([0, 2])

        def predict_proba(self, features: Any) -> np.ndarray:
            return np.array([[0.25, 0.75], [0.9, 0.1]])

    np.testing.assert_array_equal(
        class_scores(TwoOfThree(), pd.DataFrame({"x": [1, 2]}), 3), [[0.25, 0, 0.75], [0.9, 0, 0.1]]
    )
    assert class_columns(np.array([2, 0, 1]), 3) == [2, 0, 1]
    for bad in (["low", "mid"], [0, 3], [0, 0], None):
        with pytest.raises(ValueError, match=r"classes_"):
            class_columns(bad, 3)
