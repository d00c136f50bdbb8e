"""A models-from-code pyfunc for the registry and evaluation tests (honours the model-artifact contract).

``artifacts/weights.json`` holds ``{"coef": {feature: weight}, "intercept": b}``; ``predict`` returns
a DataFrame of exactly ``probability`` (float64) and ``prediction`` (int64). ``"fail_on_load": true``
makes loading fail and ``"bad_output": true`` makes ``predict`` break the contract, for the error paths.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd


class TinyLinearModel(mlflow.pyfunc.PythonModel):
    """P(label == 1) = sigmoid(intercept + sum(coef[f] * x[f]))."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["weights"]) as fh:
            weights = json.load(fh)
        if weights.get("fail_on_load"):
            raise RuntimeError("tiny model configured to fail on load")
        self.coef: dict[str, float] = weights["coef"]
        self.intercept = float(weights.get("intercept", 0.0))
        self.bad_output = bool(weights.get("bad_output", False))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        logit = np.full(len(model_input), self.intercept)
        for feature, weight in self.coef.items():
            logit = logit + weight * model_input[feature].astype(float).to_numpy()
        probability = 1.0 / (1.0 + np.exp(-logit))
        if self.bad_output:
            return pd.DataFrame({"score": probability})
        return pd.DataFrame({"probability": probability, "prediction": (probability >= 0.5).astype("int64")})


mlflow.models.set_model(TinyLinearModel())
