"""Test data and MLflow helpers shared by the training and compression tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conveyor.config import ModelSpec, TrainerSpec, load_spec


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


#: The label set of :func:`task_frame`'s multiclass target (strings, in spec order).
TIERS = ("low", "mid", "high")


def task_frame(task: str, n: int, seed: int = 0) -> pd.DataFrame:
    """:func:`churn_frame` whose target ``outcome`` suits ``task`` and is learnable from the features.

    multiclass: a customer value tier in :data:`TIERS` (strings); regression: a diabetes-scale value
    (about 25..400) that a model only predicts well if it trains on a target of that scale.
    """
    frame = churn_frame(n, seed).drop(columns=["churned"])
    rng = np.random.default_rng(seed + 1000)
    tenure, monthly = frame["tenure_months"].to_numpy(), frame["monthly_charges"].to_numpy()
    two_year = (frame["contract"] == "two-year").to_numpy()
    if task == "multiclass":
        score = tenure / 36 + 1.5 * two_year + rng.normal(0, 0.25, n)
        frame["outcome"] = np.where(score < 0.8, TIERS[0], np.where(score < 1.6, TIERS[1], TIERS[2]))
    elif task == "regression":
        frame["outcome"] = 25 + 3 * tenure + 1.2 * (monthly - 20) + 60 * two_year + rng.normal(0, 10, n)
    else:
        raise ValueError(f"no {task} frame")
    return frame


def task_spec(task: str, trainer: dict[str, Any] | None = None, **changes: Any) -> ModelSpec:
    """The churn spec predicting :func:`task_frame`'s ``outcome`` as ``task`` (classes :data:`TIERS`),
    with ``trainer`` (default: the churn spec's) and top-level ``changes``."""
    raw = load_spec("churn").model_dump(mode="json")
    raw.update(task=task, gate={}, tuning=None, compression={"methods": ["none"]})
    raw["data"]["target"] = "outcome"
    if task == "multiclass":
        raw["data"]["classes"] = list(TIERS)
    raw["monitor"]["min_live_accuracy"] = None
    if trainer is not None:
        raw["trainer"] = trainer
    raw.update(changes)
    return ModelSpec.model_validate(raw)


def cancer_spec() -> ModelSpec:
    """The breast_cancer spec trained by the built-in scikit-learn Pipeline, untuned (these tests' fixed
    baseline, whatever trainer the shipped spec uses)."""
    trainer = TrainerSpec(kind="sklearn_pipeline", seed=7, params={"C": 1.0, "max_iter": 500})
    return load_spec("breast_cancer").model_copy(update={"trainer": trainer, "tuning": None})


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

    from conveyor import tasks

    model = mlflow.pyfunc.load_model(model_uri)
    features = eval_df[spec.feature_names]
    out = model.predict(features)
    tasks.check_outputs(spec, out, len(features), where="the loaded model")
    if spec.task == "binary":
        assert list(out.columns) == ["probability", "prediction"]
        assert (out["prediction"] == (out["probability"] >= 0.5).astype(int)).all()

    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "contract-model")))
    golden = json.loads((local / "artifacts" / "golden_rows.json").read_text())
    assert len(golden["inputs"]) == spec.deploy.golden_rows
    assert set(golden["inputs"][0]) == set(spec.feature_names)
    replay = model.predict(pd.DataFrame(golden["inputs"]))
    assert list(golden["outputs"]) == list(out.columns)
    for column in out.columns:
        if column == "prediction" and spec.task != "regression":
            assert replay[column].tolist() == golden["outputs"][column]  # labels exactly
        else:
            np.testing.assert_allclose(replay[column], golden["outputs"][column], rtol=1e-6, atol=1e-6)

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
    assert [(c["name"], c["type"]) for c in outputs] == tasks.output_types(spec)
    if spec.task == "binary":
        assert tasks.output_types(spec) == [("probability", "double"), ("prediction", "long")]
    config = mlmodel["flavors"]["python_function"]["config"]
    assert config["task"] == spec.task and config["classes"] == list(spec.classes)
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements and all("==" in r for r in requirements), requirements
    assert any(r.startswith("mlflow-skinny==") for r in requirements)
    return model
