"""A models-from-code pyfunc for the serving and monitoring tests (honours the model-artifact contract).

It wraps a scikit-learn ``LogisticRegression`` rebuilt from ``artifacts/weights.json`` (no pickles):
numeric columns as they come, categorical columns one-hot encoded over the categories the weights
name. ``predict`` returns exactly ``probability`` (float64) and ``prediction`` (int64).
"""

from __future__ import annotations

import json
import time
from typing import Any

import mlflow
import numpy as np
import pandas as pd


class TinyLogisticModel(mlflow.pyfunc.PythonModel):
    """Logistic regression over numeric features plus one-hot categorical features."""

    def load_context(self, context: Any) -> None:
        from sklearn.linear_model import LogisticRegression

        with open(context.artifacts["weights"]) as fh:
            weights = json.load(fh)
        self.numeric: list[str] = weights["numeric"]
        self.categorical: dict[str, list[str]] = weights["categorical"]
        self.sleep_s = float(weights.get("sleep_ms", 0.0)) / 1000.0
        self.offset = float(weights.get("offset", 0.0))
        self.lr = LogisticRegression()
        self.lr.coef_ = np.asarray([weights["coef"]], dtype=float)
        self.lr.intercept_ = np.asarray([weights["intercept"] + self.offset], dtype=float)
        self.lr.classes_ = np.asarray([0, 1])

    def _design(self, df: pd.DataFrame) -> np.ndarray:
        parts = [df[self.numeric].astype(float).fillna(0.0).to_numpy()]
        for column, categories in self.categorical.items():
            values = df[column].astype(str).to_numpy()
            parts.append(np.stack([(values == c).astype(float) for c in categories], axis=1))
        return np.concatenate(parts, axis=1)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        probability = self.lr.predict_proba(self._design(model_input))[:, 1].astype("float64")
        return pd.DataFrame({"probability": probability, "prediction": (probability >= 0.5).astype("int64")})


mlflow.models.set_model(TinyLogisticModel())
