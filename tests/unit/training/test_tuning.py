"""``tuning:``: an Optuna search whose trials are nested MLflow runs, within budget, then the final fit."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

from conveyor.config import ModelSpec, TrainerSpec, TuningSpec
from conveyor.errors import PermanentError
from conveyor.stages import TrainResult
from conveyor.training import TrainContext, train
from conveyor.training.tuning import TRIAL_ERROR_TAG, TUNING_TAG, TuningError

from .support import breast_cancer_frame, cancer_spec

pytestmark = pytest.mark.unit

CANCER = breast_cancer_frame()
CANCER_TRAIN, CANCER_EVAL = CANCER.iloc[::2], CANCER.iloc[1::2]
HERE = __name__  # the entrypoints below are this module's functions
#: Seconds the slow entrypoint sleeps per fit.
SLOW_FIT_SECONDS = 0.25
_CALLS = itertools.count()


def _logistic(train_df: Any, params: dict[str, Any], seed: int, context: TrainContext) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    model = Pipeline(
        [
            ("preprocess", context.sklearn_preprocessor()),
            ("classifier", LogisticRegression(C=float(params.get("C", 1.0)), random_state=seed)),
        ]
    )
    return model.fit(context.features(train_df), context.labels(train_df))


def slow_fit(train_df: Any, eval_df: Any, params: dict[str, Any], seed: int, context: TrainContext) -> Any:
    time.sleep(SLOW_FIT_SECONDS)
    return _logistic(train_df, params, seed, context)


def second_call_fails(
    train_df: Any, eval_df: Any, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    if next(_CALLS) == 1:
        raise RuntimeError("trial two ran out of luck")
    return _logistic(train_df, params, seed, context)


def always_fails(
    train_df: Any, eval_df: Any, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    raise ValueError(f"no model for C={params['C']:.3g}")


C_SPACE = {"C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}}


def tuned_spec(trainer: TrainerSpec | None = None, **tuning: Any) -> ModelSpec:
    spec = cancer_spec()
    return ModelSpec.model_validate(
        {
            **spec.model_dump(),
            "trainer": (trainer or spec.trainer).model_dump(),
            "tuning": {"space": C_SPACE, **tuning},
        }
    )


def python_trainer(function: str) -> TrainerSpec:
    return TrainerSpec(kind="python", entrypoint=f"{HERE}:{function}", seed=7)


def trial_runs(tracking: dict[str, str], parent: str) -> list[Any]:
    from mlflow import MlflowClient

    runs = MlflowClient(tracking["uri"]).search_runs(
        [tracking["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    return sorted(runs, key=lambda run: int(run.data.tags["conveyor.tuning_trial"]))


def test_each_trial_is_a_nested_run_and_the_model_is_refitted_on_the_best(
    new_run: Callable[[], str], tracking: dict[str, str], check_model_contract: Callable[..., Any]
) -> None:
    from mlflow import MlflowClient

    spec = tuned_spec(n_trials=4)
    run_id = new_run()

    result = train(spec, CANCER_TRAIN, CANCER_EVAL, run_id)

    trials = trial_runs(tracking, run_id)
    assert len(trials) == 4
    assert {t.info.status for t in trials} == {"FINISHED"}
    scores = [t.data.metrics["eval_roc_auc"] for t in trials]
    best = trials[scores.index(max(scores))]
    assert all(t.data.metrics["trial_seconds"] > 0 for t in trials)
    assert all(1e-3 <= float(t.data.params["trainer.C"]) <= 10 for t in trials)
    assert result.tuning is not None
    assert (result.tuning.metric, result.tuning.direction) == ("roc_auc", "maximize")  # the gate's metric
    assert result.tuning.best_value == pytest.approx(max(scores))
    assert result.tuning.trials == 4 and result.tuning.failed == 0
    assert result.tuning.stopped_by == "n_trials" and result.tuning.budget_trials == 4
    assert result.params["C"] == result.tuning.best_params["C"] == float(best.data.params["trainer.C"])
    check_model_contract(spec, result.model_uri, CANCER_EVAL)  # logged like any untuned model
    assert TrainResult.of(result.xcom()) == result  # travels through XCom

    client = MlflowClient(tracking["uri"])
    parent = client.get_run(run_id)
    assert parent.data.params["trainer.C"] == best.data.params["trainer.C"]
    assert parent.data.metrics["tuning_trials"] == 4
    assert parent.data.metrics["tuning_best_roc_auc"] == pytest.approx(max(scores))
    assert 0 < parent.data.metrics["tuning_seconds"] == pytest.approx(result.tuning.seconds)
    assert TUNING_TAG in parent.data.tags

    retried = train(spec, CANCER_TRAIN, CANCER_EVAL, run_id)  # a retry of the task: no second search

    assert retried.tuning is not None and retried.tuning.stopped_by == "reused"
    assert retried.params == result.params and len(trial_runs(tracking, run_id)) == 4


def test_the_wall_budget_is_respected(new_run: Callable[[], str], tracking: dict[str, str]) -> None:
    spec = tuned_spec(python_trainer("slow_fit"), n_trials=50, timeout_minutes=0.03, metric="log_loss")
    budget = 0.03 * 60
    run_id = new_run()

    result = train(spec, CANCER_TRAIN, CANCER_EVAL, run_id)

    assert result.tuning is not None
    trials = trial_runs(tracking, run_id)
    longest = max(t.data.metrics["trial_seconds"] for t in trials)
    assert longest >= SLOW_FIT_SECONDS
    assert result.tuning.seconds <= budget + longest
    assert 2 <= result.tuning.trials == len(trials) < 50
    assert result.tuning.stopped_by == "timeout" and result.tuning.budget_seconds == pytest.approx(budget)
    assert result.tuning.direction == "minimize"  # log loss: lower is better
    assert result.tuning.best_value == pytest.approx(min(t.data.metrics["eval_log_loss"] for t in trials))


def test_a_failing_trial_is_recorded_and_the_search_goes_on(
    new_run: Callable[[], str], tracking: dict[str, str]
) -> None:
    global _CALLS
    _CALLS = itertools.count()
    spec = tuned_spec(python_trainer("second_call_fails"), n_trials=3)
    run_id = new_run()

    result = train(spec, CANCER_TRAIN, CANCER_EVAL, run_id)

    assert result.tuning is not None and (result.tuning.trials, result.tuning.failed) == (3, 1)
    trials = trial_runs(tracking, run_id)
    assert [t.info.status for t in trials] == ["FINISHED", "FAILED", "FINISHED"]
    assert "RuntimeError: trial two ran out of luck" in trials[1].data.tags[TRIAL_ERROR_TAG]
    assert "trainer.C" in trials[1].data.params and "eval_roc_auc" not in trials[1].data.metrics


def test_a_search_whose_every_trial_fails_fails_permanently(new_run: Callable[[], str]) -> None:
    spec = tuned_spec(python_trainer("always_fails"), n_trials=2)

    with pytest.raises(
        TuningError, match=r"all 2 tuning trials failed; the last: trial 1: ValueError: no model"
    ) as e:
        train(spec, CANCER_TRAIN, CANCER_EVAL, new_run())
    assert isinstance(e.value, PermanentError)


def test_a_built_in_trainer_refuses_params_it_does_not_read() -> None:
    spec = tuned_spec(n_trials=2).model_copy(
        update={
            "tuning": TuningSpec.model_validate({"n_trials": 2, "space": {"learning_rate": C_SPACE["C"]}})
        }
    )

    with pytest.raises(TuningError, match=r"names \['learning_rate'\], which the sklearn_pipeline trainer"):
        train(spec, CANCER_TRAIN, CANCER_EVAL, "never-used")


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"space": C_SPACE}, "tuning needs a budget"),
        ({"n_trials": 0, "space": C_SPACE}, "greater than or equal to 1"),
        ({"n_trials": 2, "space": {}}, "tuning.space is empty"),
        (
            {"n_trials": 2, "space": {"C": {"type": "float", "low": 2, "high": 1}}},
            r"low \(2\) must be below high",
        ),
        (
            {"n_trials": 2, "space": {"C": {"type": "float", "low": 0, "high": 1, "log": True}}},
            "needs low > 0",
        ),
        ({"n_trials": 2, "space": {"C": {"type": "float", "low": 1}}}, "needs both low and high"),
        ({"n_trials": 2, "space": {"n": {"type": "int", "low": 1, "high": 2.5}}}, "whole-number"),
        (
            {"n_trials": 2, "space": {"n": {"type": "int", "low": 1, "high": 9, "step": 2, "log": True}}},
            "log and step",
        ),
        (
            {"n_trials": 2, "space": {"k": {"type": "categorical", "choices": []}}},
            "non-empty list of choices",
        ),
        ({"n_trials": 2, "space": {"k": {"type": "categorical", "choices": ["a", "a"]}}}, "repeat a value"),
        (
            {"n_trials": 2, "space": {"k": {"type": "categorical", "choices": ["a"], "low": 1}}},
            "choices only",
        ),
        ({"n_trials": 2, "space": {"seed": {"type": "int", "low": 1, "high": 9}}}, "cannot search 'seed'"),
        (
            {"n_trials": 2, "space": {"max-iter": {"type": "int", "low": 1, "high": 9}}},
            "not a parameter name",
        ),
        ({"n_trials": 2, "metric": "auc", "space": C_SPACE}, "roc_auc"),
        (
            {"n_trials": 2, "space": {"C": {"type": "uniform", "low": 0, "high": 1}}},
            "'float', 'int' or 'categorical'",
        ),
    ],
)
def test_a_bad_tuning_section_is_refused(tuning: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        ModelSpec.model_validate({**tuned_spec(n_trials=1).model_dump(), "tuning": tuning})


def test_a_good_tuning_section_validates() -> None:
    tuning = TuningSpec.model_validate(
        {
            "timeout_minutes": 5,
            "space": {
                "C": {"type": "float", "low": 0.01, "high": 10, "log": True},
                "max_iter": {"type": "int", "low": 100, "high": 1000, "step": 100},
                "solver": {"type": "categorical", "choices": ["lbfgs", "liblinear"]},
            },
        }
    )
    assert tuning.metric is None and tuning.n_trials is None  # metric: the gate's primary metric
    assert tuning.space["solver"].choices == ("lbfgs", "liblinear")
