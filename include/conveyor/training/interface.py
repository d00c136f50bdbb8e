"""The trainer interface: a fit function, the context it gets, and what it may return.

Every trainer kind is a *fit function* (the built-ins ``keras_mlp`` and ``sklearn_pipeline`` as much as
a user's ``kind: python`` entrypoint)::

    def fit(train_df, eval_df, params, seed, context) -> model | Fitted

* ``train_df`` / ``eval_df``: the spec's feature columns cast as serving passes them (numerics
  float64 with NaN for missing, categoricals ``str`` or ``None``) plus the target column
  (``context.target``) encoded for the spec's task (``context.task``,
  :func:`conveyor.tasks.encode_target`): ``binary`` 0/1 int64, 1 meaning ``data.positive_label``;
  ``multiclass`` the label's index in ``data.classes`` (``context.classes``), int64 ``0..k-1``;
  ``regression`` the value, float64.
* ``params``: a copy of the spec's ``trainer.params``; ``seed``: ``trainer.seed``.
* ``context``: a :class:`TrainContext`.
* returns a fitted Keras model (``keras.Model``, one named input per feature: build them with
  :meth:`TrainContext.keras_preprocessing`) or a fitted scikit-learn estimator or Pipeline, optionally
  wrapped in :class:`Fitted` to report params. What it must predict depends on the task: ``binary``
  P(label 1) (Keras: one sigmoid unit; scikit-learn: a classifier fitted on 0/1), ``multiclass`` the
  k class probabilities (Keras: ``Dense(k, activation="softmax")``; scikit-learn: a classifier fitted
  on the class indices), ``regression`` the value (Keras: one linear unit; scikit-learn: a regressor).

Conveyor then checks, signs, scores and logs the model (:mod:`conveyor.training.fitting`) the same
way whichever function fitted it. ``docs/TRAINERS.md`` is the user's guide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from conveyor.config import ModelSpec

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Fitted:
    """A fitted model plus what its fit function wants recorded with it.

    Attributes:
        model: the fitted Keras model or scikit-learn estimator.
        params: effective parameters (defaults included), logged as ``trainer.<name>`` params over the
            spec's ``trainer.params``.
        train_seconds: the time spent fitting, when the function measured it itself (default: the
            whole call).
        preprocessing: a Keras model's preprocessing as plain numbers, written as
            ``preprocessing.json`` (what TFLite compression needs; the ``keras_mlp`` trainer sets it).
    """

    model: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    train_seconds: float | None = None
    preprocessing: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class KerasPreprocessing:
    """The input side of a Conveyor Keras model (see :meth:`TrainContext.keras_preprocessing`).

    Attributes:
        inputs: one ``keras.Input`` of shape ``(1,)`` per feature, named after it, in spec order
            (float32 numerics, string categoricals): pass them to ``keras.Model(inputs, outputs)``.
        features: the preprocessed float vector (layer ``features``): numerics imputed with the
            training medians and normalised, categoricals one-hot over the spec's categories
            (first slot: unknown or missing).
        impute: the medians baked into the graph, one per numeric feature.
    """

    inputs: list[Any]
    features: Any
    impute: list[float]


@dataclass(frozen=True)
class TrainContext:
    """What a fit function knows about the model it fits, and Conveyor's preprocessing helpers.

    Attributes:
        spec: the validated model spec.
        run_id: the DAG run's MLflow run the model is logged into.
        entrypoint: the ``kind: python`` entrypoint being run (``None`` for a built-in trainer).
        built_preprocessing: what :meth:`keras_preprocessing` built during this fit; a Keras model
            built on one of them gets its ``preprocessing.json`` written, so it compresses to TFLite
            like the built-in MLP.
    """

    spec: ModelSpec
    run_id: str
    entrypoint: str | None = None
    built_preprocessing: list[KerasPreprocessing] = field(default_factory=list, repr=False, compare=False)

    @property
    def spec_name(self) -> str:
        return self.spec.name

    @property
    def seed(self) -> int:
        return self.spec.trainer.seed

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.spec.numeric_features]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.spec.categorical_features]

    @property
    def feature_names(self) -> list[str]:
        """Numeric then categorical feature names: the model's inputs, in order."""
        return self.spec.feature_names

    @property
    def task(self) -> str:
        """``binary``, ``multiclass`` or ``regression``: what the model predicts (the spec's ``task``)."""
        return self.spec.task

    @property
    def classes(self) -> tuple[Any, ...]:
        """The label set of a classification target (``data.classes``; binary ``(0, 1)`` by default);
        the encoded target is an index into it. Empty for regression."""
        return tuple(self.spec.classes)

    @property
    def n_outputs(self) -> int:
        """How many values the model gives per row: k class probabilities (multiclass), else 1."""
        return len(self.classes) if self.task == "multiclass" else 1

    @property
    def target(self) -> str:
        """The target column of the frames, encoded for the task (see the module docstring)."""
        return self.spec.data.target

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The feature columns of one of the frames, in spec order (a scikit-learn model's ``X``)."""
        return frame[self.feature_names]

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        """The encoded target of one of the frames (``y``): binary 0/1 int64, multiclass class index
        int64, regression float64."""
        dtype = np.float64 if self.task == "regression" else np.int64
        return frame[self.target].to_numpy(dtype=dtype)

    def sklearn_preprocessor(self) -> Any:
        """An unfitted ``ColumnTransformer`` doing the ``sklearn_pipeline`` trainer's preprocessing.

        Numerics: median imputation and standard scaling; categoricals: missing as a category of its
        own, then one-hot over the spec's categories (unknown values ignored). Put it first in a
        ``Pipeline`` ending in your classifier (or regressor).
        """
        from conveyor.training.sklearn_pipeline import build_preprocessor

        return build_preprocessor(self.spec)

    def keras_preprocessing(self, train_df: pd.DataFrame) -> KerasPreprocessing:
        """The ``keras_mlp`` trainer's input layers and preprocessing, adapted on ``train_df``.

        Build the rest of a functional model on ``.features`` and pass ``.inputs`` to ``keras.Model``;
        the model then serves raw features with nothing but its ``.keras`` file.
        """
        from conveyor.training.keras_mlp import build_preprocessing, impute_values

        impute = impute_values(self.spec, train_df)
        inputs, features = build_preprocessing(self.spec, train_df, impute)
        built = KerasPreprocessing(inputs=inputs, features=features, impute=impute)
        self.built_preprocessing.append(built)  # so a model built on it can be compressed to TFLite
        return built

    def keras_inputs(self, frame: pd.DataFrame) -> dict[str, Any]:
        """A frame's features as the named tensors a Conveyor Keras model takes (for ``fit``/``predict``)."""
        from conveyor.training.pyfunc_keras import keras_inputs

        return keras_inputs(frame, self.numeric_features, self.categorical_features)


#: ``fit(train_df, eval_df, params, seed, context)``: see the module docstring.
FitFunction = Callable[["pd.DataFrame", "pd.DataFrame", dict[str, Any], int, TrainContext], Any]
