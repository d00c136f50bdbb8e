"""A models-from-code pyfunc of any task for the serving and monitoring tests (the output contract).

Linear scores over numeric features plus one-hot categorical features, weights from
``artifacts/weights.json`` (no pickles): multiclass ``softmax(X @ coef.T + intercept)`` (one row of
``coef`` per class), regression ``X @ coef + intercept``. The output frame is built by
``pyfunc_outputs.configured_output_frame`` from the model's ``model_config`` (``task``, ``classes``),
as every Conveyor wrapper does.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd

try:  # shipped with the model (code_paths)
    from pyfunc_outputs import configured_output_frame
except ImportError:  # pragma: no cover - imported directly
    from conveyor.pyfunc_outputs import configured_output_frame


class TinyTaskModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        with open(context.artifacts["weights"]) as fh:
            weights = json.load(fh)
        self.numeric: list[str] = weights["numeric"]
        self.categorical: dict[str, list[str]] = weights["categorical"]
        self.coef = np.asarray(weights["coef"], dtype=float)
        self.intercept = np.asarray(weights["intercept"], dtype=float)
        self.config = dict(context.model_config or {})

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        parts = [model_input[self.numeric].astype(float).fillna(0.0).to_numpy()]
        for column, categories in self.categorical.items():
            values = model_input[column].astype(str).to_numpy()
            parts.append(np.stack([(values == c).astype(float) for c in categories], axis=1))
        design = np.concatenate(parts, axis=1)
        if self.coef.ndim == 2:  # multiclass: softmax over the class scores
            z = design @ self.coef.T + self.intercept
            z -= z.max(axis=1, keepdims=True)
            scores = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        else:
            scores = design @ self.coef + self.intercept
        return configured_output_frame(self.config, scores)


mlflow.models.set_model(TinyTaskModel())
