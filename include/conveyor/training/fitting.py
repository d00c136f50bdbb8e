"""The one path from a fit function to a logged model: fit, check, sign, score, log.

:func:`fit_and_log` runs any fit function (a built-in trainer's or a ``kind: python`` entrypoint's,
see :mod:`conveyor.training.interface`) and then treats what it returned the same way whoever wrote
it: a Keras model is saved as ``.keras`` and served by ``pyfunc_keras.py``, a scikit-learn estimator
is saved with skops and served by ``pyfunc_sklearn.py``; the served class scores the evaluation rows
(checked against the task's output contract, ``conveyor.tasks.check_outputs``), the metrics of the
task are computed on them (``conveyor.tasks.metrics``) and the golden rows written, and the model is
logged as a models-from-code pyfunc with the spec's signature and pinned requirements.

A model that does not predict what the spec's ``task`` asks for (a classifier for a regression spec,
a regressor for a classification one, a Keras head of the wrong width, a classifier fitted on labels
that are not the encoded classes) fails here, once: :class:`UnsupportedModelError` or
:class:`PredictionContractError`, both permanent, naming the entrypoint and what was wrong.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conveyor import tasks
from conveyor.config import ModelSpec
from conveyor.training.base import (
    GOLDEN_ROWS_FILE,
    REFERENCE_FILE,
    EntrypointError,
    PredictionContractError,
    TrainResult,
    UnsupportedModelError,
    check_prediction_frame,
    files_size,
    input_example,
    labelled_frame,
    log_pyfunc_model,
    model_config_for,
    pinned_requirements,
    write_golden_rows,
    write_reference,
)
from conveyor.training.interface import FitFunction, Fitted, TrainContext

KERAS_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
SKOPS_FILE = "pipeline.skops"
TRAINING_DIR = Path(__file__).parent
KERAS_PYFUNC_CODE = TRAINING_DIR / "pyfunc_keras.py"
SKLEARN_PYFUNC_CODE = TRAINING_DIR / "pyfunc_sklearn.py"


@dataclass(frozen=True)
class Packaged:
    """A fitted model saved for logging, with the very object that will serve it."""

    served: Any
    code: Path
    artifacts: dict[str, Path]
    requirements: list[str]
    size_files: list[Path]
    #: How to fix a model whose predictions break the contract (added to that error's message).
    hint: str = ""


def fit_and_log(
    spec: ModelSpec,
    fit: FitFunction,
    train_df: pd.DataFrame,
    eval_df: pd.DataFrame,
    run_id: str,
    *,
    trainer: str,
    entrypoint: str | None = None,
) -> TrainResult:
    """Fit with ``fit``, log the model into run ``run_id`` per the artifact contract, score it.

    Args:
        trainer: the trainer kind, recorded as the result's ``trainer`` and the model's tag.
        entrypoint: set for a user's function: its exceptions are wrapped in
            :class:`EntrypointError` and every message names it.

    Raises:
        EntrypointError: the user's function raised (the message keeps its last frame).
        UnsupportedModelError: it returned something Conveyor cannot log, or a model of another
            task (a classifier for a regression spec, a regressor for a classification spec).
        PredictionContractError: the model's predictions break the task's output contract.
        FeatureSchemaError: the frames lack the spec's features or a target of the spec's task.
    """
    source = f"trainer entrypoint {entrypoint!r}" if entrypoint else f"trainer {trainer!r}"
    train_frame = labelled_frame(spec, train_df)
    eval_frame = labelled_frame(spec, eval_df)
    context = TrainContext(spec=spec, run_id=run_id, entrypoint=entrypoint)
    spec_params = dict(spec.trainer.params)

    started = time.perf_counter()
    fitted = call_fit(fit, train_frame, eval_frame, spec_params, context)
    elapsed = time.perf_counter() - started
    params: dict[str, Any] = {**spec.trainer.params, "seed": spec.trainer.seed, **fitted.params}
    tags = {"conveyor.trainer": trainer, "conveyor.compression": "none"}
    if entrypoint is not None:
        params["entrypoint"] = entrypoint
        tags["conveyor.entrypoint"] = entrypoint

    config = model_config_for(spec)
    with tempfile.TemporaryDirectory(prefix="conveyor-train-") as tmp:
        folder = Path(tmp)
        packaged = package_model(spec, fitted, folder, source)
        eval_features = eval_frame[spec.feature_names]
        outputs = served_predictions(spec, packaged.served, eval_features, source, hint=packaged.hint)
        metrics = tasks.metrics(spec, eval_frame[spec.data.target].to_numpy(), tasks.scores_of(spec, outputs))
        golden = write_golden_rows(
            spec, lambda rows: packaged.served.predict(None, rows), eval_df, folder / GOLDEN_ROWS_FILE
        )
        reference = write_reference(spec, train_df, folder / REFERENCE_FILE)
        info = log_pyfunc_model(
            spec,
            packaged.code,
            {**packaged.artifacts, "golden_rows": golden, "reference": reference},
            run_id,
            pip_requirements=packaged.requirements,
            example=input_example(spec, eval_df),
            model_config=config,
            tags=tags,
        )
        size = files_size(packaged.size_files)

    return TrainResult(
        run_id=run_id,
        model_uri=info.model_uri,
        trainer=trainer,
        metrics=metrics,
        params=params,
        n_train=len(train_frame),
        n_eval=len(eval_frame),
        train_seconds=fitted.train_seconds if fitted.train_seconds is not None else elapsed,
        model_size_bytes=size,
    )


def call_fit(
    fit: FitFunction,
    train_frame: pd.DataFrame,
    eval_frame: pd.DataFrame,
    params: dict[str, Any],
    context: TrainContext,
) -> Fitted:
    """Call ``fit`` with ``params`` and the context's seed; what it returned, as a :class:`Fitted`.

    The frames are :func:`~conveyor.training.base.labelled_frame`'s. A user's function
    (``context.entrypoint`` set) gets copies of them, and its exceptions become :class:`EntrypointError`.
    """
    if context.entrypoint is None:
        returned = fit(train_frame, eval_frame, params, context.seed, context)
    else:
        returned = _call_user_fit(fit, context.entrypoint, train_frame, eval_frame, params, context)
    fitted = returned if isinstance(returned, Fitted) else Fitted(model=returned)
    if fitted.preprocessing is None:
        document = _built_preprocessing(context, fitted.model)
        if document is not None:
            fitted = Fitted(fitted.model, fitted.params, fitted.train_seconds, document)
    return fitted


def _built_preprocessing(context: TrainContext, model: Any) -> dict[str, Any] | None:
    """``preprocessing.json`` of a Keras model built on ``context.keras_preprocessing``'s layers.

    Those layers are the built-in MLP's, so the model's float core after them converts to TFLite and
    the numpy preprocessing of the TFLite wrapper reproduces them. ``None`` for any other model.
    """
    keras = sys.modules.get("keras")
    if keras is None or not isinstance(model, keras.Model) or not context.built_preprocessing:
        return None
    from conveyor.training.keras_mlp import FEATURES_LAYER, preprocessing_document

    try:
        layer = model.get_layer(FEATURES_LAYER)
    except ValueError:
        return None
    for built in context.built_preprocessing:
        if getattr(built.features, "_keras_history", (None,))[0] is layer:
            return preprocessing_document(context.spec, model, built.impute)
    return None


def _call_user_fit(
    fit: FitFunction,
    entrypoint: str,
    train_frame: pd.DataFrame,
    eval_frame: pd.DataFrame,
    params: dict[str, Any],
    context: TrainContext,
) -> Any:
    # The user's function gets copies: whatever it does to them cannot change what Conveyor scores.
    try:
        return fit(train_frame.copy(), eval_frame.copy(), params, context.seed, context)
    except Exception as exc:
        raise EntrypointError(
            f"trainer entrypoint {entrypoint!r} raised {describe_exception(exc)}; fix the function "
            "(the task fails without a retry: the same data would fail the same way)"
        ) from exc


def describe_exception(exc: BaseException) -> str:
    """``Type: message (at file:line in function: source line)``, from the traceback's last frame."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        line = f": {last.line.strip()}" if last.line else ""
        text += f" (at {last.filename}:{last.lineno} in {last.name}{line})"
    return text


#: What a model of each task must give, for the contract errors' messages.
_EXPECTED = {
    "binary": "one P(label == 1) per row",
    "multiclass": "one probability per class per row, each row summing to 1",
    "regression": "one predicted value per row",
}


def served_predictions(
    spec: ModelSpec, served: Any, features: pd.DataFrame, source: str, *, hint: str = ""
) -> pd.DataFrame:
    """The serving object's predictions for ``features``, checked against the task's output contract.

    ``hint``, how to fix the model, ends a contract error's message.

    Raises:
        PredictionContractError: the model failed to predict, or its output breaks the contract.
    """
    try:
        outputs = served.predict(None, features)
    except Exception as exc:
        raise PredictionContractError(
            f"{source}: the model failed to predict the evaluation rows through Conveyor's serving "
            f"wrapper: {describe_exception(exc)}"
        ) from exc
    where = f"{source}: the model's {spec.task} prediction ({_EXPECTED[spec.task]})"
    try:
        return check_prediction_frame(spec, outputs, len(features), where=where)
    except PredictionContractError as exc:
        if not hint:
            raise
        raise PredictionContractError(f"{exc}; {hint}") from exc


def _keras_head_hint(spec: ModelSpec) -> str:
    if spec.task == "multiclass":
        return (
            f"end it in Dense({len(spec.classes)}, activation='softmax'), one unit per class of data.classes"
        )
    if spec.task == "regression":
        return "end it in Dense(1) (a linear unit)"
    return "end it in Dense(1, activation='sigmoid')"


def package_model(spec: ModelSpec, fitted: Fitted, folder: Path, source: str) -> Packaged:
    """Save ``fitted.model`` into ``folder`` for logging and load it back in its serving class.

    Raises:
        UnsupportedModelError: neither a Keras model nor a scikit-learn estimator, or one that
            cannot be served (see :func:`package_keras` and :func:`package_sklearn`).
    """
    model = fitted.model
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return package_keras(spec, model, folder, source, preprocessing=fitted.preprocessing)
    sklearn_base = sys.modules.get("sklearn.base")
    if sklearn_base is not None and isinstance(model, sklearn_base.BaseEstimator):
        return package_sklearn(spec, model, folder, source)
    kind = type(model)
    estimator = "regressor" if spec.task == "regression" else "classifier"
    raise UnsupportedModelError(
        f"{source} returned {kind.__module__}.{kind.__qualname__}; a fit function returns a fitted "
        f"Keras model (keras.Model) or a fitted scikit-learn {estimator} or Pipeline"
    )


def _keras_input_names(model: Any) -> list[str] | None:
    try:
        return [str(tensor.name).split(":")[0] for tensor in model.inputs]
    except (AttributeError, TypeError, ValueError):  # a Sequential model never built on an Input
        return None


def _keras_output_shape(model: Any) -> tuple[Any, ...] | None:
    try:
        outputs = model.outputs
    except (AttributeError, TypeError, ValueError):
        return None
    if len(outputs) != 1:
        return None
    return tuple(outputs[0].shape)


def check_keras_model(spec: ModelSpec, model: Any, source: str) -> None:
    """Refuse a Keras model that cannot serve ``spec``: not one named input per feature, or an output
    that is not the task's width (binary and regression one unit, multiclass one per class).

    Raises:
        UnsupportedModelError: the inputs are not one named input per feature.
        PredictionContractError: the output has the wrong shape for the task.
    """
    names = _keras_input_names(model)
    if names is None or sorted(names) != sorted(spec.feature_names):
        raise UnsupportedModelError(
            f"{source} returned a Keras model taking inputs {names}; a Conveyor Keras model takes one "
            f"named input of shape (1,) per feature, {spec.feature_names} (build them with "
            "context.keras_preprocessing(train_df))"
        )
    output_shape = _keras_output_shape(model)
    allowed = {(len(spec.classes),)} if spec.task == "multiclass" else {(), (1,)}
    if output_shape is None or tuple(output_shape[1:]) not in allowed:
        raise PredictionContractError(
            f"{source} returned a Keras model with output shape {output_shape}; a {spec.task} model "
            f"outputs {_EXPECTED[spec.task]}, shape {(None, *sorted(allowed)[-1])}: {_keras_head_hint(spec)}"
        )


def package_keras(
    spec: ModelSpec,
    model: Any,
    folder: Path,
    source: str,
    *,
    preprocessing: Any = None,
) -> Packaged:
    """Save a Keras model as ``.keras`` and load it in :class:`~conveyor.training.pyfunc_keras.KerasModel`.

    Raises:
        UnsupportedModelError: the model does not take one named input per feature, or does not
            save and load back (custom layers must be registered as Keras serializables).
        PredictionContractError: its output is not the task's width (see :func:`check_keras_model`).
    """
    from mlflow.pyfunc import PythonModelContext

    from conveyor.training.pyfunc_keras import KerasModel

    check_keras_model(spec, model, source)

    keras_path = folder / KERAS_FILE
    try:
        model.save(keras_path)
        served = KerasModel()
        served.load_context(
            PythonModelContext(
                artifacts={"keras_model": str(keras_path)}, model_config=model_config_for(spec)
            )
        )
    except Exception as exc:
        raise UnsupportedModelError(
            f"{source} returned a Keras model that does not save and load back as .keras: "
            f"{describe_exception(exc)}"
        ) from exc
    artifacts: dict[str, Path] = {"keras_model": keras_path}
    if preprocessing is not None:
        artifacts["preprocessing"] = folder / PREPROCESSING_FILE
        artifacts["preprocessing"].write_text(json.dumps(preprocessing, indent=2))
    return Packaged(
        served=served,
        code=KERAS_PYFUNC_CODE,
        artifacts=artifacts,
        requirements=pinned_requirements("tensorflow-cpu", "keras"),
        size_files=[keras_path],
        hint=_keras_head_hint(spec),
    )


def check_sklearn_model(spec: ModelSpec, model: Any, source: str) -> None:
    """Refuse a scikit-learn model that cannot serve ``spec``'s task.

    Classification: a fitted classifier with ``predict_proba`` whose ``classes_`` are class indices
    (binary: exactly 0 and 1; multiclass: a subset of ``0..k-1``, a class absent from training then
    gets probability 0). Regression: a fitted estimator with ``predict`` that is not a classifier.

    Raises:
        UnsupportedModelError: naming what is wrong and what to return instead.
    """
    from sklearn.base import is_classifier
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from conveyor.training.pyfunc_sklearn import class_columns

    name = type(model).__name__
    if spec.task == "regression":
        if is_classifier(model) or hasattr(model, "predict_proba"):
            raise UnsupportedModelError(
                f"{source} returned a {name}, a classifier (it has predict_proba/classes_); a regression "
                f"model predicts the value of {spec.data.target!r}: return a regressor (or a Pipeline "
                "ending in one), e.g. Ridge or HistGradientBoostingRegressor"
            )
        if not hasattr(model, "predict"):
            raise UnsupportedModelError(f"{source} returned a {name}, which has no predict")
    elif not hasattr(model, "predict_proba"):
        raise UnsupportedModelError(
            f"{source} returned a {name}, which has no predict_proba: a {spec.task} model must give "
            "class probabilities; return a classifier (or a Pipeline ending in one), not a regressor"
        )
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise UnsupportedModelError(
            f"{source} returned an unfitted {name}; fit it before returning it"
        ) from exc
    if spec.task == "regression":
        return
    classes = getattr(model, "classes_", None)
    shown = None if classes is None else np.asarray(classes).tolist()
    k = len(spec.classes)
    try:
        columns = class_columns(classes, k)
    except ValueError:
        columns = None
    if columns is None or (spec.task == "binary" and sorted(columns) != [0, 1]):
        wanted = "0/1" if spec.task == "binary" else f"class-index (0..{k - 1}, into data.classes)"
        raise UnsupportedModelError(
            f"{source} returned a {name} fitted on classes {shown}; fit it on the {wanted} target column "
            f"{spec.data.target!r} of train_df (context.labels(train_df))"
        )


def package_sklearn(spec: ModelSpec, model: Any, folder: Path, source: str) -> Packaged:
    """Save a fitted scikit-learn estimator with skops (no pickle) and load it in its serving class.

    Raises:
        UnsupportedModelError: not an estimator of the spec's task (see :func:`check_sklearn_model`),
            not fitted, or holding types the server refuses to load.
    """
    import skops.io
    from mlflow.pyfunc import PythonModelContext

    from conveyor.training.pyfunc_sklearn import TRUSTED_TYPES, SklearnModel

    check_sklearn_model(spec, model, source)
    name = type(model).__name__
    model_path = folder / SKOPS_FILE
    try:
        skops.io.dump(model, model_path)
    except Exception as exc:
        raise UnsupportedModelError(
            f"{source} returned a {name} that skops cannot save (Conveyor logs no pickles): "
            f"{describe_exception(exc)}"
        ) from exc
    untrusted = sorted(set(skops.io.get_untrusted_types(file=model_path)) - set(TRUSTED_TYPES))
    if untrusted:
        raise UnsupportedModelError(
            f"{source} returned a {name} holding types the model server refuses to load: {untrusted}; "
            "use scikit-learn's own estimators and transformers"
        )
    served = SklearnModel()
    served.load_context(
        PythonModelContext(artifacts={"sklearn_model": str(model_path)}, model_config=model_config_for(spec))
    )
    return Packaged(
        served=served,
        code=SKLEARN_PYFUNC_CODE,
        artifacts={"sklearn_model": model_path},
        requirements=pinned_requirements("scikit-learn", "scipy", "skops"),
        size_files=[model_path],
    )
