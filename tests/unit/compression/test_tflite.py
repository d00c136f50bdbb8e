"""The TFLite runtime reproduces the Keras model: numpy preprocessing + the float core."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conveyor.training import TrainResult

from ..training.support import tiny_keras_spec

pytestmark = pytest.mark.unit


def test_numpy_preprocessing_and_float_core_match_keras(
    keras_trained: TrainResult,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    tracking: dict[str, str],
    tmp_path: Path,
) -> None:
    import keras
    import mlflow
    from mlflow.pyfunc import PythonModelContext

    from conveyor.compression.pyfunc_tflite import TFLiteBinaryClassifier, preprocess
    from conveyor.compression.tflite import convert_to_tflite
    from conveyor.training.pyfunc_keras import keras_inputs

    spec = tiny_keras_spec()
    local = Path(mlflow.artifacts.download_artifacts(keras_trained.model_uri, dst_path=str(tmp_path)))
    keras_model = keras.saving.load_model(local / "artifacts" / "model.keras", compile=False)
    preprocessing = json.loads((local / "artifacts" / "preprocessing.json").read_text())

    rows = frames[1][spec.feature_names].head(24).reset_index(drop=True)
    rows.loc[0, "total_charges"] = np.nan
    rows.loc[1, "age"] = np.nan
    rows.loc[2, "contract"] = "lifetime"  # unknown category
    rows.loc[3, "payment_method"] = None
    rows.loc[4, "internet_service"] = "satellite"

    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    features_layer = keras.Model(keras_model.inputs, keras_model.get_layer("features").output)
    expected_features = np.asarray(features_layer(keras_inputs(rows, numeric, categorical)))
    np.testing.assert_allclose(preprocess(rows, preprocessing), expected_features, atol=1e-5)
    assert expected_features.shape[1] == preprocessing["width"]

    core = convert_to_tflite(keras_model, tmp_path / "core.tflite", quantize=False)
    served = TFLiteBinaryClassifier()
    served.load_context(
        PythonModelContext(
            {"tflite_model": str(core), "preprocessing": str(local / "artifacts" / "preprocessing.json")}, {}
        )
    )
    reference = mlflow.pyfunc.load_model(keras_trained.model_uri).predict(rows)["probability"].to_numpy()
    tflite = served.predict(None, rows)
    np.testing.assert_allclose(tflite["probability"].to_numpy(), reference, atol=1e-4)
    assert str(tflite["prediction"].dtype) == "int64"
    # One row after a batch: the interpreter resizes its input both ways.
    single = served.predict(None, rows.iloc[[3]])["probability"].to_numpy()
    np.testing.assert_allclose(single, reference[[3]], atol=1e-4)
