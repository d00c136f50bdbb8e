"""TFLite variants of multiclass and regression Keras MLPs reproduce the Keras model's outputs.

The networks are built here from Conveyor's own preprocessing (``keras_mlp.build_preprocessing``)
with the task's head: softmax for multiclass, a linear Dense followed by a ``Rescaling`` that
de-standardises the target for regression (a layer after the last Dense, which the float core
must keep). Weights are the seeded initial ones: the conversion, not the training, is under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from unit.serving import support

pytestmark = pytest.mark.unit


def _keras_model(task: str, tmp_path: Path) -> tuple[Any, Any, pd.DataFrame, Path]:
    """(spec, Keras model, eval rows, a model folder laid out like a logged keras_mlp model)."""
    from conveyor.training.base import feature_frame
    from conveyor.training.keras_mlp import (
        build_preprocessing,
        import_keras,
        impute_values,
        preprocessing_document,
    )

    keras, _ = import_keras()
    keras.utils.set_random_seed(7)
    spec = support.load_spec_file(support.write_task_spec(tmp_path / "specs", f"tiny_{task}", task))
    frame = support.make_task_frame(task, 240, seed=11)
    train, eval_df = frame.iloc[:200], frame.iloc[200:].reset_index(drop=True)
    features = feature_frame(spec, train)
    impute = impute_values(spec, features)
    inputs, x = build_preprocessing(spec, features, impute)
    x = keras.layers.Dense(8, activation="relu", name="hidden_0")(x)
    if task == "multiclass":
        output = keras.layers.Dense(len(spec.classes), activation="softmax", name="probabilities")(x)
    else:
        standardised = keras.layers.Dense(1, name="standardised")(x)
        output = keras.layers.Rescaling(25.0, offset=100.0, name="prediction")(standardised)
    model = keras.Model(inputs, output, name=f"{spec.name}_mlp")

    folder = tmp_path / "original"
    artifacts = folder / "artifacts"
    artifacts.mkdir(parents=True)
    model.save(artifacts / "model.keras")
    document = preprocessing_document(spec, model, impute)
    (artifacts / "preprocessing.json").write_text(json.dumps(document))
    train.drop(columns=["row_id", "event_date"]).to_parquet(artifacts / "reference.parquet")
    return spec, model, eval_df, folder


def _keras_outputs(spec: Any, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
    from conveyor import tasks
    from conveyor.training.pyfunc_keras import keras_inputs

    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    scores = np.asarray(model(keras_inputs(rows, numeric, categorical)), dtype=np.float64)
    return tasks.outputs(spec, scores)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_tflite_variant_matches_the_keras_model(task: str, tmp_path: Path) -> None:
    from mlflow.pyfunc import PythonModelContext

    from conveyor import tasks
    from conveyor.compression.pyfunc_tflite import TFLiteModel
    from conveyor.compression.tflite import build_tflite_variant, float_core

    spec, model, eval_df, folder = _keras_model(task, tmp_path)
    assert float_core(model).layers[-1].name == ("probabilities" if task == "multiclass" else "prediction")

    artifacts, _, _ = build_tflite_variant(spec, folder, eval_df, tmp_path / "variant", quantize=True)
    served = TFLiteModel()
    served.load_context(
        PythonModelContext({k: str(v) for k, v in artifacts.items()}, tasks.model_config(spec))
    )
    rows = eval_df[spec.feature_names].copy()
    rows.loc[0, "x2"] = np.nan  # imputed
    rows.loc[1, "color"] = "purple"  # out of vocabulary
    got = tasks.check_outputs(spec, served.predict(None, rows), len(rows), where="TFLite variant")
    expected = _keras_outputs(spec, model, rows)
    assert list(got.columns) == tasks.output_columns(spec.task, spec.classes)
    if task == "multiclass":
        np.testing.assert_allclose(tasks.scores_of(spec, got), tasks.scores_of(spec, expected), atol=1e-4)
        assert got["prediction"].tolist() == expected["prediction"].tolist()
        assert set(got["prediction"]) <= set(spec.classes)
    else:  # in the target's units (the Rescaling is in the core): ~100 ± 25
        np.testing.assert_allclose(got["prediction"], expected["prediction"], rtol=1e-4, atol=1e-3)
        assert abs(float(np.mean(got["prediction"])) - 100.0) < 50

    # its golden rows hold every output column and are what the variant answers
    golden = json.loads(Path(artifacts["golden_rows"]).read_text())
    assert list(golden["outputs"]) == tasks.output_columns(spec.task, spec.classes)
    replay = served.predict(None, pd.DataFrame(golden["inputs"]))
    for column, kind in tasks.output_types(spec):
        if kind == "double":
            np.testing.assert_allclose(replay[column], golden["outputs"][column], atol=1e-6)
        else:
            assert replay[column].tolist() == golden["outputs"][column]

    single = served.predict(None, rows.iloc[[3]])  # one row after a batch: the interpreter resizes
    np.testing.assert_allclose(
        tasks.scores_of(spec, single), tasks.scores_of(spec, expected.iloc[[3]]), rtol=1e-4, atol=1e-4
    )
    empty = served.predict(None, rows.iloc[:0])
    assert list(empty.columns) == tasks.output_columns(spec.task, spec.classes) and len(empty) == 0


def test_a_core_that_reads_a_raw_input_past_the_features_layer_is_refused(tmp_path: Path) -> None:
    from conveyor.compression.tflite import CompressionError, float_core
    from conveyor.training.keras_mlp import import_keras

    keras, _ = import_keras()
    _, model, _, _ = _keras_model("regression", tmp_path)
    raw_x1 = model.get_layer("x1").output
    leaky = keras.Model(model.inputs, keras.layers.Add()([model.output, raw_x1]))
    with pytest.raises(CompressionError, match="does not depend on the raw inputs only"):
        float_core(leaky)
