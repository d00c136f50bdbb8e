"""MLflow models-from-code wrapper serving a Conveyor scikit-learn pipeline saved with skops.

MLflow copies this file into the model directory and runs it at load time, so it is
self-contained (no ``conveyor`` import). Artifacts: ``sklearn_model`` (a ``.skops`` file, loaded
without pickle and trusting only the types below). Model config: ``numeric_features`` and
``categorical_features``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

#: Types beyond skops' default-trusted ones that a Conveyor model file may contain: numpy's dtype and
#: the tree structures of scikit-learn's own tree ensembles (``kind: python`` models may be gradient
#: boosting or forests). Anything else in a ``.skops`` file is refused at load time.
TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]


def sklearn_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Raw features as the pipeline was fitted on: numerics float64, categoricals str or ``None``."""
    columns: dict[str, Any] = {}
    for name in numeric:
        columns[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in categorical:
        columns[name] = [None if _missing(v) else str(v) for v in frame[name].tolist()]
    return pd.DataFrame(columns, index=frame.index)


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


class SklearnBinaryClassifier(PythonModel):
    """Loads the pipeline once; ``predict`` returns P(label == 1) and the 0/1 decision."""

    def load_context(self, context: Any) -> None:
        import skops.io

        config = context.model_config or {}
        self.numeric: list[str] = list(config.get("numeric_features", []))
        self.categorical: list[str] = list(config.get("categorical_features", []))
        self.pipeline = skops.io.load(context.artifacts["sklearn_model"], trusted=TRUSTED_TYPES)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        frame = pd.DataFrame(model_input)
        if frame.empty:
            proba = np.empty(0)
        else:
            proba = self.pipeline.predict_proba(sklearn_frame(frame, self.numeric, self.categorical))[:, 1]
        proba = np.asarray(proba, dtype=np.float64)
        return pd.DataFrame({"probability": proba, "prediction": (proba >= 0.5).astype(np.int64)})


mlflow.models.set_model(SklearnBinaryClassifier())
