"""A Keras ``trainer.kind: python`` example: a small functional network with a residual block on top
of Conveyor's in-model preprocessing, early-stopped on a slice of ``train_df``, for any task type.

Spec::

    trainer:
      kind: python
      entrypoint: conveyor_examples.keras_custom:train
      seed: 7
      params: {units: 16, epochs: 20, learning_rate: 0.005}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from conveyor.training import TrainContext


def head(context: TrainContext, x: Any, y: np.ndarray) -> tuple[Any, str]:
    """The output layer and loss of ``context.task``: P(label 1), k class probabilities, or the value."""
    import keras

    if context.task == "multiclass":  # one softmax unit per class of data.classes
        output = keras.layers.Dense(len(context.classes), activation="softmax")(x)
        return output, "sparse_categorical_crossentropy"
    if context.task == "regression":  # a linear unit in standard units, rescaled to the target's
        output = keras.layers.Dense(1)(x)
        return keras.layers.Rescaling(float(y.std()) or 1.0, offset=float(y.mean()))(output), "mse"
    return keras.layers.Dense(1, activation="sigmoid")(x), "binary_crossentropy"


def train(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    """Build and fit the model; Conveyor saves it as ``.keras``, logs it and scores it on ``eval_df``.

    ``eval_df`` is what the gate judges the model on, so it is not used for early stopping: a seeded
    15% of ``train_df`` is.
    """
    import keras

    keras.utils.set_random_seed(seed)
    units = int(params.get("units", 16))
    y = context.labels(train_df)  # 0/1, class indices or values, by context.task
    # One named input per feature, imputed/normalised/one-hot inside the model: serving needs nothing else.
    preprocessing = context.keras_preprocessing(train_df)
    x = keras.layers.Dense(units, activation="relu", name="dense_in")(preprocessing.features)
    block = keras.layers.Dense(units, activation="relu", name="dense_block")(x)
    x = keras.layers.Add(name="residual")([x, block])
    output, loss = head(context, x, y)
    model = keras.Model(preprocessing.inputs, output, name=f"{context.spec_name}_custom")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(params.get("learning_rate", 0.005))), loss=loss
    )
    order = np.random.default_rng(seed).permutation(len(train_df))
    n_val = max(1, len(order) * 15 // 100)
    fit_rows, val_rows = order[n_val:], order[:n_val]
    model.fit(
        context.keras_inputs(train_df.iloc[fit_rows]),
        y[fit_rows],
        validation_data=(context.keras_inputs(train_df.iloc[val_rows]), y[val_rows]),
        epochs=int(params.get("epochs", 20)),
        batch_size=int(params.get("batch_size", 64)),
        callbacks=[keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)],
        verbose=0,
    )
    return model
