"""What every trainer shares: the result contract, errors, and the model-artifact helpers.

Every model Conveyor logs (any trainer, any compression variant) follows the model-artifact
contract of ``docs/CONTRACTS.md``: a models-from-code pyfunc with an explicit signature, pinned
requirements, ``artifacts/golden_rows.json`` and ``artifacts/reference.parquet``. The helpers here
produce those pieces so that trainers and compression cannot drift apart.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from conveyor import tasks
from conveyor.config import ModelSpec
from conveyor.errors import PermanentError
from conveyor.settings import get_settings
from conveyor.stages import TrainResult as TrainResult  # the stage contract's model, re-exported

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

#: Base distributions every Conveyor pyfunc needs at load time.
BASE_REQUIREMENTS = ("mlflow-skinny", "pandas", "numpy")
#: File names fixed by the model-artifact contract.
GOLDEN_ROWS_FILE = "golden_rows.json"
REFERENCE_FILE = "reference.parquet"
#: The drift reference keeps at most this many training rows.
REFERENCE_MAX_ROWS = 5000
#: How many raw rows are stored as the MLflow input example.
INPUT_EXAMPLE_ROWS = 3


class TrainingError(RuntimeError):
    """Training could not produce a usable model."""


class TrainingDivergedError(PermanentError, TrainingError):
    """The loss became NaN or infinite during training."""

    def __init__(self, model_name: str, epoch: int, learning_rate: float | None = None) -> None:
        self.model_name = model_name
        self.epoch = epoch
        self.learning_rate = learning_rate
        lr = f" (learning_rate={learning_rate:g})" if learning_rate is not None else ""
        super().__init__(
            f"training {model_name!r} diverged: the loss became NaN/inf in epoch {epoch}{lr}. "
            "Lower trainer.params.learning_rate in the spec (e.g. by 10x) and check the training "
            "data for extreme values."
        )


class FeatureSchemaError(PermanentError, ValueError):
    """A frame does not carry the spec's features or target in a usable form."""


class PredictionContractError(tasks.OutputContractError):
    """A model's predictions do not follow its task's output contract (``docs/CONTRACTS.md``)."""


class EntrypointError(PermanentError, TrainingError):
    """A ``kind: python`` trainer's entrypoint cannot be imported, or raised while fitting."""


class UnsupportedModelError(PermanentError, TrainingError):
    """A fit function returned something Conveyor cannot log: not a fitted Keras model or scikit-learn
    estimator of the spec's task (a classifier for binary/multiclass, a regressor for regression), or
    one that cannot be saved and loaded back without pickle."""


def feature_frame(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The spec's raw feature columns in spec order, cast the way every Conveyor model expects.

    Numeric features become float64 (missing values stay NaN); categorical features become
    ``object`` columns of ``str`` with missing values kept as ``None``. Extra columns are dropped.

    Raises:
        FeatureSchemaError: a feature column is absent or a numeric one holds non-numbers.
    """
    missing = [name for name in spec.feature_names if name not in df.columns]
    if missing:
        raise FeatureSchemaError(
            f"model {spec.name!r}: the frame lacks feature columns {missing}; it has "
            f"{list(df.columns)}. Pass a frame with the spec's columns {spec.feature_names}."
        )
    columns: dict[str, pd.Series] = {}
    for numeric in spec.numeric_features:
        try:
            columns[numeric.name] = pd.to_numeric(df[numeric.name], errors="raise").astype("float64")
        except (TypeError, ValueError) as exc:
            raise FeatureSchemaError(
                f"model {spec.name!r}: numeric feature {numeric.name!r} holds non-numeric values "
                f"({exc}); fix the data or declare the feature as categorical in the spec."
            ) from exc
    for categorical in spec.categorical_features:
        columns[categorical.name] = df[categorical.name].astype(object).map(_category_or_none).astype(object)
    return pd.DataFrame(columns, index=df.index)


def labelled_frame(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """:func:`feature_frame` plus the target column encoded for the spec's task (:func:`target_vector`).

    What every fit function receives: the features exactly as serving will pass them, and the target
    as binary 0/1 int64, multiclass class index int64 (into ``data.classes``) or regression float64.
    """
    frame = feature_frame(spec, df)
    frame[spec.data.target] = target_vector(spec, df)
    return frame


def _category_or_none(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    return str(value)


def target_vector(spec: ModelSpec, df: pd.DataFrame) -> np.ndarray:
    """The target of ``df`` encoded for the spec's task (:func:`conveyor.tasks.encode_target`).

    binary: int64 0/1, 1 meaning ``data.positive_label``; multiclass: int64 index of the label in
    ``data.classes``; regression: float64 values.

    Raises:
        FeatureSchemaError: the target column is absent, has missing values, labels outside
            ``data.classes`` or (regression) non-numeric values.
    """
    name = spec.data.target
    if name not in df.columns:
        raise FeatureSchemaError(
            f"model {spec.name!r}: the frame has no target column {name!r}; it has {list(df.columns)}."
        )
    try:
        return tasks.encode_target(spec, df[name])
    except tasks.TargetError as exc:
        raise FeatureSchemaError(str(exc)) from exc


def prediction_frame(spec: ModelSpec, scores: Any) -> pd.DataFrame:
    """The contract's output frame of ``spec``'s task from raw scores (:func:`conveyor.tasks.outputs`)."""
    return tasks.outputs(spec, scores)


def check_prediction_frame(spec: ModelSpec, frame: Any, n_rows: int, *, where: str = "model") -> pd.DataFrame:
    """Check that ``frame`` follows ``spec``'s output contract and has ``n_rows`` rows.

    :func:`conveyor.tasks.check_outputs`, its error raised as a :class:`PredictionContractError`.

    Raises:
        PredictionContractError: wrong type, columns, dtypes, row count, non-finite values or
            probabilities that are not probabilities.
    """
    try:
        return tasks.check_outputs(spec, frame, n_rows, where=where)
    except PredictionContractError:
        raise
    except tasks.OutputContractError as exc:
        raise PredictionContractError(str(exc)) from exc


def signature_for(spec: ModelSpec) -> ModelSignature:
    """The MLflow signature of every model of ``spec``.

    Inputs: numeric features ``double``, categorical ``string``, all required; outputs: the task's
    contract columns (:func:`conveyor.tasks.output_types`).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("double", f.name) for f in spec.numeric_features]
    inputs += [ColSpec("string", f.name) for f in spec.categorical_features]
    outputs = [ColSpec(kind, name) for name, kind in tasks.output_types(spec)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))  # type: ignore[arg-type]


def pinned_requirements(*dists: str) -> list[str]:
    """``name==version`` pins of the base requirements plus ``dists``, from installed metadata.

    Raises:
        TrainingError: a distribution is not installed here, so its version cannot be pinned.
    """
    pins: list[str] = []
    for dist in dict.fromkeys((*BASE_REQUIREMENTS, *dists)):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError as exc:
            raise TrainingError(
                f"cannot pin requirement {dist!r}: it is not installed in this environment; "
                "install the pinned requirements.txt."
            ) from exc
    return pins


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_golden_rows(
    spec: ModelSpec,
    model_predict_fn: Callable[[pd.DataFrame], pd.DataFrame],
    eval_df: pd.DataFrame,
    path: str | os.PathLike[str],
) -> Path:
    """Write ``golden_rows.json``: the first ``spec.deploy.golden_rows`` eval rows and this model's
    offline predictions for them (missing inputs as JSON ``null``).

    ``outputs`` holds every output column of the task's contract: ``prediction`` as int, str or
    float (:func:`conveyor.tasks.prediction_values`), the probability columns as floats.

    Raises:
        PredictionContractError: ``model_predict_fn`` breaks the output contract.
    """
    rows = feature_frame(spec, eval_df).head(spec.deploy.golden_rows)
    if rows.empty:
        raise FeatureSchemaError(f"model {spec.name!r}: no evaluation rows to take golden rows from")
    outputs = check_prediction_frame(spec, model_predict_fn(rows), len(rows), where="golden-row prediction")
    document = {
        "inputs": [
            {name: _json_value(value) for name, value in record.items()}
            for record in rows.to_dict(orient="records")
        ],
        "outputs": {
            column: (
                tasks.prediction_values(spec, outputs)
                if column == "prediction"
                else [float(v) for v in outputs[column]]
            )
            for column in outputs.columns
        },
    }
    out = Path(path)
    out.write_text(json.dumps(document, indent=2, allow_nan=False))
    return out


def write_reference(spec: ModelSpec, train_df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``reference.parquet``: up to 5,000 training rows (features + target) for drift checks.

    The target is encoded as the fit functions see it (:func:`target_vector`).

    Larger frames are sampled with the trainer's seed and keep their original order.
    """
    frame = labelled_frame(spec, train_df)
    if len(frame) > REFERENCE_MAX_ROWS:
        frame = frame.sample(n=REFERENCE_MAX_ROWS, random_state=spec.trainer.seed).sort_index()
    out = Path(path)
    frame.reset_index(drop=True).to_parquet(out, index=False)
    return out


def input_example(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """A few raw rows for the MLflow input example, complete ones first (JSON has no NaN)."""
    frame = feature_frame(spec, df)
    complete = frame.dropna()
    return (complete if len(complete) else frame).head(INPUT_EXAMPLE_ROWS).reset_index(drop=True)


def model_config_for(spec: ModelSpec) -> dict[str, Any]:
    """The pyfunc ``model_config`` every variant of ``spec``'s model gets: the task and its classes
    (:func:`conveyor.tasks.model_config`) and the feature names in order.

    MLflow also logs a model config as params of the run, so all variants must use the same one.
    """
    return {
        **tasks.model_config(spec),
        "numeric_features": [f.name for f in spec.numeric_features],
        "categorical_features": [f.name for f in spec.categorical_features],
    }


def tracking_uri() -> str:
    """The MLflow tracking URI Conveyor logs to.

    The one this process already chose (``mlflow.set_tracking_uri`` or ``MLFLOW_TRACKING_URI``;
    Airflow tasks set it from the MLflow connection) wins; otherwise the configured
    ``CONVEYOR_MLFLOW_TRACKING_URI`` (see :mod:`conveyor.settings`).
    """
    import mlflow

    if _tracking_uri_is_set():
        return str(mlflow.get_tracking_uri())
    return get_settings().mlflow_tracking_uri


def _tracking_uri_is_set() -> bool:
    try:
        from mlflow.tracking._tracking_service.utils import is_tracking_uri_set
    except ImportError:  # pragma: no cover - MLflow moved its internals; the env var is the public API
        return bool(os.environ.get("MLFLOW_TRACKING_URI"))
    return bool(is_tracking_uri_set())


def mlflow_client() -> MlflowClient:
    """A client on :func:`tracking_uri`."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


@contextmanager
def tracking_scope() -> Iterator[None]:
    """Point MLflow's fluent API at :func:`tracking_uri` for the duration of the block.

    When the process has not chosen a URI, the configured one is set for the block only (through
    :class:`conveyor.registry.session.MlflowSession`, so not in ``os.environ``) and unset afterwards,
    so code running later in the same process sees MLflow exactly as it was.
    """
    from conveyor.registry.session import MlflowSession

    if _tracking_uri_is_set():
        yield
        return
    with MlflowSession(get_settings().mlflow_tracking_uri).fluent():
        yield


@contextmanager
def active_run(run_id: str) -> Iterator[None]:
    """Make the existing MLflow run ``run_id`` the active run, restoring its status afterwards.

    One MLflow run spans a whole DAG run and every task logs into it, so a task must neither
    finish nor fail the run: whatever status it had before is put back on exit.
    """
    import mlflow

    with tracking_scope():
        current = mlflow.active_run()
        if current is not None and current.info.run_id == run_id:
            yield
            return
        if current is not None:
            raise TrainingError(
                f"cannot log into MLflow run {run_id}: another run ({current.info.run_id}) is active "
                "in this process; end it first."
            )
        previous_status = mlflow_client().get_run(run_id).info.status
        mlflow.start_run(run_id=run_id)
        try:
            yield
        finally:
            mlflow.end_run(status=previous_status)


def log_pyfunc_model(
    spec: ModelSpec,
    code_path: str | os.PathLike[str],
    artifacts: Mapping[str, str | os.PathLike[str]],
    run_id: str,
    *,
    pip_requirements: Sequence[str],
    example: pd.DataFrame | None = None,
    model_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    name: str = "model",
) -> ModelInfo:
    """Log a models-from-code pyfunc into the existing run ``run_id`` per the artifact contract.

    Args:
        spec: the model's spec (gives the signature).
        code_path: the ``.py`` file that calls ``mlflow.models.set_model``.
        artifacts: name → local file; must include ``golden_rows`` and ``reference`` files named
            ``golden_rows.json`` and ``reference.parquet``.
        run_id: the DAG run's MLflow run.
        pip_requirements: pinned requirements (see :func:`pinned_requirements`); never inferred.
        example: a few raw feature rows stored as the input example.
        model_config: passed to the pyfunc as ``context.model_config``, with the spec's ``task`` and
            ``classes`` added (``conveyor.tasks.model_config``).
        tags: tags of the logged model.
        name: the logged model's name.

    Returns:
        The ``ModelInfo``; its ``model_uri`` (``models:/m-...``) is what later steps load.
    """
    import mlflow

    names = {Path(p).name for p in artifacts.values()}
    missing = {GOLDEN_ROWS_FILE, REFERENCE_FILE} - names
    if missing:
        raise TrainingError(
            f"model {spec.name!r}: refusing to log a model without {sorted(missing)}; "
            "write them with write_golden_rows / write_reference first."
        )
    import conveyor.pyfunc_outputs
    from conveyor.tasks import model_config as task_config

    with active_run(run_id):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=os.fspath(code_path),
            artifacts={key: os.fspath(value) for key, value in artifacts.items()},
            # The output contract ships with the model: the wrapper imports ``pyfunc_outputs``.
            code_paths=[str(Path(conveyor.pyfunc_outputs.__file__))],
            signature=signature_for(spec),
            input_example=example,
            pip_requirements=list(pip_requirements),
            model_config={**task_config(spec), **dict(model_config or {})},
            tags=dict(tags or {}),
        )
    return info


def files_size(paths: Sequence[str | os.PathLike[str]]) -> int:
    """Total size in bytes of ``paths``."""
    return sum(Path(p).stat().st_size for p in paths)
