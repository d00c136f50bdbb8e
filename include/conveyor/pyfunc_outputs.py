"""The model-output contract per task type, as the logged pyfuncs build it (``docs/CONTRACTS.md``).

Every Conveyor pyfunc (Keras, scikit-learn, TFLite, any trainer) turns its raw scores into the
contract's frame with :func:`output_frame`:

- ``binary``: ``probability`` (float64, P(target == positive label)) and ``prediction`` (int64, 1
  when ``probability >= 0.5``);
- ``multiclass``: ``prediction`` (the label: int64 when every class is an integer, else string) and
  one ``probability_<label>`` float64 column per class, in ``data.classes`` order;
- ``regression``: ``prediction`` (float64).

MLflow ships this file with every model (``code_paths``) and puts it on ``sys.path`` at load time,
so the models-from-code wrappers import it as ``pyfunc_outputs``; it imports only numpy and pandas.
``conveyor.tasks`` uses the same functions, so training, the gate and serving cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: ``model_config`` keys every Conveyor pyfunc receives (``conveyor.training.base.log_pyfunc_model``).
TASK_KEY = "task"
CLASSES_KEY = "classes"
#: The prefix of a multiclass model's per-class probability columns.
PROBABILITY_PREFIX = "probability_"


def probability_column(label: Any) -> str:
    """The output column holding P(target == ``label``) of a multiclass model."""
    return f"{PROBABILITY_PREFIX}{label}"


def output_columns(task: str, classes: Sequence[Any]) -> list[str]:
    """The contract's output columns, in order."""
    if task == "binary":
        return ["probability", "prediction"]
    if task == "multiclass":
        return ["prediction", *(probability_column(c) for c in classes)]
    if task == "regression":
        return ["prediction"]
    raise ValueError(f"unknown task type {task!r}; use binary, multiclass or regression")


def integer_labels(classes: Sequence[Any]) -> bool:
    """Whether every class label is an integer (then ``prediction`` is int64, else a string)."""
    return all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes)


def output_frame(task: str, classes: Sequence[Any], scores: Any) -> pd.DataFrame:
    """The contract's frame from a model's raw scores.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        classes: the label set (multiclass; ignored otherwise).
        scores: binary: P(positive), shape (n,) or (n, 1), or scikit-learn's (n, 2) ``predict_proba``;
            multiclass: (n, k) class probabilities in ``classes`` order; regression: (n,) or (n, 1)
            predicted values.
    """
    values = np.asarray(scores, dtype=np.float64)
    if task == "binary":
        if values.ndim == 2 and values.shape[1] == 2:
            values = values[:, 1]
        proba = values.reshape(-1)
        return pd.DataFrame({"probability": proba, "prediction": (proba >= 0.5).astype(np.int64)})
    if task == "regression":
        return pd.DataFrame({"prediction": values.reshape(-1)})
    if task != "multiclass":
        raise ValueError(f"unknown task type {task!r}; use binary, multiclass or regression")
    k = len(classes)
    matrix = values.reshape(-1, k) if values.size else np.empty((0, k))
    if matrix.shape[1] != k:
        raise ValueError(f"a multiclass model must score {k} classes, it gave {matrix.shape[1]} columns")
    labels = np.asarray(list(classes), dtype=np.int64 if integer_labels(classes) else object)
    prediction = labels[np.argmax(matrix, axis=1)] if len(matrix) else labels[:0]
    columns: dict[str, Any] = {"prediction": prediction}
    for j, label in enumerate(classes):
        columns[probability_column(label)] = matrix[:, j]
    return pd.DataFrame(columns)


def configured_output_frame(config: Mapping[str, Any] | None, scores: Any) -> pd.DataFrame:
    """:func:`output_frame` for the task and classes in a pyfunc's ``model_config`` (binary if absent)."""
    config = config or {}
    return output_frame(str(config.get(TASK_KEY, "binary")), list(config.get(CLASSES_KEY) or []), scores)
