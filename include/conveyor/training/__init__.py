"""Training: one entry point, :func:`train`, for every trainer kind, with one result contract.

Trainers log their model into the DAG run's MLflow run following the model-artifact contract
(``docs/CONTRACTS.md``); :func:`train` then records params, eval metrics, training time and model
size in the same run. Heavy libraries load only when a trainer runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.training.base import (
    EntrypointError,
    FeatureSchemaError,
    PredictionContractError,
    TrainingDivergedError,
    TrainingError,
    TrainResult,
    UnsupportedModelError,
    mlflow_client,
)
from conveyor.training.interface import FitFunction, Fitted, KerasPreprocessing, TrainContext

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

__all__ = [
    "EntrypointError",
    "FeatureSchemaError",
    "FitFunction",
    "Fitted",
    "KerasPreprocessing",
    "PredictionContractError",
    "TrainContext",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingError",
    "UnsupportedModelError",
    "log_training",
    "train",
]

Trainer = Callable[["ModelSpec", "pd.DataFrame", "pd.DataFrame", str], TrainResult]
#: MLflow caps a param value at 6,000 characters.
_MAX_PARAM_CHARS = 6000


def _trainer(kind: str) -> Trainer:
    if kind == "keras_mlp":
        from conveyor.training.keras_mlp import train_keras_mlp

        return train_keras_mlp
    if kind == "sklearn_pipeline":
        from conveyor.training.sklearn_pipeline import train_sklearn_pipeline

        return train_sklearn_pipeline
    if kind == "python":
        from conveyor.training.python_entry import train_python

        return train_python
    raise TrainingError(
        f"unknown trainer kind {kind!r}; use keras_mlp, sklearn_pipeline or python in the spec"
    )


def train(spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, run_id: str) -> TrainResult:
    """Train ``spec``'s model on ``train_df``, score it on ``eval_df`` and log both into ``run_id``.

    ``spec.trainer.kind`` picks the fit function: a built-in (``keras_mlp``, ``sklearn_pipeline``)
    or ``python``, the spec's ``trainer.entrypoint`` (see :mod:`conveyor.training.interface`).

    Raises:
        TrainingDivergedError: the loss became NaN/inf (lower the learning rate).
        FeatureSchemaError: the frames lack the spec's features or a target of the spec's task.
        EntrypointError: a ``python`` entrypoint does not import, or raised.
        UnsupportedModelError: a fit function returned something Conveyor cannot log, or a model
            of another task than the spec's.
        PredictionContractError: the model's predictions break the task's output contract.
        TuningError: with a ``tuning`` section, every trial of the search failed.

    With a ``tuning`` section, the search (:mod:`conveyor.training.tuning`) runs first and the model
    is fitted on its best params; the result's ``tuning`` says how the search went.
    """
    tuning = None
    if spec.tuning is not None:
        from conveyor.training.tuning import tune

        spec, tuning = tune(spec, train_df, eval_df, run_id)
    result = _trainer(spec.trainer.kind)(spec, train_df, eval_df, run_id)
    if tuning is not None:
        result = result.model_copy(update={"tuning": tuning})
    log_training(result)
    return result


def log_training(result: TrainResult) -> None:
    """Record a training result in its MLflow run: ``trainer.*`` params, ``eval_*`` metrics, time, size.

    Params are deterministic for a given spec and data, so re-running a task logs the same values
    (MLflow refuses to change a logged param).
    """
    from mlflow.entities import Metric, Param

    params: dict[str, Any] = {
        "trainer.kind": result.trainer,
        "n_train": result.n_train,
        "n_eval": result.n_eval,
        **{f"trainer.{k}": v for k, v in result.params.items()},
    }
    metrics = {f"eval_{name}": value for name, value in result.metrics.items()}
    metrics |= {"train_seconds": result.train_seconds, "model_size_bytes": float(result.model_size_bytes)}
    now = int(time.time() * 1000)
    mlflow_client().log_batch(
        result.run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
        params=[Param(key, str(value)[:_MAX_PARAM_CHARS]) for key, value in params.items()],
    )
