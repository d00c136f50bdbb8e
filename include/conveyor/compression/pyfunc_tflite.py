"""MLflow models-from-code wrapper serving a TFLite (LiteRT) variant of a Conveyor Keras MLP.

The ``.tflite`` file holds only the float core (Dense layers after preprocessing); this wrapper
does the preprocessing in numpy from ``preprocessing.json``, exactly as the Keras layers do it:
NaN → training median, ``(x - mean) / max(sqrt(variance), epsilon)``, and per categorical feature a
one-hot block ``[OOV, *vocabulary]`` where unknown and missing values land in the OOV slot.

MLflow copies this file into the model directory and runs it at load time, so it is
self-contained (no ``conveyor`` import, no TensorFlow: only numpy, pandas and ``ai_edge_litert``).
Artifacts: ``tflite_model`` and ``preprocessing``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def preprocess(frame: pd.DataFrame, preprocessing: dict[str, Any]) -> np.ndarray:
    """Raw features → the float32 vector the Keras model's ``features`` layer produces."""
    blocks: list[np.ndarray] = []
    numeric = preprocessing["numeric"]
    if numeric["names"]:
        columns = []
        for name in numeric["names"]:
            column = frame[name]
            if column.dtype.kind not in "fiub":
                column = pd.to_numeric(column, errors="coerce")
            columns.append(column.to_numpy(dtype=np.float32, na_value=np.nan))
        values = np.stack(columns, axis=1)
        impute = np.asarray(numeric["impute"], dtype=np.float32)
        values = np.where(np.isnan(values), impute, values)
        mean = np.asarray(numeric["mean"], dtype=np.float32)
        scale = np.maximum(
            np.sqrt(np.asarray(numeric["variance"], dtype=np.float32)), np.float32(preprocessing["epsilon"])
        )
        blocks.append((values - mean) / scale)
    for feature in preprocessing["categorical"]:
        oov = int(feature.get("num_oov_indices", 1))
        index = {token: i + oov for i, token in enumerate(feature["vocabulary"])}
        codes = np.fromiter(
            (index.get(_token(v), 0) for v in frame[feature["name"]].tolist()),
            dtype=np.int64,
            count=len(frame),
        )
        one_hot = np.zeros((len(frame), len(feature["vocabulary"]) + oov), dtype=np.float32)
        one_hot[np.arange(len(frame)), codes] = 1.0
        blocks.append(one_hot)
    return np.concatenate(blocks, axis=1).astype(np.float32, copy=False)


def _token(value: Any) -> str:
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return ""
    return str(value)


class TFLiteBinaryClassifier(PythonModel):
    """Loads the LiteRT interpreter once; ``predict`` preprocesses in numpy and invokes it."""

    def load_context(self, context: Any) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with open(context.artifacts["preprocessing"]) as fh:
            self.preprocessing: dict[str, Any] = json.load(fh)
        self.interpreter = Interpreter(model_path=context.artifacts["tflite_model"], num_threads=1)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.batch_size = int(self.interpreter.get_input_details()[0]["shape"][0])
        # A LiteRT interpreter is not thread-safe; a model server may call predict concurrently.
        self.lock = threading.Lock()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        frame = pd.DataFrame(model_input)
        features = preprocess(frame, self.preprocessing) if len(frame) else None
        probability = np.empty(0, dtype=np.float64)
        if features is not None:
            with self.lock:
                if features.shape[0] != self.batch_size:
                    self.interpreter.resize_tensor_input(self.input_index, list(features.shape))
                    self.interpreter.allocate_tensors()
                    self.batch_size = features.shape[0]
                self.interpreter.set_tensor(self.input_index, features)
                self.interpreter.invoke()
                probability = np.array(self.interpreter.get_tensor(self.output_index), dtype=np.float64)
        probability = probability.reshape(-1)
        return pd.DataFrame({"probability": probability, "prediction": (probability >= 0.5).astype(np.int64)})


mlflow.models.set_model(TFLiteBinaryClassifier())
