"""Fixtures of the compression tests: the shared MLflow store and one tiny trained Keras model."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
import pytest

from conveyor.training import TrainResult

from ..training.support import churn_frame, shared_store, tiny_keras_spec, use_tracking_uri

FRAME = churn_frame(800, seed=21)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The session's SQLite MLflow store (shared with the training tests)."""
    return shared_store(tmp_path_factory)


@pytest.fixture
def tracking(mlflow_store: dict[str, str]) -> Iterator[dict[str, str]]:
    """The store, made the process's MLflow tracking URI for the test."""
    with use_tracking_uri(mlflow_store["uri"]):
        yield mlflow_store


@pytest.fixture
def new_run(tracking: dict[str, str]) -> Callable[[], str]:
    """Creates a fresh (RUNNING) MLflow run in the store and returns its id."""
    from mlflow import MlflowClient

    return lambda: str(MlflowClient(tracking["uri"]).create_run(tracking["experiment_id"]).info.run_id)


@pytest.fixture(scope="session")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) churn-like frames."""
    return FRAME.iloc[:640], FRAME.iloc[640:]


@pytest.fixture(scope="session")
def keras_trained(mlflow_store: dict[str, str], frames: tuple[pd.DataFrame, pd.DataFrame]) -> TrainResult:
    """A tiny Keras churn model, trained once for all compression tests."""
    from mlflow import MlflowClient

    from conveyor.training.keras_mlp import train_keras_mlp

    with use_tracking_uri(mlflow_store["uri"]):
        run_id = MlflowClient(mlflow_store["uri"]).create_run(mlflow_store["experiment_id"]).info.run_id
        return train_keras_mlp(tiny_keras_spec(), *frames, run_id)
