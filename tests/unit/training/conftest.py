"""Fixtures of the training tests: a real MLflow store, fresh runs, the model-contract check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conveyor.config import ModelSpec

from .support import assert_model_contract, shared_store, use_tracking_uri


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The session's SQLite MLflow store (shared with the compression tests)."""
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

    def make() -> str:
        return str(MlflowClient(tracking["uri"]).create_run(tracking["experiment_id"]).info.run_id)

    return make


@pytest.fixture
def check_model_contract(tmp_path: Path) -> Callable[[ModelSpec, str, pd.DataFrame], Any]:
    """Asserts the model-artifact contract of a model URI; returns the loaded pyfunc."""
    return lambda spec, model_uri, eval_df: assert_model_contract(spec, model_uri, eval_df, tmp_path)
