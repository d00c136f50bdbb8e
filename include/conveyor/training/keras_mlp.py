"""Keras 3 MLP on TensorFlow with its preprocessing inside the model.

The model takes one named input per raw feature, so serving needs nothing but the ``.keras``
file: numeric inputs are imputed (train medians baked in as constants) and normalised
(``Normalization`` adapted on the imputed training data); categorical inputs are one-hot encoded by
``StringLookup`` over the spec's categories (index 0 is the out-of-vocabulary slot, which also
takes missing values). The concatenated vector (layer ``features``) feeds Dense layers and the
task's head:

- ``binary``: ``Dense(1, sigmoid)`` trained with binary cross-entropy (P(label 1));
- ``multiclass``: ``Dense(k, softmax)`` (k = ``len(data.classes)``) trained with sparse categorical
  cross-entropy on the class indices;
- ``regression``: ``Dense(1)`` (linear) trained with mean squared error on the *standardised* target
  (training mean and standard deviation), followed by a ``Rescaling`` layer that maps it back to the
  target's units, so the saved model predicts values like the target's (diabetes' 25..346) while the
  network trains on numbers near 0.

Early stopping watches the validation loss (the task's loss above) on a seeded slice of
``train_df``.

``preprocessing.json`` records the same preprocessing as plain numbers, so compression can build a
runtime (TFLite) that preprocesses in numpy and runs only the float core.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd

from conveyor.config import ModelSpec
from conveyor.training.base import TrainingDivergedError, TrainResult
from conveyor.training.fitting import KERAS_FILE as KERAS_FILE  # where compression finds the files
from conveyor.training.fitting import PREPROCESSING_FILE as PREPROCESSING_FILE
from conveyor.training.fitting import fit_and_log
from conveyor.training.interface import Fitted, KerasPreprocessing, TrainContext

TRAINER = "keras_mlp"
#: The layer whose output is the preprocessed vector (the float core's input).
FEATURES_LAYER = "features"
NUMERIC_LAYER = "numeric"
NORMALIZATION_LAYER = "normalize"

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


def effective_params(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The spec's trainer params over the defaults, plus the seed."""
    params = {**DEFAULT_PARAMS, **params, "seed": seed}
    params["hidden_units"] = [int(u) for u in params["hidden_units"]]
    return params


def impute_values(spec: ModelSpec, features: pd.DataFrame) -> list[float]:
    """Training medians of the numeric features (0.0 for an all-missing column)."""
    values = []
    for f in spec.numeric_features:
        median = features[f.name].median(skipna=True)
        values.append(0.0 if pd.isna(median) else float(median))
    return values


def build_preprocessing(
    spec: ModelSpec, train_features: pd.DataFrame, impute: list[float]
) -> tuple[list[Any], Any]:
    """The model's inputs and its preprocessed vector (layer ``features``), adapted on the training data.

    One named ``(1,)`` input per raw feature, numerics then categoricals in spec order. Numerics:
    NaN replaced by ``impute`` (one value per numeric feature, baked into the graph), then
    ``Normalization`` adapted on the imputed training data. Categoricals: ``StringLookup`` one-hot over
    the spec's categories (index 0 is the out-of-vocabulary slot, which also takes missing values).
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
    return [*numeric_inputs, *categorical_inputs], x


#: The loss each task's network is trained with.
LOSSES = {
    "binary": "binary_crossentropy",
    "multiclass": "sparse_categorical_crossentropy",
    "regression": "mean_squared_error",
}
#: Regression: the layer that maps the standardised output back to the target's units.
RESCALING_LAYER = "prediction"


def target_scaling(y: np.ndarray) -> tuple[float, float]:
    """``(mean, standard deviation)`` of a regression target (deviation 1.0 for a constant target)."""
    mean = float(np.mean(y)) if len(y) else 0.0
    std = float(np.std(y)) if len(y) else 1.0
    return mean, (std if np.isfinite(std) and std > 0 else 1.0)


def build_model(
    spec: ModelSpec,
    params: dict[str, Any],
    preprocessing: KerasPreprocessing,
    scaling: tuple[float, float] = (0.0, 1.0),
) -> tuple[Any, Any]:
    """The functional Keras model: raw inputs → impute/normalise/one-hot → Dense → the task's head.

    Returns ``(model, trained)``: ``trained`` is the network the loss is computed on; ``model``, the
    one saved and served, shares its layers. They are the same model except for regression, where
    ``trained`` ends in the standardised ``Dense(1)`` and ``model`` adds ``Rescaling(std, mean)``
    (``scaling``: the training target's mean and standard deviation).
    """
    keras, _ = import_keras()
    x = preprocessing.features
    for i, units in enumerate(params["hidden_units"]):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if params["dropout"] > 0:
            x = keras.layers.Dropout(params["dropout"], seed=params["seed"] + i, name=f"dropout_{i}")(x)
    name = f"{spec.name}_mlp"
    if spec.task == "multiclass":
        output = keras.layers.Dense(len(spec.classes), activation="softmax", name="probabilities")(x)
    elif spec.task == "regression":
        standardised = keras.layers.Dense(1, name="standardised")(x)
        mean, std = scaling
        output = keras.layers.Rescaling(std, offset=mean, name=RESCALING_LAYER)(standardised)
        model = keras.Model(preprocessing.inputs, output, name=name)
        return model, keras.Model(preprocessing.inputs, standardised, name=f"{name}_standardised")
    else:
        output = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = keras.Model(preprocessing.inputs, output, name=name)
    return model, model


def preprocessing_document(spec: ModelSpec, model: Any, impute: list[float]) -> dict[str, Any]:
    """The model's preprocessing as plain numbers (mean/variance and vocabularies read from its layers).

    Layout of the preprocessed vector: normalised numerics in spec order, then per categorical
    feature a one-hot block ``[OOV, *vocabulary]`` (``StringLookup`` order). ``impute`` must be the
    values baked into the graph by :func:`build_preprocessing`.
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


def fit_keras_mlp(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Fitted:
    """The ``keras_mlp`` fit function (see :mod:`conveyor.training.interface`) for any task.

    Deterministic: the same data and seed give the same weights. Regression trains on the
    standardised target; the returned model predicts in the target's units (see the module docstring).

    Raises:
        TrainingDivergedError: the loss or the weights became NaN/inf (message names the epoch).
    """
    keras, _ = import_keras()
    spec = context.spec
    params = effective_params(params, seed)
    keras.utils.set_random_seed(params["seed"])

    labels = context.labels(train_df)
    scaling = target_scaling(labels) if spec.task == "regression" else (0.0, 1.0)
    if spec.task == "multiclass":
        y_train = labels.astype(np.int32)
    else:  # binary 0/1; regression standardised (the served model rescales)
        y_train = ((labels - scaling[0]) / scaling[1]).astype(np.float32)
    preprocessing = context.keras_preprocessing(train_df)
    model, trained = build_model(spec, params, preprocessing, scaling)
    trained.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(params["learning_rate"])),
        loss=LOSSES[spec.task],
    )

    order = np.random.default_rng(params["seed"]).permutation(len(train_df))
    n_val = round(len(order) * float(params["validation_fraction"]))
    monitor = _divergence_monitor(keras)
    callbacks: list[Any] = [monitor]
    fit_kwargs: dict[str, Any] = {}
    if 0 < n_val < len(order):
        val_idx, fit_idx = order[:n_val], order[n_val:]
        fit_kwargs["validation_data"] = (context.keras_inputs(train_df.iloc[val_idx]), y_train[val_idx])
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(params["patience"]), restore_best_weights=True
            )
        )
    else:
        fit_idx = order

    started = time.perf_counter()
    history = trained.fit(
        context.keras_inputs(train_df.iloc[fit_idx]),
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
    params["epochs_trained"] = len(history.history.get("loss", []))
    if diverged is None and not all(np.isfinite(w).all() for w in model.get_weights()):
        diverged = params["epochs_trained"]
    if diverged is not None:
        raise TrainingDivergedError(spec.name, diverged, float(params["learning_rate"]))
    return Fitted(
        model=model,
        params=params,
        train_seconds=train_seconds,
        preprocessing=preprocessing_document(spec, model, preprocessing.impute),
    )


def train_keras_mlp(
    spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, run_id: str
) -> TrainResult:
    """Train the spec's Keras MLP, log it as a pyfunc into run ``run_id`` and score it on ``eval_df``.

    Raises:
        TrainingDivergedError: the loss became NaN/inf (message names the epoch).
        FeatureSchemaError: the frames lack features or a target of the spec's task.
    """
    return fit_and_log(spec, fit_keras_mlp, train_df, eval_df, run_id, trainer=TRAINER)
