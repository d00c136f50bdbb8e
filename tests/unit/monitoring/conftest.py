"""Fixtures for the monitoring tests: the tiny spec, frames, a prediction log and a real MLflow store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from unit.serving import support  # the serving tests' tiny spec, data and logged models

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
REGISTERED = "conveyor-test-monitor"


@pytest.fixture(scope="package", autouse=True)
def _no_global_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    decoy = tmp_path_factory.mktemp("decoy") / "global-default-must-not-be-used.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{decoy}")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield


@pytest.fixture(scope="session")
def support_module() -> ModuleType:
    return support


@pytest.fixture(scope="session")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import yaml

    from conveyor.config import ModelSpec

    path = support.write_spec(tmp_path_factory.mktemp("specs"), "tiny", REGISTERED, lookback_days=7)
    return ModelSpec.model_validate(yaml.safe_load(path.read_text()))


@pytest.fixture(scope="session")
def train() -> Any:
    return support.make_frame(400, seed=0)


@pytest.fixture
def write_log(tmp_path: Path) -> Callable[..., str]:
    """Write prediction-log events the way the model server does; return the data-root URI."""
    from conveyor.serving.predlog import PredictionChunk, PredictionLogWriter

    root = (tmp_path / "data").as_uri()

    def write(
        frame: Any,
        *,
        version: str = "1",
        ts: datetime = NOW,
        probability: Any = None,
        errors: list[dict[str, Any]] | None = None,
        request_size: int = 50,
        spec: Any = None,
    ) -> str:
        writer = PredictionLogWriter(root, writer="test-writer")
        writer.start()
        features = frame[["x1", "x2", "color"]].reset_index(drop=True)
        p = np.full(len(frame), 0.5) if probability is None else np.asarray(probability, dtype=float)
        for i, first in enumerate(range(0, len(frame), request_size)):
            rows = slice(first, first + request_size)
            writer.submit(
                PredictionChunk(
                    model="tiny",
                    version=version,
                    request_id=f"{version}-{ts:%H%M}-{i}",
                    route="invocations",
                    ts=ts,
                    latency_ms=2.0 + i,
                    frame=features.iloc[rows].reset_index(drop=True),
                    outputs=pd.DataFrame(
                        {"probability": p[rows], "prediction": (p[rows] >= 0.5).astype("int64")}
                    ),
                    ids=frame["row_id"].iloc[rows].tolist(),
                    spec=spec,
                )
            )
        for event in errors or []:
            writer.submit(
                {"event": "error", "ts": ts.isoformat(), "model": "tiny", "version": version, **event}
            )
        writer.close()
        return root

    return write


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory, spec: Any, train: Any) -> dict[str, Any]:
    """A store where ``conveyor-test-monitor`` v1 is @champion with ``train`` as its reference."""
    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    uri, weights = support.log_tiny_model(tracking_uri, train, artifact_root=root / "artifacts")
    version = support.register(tracking_uri, REGISTERED, uri)
    support.ensure_experiment(tracking_uri, "conveyor/tiny/monitoring", root / "artifacts")
    return {"tracking_uri": tracking_uri, "version": version, "weights": weights}


@pytest.fixture
def mlflow_client(mlflow_store: dict[str, Any]) -> Any:
    from mlflow import MlflowClient

    uri = mlflow_store["tracking_uri"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
