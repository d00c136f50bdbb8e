"""Hyperparameter search for a spec's ``tuning:`` section, with Optuna, before the final fit.

:func:`tune` runs an Optuna study (TPE sampler seeded with ``trainer.seed``) over ``tuning.space``.
Every trial calls the spec's own fit function (a built-in trainer's or the ``kind: python``
entrypoint) with ``{**trainer.params, **sampled}`` and the spec's seed, scores the fitted model on
the evaluation rows in-process with its task's metrics (``conveyor.tasks.metrics``; the trial's value
is ``tuning.metric``, minimised when it is in ``LOWER_IS_BETTER``, e.g. ``rmse`` or ``log_loss``,
else maximised; no model is saved or logged for a trial) and is recorded as an
MLflow run nested under the DAG run's run: its params, ``eval_*`` metrics, ``trial_seconds`` and
status (``FINISHED``, or ``FAILED`` with the error in ``conveyor.tuning_error``). A trial that
raises does not end the search; a search whose every trial failed does (:class:`TuningError`).

The budget is ``n_trials`` and/or ``timeout_minutes``. With a wall budget no trial starts once the
time left is less than the median trial's duration, so the search ends within the budget (a single
trial longer than the whole budget still runs, once). The search's wall time, trial counts and best
value are logged on the DAG run's run (``tuning_seconds``, ``tuning_trials``,
``tuning_failed_trials``, ``tuning_best_<metric>``) and the whole outcome as its ``conveyor.tuning``
tag; :func:`conveyor.training.train` then fits the final model on the best params through the usual
:func:`~conveyor.training.fitting.fit_and_log`, so it is logged exactly like an untuned model.

A retried train task reuses the best params its earlier try recorded (the tag) instead of searching
again: the retry then fits the same final model and logs the same ``trainer.*`` params (MLflow
refuses to change a logged param).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from conveyor import tasks
from conveyor.config import LOWER_IS_BETTER, ModelSpec, SearchParam
from conveyor.errors import PermanentError
from conveyor.stages import TuningSummary
from conveyor.training.base import (
    EntrypointError,
    TrainingError,
    UnsupportedModelError,
    check_prediction_frame,
    labelled_frame,
    mlflow_client,
)
from conveyor.training.fitting import call_fit, check_keras_model, check_sklearn_model, describe_exception
from conveyor.training.interface import FitFunction, TrainContext

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

Direction = Literal["maximize", "minimize"]

#: On the DAG run's MLflow run: the finished search (:class:`TuningSummary` JSON) and what it searched.
TUNING_TAG = "conveyor.tuning"
TUNING_KEY_TAG = "conveyor.tuning_key"
#: On a trial's run: its number in the study, and why it failed.
TRIAL_TAG = "conveyor.tuning_trial"
TRIAL_ERROR_TAG = "conveyor.tuning_error"
#: MLflow caps a tag value at 8,000 characters on some stores; errors are cut well below.
_MAX_ERROR_CHARS = 4000


class TuningError(PermanentError, TrainingError):
    """The search cannot run (a space names params the trainer does not read) or every trial failed."""


class _TrialFailed(Exception):
    """A trial's fit or scoring raised; recorded on its run, and the study goes on."""


def tune(
    spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, run_id: str
) -> tuple[ModelSpec, TuningSummary]:
    """Search ``spec.tuning.space``; the spec with the best params over ``trainer.params``, and the search.

    Trials are nested MLflow runs under ``run_id`` (the DAG run's run); see the module docstring.

    Raises:
        TuningError: the spec has no ``tuning`` section, the space names a param the built-in trainer
            does not read, or every trial failed (the message has the last trial's error).
        EntrypointError: a ``python`` trainer's entrypoint does not import.
        FeatureSchemaError: the frames lack the spec's features or a target of the spec's task.
    """
    tuning = spec.tuning
    if tuning is None:
        raise TuningError(f"model {spec.name!r} has no tuning section to search")
    fit, entrypoint = _fit_function(spec)
    client = mlflow_client()
    key = _search_key(spec)
    earlier = _earlier_search(client, run_id, key)
    if earlier is not None:
        log.info(
            "%s: reusing the tuning search an earlier try recorded on run %s: %s",
            spec.name,
            run_id,
            earlier.best_params,
        )
        return with_params(spec, earlier.best_params), earlier

    metric = tuning.metric or spec.gate.primary_metric
    direction: Direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    budget = tuning.timeout_minutes * 60 if tuning.timeout_minutes is not None else None
    search = _Search(
        spec=spec,
        fit=fit,
        client=client,
        experiment_id=client.get_run(run_id).info.experiment_id,
        context=TrainContext(spec=spec, run_id=run_id, entrypoint=entrypoint),
        train_frame=labelled_frame(spec, train_df),
        eval_frame=labelled_frame(spec, eval_df),
        metric=metric,
        budget=budget,
    )
    study = search.run(direction)

    failed = [t for t in study.trials if t.state.name == "FAIL"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        last = search.errors[-1] if search.errors else "no trial ran"
        raise TuningError(
            f"model {spec.name!r}: all {len(study.trials)} tuning trials failed; the last: {last}. "
            "Fix the trainer or narrow tuning.space (each trial is a FAILED nested run of the DAG "
            f"run's MLflow run {run_id}, its error in the {TRIAL_ERROR_TAG} tag)"
        )
    best = study.best_trial
    summary = TuningSummary(
        metric=metric,
        direction=direction,
        best_value=float(best.value if best.value is not None else math.nan),
        best_params=dict(best.params),
        trials=len(study.trials),
        failed=len(failed),
        seconds=search.seconds,
        budget_trials=tuning.n_trials,
        budget_seconds=budget,
        stopped_by=search.stopped_by,
    )
    _record_search(client, run_id, summary, key)
    log.info(
        "%s: tuning ran %d trials (%d failed) in %.1fs (budget %s); best %s=%.4f with %s",
        spec.name,
        summary.trials,
        summary.failed,
        summary.seconds,
        f"{budget:g}s" if budget is not None else f"{tuning.n_trials} trials",
        metric,
        summary.best_value,
        summary.best_params,
    )
    return with_params(spec, summary.best_params), summary


def with_params(spec: ModelSpec, params: Mapping[str, Any]) -> ModelSpec:
    """``spec`` with ``params`` over its ``trainer.params`` (the final fit's spec)."""
    trainer = spec.trainer.model_copy(update={"params": {**spec.trainer.params, **params}})
    return spec.model_copy(update={"trainer": trainer})


@dataclass
class _Search:
    """One study's trials: fit, score, record each as a nested run; watch the wall budget.

    ``budget``: the wall budget in seconds (``None``: trials only). The search fills in ``durations``
    (each trial's whole cost), ``errors`` (the failed trials'), ``seconds`` and ``stopped_by``.
    """

    spec: ModelSpec
    fit: FitFunction
    client: MlflowClient
    experiment_id: str
    context: TrainContext
    train_frame: pd.DataFrame
    eval_frame: pd.DataFrame
    metric: str
    budget: float | None
    durations: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped_by: Literal["n_trials", "timeout"] = "n_trials"
    seconds: float = 0.0
    _started: float = 0.0

    def run(self, direction: Direction) -> optuna.Study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        tuning = self.spec.tuning
        assert tuning is not None
        study = optuna.create_study(
            direction=direction, sampler=optuna.samplers.TPESampler(seed=self.spec.trainer.seed)
        )
        self._started = time.monotonic()
        study.optimize(
            self._objective,
            n_trials=tuning.n_trials,
            timeout=self.budget,
            catch=(_TrialFailed,),
            callbacks=[self._stop_before_overrun],
        )
        self.seconds = time.monotonic() - self._started
        if self.stopped_by != "timeout" and (tuning.n_trials is None or len(study.trials) < tuning.n_trials):
            self.stopped_by = "timeout"  # optimize's own timeout ended it
        return study

    def _stop_before_overrun(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Start no trial that the time left would not hold (judged by the median trial so far)."""
        if self.budget is None:
            return
        left = self.budget - (time.monotonic() - self._started)
        if left < statistics.median(self.durations):
            self.stopped_by = "timeout"
            study.stop()

    def _objective(self, trial: optuna.Trial) -> float:
        begun = time.monotonic()  # the trial's whole cost, its MLflow run included, for the budget
        try:
            return self._trial(trial)
        finally:
            self.durations.append(time.monotonic() - begun)

    def _trial(self, trial: optuna.Trial) -> float:
        sampled = {name: suggest(trial, name, param) for name, param in self.space.items()}
        params = {**self.spec.trainer.params, **sampled}
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial.number}",
            tags={
                "mlflow.parentRunId": self.context.run_id,
                TRIAL_TAG: str(trial.number),
                "conveyor.trainer": self.spec.trainer.kind,
            },
        )
        child = run.info.run_id
        started = time.perf_counter()
        try:
            metrics = self._fit_and_score(params)
        except Exception as exc:
            seconds = time.perf_counter() - started
            error = describe_exception(_users_error(exc))[:_MAX_ERROR_CHARS]
            self.errors.append(f"trial {trial.number}: {error}")
            log.warning("%s: tuning trial %d failed: %s", self.spec.name, trial.number, error)
            self._log_trial(child, params, {"trial_seconds": seconds}, error=error)
            raise _TrialFailed(error) from exc
        seconds = time.perf_counter() - started
        logged = {f"eval_{name}": value for name, value in metrics.items()} | {"trial_seconds": seconds}
        self._log_trial(child, params, logged)
        return metrics[self.metric]

    @property
    def space(self) -> dict[str, SearchParam]:
        assert self.spec.tuning is not None
        return self.spec.tuning.space

    def _fit_and_score(self, params: dict[str, Any]) -> dict[str, float]:
        fitted = call_fit(self.fit, self.train_frame, self.eval_frame, params, self.context)
        try:
            scores = predicted_scores(fitted.model, self.eval_frame, self.context)
        finally:
            _free_keras(fitted.model)
        metrics = tasks.metrics(self.spec, self.context.labels(self.eval_frame), scores)
        value = metrics[self.metric]
        if not math.isfinite(value):
            raise ValueError(f"{self.metric} is {value} on the evaluation rows (one class only?)")
        return metrics

    def _log_trial(
        self,
        run_id: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        *,
        error: str | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        logged = {**{f"trainer.{k}": v for k, v in params.items()}, "seed": self.spec.trainer.seed}
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in logged.items()],
            tags=[RunTag(TRIAL_ERROR_TAG, error)] if error is not None else [],
        )
        self.client.set_terminated(run_id, status="FAILED" if error is not None else "FINISHED")


def suggest(trial: optuna.Trial, name: str, param: SearchParam) -> Any:
    """Sample ``name`` from its range (the spec validated the range)."""
    if param.type == "categorical":
        return trial.suggest_categorical(name, list(param.choices or ()))
    low, high = float(param.low or 0.0), float(param.high or 0.0)
    if param.type == "int":
        return trial.suggest_int(name, int(low), int(high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(name, low, high, step=param.step, log=param.log)


def predicted_scores(model: Any, eval_frame: pd.DataFrame, context: TrainContext) -> np.ndarray:
    """The model's scores for the evaluation rows, straight from the fitted model (no save, no serving
    class): binary P(label 1) (n,), multiclass (n, k) class probabilities, regression values (n,).

    The model is held to the same checks as a logged one (its type and head for the spec's task, then
    the output contract), so a trial of a model that could not be logged fails.

    Raises:
        UnsupportedModelError: neither a Keras model nor a scikit-learn estimator of the task.
        PredictionContractError: the scores break the task's output contract.
    """
    from conveyor.training.pyfunc_sklearn import class_scores, n_scores

    spec = context.spec
    entrypoint = context.entrypoint
    source = f"trainer entrypoint {entrypoint!r}" if entrypoint else f"trainer {spec.trainer.kind!r}"
    keras = sys.modules.get("keras")
    sklearn_base = sys.modules.get("sklearn.base")
    if keras is not None and isinstance(model, keras.Model):
        check_keras_model(spec, model, source)
        raw = np.asarray(model.predict(context.keras_inputs(eval_frame), batch_size=4096, verbose=0))
    elif sklearn_base is not None and isinstance(model, sklearn_base.BaseEstimator):
        check_sklearn_model(spec, model, source)
        k = n_scores(tasks.model_config(spec))
        features = context.features(eval_frame)
        raw = class_scores(model, features, k) if k else np.asarray(model.predict(features))
    else:
        kind = type(model)
        raise UnsupportedModelError(
            f"{source} returned {kind.__module__}.{kind.__qualname__}; return a fitted Keras model or "
            "a scikit-learn estimator"
        )
    outputs = check_prediction_frame(spec, tasks.outputs(spec, raw), len(eval_frame), where=source)
    return tasks.scores_of(spec, outputs)


def _free_keras(model: Any) -> None:
    """Drop Keras' global state after a Keras trial (memory, and layer names for the final fit)."""
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        keras.utils.clear_session()


def _users_error(exc: Exception) -> BaseException:
    """What the fit function raised (an entrypoint's error is wrapped in :class:`EntrypointError`)."""
    if isinstance(exc, EntrypointError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def _fit_function(spec: ModelSpec) -> tuple[FitFunction, str | None]:
    """The spec's fit function and its entrypoint (``None`` for a built-in).

    Raises:
        TuningError: the space names a param the built-in trainer does not read.
    """
    kind = spec.trainer.kind
    defaults: Mapping[str, Any]
    if kind == "python":
        from conveyor.training.python_entry import load_entrypoint

        entrypoint = spec.trainer.entrypoint
        if entrypoint is None:
            raise EntrypointError(f"model {spec.name!r}: trainer.kind 'python' needs trainer.entrypoint")
        return load_entrypoint(entrypoint), entrypoint
    if kind == "keras_mlp":
        from conveyor.training.keras_mlp import DEFAULT_PARAMS as defaults
        from conveyor.training.keras_mlp import fit_keras_mlp as fit
    elif kind == "sklearn_pipeline":
        from conveyor.training.sklearn_pipeline import default_params
        from conveyor.training.sklearn_pipeline import fit_sklearn_pipeline as fit

        defaults = default_params(spec.task)
    else:
        raise TuningError(f"model {spec.name!r}: no fit function for trainer kind {kind!r}")
    assert spec.tuning is not None
    unknown = sorted(set(spec.tuning.space) - set(defaults))
    if unknown:
        raise TuningError(
            f"model {spec.name!r}: tuning.space names {unknown}, which the {kind} trainer does not read; "
            f"it reads {sorted(defaults)}"
        )
    return fit, None


def _search_key(spec: ModelSpec) -> str:
    """A digest of what a search depends on besides the data: the trainer and the tuning section."""
    assert spec.tuning is not None
    searched = {
        "trainer": spec.trainer.model_dump(mode="json"),
        "tuning": spec.tuning.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(searched, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _earlier_search(client: MlflowClient, run_id: str, key: str) -> TuningSummary | None:
    """The search an earlier try of this task finished on ``run_id`` for the same spec, if any."""
    tags = client.get_run(run_id).data.tags
    if tags.get(TUNING_KEY_TAG) != key or TUNING_TAG not in tags:
        return None
    summary = TuningSummary.model_validate_json(tags[TUNING_TAG])
    return summary.model_copy(update={"stopped_by": "reused"})


def _record_search(client: MlflowClient, run_id: str, summary: TuningSummary, key: str) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = {
        "tuning_seconds": summary.seconds,
        "tuning_trials": float(summary.trials),
        "tuning_failed_trials": float(summary.failed),
        f"tuning_best_{summary.metric}": summary.best_value,
    }
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(TUNING_TAG, summary.model_dump_json()), RunTag(TUNING_KEY_TAG, key)],
    )
