"""MLflow models-from-code wrapper serving a Conveyor Keras MLP (preprocessing inside the model).

MLflow copies this file into the model directory and runs it at load time, so it is
self-contained: it imports no ``conveyor`` module (``pyfunc_outputs``, the output contract, ships in
the model's ``code/`` folder) and nothing heavy at import time (TensorFlow loads in
``load_context``). Artifacts: ``keras_model`` (the ``.keras`` file). Model config:
``numeric_features`` and ``categorical_features`` (the spec's feature names, in order), ``task`` and
``classes``. The network's raw output (binary: P(label 1); multiclass: the k softmax probabilities;
regression: the value) becomes the task's output frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

try:  # the copy shipped with the model (MLflow puts its code/ folder on sys.path)
    from pyfunc_outputs import configured_output_frame
except ImportError:  # imported from the package (training, tests)
    from conveyor.pyfunc_outputs import configured_output_frame


def keras_inputs(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, Any]:
    """The Keras model's named inputs (TensorFlow tensors of shape (n, 1)) from raw features.

    Numeric features become float32 with NaN kept (the model imputes); categorical ones strings,
    missing values as ``""`` (the out-of-vocabulary slot).
    """
    import tensorflow as tf

    inputs: dict[str, Any] = {}
    for name in numeric:
        column = frame[name]
        if column.dtype.kind not in "fiub":
            column = pd.to_numeric(column, errors="coerce")
        values = column.to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
        inputs[name] = tf.constant(values, dtype=tf.float32)
    for name in categorical:
        strings = ["" if _missing(v) else str(v) for v in frame[name].tolist()]
        inputs[name] = tf.constant(np.asarray(strings, dtype=object).reshape(-1, 1), dtype=tf.string)
    return inputs


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _compiled_forward(model: Any) -> Any:
    """The model's inference pass as one ``tf.function`` traced once for any batch size."""
    import tensorflow as tf

    signature = {
        tensor.name.split(":")[0]: tf.TensorSpec(shape=(None, 1), dtype=tensor.dtype, name=tensor.name)
        for tensor in model.inputs
    }

    @tf.function(input_signature=[signature])
    def forward(inputs: dict[str, Any]) -> Any:
        return model(inputs, training=False)

    return forward


class KerasModel(PythonModel):
    """Loads the ``.keras`` model once; ``predict`` maps raw features to the task's output frame."""

    def load_context(self, context: Any) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        config = context.model_config or {}
        self.config: dict[str, Any] = dict(config)
        self.numeric: list[str] = list(config.get("numeric_features", []))
        self.categorical: list[str] = list(config.get("categorical_features", []))
        self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        self._forward = _compiled_forward(self.model)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        frame = pd.DataFrame(model_input)
        if frame.empty:
            return configured_output_frame(self.config, np.empty(0))
        scores = self._forward(keras_inputs(frame, self.numeric, self.categorical))
        return configured_output_frame(self.config, np.asarray(scores))


mlflow.models.set_model(KerasModel())
