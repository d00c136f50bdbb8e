"""Keras 3 MLP on TensorFlow with its preprocessing inside the model.

The model takes one named input per raw feature, so serving needs nothing but the ``.keras``
file: numeric inputs are imputed (train medians baked in as constants) and normalised
(``Normalization`` adapted on the imputed training data); categorical inputs are one-hot encoded by
``StringLookup`` over the spec's categories (index 0 is the out-of-vocabulary slot, which also
takes missing values). The concatenated vector (layer ``features``) feeds Dense layers and a
sigmoid.

``preprocessing.json`` records the same preprocessing as plain numbers, so compression can build a
runtime (TFLite) that preprocesses in numpy and runs only the float core.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conveyor.config import ModelSpec
from conveyor.evaluation.metrics import binary_metrics
from conveyor.training.base import (
    GOLDEN_ROWS_FILE,
    REFERENCE_FILE,
    TrainingDivergedError,
    TrainResult,
    feature_frame,
    files_size,
    input_example,
    log_pyfunc_model,
    model_config_for,
    pinned_requirements,
    target_vector,
    write_golden_rows,
    write_reference,
)

TRAINER = "keras_mlp"
#: The layer whose output is the preprocessed vector (the float core's input).
FEATURES_LAYER = "features"
NUMERIC_LAYER = "numeric"
NORMALIZATION_LAYER = "normalize"
PREPROCESSING_FILE = "preprocessing.json"
KERAS_FILE = "model.keras"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_keras.py")

DEFAULT_PARAMS: dict[str, Any] = {
    "hidden_units": [32, 16],
    "dropout": 0.0,
    "epochs": 10,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "validation_fraction": 0.15,
    "patience": 3,
}


def import_keras() -> tuple[Any, Any]:
    """Import keras and tensorflow (slow: 10-20 s the first time), quieting TF's C++ logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    return keras, tf


def effective_params(spec: ModelSpec) -> dict[str, Any]:
    """The spec's trainer params over the defaults, plus the seed."""
    params = {**DEFAULT_PARAMS, **spec.trainer.params, "seed": spec.trainer.seed}
    params["hidden_units"] = [int(u) for u in params["hidden_units"]]
    return params


def impute_values(spec: ModelSpec, features: pd.DataFrame) -> list[float]:
    """Training medians of the numeric features (0.0 for an all-missing column)."""
    values = []
    for f in spec.numeric_features:
        median = features[f.name].median(skipna=True)
        values.append(0.0 if pd.isna(median) else float(median))
    return values


def build_model(
    spec: ModelSpec, params: dict[str, Any], train_features: pd.DataFrame, impute: list[float]
) -> Any:
    """The functional Keras model: raw inputs → impute/normalise/one-hot → Dense → sigmoid.

    ``impute`` (one value per numeric feature) replaces NaN inside the graph.
    """
    keras, _ = import_keras()
    numeric_inputs = [keras.Input(shape=(1,), dtype="float32", name=f.name) for f in spec.numeric_features]
    categorical_inputs = [
        keras.Input(shape=(1,), dtype="string", name=f.name) for f in spec.categorical_features
    ]
    parts = []
    if numeric_inputs:
        impute_array = np.asarray(impute, dtype=np.float32)
        numeric = (
            keras.layers.Concatenate(name=NUMERIC_LAYER)(numeric_inputs)
            if len(numeric_inputs) > 1
            else numeric_inputs[0]
        )
        # Serving takes raw features that may be NaN: the train medians are baked into the graph.
        numeric = keras.ops.where(keras.ops.isnan(numeric), impute_array, numeric)
        normalization = keras.layers.Normalization(name=NORMALIZATION_LAYER)
        train_numeric = train_features[[f.name for f in spec.numeric_features]].to_numpy(np.float32)
        normalization.adapt(np.where(np.isnan(train_numeric), impute_array, train_numeric))
        parts.append(normalization(numeric))
    for feature, tensor in zip(spec.categorical_features, categorical_inputs, strict=True):
        lookup = keras.layers.StringLookup(
            vocabulary=list(feature.categories),
            num_oov_indices=1,
            output_mode="one_hot",
            name=f"lookup_{feature.name}",
        )
        parts.append(lookup(tensor))
    x = keras.layers.Concatenate(name=FEATURES_LAYER)(parts) if len(parts) > 1 else parts[0]
    # An Identity keeps the name ``features`` stable even with a single input branch.
    if len(parts) == 1:
        x = keras.layers.Identity(name=FEATURES_LAYER)(x)
    for i, units in enumerate(params["hidden_units"]):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if params["dropout"] > 0:
            x = keras.layers.Dropout(params["dropout"], seed=params["seed"] + i, name=f"dropout_{i}")(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model([*numeric_inputs, *categorical_inputs], output, name=f"{spec.name}_mlp")


def preprocessing_document(spec: ModelSpec, model: Any, impute: list[float]) -> dict[str, Any]:
    """The model's preprocessing as plain numbers (mean/variance and vocabularies read from its layers).

    Layout of the preprocessed vector: normalised numerics in spec order, then per categorical
    feature a one-hot block ``[OOV, *vocabulary]`` (``StringLookup`` order). ``impute`` must be the
    values baked into the graph by :func:`build_model`.
    """
    keras, _ = import_keras()
    numeric_block: dict[str, Any] = {"names": [f.name for f in spec.numeric_features]}
    if spec.numeric_features:
        normalization = model.get_layer(NORMALIZATION_LAYER)
        numeric_block |= {
            "impute": [float(v) for v in impute],
            "mean": np.asarray(normalization.mean, dtype=np.float64).reshape(-1).tolist(),
            "variance": np.asarray(normalization.variance, dtype=np.float64).reshape(-1).tolist(),
        }
    categorical: list[dict[str, Any]] = []
    for f in spec.categorical_features:
        lookup = model.get_layer(f"lookup_{f.name}")
        vocabulary = [str(v) for v in lookup.get_vocabulary(include_special_tokens=False)]
        categorical.append({"name": f.name, "vocabulary": vocabulary, "num_oov_indices": 1})
    width = len(spec.numeric_features) + sum(len(c["vocabulary"]) + 1 for c in categorical)
    return {
        "format": 1,
        "epsilon": float(keras.backend.epsilon()),
        "numeric": numeric_block,
        "categorical": categorical,
        "width": width,
    }


def _divergence_monitor(keras: Any) -> Any:
    class DivergenceMonitor(keras.callbacks.Callback):
        """Stops at the first non-finite batch loss and remembers the epoch (1-based)."""

        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0
            self.diverged_epoch: int | None = None

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                self.diverged_epoch = self.epoch
                self.model.stop_training = True

    return DivergenceMonitor()


def _first_nonfinite_epoch(history: dict[str, list[float]]) -> int | None:
    for key in ("loss", "val_loss"):
        for i, value in enumerate(history.get(key, [])):
            if not np.isfinite(value):
                return i + 1
    return None


def train_keras_mlp(
    spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, run_id: str
) -> TrainResult:
    """Train the spec's Keras MLP, log it as a pyfunc into run ``run_id`` and score it on ``eval_df``.

    Deterministic: the same data and ``spec.trainer.seed`` give the same weights and metrics.

    Raises:
        TrainingDivergedError: the loss became NaN/inf (message names the epoch).
        FeatureSchemaError: the frames lack features or a binary target.
    """
    keras, _ = import_keras()
    params = effective_params(spec)
    keras.utils.set_random_seed(params["seed"])

    train_features = feature_frame(spec, train_df)
    y_train = target_vector(spec, train_df).astype(np.float32)
    eval_features = feature_frame(spec, eval_df)
    y_eval = target_vector(spec, eval_df)
    impute = impute_values(spec, train_features)
    model = build_model(spec, params, train_features, impute)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(params["learning_rate"])),
        loss="binary_crossentropy",
    )

    from conveyor.training.pyfunc_keras import keras_inputs

    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    order = np.random.default_rng(params["seed"]).permutation(len(train_features))
    n_val = round(len(order) * float(params["validation_fraction"]))
    monitor = _divergence_monitor(keras)
    callbacks: list[Any] = [monitor]
    fit_kwargs: dict[str, Any] = {}
    if 0 < n_val < len(order):
        val_idx, fit_idx = order[:n_val], order[n_val:]
        fit_kwargs["validation_data"] = (
            keras_inputs(train_features.iloc[val_idx], numeric, categorical),
            y_train[val_idx],
        )
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(params["patience"]), restore_best_weights=True
            )
        )
    else:
        fit_idx = order

    started = time.perf_counter()
    history = model.fit(
        keras_inputs(train_features.iloc[fit_idx], numeric, categorical),
        y_train[fit_idx],
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
        **fit_kwargs,
    )
    train_seconds = time.perf_counter() - started
    diverged = monitor.diverged_epoch or _first_nonfinite_epoch(history.history)
    if diverged is not None:
        raise TrainingDivergedError(spec.name, diverged, float(params["learning_rate"]))
    params["epochs_trained"] = len(history.history.get("loss", []))

    with tempfile.TemporaryDirectory(prefix="conveyor-keras-") as tmp:
        folder = Path(tmp)
        keras_path = folder / KERAS_FILE
        model.save(keras_path)
        preprocessing_path = folder / PREPROCESSING_FILE
        preprocessing_path.write_text(json.dumps(preprocessing_document(spec, model, impute), indent=2))

        # Score and write golden rows through the very class that serves the model.
        from mlflow.pyfunc import PythonModelContext

        from conveyor.training.pyfunc_keras import KerasBinaryClassifier

        config = model_config_for(spec)
        served = KerasBinaryClassifier()
        served.load_context(
            PythonModelContext(artifacts={"keras_model": str(keras_path)}, model_config=config)
        )
        eval_proba = served.predict(None, eval_features)["probability"].to_numpy()
        if not np.all(np.isfinite(eval_proba)):
            raise TrainingDivergedError(spec.name, params["epochs_trained"], float(params["learning_rate"]))
        metrics = binary_metrics(y_eval, eval_proba)

        golden = write_golden_rows(
            spec, lambda rows: served.predict(None, rows), eval_df, folder / GOLDEN_ROWS_FILE
        )
        reference = write_reference(spec, train_df, folder / REFERENCE_FILE)
        info = log_pyfunc_model(
            spec,
            PYFUNC_CODE,
            {
                "keras_model": keras_path,
                "preprocessing": preprocessing_path,
                "golden_rows": golden,
                "reference": reference,
            },
            run_id,
            pip_requirements=pinned_requirements("tensorflow-cpu", "keras"),
            example=input_example(spec, eval_df),
            model_config=config,
            tags={"conveyor.trainer": TRAINER, "conveyor.compression": "none"},
        )
        size = files_size([keras_path])

    return TrainResult(
        run_id=run_id,
        model_uri=info.model_uri,
        trainer=TRAINER,
        metrics=metrics,
        params=params,
        n_train=len(train_features),
        n_eval=len(eval_features),
        train_seconds=train_seconds,
        model_size_bytes=size,
    )
