"""Test support shared by the serving and monitoring tests: a tiny spec, data and real logged models.

Imported as ``unit.serving.support`` (``tests/`` is on ``sys.path``), never by production code.
``tiny_model.py`` next to it is handed to MLflow by file path (models-from-code), so it stays a file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

TINY_MODEL_CODE = Path(__file__).with_name("tiny_model.py")
COLORS = ("red", "green", "blue")
PIP_REQUIREMENTS = ["mlflow==3.17.2", "scikit-learn", "pandas", "numpy"]


def write_spec(
    specs_dir: Path,
    name: str = "tiny",
    registered_model_name: str | None = None,
    *,
    golden_tolerance: float = 1e-6,
    latency_budget_ms: float = 250.0,
    lookback_days: int = 7,
    min_live_accuracy: float | None = 0.6,
) -> Path:
    """Write a small spec (two numeric, one categorical feature) and return its path."""
    specs_dir.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "name": name,
        "registered_model_name": registered_model_name or f"conveyor-test-{name}",
        "data": {
            "id_column": "row_id",
            "event_time_column": "event_date",
            "target": "label",
            "min_rows": 10,
        },
        "numeric_features": [
            {"name": "x1", "min": -10, "max": 10},
            {"name": "x2", "min": -10, "max": 10, "max_null_fraction": 0.1},
        ],
        "categorical_features": [{"name": "color", "categories": list(COLORS)}],
        "trainer": {"kind": "sklearn_pipeline"},
        "deploy": {
            "golden_rows": 8,
            "latency_budget_ms": latency_budget_ms,
            "golden_tolerance": golden_tolerance,
        },
        "monitor": {
            "drift_threshold": 0.05,
            "drift_share_alert": 0.5,
            "min_live_accuracy": min_live_accuracy,
            "lookback_days": lookback_days,
        },
    }
    path = specs_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def make_frame(n: int, seed: int = 0, shift: float = 0.0, start_id: int = 0) -> pd.DataFrame:
    """Rows with the tiny spec's columns; ``shift`` moves both numeric features (drift)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1.0, n)
    x2 = rng.normal(shift, 1.0, n)
    color = rng.choice(COLORS, n, p=[0.5, 0.3, 0.2] if shift == 0 else [0.1, 0.2, 0.7])
    logit = 1.5 * x1 - 1.0 * x2 + np.where(color == "red", 0.5, -0.5)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return pd.DataFrame(
        {
            "row_id": np.arange(start_id, start_id + n, dtype="int64"),
            "event_date": pd.Timestamp("2026-01-01"),
            "x1": x1,
            "x2": x2,
            "color": color,
            "label": label,
        }
    )


def _design(df: pd.DataFrame) -> np.ndarray:
    parts = [df[["x1", "x2"]].astype(float).fillna(0.0).to_numpy()]
    values = df["color"].astype(str).to_numpy()
    parts.append(np.stack([(values == c).astype(float) for c in COLORS], axis=1))
    return np.concatenate(parts, axis=1)


def fit_weights(train: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    """Fit a scikit-learn logistic regression and return the weights ``tiny_model.py`` rebuilds."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(max_iter=500).fit(_design(train), train["label"])
    weights: dict[str, Any] = {
        "numeric": ["x1", "x2"],
        "categorical": {"color": list(COLORS)},
        "coef": lr.coef_[0].tolist(),
        "intercept": float(lr.intercept_[0]),
    }
    weights.update(extra)
    return weights


def offline_predict(weights: dict[str, Any], features: pd.DataFrame) -> pd.DataFrame:
    """What ``tiny_model.py`` predicts for ``features`` (same arithmetic, no MLflow)."""
    z = _design(features) @ np.asarray(weights["coef"]) + weights["intercept"] + weights.get("offset", 0.0)
    probability = 1 / (1 + np.exp(-z))
    return pd.DataFrame({"probability": probability, "prediction": (probability >= 0.5).astype("int64")})


def log_tiny_model(
    tracking_uri: str,
    train: pd.DataFrame,
    *,
    artifact_root: Path | None,
    experiment: str = "conveyor/tiny",
    sleep_ms: float = 0.0,
    offset: float = 0.0,
    corrupt_golden: bool = False,
    golden_rows: int = 8,
) -> tuple[str, dict[str, Any]]:
    """Log a contract-honouring pyfunc into ``tracking_uri``; return (model URI, weights).

    ``corrupt_golden`` stores golden outputs that the model does not reproduce (a bad candidate).
    Artifacts go under ``artifact_root`` (never the working directory); ``None`` lets a tracking
    server choose (its proxied artifact store).
    """
    import mlflow
    from mlflow.models import infer_signature

    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_root)

    weights = fit_weights(train, sleep_ms=sleep_ms, offset=offset)
    features = train[["x1", "x2", "color"]].reset_index(drop=True)
    golden_in = features.head(golden_rows)
    golden_out = offline_predict(weights, golden_in)
    if corrupt_golden:
        golden_out["probability"] = 1.0 - golden_out["probability"]
        golden_out["prediction"] = 1 - golden_out["prediction"]
    signature = infer_signature(
        features.astype({"x1": "float64", "x2": "float64", "color": "str"}),
        offline_predict(weights, features.head(3)),
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "weights.json").write_text(json.dumps(weights))
        (tmp_path / "golden_rows.json").write_text(
            json.dumps(
                {
                    "inputs": golden_in.to_dict(orient="records"),
                    "outputs": {
                        "probability": golden_out["probability"].tolist(),
                        "prediction": golden_out["prediction"].astype(int).tolist(),
                    },
                }
            )
        )
        train.head(5000).drop(columns=["row_id", "event_date"]).to_parquet(tmp_path / "reference.parquet")
        mlflow.set_tracking_uri(tracking_uri)
        try:
            with mlflow.start_run(experiment_id=experiment_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(TINY_MODEL_CODE),
                    artifacts={
                        "weights": str(tmp_path / "weights.json"),
                        "golden_rows": str(tmp_path / "golden_rows.json"),
                        "reference": str(tmp_path / "reference.parquet"),
                    },
                    signature=signature,
                    input_example=features.head(2),
                    pip_requirements=PIP_REQUIREMENTS,
                )
        finally:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    return info.model_uri, weights


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path | None) -> str:
    """Find or create experiment ``name``, artifacts under ``artifact_root`` (server's default if None)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    if artifact_root is None:
        return str(client.create_experiment(name))
    location = (Path(artifact_root) / name.replace("/", "_")).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def register(tracking_uri: str, registered_name: str, model_uri: str, alias: str | None = "champion") -> str:
    """Register ``model_uri`` as a new version, optionally pointing ``alias`` at it; return the version."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(registered_name)
    except Exception:
        client.create_registered_model(registered_name)
    # MLflow resolves a "models:/m-..." source through the global tracking URI, whatever the client,
    # and a tracking server wants the logged model's id next to it.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mv = client.create_model_version(registered_name, source=model_uri, model_id=model_id)
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    if alias:
        client.set_registered_model_alias(registered_name, alias, mv.version)
    return str(mv.version)


# --- multiclass and regression models ----------------------------------------------------------------

TINY_TASK_MODEL_CODE = Path(__file__).with_name("tiny_task_model.py")
#: The multiclass test model's labels: strings, so its ``prediction`` is a string (OIP ``BYTES``).
LEVELS = ("low", "mid", "high")


def write_task_spec(
    specs_dir: Path,
    name: str,
    task: str,
    registered_model_name: str | None = None,
    *,
    golden_tolerance: float = 1e-6,
    min_live_accuracy: float | None = None,
    max_live_rmse: float | None = None,
) -> Path:
    """A spec like :func:`write_spec`'s for a ``multiclass`` (classes :data:`LEVELS`) or ``regression``
    model (target ``label`` in both)."""
    path = write_spec(
        specs_dir, name, registered_model_name, golden_tolerance=golden_tolerance, min_live_accuracy=None
    )
    raw = yaml.safe_load(path.read_text())
    raw["task"] = task
    if task == "multiclass":
        raw["data"]["classes"] = list(LEVELS)
        raw["monitor"]["min_live_accuracy"] = min_live_accuracy
    else:
        raw["monitor"]["max_live_rmse"] = max_live_rmse
    raw["monitor"] = {k: v for k, v in raw["monitor"].items() if v is not None}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def load_spec_file(path: Path) -> Any:
    from conveyor.config import ModelSpec

    return ModelSpec.model_validate(yaml.safe_load(path.read_text()))


def make_task_frame(task: str, n: int, seed: int = 0, start_id: int = 0, noise: float = 0.3) -> pd.DataFrame:
    """:func:`make_frame` rows with a multiclass (:data:`LEVELS`) or regression ``label``."""
    frame = make_frame(n, seed=seed, start_id=start_id)
    rng = np.random.default_rng(seed + 1)
    signal = 1.5 * frame["x1"] - 1.0 * frame["x2"] + np.where(frame["color"] == "red", 0.5, -0.5)
    if task == "regression":
        frame["label"] = 3.0 * signal + 10.0 + rng.normal(0, noise, n)
    else:
        noisy = signal + rng.normal(0, noise, n)
        frame["label"] = np.asarray(LEVELS, dtype=object)[np.digitize(noisy, [-0.7, 0.7])]
    return frame


def fit_task_weights(task: str, train: pd.DataFrame) -> dict[str, Any]:
    """Weights ``tiny_task_model.py`` rebuilds: multinomial logistic or least-squares regression."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    design = _design(train)
    if task == "regression":
        reg = LinearRegression().fit(design, train["label"].astype(float))
        coef, intercept = reg.coef_.tolist(), float(reg.intercept_)
    else:
        y = train["label"].map({c: i for i, c in enumerate(LEVELS)}).to_numpy()
        lr = LogisticRegression(max_iter=1000).fit(design, y)
        coef, intercept = lr.coef_.tolist(), lr.intercept_.tolist()
    return {
        "numeric": ["x1", "x2"],
        "categorical": {"color": list(COLORS)},
        "coef": coef,
        "intercept": intercept,
    }


def offline_task_scores(weights: dict[str, Any], features: pd.DataFrame) -> np.ndarray:
    """The scores ``tiny_task_model.py`` computes for ``features`` (same arithmetic, no MLflow)."""
    design = _design(features)
    coef = np.asarray(weights["coef"], dtype=float)
    if coef.ndim == 2:
        z = design @ coef.T + np.asarray(weights["intercept"], dtype=float)
        z -= z.max(axis=1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return design @ coef + float(weights["intercept"])


def log_task_model(
    tracking_uri: str,
    spec: Any,
    train: pd.DataFrame,
    *,
    artifact_root: Path,
    golden_rows: int = 8,
) -> tuple[str, dict[str, Any]]:
    """Log ``tiny_task_model.py`` for ``spec`` (its task's signature, golden rows); return (URI, weights)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    import conveyor.pyfunc_outputs
    from conveyor import tasks

    experiment_id = ensure_experiment(tracking_uri, f"conveyor/{spec.name}", artifact_root)
    weights = fit_task_weights(spec.task, train)
    features = train[["x1", "x2", "color"]].reset_index(drop=True)
    golden_in = features.head(golden_rows)
    golden_out = tasks.outputs(spec, offline_task_scores(weights, golden_in))
    signature = ModelSignature(
        inputs=Schema([ColSpec("double", "x1"), ColSpec("double", "x2"), ColSpec("string", "color")]),
        outputs=Schema([ColSpec(kind, column) for column, kind in tasks.output_types(spec)]),  # type: ignore[arg-type]
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "weights.json").write_text(json.dumps(weights))
        (tmp_path / "golden_rows.json").write_text(
            json.dumps(
                {
                    "inputs": golden_in.to_dict(orient="records"),
                    "outputs": {column: golden_out[column].tolist() for column in golden_out.columns},
                }
            )
        )
        train.head(5000).drop(columns=["row_id", "event_date"]).to_parquet(tmp_path / "reference.parquet")
        mlflow.set_tracking_uri(tracking_uri)
        try:
            with mlflow.start_run(experiment_id=experiment_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(TINY_TASK_MODEL_CODE),
                    artifacts={
                        "weights": str(tmp_path / "weights.json"),
                        "golden_rows": str(tmp_path / "golden_rows.json"),
                        "reference": str(tmp_path / "reference.parquet"),
                    },
                    code_paths=[str(Path(conveyor.pyfunc_outputs.__file__))],
                    model_config=tasks.model_config(spec),
                    signature=signature,
                    input_example=features.head(2),
                    pip_requirements=PIP_REQUIREMENTS,
                )
        finally:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    return info.model_uri, weights
