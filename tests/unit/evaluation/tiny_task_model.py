"""A models-from-code pyfunc for the multiclass and regression evaluation tests (the task's output contract).

``artifacts/weights.json`` holds ``{"task": ..., "classes": [...], "coef": ..., "intercept": ...}``:
regression ``coef`` is ``{feature: weight}`` (prediction = intercept + sum of weight * feature);
multiclass ``coef`` is one ``{feature: weight}`` per class (softmax of the logits). ``predict``
answers with ``conveyor.pyfunc_outputs.output_frame``, the frame every Conveyor pyfunc builds.
``"bad_output": true`` halves the probabilities (rows no longer sum to 1), for the error path.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from conveyor.pyfunc_outputs import output_frame


class TinyTaskModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        with open(context.artifacts["weights"]) as fh:
            weights = json.load(fh)
        self.task: str = weights["task"]
        self.classes: list[Any] = weights.get("classes", [])
        self.coef: Any = weights["coef"]
        self.intercept: Any = weights.get("intercept", 0.0)
        self.bad_output = bool(weights.get("bad_output", False))

    @staticmethod
    def _linear(coef: dict[str, float], frame: pd.DataFrame, intercept: float) -> np.ndarray:
        out = np.full(len(frame), float(intercept))
        for feature, weight in coef.items():
            out = out + weight * frame[feature].astype(float).to_numpy()
        return out

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        if self.task == "regression":
            return output_frame(self.task, [], self._linear(self.coef, model_input, self.intercept))
        intercepts = self.intercept or [0.0] * len(self.coef)
        logits = np.column_stack(
            [self._linear(c, model_input, b) for c, b in zip(self.coef, intercepts, strict=True)]
        )
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        if self.bad_output:
            proba = proba / 2
        return output_frame(self.task, self.classes, proba)


mlflow.models.set_model(TinyTaskModel())
