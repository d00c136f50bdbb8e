"""MLflow models-from-code wrapper serving a Conveyor scikit-learn pipeline saved with skops.

MLflow copies this file into the model directory and runs it at load time, so it is
self-contained (no ``conveyor`` import; ``pyfunc_outputs``, the output contract, ships in the model's
``code/`` folder). Artifacts: ``sklearn_model`` (a ``.skops`` file, loaded without pickle and trusting
only the types below). Model config: ``numeric_features``, ``categorical_features``, ``task`` and
``classes``.

Classification (``binary``, ``multiclass``): ``predict_proba``, its columns placed by the estimator's
``classes_`` (the encoded target: class indices ``0..k-1``) so a class the model never saw gets
probability 0. Regression: ``predict``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

try:  # the copy shipped with the model (MLflow puts its code/ folder on sys.path)
    from pyfunc_outputs import configured_output_frame
except ImportError:  # imported from the package (training, tests)
    from conveyor.pyfunc_outputs import configured_output_frame

#: Types beyond skops' default-trusted ones that a Conveyor model file may contain: numpy's dtype and
#: the tree structures of scikit-learn's own tree ensembles (``kind: python`` models may be gradient
#: boosting or forests). Anything else in a ``.skops`` file is refused at load time.
TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]


def sklearn_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Raw features as the pipeline was fitted on: numerics float64, categoricals str or ``None``.

    A frame that already is exactly that (the model server's validated input of a numeric model) is
    used as it is: the pipeline only reads it.
    """
    if not categorical and list(frame.columns) == numeric and all(d == np.float64 for d in frame.dtypes):
        return frame
    columns: dict[str, Any] = {}
    for name in numeric:
        columns[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in categorical:
        columns[name] = [None if _missing(v) else str(v) for v in frame[name].tolist()]
    return pd.DataFrame(columns, index=frame.index)


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def n_scores(config: dict[str, Any]) -> int:
    """How many class probabilities a classifier of ``config``'s task gives (0: a regressor)."""
    task = str(config.get("task", "binary"))
    if task == "regression":
        return 0
    return 2 if task == "binary" else len(config.get("classes") or [])


def class_scores(estimator: Any, features: pd.DataFrame, k: int) -> np.ndarray:
    """``predict_proba`` as an (n, k) matrix whose column j is P(class index j), by ``classes_``.

    A class the estimator was not fitted on gets probability 0.

    Raises:
        ValueError: ``classes_`` holds something other than class indices ``0..k-1``.
    """
    columns = class_columns(getattr(estimator, "classes_", None), k)
    proba = np.asarray(estimator.predict_proba(features), dtype=np.float64)
    scores = np.zeros((len(proba), k), dtype=np.float64)
    scores[:, columns] = proba
    return scores


def class_columns(classes: Any, k: int) -> list[int]:
    """The class index of each of ``predict_proba``'s columns (``classes_``, checked to be in ``0..k-1``).

    Raises:
        ValueError: no ``classes_``, or labels that are not class indices ``0..k-1``.
    """
    if classes is None:
        raise ValueError("the classifier has no classes_")
    columns: list[int] = []
    for label in list(classes):
        try:
            index = int(label)
        except (TypeError, ValueError):
            index = -1
        if index != label or not 0 <= index < k or index in columns:
            raise ValueError(
                f"the classifier's classes_ {np.asarray(classes).tolist()} are not class indices 0..{k - 1} "
                "(fit it on the encoded target)"
            )
        columns.append(index)
    return columns


class SklearnModel(PythonModel):
    """Loads the pipeline once; ``predict`` returns the task's output frame."""

    def load_context(self, context: Any) -> None:
        import skops.io

        config = context.model_config or {}
        self.config: dict[str, Any] = dict(config)
        self.numeric: list[str] = list(config.get("numeric_features", []))
        self.categorical: list[str] = list(config.get("categorical_features", []))
        self.pipeline = skops.io.load(context.artifacts["sklearn_model"], trusted=TRUSTED_TYPES)
        self.k = n_scores(self.config)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        frame = pd.DataFrame(model_input)
        if frame.empty:
            return configured_output_frame(self.config, np.empty(0))
        features = sklearn_frame(frame, self.numeric, self.categorical)
        if self.k:
            scores = class_scores(self.pipeline, features, self.k)
        else:
            scores = np.asarray(self.pipeline.predict(features), dtype=np.float64)
        return configured_output_frame(self.config, scores)


mlflow.models.set_model(SklearnModel())
