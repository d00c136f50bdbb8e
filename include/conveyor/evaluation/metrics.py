"""Binary-classification metrics shared by training, the gate and live monitoring."""

from __future__ import annotations

from typing import Any

import numpy as np

METRIC_NAMES = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss")
# Lower is better only for log loss; the gate uses this to orient "improvement".
LOWER_IS_BETTER = frozenset({"log_loss"})


def binary_metrics(y_true: Any, probability: Any, threshold: float = 0.5) -> dict[str, float]:
    """Score positive-class probabilities against 0/1 labels.

    ROC AUC is NaN when only one class is present (e.g. a tiny live window), never an exception.
    """
    from sklearn import metrics as skm

    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(probability, dtype=float), 1e-7, 1 - 1e-7)
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in shape: {y.shape} vs {p.shape}")
    if y.size == 0:
        raise ValueError("cannot score an empty set of predictions")
    pred = (p >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)) if both_classes else float("nan"),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
    }
