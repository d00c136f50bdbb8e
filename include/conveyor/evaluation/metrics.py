"""Metrics shared by training, the gate and live monitoring: a thin layer over :mod:`conveyor.tasks`.

There is one implementation of every metric, ``conveyor.tasks.metric_function`` (``sklearn.metrics``);
this module keeps the binary helpers its callers use and the spec stand-ins the gate's array-level
functions need when they are called without a spec.

- :data:`LOWER_IS_BETTER` is ``conveyor.config.LOWER_IS_BETTER`` (error metrics of every task).
- :data:`METRIC_NAMES` is the *binary* metric set, kept for old callers; task-aware code uses
  ``spec.metric_names`` or ``conveyor.config.TASK_METRICS[task]``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from conveyor.config import LOWER_IS_BETTER, TASK_METRICS, DataSpec, ModelSpec

__all__ = ["LOWER_IS_BETTER", "METRIC_NAMES", "TASK_METRICS", "binary_metrics", "binary_spec", "task_of"]

#: The binary metrics (``TASK_METRICS["binary"]``); use ``spec.metric_names`` for any task.
METRIC_NAMES: tuple[str, ...] = TASK_METRICS["binary"]


@lru_cache(maxsize=1)
def binary_spec() -> ModelSpec:
    """A stand-in binary spec (labels 0/1, positive 1) for scoring arrays when no spec is at hand.

    Only ``task`` and the label set are set: enough for ``conveyor.tasks``' metric functions, which
    read nothing else; never hand it to a stage.
    """
    return ModelSpec.model_construct(name="binary", task="binary", data=DataSpec.model_construct())


def task_of(spec: ModelSpec | None) -> ModelSpec:
    """``spec``, or the binary stand-in when it is ``None`` (the gate's binary default)."""
    return binary_spec() if spec is None else spec


def binary_metrics(y_true: Any, probability: Any) -> dict[str, float]:
    """Every binary metric of P(label == 1) against 0/1 labels (``conveyor.tasks.metrics``).

    Predictions are ``probability >= 0.5`` (the output contract's ``prediction``). ROC AUC is NaN when
    only one class is present (e.g. a tiny live window), never an exception.

    Raises:
        ValueError: no rows, or labels and probabilities of different shapes.
    """
    from conveyor import tasks

    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(probability, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in shape: {y.shape} vs {p.shape}")
    return tasks.metrics(binary_spec(), y, p)
