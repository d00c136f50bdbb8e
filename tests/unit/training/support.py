"""Test data and MLflow helpers shared by the training and compression tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conveyor.config import ModelSpec, load_spec


def churn_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """A synthetic frame with the churn spec's columns and a learnable target (3% NaN total_charges)."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 73, n).astype(float)
    monthly = rng.uniform(20, 120, n).round(2)
    total = (tenure * monthly * rng.uniform(0.9, 1.1, n)).round(2)
    total[rng.random(n) < 0.03] = np.nan
    calls = rng.poisson(1.5, n).astype(float)
    age = rng.integers(18, 81, n).astype(float)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n, p=[0.5, 0.3, 0.2])
    payment = rng.choice(["card", "bank-transfer", "e-check", "mailed-check"], n)
    internet = rng.choice(["dsl", "fiber", "none"], n)
    logit = (
        -0.5
        + 1.2 * (contract == "month-to-month")
        - 0.04 * tenure
        + 0.45 * calls
        + 0.015 * (monthly - 70)
        + 0.6 * (payment == "e-check")
        + 0.5 * (internet == "fiber")
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i:06d}" for i in range(n)],
            "event_date": pd.Timestamp("2026-01-01"),
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": calls,
            "age": age,
            "contract": contract,
            "payment_method": payment,
            "internet_service": internet,
            "churned": churned,
        }
    )


def breast_cancer_frame() -> pd.DataFrame:
    """scikit-learn's breast-cancer data under the breast_cancer spec's names (malignant = 1)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={name: name.replace(" ", "_") for name in data.feature_names})
    frame["malignant"] = 1 - frame.pop("target")
    frame.insert(0, "sample_id", [f"s{i:04d}" for i in range(len(frame))])
    frame.insert(1, "event_date", pd.Timestamp("2026-01-01"))
    return frame


def tiny_keras_spec(**params: Any) -> ModelSpec:
    """The churn spec with a tiny, fast network (override any trainer param)."""
    spec = load_spec("churn")
    small = {"hidden_units": [8], "epochs": 4, "batch_size": 64, "learning_rate": 0.01, "dropout": 0.1}
    trainer = spec.trainer.model_copy(update={"params": {**small, **params}})
    return spec.model_copy(update={"trainer": trainer})


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` and put back whatever was there before."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]


_STORES: dict[str, dict[str, str]] = {}


def shared_store(tmp_path_factory: Any) -> dict[str, str]:
    """One SQLite MLflow store per test session for the training and compression tests.

    Creating a store runs MLflow's migrations (seconds), so both folders share one; every test
    still logs into runs of its own.
    """
    if "store" not in _STORES:
        from mlflow import MlflowClient

        root = tmp_path_factory.mktemp("mlflow-training")
        uri = f"sqlite:///{root}/mlflow.db"
        experiment_id = MlflowClient(uri).create_experiment(
            "conveyor/training-tests", artifact_location=(root / "artifacts").as_uri()
        )
        _STORES["store"] = {"uri": uri, "experiment_id": experiment_id, "root": str(root)}
    return _STORES["store"]


def assert_model_contract(spec: ModelSpec, model_uri: str, eval_df: pd.DataFrame, tmp_path: Path) -> Any:
    """Assert the model-artifact contract (docs/CONTRACTS.md) of ``model_uri``; return the pyfunc."""
    import json

    import mlflow
    import yaml

    model = mlflow.pyfunc.load_model(model_uri)
    features = eval_df[spec.feature_names]
    out = model.predict(features)
    assert list(out.columns) == ["probability", "prediction"]
    assert str(out["probability"].dtype) == "float64" and str(out["prediction"].dtype) == "int64"
    assert len(out) == len(features)
    assert out["probability"].between(0, 1).all()
    assert (out["prediction"] == (out["probability"] >= 0.5).astype(int)).all()

    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "contract-model")))
    golden = json.loads((local / "artifacts" / "golden_rows.json").read_text())
    assert len(golden["inputs"]) == spec.deploy.golden_rows
    assert set(golden["inputs"][0]) == set(spec.feature_names)
    replay = model.predict(pd.DataFrame(golden["inputs"]))
    np.testing.assert_allclose(replay["probability"], golden["outputs"]["probability"], atol=1e-6)
    assert replay["prediction"].tolist() == golden["outputs"]["prediction"]

    reference = pd.read_parquet(local / "artifacts" / "reference.parquet")
    assert list(reference.columns) == [*spec.feature_names, spec.data.target]
    assert 0 < len(reference) <= 5000

    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [
        *((f.name, "double") for f in spec.numeric_features),
        *((f.name, "string") for f in spec.categorical_features),
    ]
    outputs = json.loads(mlmodel["signature"]["outputs"])
    assert [(c["name"], c["type"]) for c in outputs] == [
        ("probability", "double"),
        ("prediction", "long"),
    ]
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements and all("==" in r for r in requirements), requirements
    assert any(r.startswith("mlflow-skinny==") for r in requirements)
    return model
