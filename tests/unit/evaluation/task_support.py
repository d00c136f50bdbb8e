"""Multiclass and regression specs, data and logged pyfuncs for the evaluation tests.

Imported as ``unit.evaluation.task_support``; ``tiny_task_model.py`` next to it is handed to MLflow by
file path (models-from-code). The binary counterparts are in ``unit/registry/support.py``.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TINY_TASK_MODEL_CODE = Path(__file__).with_name("tiny_task_model.py")
CLASSES = ["a", "b", "c"]
#: The true multiclass model: logits per class (``make_frame`` samples labels from its softmax).
MC_TRUE: list[dict[str, float]] = [{"x1": 2.0}, {"x2": 2.0}, {"x1": -1.5, "x2": -1.5}]
MC_WEAK: list[dict[str, float]] = [{"x1": 0.6}, {"x1": -0.3, "x2": 0.2}, {}]
#: The regression target is ``3 * x1 - 2 * x2 + N(0, 1)``.
REG_TRUE: dict[str, float] = {"x1": 3.0, "x2": -2.0}
REG_WEAK: dict[str, float] = {"x1": 3.0}


def make_spec(task: str, **gate: Any) -> Any:
    """A ``task`` spec with features ``x1``, ``x2`` (numeric) and ``plan`` (categorical); target
    ``label`` (multiclass classes ``a``, ``b``, ``c``); ``gate`` sets gate fields."""
    from conveyor.config import ModelSpec

    data: dict[str, Any] = {"id_column": "row_id", "event_time_column": "event_date", "target": "label"}
    if task == "multiclass":
        data["classes"] = CLASSES
    return ModelSpec.model_validate(
        {
            "name": f"toy_{task}",
            "task": task,
            "registered_model_name": f"conveyor-toy-{task}",
            "data": data,
            "numeric_features": [{"name": "x1"}, {"name": "x2"}],
            "categorical_features": [{"name": "plan", "categories": ["basic", "pro"]}],
            "trainer": {"kind": "sklearn_pipeline", "seed": 3},
            "gate": {"floors": {}, **gate},
        }
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _linear(coef: dict[str, float], frame: pd.DataFrame) -> np.ndarray:
    out = np.zeros(len(frame))
    for feature, weight in coef.items():
        out += weight * frame[feature].to_numpy(dtype=float)
    return out


def multiclass_proba(coef: list[dict[str, float]], frame: pd.DataFrame) -> np.ndarray:
    """The tiny multiclass model's probabilities (as ``tiny_task_model.py`` computes them)."""
    return softmax(np.column_stack([_linear(c, frame) for c in coef]))


def regression_prediction(coef: dict[str, float], frame: pd.DataFrame) -> np.ndarray:
    """The tiny regression model's predictions."""
    return _linear(coef, frame)


def make_frame(task: str, rows: int = 500, seed: int = 0) -> pd.DataFrame:
    """Labelled ``task`` rows: ``x1``, ``x2`` ~ N(0, 1), ``plan``; ``label`` drawn from the true model."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "row_id": np.arange(rows),
            "x1": rng.normal(size=rows),
            "x2": rng.normal(size=rows),
            "plan": rng.choice(["basic", "pro"], size=rows),
        }
    )
    if task == "regression":
        frame["label"] = regression_prediction(REG_TRUE, frame) + rng.normal(size=rows)
    else:
        proba = multiclass_proba(MC_TRUE, frame)
        drawn = (rng.uniform(size=(rows, 1)) > np.cumsum(proba, axis=1)).sum(axis=1)
        frame["label"] = np.asarray(CLASSES, dtype=object)[np.minimum(drawn, len(CLASSES) - 1)]
    return frame


def log_task_model(client: Any, run_id: str, spec: Any, coef: Any, **extra: Any) -> str:
    """Log the tiny task pyfunc (``coef`` as in ``tiny_task_model.py``) into ``run_id``; its URI."""
    import mlflow

    from conveyor.registry.tracking import store_side_tracking_uri
    from unit.registry.support import PIP_REQUIREMENTS

    weights = {"task": spec.task, "classes": list(spec.classes), "coef": coef, **extra}
    with tempfile.TemporaryDirectory() as tmp:
        weights_file = Path(tmp) / "weights.json"
        weights_file.write_text(json.dumps(weights))
        with store_side_tracking_uri(client), mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(TINY_TASK_MODEL_CODE),
                artifacts={"weights": str(weights_file)},
                pip_requirements=PIP_REQUIREMENTS,
            )
        client.update_run(run_id, status="RUNNING")
    return str(info.model_uri)
