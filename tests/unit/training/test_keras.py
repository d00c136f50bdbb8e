"""The Keras MLP trainer: preprocessing inside the model, determinism, divergence, the contract."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor.training import TrainingDivergedError, TrainResult, train
from conveyor.training.keras_mlp import train_keras_mlp

from .support import churn_frame, tiny_keras_spec, use_tracking_uri

pytestmark = pytest.mark.unit

FRAME = churn_frame(800, seed=11)
TRAIN, EVAL = FRAME.iloc[:640], FRAME.iloc[640:]


@pytest.fixture(scope="module")
def trained(mlflow_store: dict[str, str]) -> Iterator[TrainResult]:
    """One tiny Keras model trained through ``train`` (the dispatcher) for the module's tests."""
    from mlflow import MlflowClient

    with use_tracking_uri(mlflow_store["uri"]):
        run_id = MlflowClient(mlflow_store["uri"]).create_run(mlflow_store["experiment_id"]).info.run_id
        yield train(tiny_keras_spec(), TRAIN, EVAL, run_id)


def test_keras_model_follows_the_contract_and_is_recorded(
    trained: TrainResult, tracking: dict[str, str], check_model_contract: Callable[..., Any]
) -> None:
    from mlflow import MlflowClient

    spec = tiny_keras_spec()
    assert trained.trainer == "keras_mlp"
    assert trained.metrics["roc_auc"] > 0.7
    assert 1 <= trained.params["epochs_trained"] <= 4
    check_model_contract(spec, trained.model_uri, EVAL)
    run = MlflowClient(tracking["uri"]).get_run(trained.run_id)
    assert run.data.params["trainer.hidden_units"] == "[8]"
    assert run.data.metrics["eval_accuracy"] == pytest.approx(trained.metrics["accuracy"])
    assert run.data.metrics["train_seconds"] == pytest.approx(trained.train_seconds)


def test_same_data_and_seed_give_the_same_metrics(
    trained: TrainResult, new_run: Callable[[], str], tmp_path: Path
) -> None:
    import mlflow

    again = train_keras_mlp(tiny_keras_spec(), TRAIN, EVAL, new_run())
    assert again.metrics == trained.metrics
    golden = [
        json.loads(
            (
                Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / name)))
                / "artifacts"
                / "golden_rows.json"
            ).read_text()
        )
        for name, uri in (("a", trained.model_uri), ("b", again.model_uri))
    ]
    assert golden[0] == golden[1]


def test_serving_imputes_nan_and_maps_unknown_categories_to_oov(
    trained: TrainResult, tracking: dict[str, str], tmp_path: Path
) -> None:
    import mlflow

    spec = tiny_keras_spec()
    model = mlflow.pyfunc.load_model(trained.model_uri)
    local = Path(mlflow.artifacts.download_artifacts(trained.model_uri, dst_path=str(tmp_path)))
    preprocessing = json.loads((local / "artifacts" / "preprocessing.json").read_text())
    median = preprocessing["numeric"]["impute"][spec.feature_names.index("total_charges")]
    assert median == pytest.approx(TRAIN["total_charges"].median(), rel=1e-6)
    assert [c["vocabulary"] for c in preprocessing["categorical"]] == [
        list(f.categories) for f in spec.categorical_features
    ]

    row = EVAL[spec.feature_names].iloc[[0]].reset_index(drop=True)
    with_nan = row.assign(total_charges=np.nan)
    with_median = row.assign(total_charges=median)
    unknown = row.assign(contract="lifetime")
    missing = row.assign(contract=None)
    out = model.predict(pd.concat([with_nan, with_median, unknown, missing], ignore_index=True))
    probability = out["probability"].to_numpy()
    assert np.isfinite(probability).all()
    assert probability[0] == pytest.approx(probability[1], abs=1e-6)
    assert probability[2] == pytest.approx(probability[3], abs=1e-6)  # both land in the OOV slot


def test_absurd_learning_rate_raises_diverged_error(new_run: Callable[[], str]) -> None:
    spec = tiny_keras_spec(learning_rate=1e38, dropout=0.0)
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+.*learning_rate"):
        train_keras_mlp(spec, TRAIN, EVAL, new_run())
