"""MLflow models-from-code wrapper serving a TFLite (LiteRT) variant of a Conveyor Keras MLP.

The ``.tflite`` file holds only the float core (Dense layers after preprocessing); this wrapper
does the preprocessing in numpy from ``preprocessing.json``, exactly as the Keras layers do it:
NaN → training median, ``(x - mean) / max(sqrt(variance), epsilon)``, and per categorical feature a
one-hot block ``[OOV, *vocabulary]`` where unknown and missing values land in the OOV slot.

The float core ends in the Keras model's head (sigmoid, softmax or linear, plus any layer after the
last Dense such as a target rescaling), and the wrapper turns its scores into the task's output
frame with ``pyfunc_outputs.configured_output_frame`` and the ``task``/``classes`` of its
``model_config`` (binary when absent): binary ``probability``/``prediction``, multiclass
``prediction`` + ``probability_<label>``, regression ``prediction``.

MLflow copies this file into the model directory and runs it at load time, so it is
self-contained (no TensorFlow: only numpy, pandas and ``ai_edge_litert``; ``pyfunc_outputs`` ships
with the model via ``code_paths``, with ``conveyor.pyfunc_outputs`` as the fallback when imported
directly). Artifacts: ``tflite_model`` and ``preprocessing``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

try:  # shipped next to this file by MLflow (``code_paths``)
    from pyfunc_outputs import configured_output_frame
except ImportError:  # imported directly, outside a logged model
    from conveyor.pyfunc_outputs import configured_output_frame


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


class TFLiteModel(PythonModel):
    """Loads the LiteRT interpreter once; ``predict`` preprocesses in numpy, invokes it and builds the
    task's output frame from the scores."""

    def load_context(self, context: Any) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.output_config: dict[str, Any] = dict(getattr(context, "model_config", None) or {})
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
        scores = np.empty(0, dtype=np.float64)
        if features is not None:
            with self.lock:
                if features.shape[0] != self.batch_size:
                    self.interpreter.resize_tensor_input(self.input_index, list(features.shape))
                    self.interpreter.allocate_tensors()
                    self.batch_size = features.shape[0]
                self.interpreter.set_tensor(self.input_index, features)
                self.interpreter.invoke()
                scores = np.array(self.interpreter.get_tensor(self.output_index), dtype=np.float64)
        return configured_output_frame(self.output_config, scores)


#: The class's earlier name, for callers that import it (logged models carry their own copy of this file).
TFLiteBinaryClassifier = TFLiteModel

mlflow.models.set_model(TFLiteModel())
