"""Misbehaving ``trainer.kind: python`` entrypoints for the error tests (``unit.training.entrypoints``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from conveyor.training import TrainContext

NOT_A_FUNCTION = 42


def raises(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    raise ValueError("the user's code broke")


def returns_string(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    return "a model, honestly"


def returns_regressor(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    model = Pipeline([("preprocess", context.sklearn_preprocessor()), ("regressor", LinearRegression())])
    return model.fit(context.features(train_df), context.labels(train_df))


def returns_unfitted(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


def _keras_head(context: TrainContext, train_df: pd.DataFrame, units: int, activation: str | None) -> Any:
    import keras

    preprocessing = context.keras_preprocessing(train_df)
    output = keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(3.0),
    )(preprocessing.features)
    return keras.Model(preprocessing.inputs, output)


def keras_scores_not_probabilities(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    return _keras_head(context, train_df, 1, None)  # a linear output: 3.0 for every row


def keras_two_outputs(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    return _keras_head(context, train_df, 2, "softmax")  # two columns per row


def keras_one_matrix_input(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    import keras

    inputs = keras.Input(shape=(len(context.feature_names),), name="x")
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))


def returns_classifier(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    """A classifier of 'above the median' for whatever the task: wrong for a regression spec."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    y = context.labels(train_df)
    model = Pipeline([("preprocess", context.sklearn_preprocessor()), ("classifier", LogisticRegression())])
    return model.fit(context.features(train_df), (y > np.median(y)).astype(int))


def returns_label_classifier(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    """A multiclass classifier fitted on the decoded labels (strings), not the class indices."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    labels = [context.classes[i] for i in context.labels(train_df)]
    model = Pipeline([("preprocess", context.sklearn_preprocessor()), ("classifier", LogisticRegression())])
    return model.fit(context.features(train_df), labels)


def keras_three_softmax(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    return _keras_head(context, train_df, 3, "softmax")  # three class probabilities per row


def keras_linear_per_class(
    train_df: pd.DataFrame, eval_df: pd.DataFrame, params: dict[str, Any], seed: int, context: TrainContext
) -> Any:
    return _keras_head(context, train_df, len(context.classes), None)  # logits, not probabilities
