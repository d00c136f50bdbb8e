"""Task types: one place for what a binary, multiclass or regression model takes and gives.

Every stage speaks in two arrays, whatever the task:

- **y**, the target encoded by :func:`encode_target`: binary 0/1 (1 = ``data.positive_label``),
  multiclass the index of the label in ``data.classes``, regression the float value;
- **scores**, the model's output read back by :func:`scores_of`: binary P(positive) of shape (n,),
  multiclass the (n, k) class probabilities in ``data.classes`` order, regression the (n,) predictions.

:func:`metrics` scores them with ``sklearn.metrics`` (the task's metric set, ``TASK_METRICS`` in
``conveyor.config``); :func:`check_outputs` holds a model to its task's output contract
(``conveyor.training.pyfunc_outputs``, documented in ``docs/CONTRACTS.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from conveyor.config import LOWER_IS_BETTER, TASK_METRICS, ModelSpec
from conveyor.errors import PermanentError
from conveyor.pyfunc_outputs import (
    CLASSES_KEY,
    TASK_KEY,
    integer_labels,
    output_columns,
    output_frame,
    probability_column,
)

__all__ = [
    "LOWER_IS_BETTER",
    "TASK_METRICS",
    "OutputContractError",
    "TargetError",
    "check_outputs",
    "decode_labels",
    "encode_target",
    "improvement",
    "metric",
    "metric_function",
    "metrics",
    "model_config",
    "output_columns",
    "output_frame",
    "output_types",
    "outputs",
    "prediction_values",
    "probability_column",
    "scores_of",
]

#: Probabilities are clipped this far from 0 and 1 before log loss (as scikit-learn's models do).
_CLIP = 1e-7
#: A multiclass row's probabilities must sum to 1 within this tolerance (float32 softmax and TFLite).
_SUM_TOLERANCE = 1e-3


class TargetError(PermanentError, ValueError):
    """A target column holds values the spec's task does not allow (unknown label, missing, non-numeric)."""


class OutputContractError(PermanentError, RuntimeError):
    """A model's output does not follow its task's output contract."""


# --- the target --------------------------------------------------------------------------------------


def _label_index(spec: ModelSpec) -> dict[Any, int]:
    index: dict[Any, int] = {}
    for i, label in enumerate(spec.classes):
        index[label] = i
        index[str(label)] = i  # "3" in a CSV column means the class 3
    return index


def encode_target(spec: ModelSpec, values: Iterable[Any] | pd.Series) -> np.ndarray:
    """The target as the stages use it: binary 0/1 int64, multiclass class index int64, regression float64.

    Raises:
        TargetError: missing values, labels outside ``data.classes`` or non-numeric regression
            targets, naming up to five offending values.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    name = spec.data.target
    if series.isna().any():
        raise TargetError(
            f"model {spec.name!r}: target {name!r} has {int(series.isna().sum())} missing values; drop "
            "unlabelled rows (the data contract blocks them)"
        )
    if spec.task == "regression":
        numbers = pd.to_numeric(series, errors="coerce")
        bad = series[numbers.isna()]
        if len(bad):
            raise TargetError(
                f"model {spec.name!r}: regression target {name!r} holds non-numeric values "
                f"{sorted(map(str, pd.unique(bad)))[:5]}"
            )
        return numbers.to_numpy(dtype=np.float64)
    index = _label_index(spec)
    raw = series.tolist()
    unknown = sorted({str(v) for v in raw if _lookup(index, v) is None})
    if unknown:
        raise TargetError(
            f"model {spec.name!r}: target {name!r} holds labels {unknown[:5]} outside data.classes "
            f"{list(spec.classes)}"
        )
    codes = np.fromiter((_lookup(index, v) for v in raw), dtype=np.int64, count=len(raw))
    if spec.task == "binary":
        return (codes == index[spec.data.positive_label]).astype(np.int64)
    return codes


def _lookup(index: dict[Any, int], value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, np.generic):
        value = value.item()
    found = index.get(value)
    return found if found is not None else index.get(str(value))


def class_indices(spec: ModelSpec, values: Iterable[Any] | pd.Series) -> np.ndarray:
    """Each value's index in ``data.classes``, compared as :func:`encode_target` compares labels
    (``"3"`` is the class ``3``, ``3.0`` too), ``-1`` for a missing value or a label outside them.
    Never raises (the data contract uses it on raw windows); classification specs only."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    index = _label_index(spec)
    found = [_lookup(index, v) for v in uniques]
    mapping = np.asarray([-1 if i is None else i for i in found], dtype=np.int64)
    if not len(mapping):
        return np.full(len(series), -1, dtype=np.int64)
    return np.where(codes >= 0, mapping[np.clip(codes, 0, None)], -1).astype(np.int64)


def decode_labels(spec: ModelSpec, codes: Any) -> list[Any]:
    """Class labels of encoded classification targets (binary: 0/1 stay 0/1, the contract's prediction)."""
    values = np.asarray(codes, dtype=np.int64).reshape(-1)
    if spec.task == "multiclass":
        classes = spec.classes
        return np.asarray(list(classes), dtype=object)[values].tolist() if len(values) else []
    return values.tolist()


# --- the model's outputs -----------------------------------------------------------------------------


def outputs(spec: ModelSpec, scores: Any) -> pd.DataFrame:
    """The contract's output frame of ``spec`` from raw scores (see ``pyfunc_outputs.output_frame``)."""
    return output_frame(spec.task, list(spec.classes), scores)


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """What every pyfunc of ``spec`` needs to build its outputs: the task and the label set."""
    return {TASK_KEY: spec.task, CLASSES_KEY: list(spec.classes)}


def output_types(spec: ModelSpec) -> list[tuple[str, str]]:
    """``(column, MLflow type)`` of each output column: the signature's outputs, in order."""
    if spec.task == "binary":
        return [("probability", "double"), ("prediction", "long")]
    if spec.task == "regression":
        return [("prediction", "double")]
    label_type = "long" if integer_labels(spec.classes) else "string"
    return [("prediction", label_type), *((probability_column(c), "double") for c in spec.classes)]


def scores_of(spec: ModelSpec, frame: pd.DataFrame) -> np.ndarray:
    """The scores in an output frame: binary P(positive), multiclass (n, k) probabilities, regression values.

    Raises:
        OutputContractError: a column the task's contract requires is missing.
    """
    if not isinstance(frame, pd.DataFrame):
        raise OutputContractError(
            f"model {spec.name!r} returned {type(frame).__name__}; the {spec.task} output contract is a "
            f"DataFrame with columns {output_columns(spec.task, spec.classes)} (docs/CONTRACTS.md)"
        )
    if spec.task == "multiclass":
        wanted = [probability_column(c) for c in spec.classes]
    elif spec.task == "binary":
        wanted = ["probability"]
    else:
        wanted = ["prediction"]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise OutputContractError(
            f"model {spec.name!r} returned columns {list(frame.columns)}; the {spec.task} output contract "
            f"needs {output_columns(spec.task, spec.classes)} (docs/CONTRACTS.md), {missing} are missing"
        )
    values = frame[wanted].to_numpy(dtype=np.float64)
    return values if spec.task == "multiclass" else values.reshape(-1)


def check_outputs(spec: ModelSpec, frame: Any, n_rows: int, *, where: str = "model") -> pd.DataFrame:
    """Hold ``frame`` to ``spec``'s output contract: columns in order, dtypes, ``n_rows`` rows, finite
    values, probabilities in [0, 1] (multiclass: rows summing to 1, ``prediction`` their argmax label).

    Raises:
        OutputContractError: naming ``where`` and what is wrong.
    """
    expected = output_columns(spec.task, spec.classes)
    if not isinstance(frame, pd.DataFrame):
        raise OutputContractError(f"{where} returned {type(frame).__name__}, expected a DataFrame")
    if list(frame.columns) != expected:
        raise OutputContractError(
            f"{where} returned columns {list(frame.columns)}; the {spec.task} output contract is {expected}"
        )
    if len(frame) != n_rows:
        raise OutputContractError(f"{where} returned {len(frame)} rows for {n_rows} inputs")
    for column, kind in output_types(spec):
        dtype = frame[column].dtype
        wanted_dtype = {"double": np.dtype("float64"), "long": np.dtype("int64"), "string": np.dtype("O")}
        ok = dtype == wanted_dtype[kind]
        if not ok:
            wanted = {"double": "float64", "long": "int64", "string": "object (str)"}[kind]
            raise OutputContractError(f"{where} returned {column!r} as {dtype}, expected {wanted}")
    scores = scores_of(spec, frame)
    if not np.all(np.isfinite(scores)):
        what = "values" if spec.task == "regression" else "probabilities"
        raise OutputContractError(f"{where} returned non-finite {what}")
    if spec.task == "regression":
        return frame
    if np.any((scores < 0) | (scores > 1)):
        raise OutputContractError(f"{where} returned probabilities outside [0, 1]")
    if spec.task == "multiclass" and n_rows:
        sums = scores.sum(axis=1)
        if np.any(np.abs(sums - 1) > _SUM_TOLERANCE):
            worst = int(np.argmax(np.abs(sums - 1)))
            raise OutputContractError(
                f"{where} returned class probabilities that do not sum to 1 (row {worst}: {sums[worst]:.4f})"
            )
        argmax = decode_labels(spec, np.argmax(scores, axis=1))
        if list(frame["prediction"]) != argmax:
            raise OutputContractError(f"{where} returned a prediction that is not its most probable class")
    return frame


def prediction_values(spec: ModelSpec, frame: pd.DataFrame) -> list[Any]:
    """The ``prediction`` column as JSON-ready Python values (int, str or float per the contract)."""
    column = frame["prediction"]
    if spec.task == "regression":
        return [float(v) for v in column]
    if spec.task == "binary" or integer_labels(spec.classes):
        return [int(v) for v in column]
    return [str(v) for v in column]


# --- metrics -----------------------------------------------------------------------------------------


def _binary(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    from sklearn import metrics as skm

    def score(y: np.ndarray, p: np.ndarray) -> float:
        p = np.clip(p, _CLIP, 1 - _CLIP)
        pred = (p >= 0.5).astype(np.int64)
        if name == "roc_auc":
            return float(skm.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan
        if name == "log_loss":
            return float(skm.log_loss(y, p, labels=[0, 1]))
        if name == "accuracy":
            return float(skm.accuracy_score(y, pred))
        fn = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[name]
        return float(fn(y, pred, zero_division=0))

    return score


def _multiclass(name: str, k: int) -> Callable[[np.ndarray, np.ndarray], float]:
    from sklearn import metrics as skm

    labels = list(range(k))

    def score(y: np.ndarray, p: np.ndarray) -> float:
        pred = np.argmax(p, axis=1)
        if name == "accuracy":
            return float(skm.accuracy_score(y, pred))
        if name == "log_loss":
            clipped = np.clip(p, _CLIP, 1)
            return float(skm.log_loss(y, clipped / clipped.sum(axis=1, keepdims=True), labels=labels))
        if name == "roc_auc_ovr":
            # rows renormalised to sum to 1: scikit-learn insists within 1e-5, float32 softmax and
            # TFLite outputs drift further (check_outputs allows 1e-3)
            p = p / np.clip(p.sum(axis=1, keepdims=True), _CLIP, None)
            present = np.unique(y)
            if len(present) < 2:
                return math.nan
            if len(present) < k:  # one-vs-rest over the classes present, renormalised
                sub = p[:, present]
                sub = sub / np.clip(sub.sum(axis=1, keepdims=True), _CLIP, None)
                remap = {c: i for i, c in enumerate(present)}
                yy = np.fromiter((remap[c] for c in y), dtype=np.int64, count=len(y))
                if len(present) == 2:
                    return float(skm.roc_auc_score(yy, sub[:, 1]))
                return float(skm.roc_auc_score(yy, sub, multi_class="ovr", labels=list(range(len(present)))))
            return float(skm.roc_auc_score(y, p, multi_class="ovr", labels=labels))
        base, average = name.rsplit("_", 1)
        fn = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[base]
        return float(fn(y, pred, labels=labels, average=average, zero_division=0))

    return score


def _regression(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    from sklearn import metrics as skm

    def score(y: np.ndarray, yhat: np.ndarray) -> float:
        if name == "rmse":
            return float(skm.root_mean_squared_error(y, yhat))
        if name == "mae":
            return float(skm.mean_absolute_error(y, yhat))
        if name == "mape":
            return float(skm.mean_absolute_percentage_error(y, yhat))
        return float(skm.r2_score(y, yhat)) if len(y) > 1 else math.nan

    return score


def metric_function(spec: ModelSpec, name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``f(y, scores) -> float`` computing metric ``name`` of ``spec``'s task with ``sklearn.metrics``.

    Raises:
        ValueError: ``name`` is not one of the task's metrics.
    """
    if name not in TASK_METRICS[spec.task]:
        raise ValueError(
            f"{name!r} is not a {spec.task} metric; use one of {', '.join(TASK_METRICS[spec.task])}"
        )
    if spec.task == "binary":
        return _binary(name)
    if spec.task == "multiclass":
        return _multiclass(name, len(spec.classes))
    return _regression(name)


def _checked(spec: ModelSpec, y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y)
    s = np.asarray(scores, dtype=np.float64)
    if y_arr.size == 0:
        raise ValueError("cannot score an empty set of predictions")
    if s.shape[0] != y_arr.shape[0]:
        raise ValueError(f"labels and scores differ in length: {y_arr.shape[0]} vs {s.shape[0]}")
    return y_arr, s


def metric(spec: ModelSpec, name: str, y: Any, scores: Any) -> float:
    """One metric of ``spec``'s task (NaN where undefined, e.g. ROC AUC on a one-class set)."""
    y_arr, s = _checked(spec, y, scores)
    return metric_function(spec, name)(y_arr, s)


def metrics(spec: ModelSpec, y: Any, scores: Any, names: Sequence[str] | None = None) -> dict[str, float]:
    """Every metric of ``spec``'s task (or ``names``) for encoded targets ``y`` and ``scores``."""
    y_arr, s = _checked(spec, y, scores)
    return {name: metric_function(spec, name)(y_arr, s) for name in (names or TASK_METRICS[spec.task])}


def improvement(metric_name: str, challenger: float, champion: float) -> float:
    """How much better ``challenger`` is than ``champion`` (positive = better; error metrics flipped)."""
    return champion - challenger if metric_name in LOWER_IS_BETTER else challenger - champion
