"""Test support for the registry and evaluation tests: a real MLflow store per test, a toy spec, data
and real logged pyfunc models.

Imported as ``unit.registry.support`` (``tests/`` is on ``sys.path``), never by production code.
``tiny_model.py`` next to it is handed to MLflow by file path (models-from-code), so it stays a file.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TINY_MODEL_CODE = Path(__file__).with_name("tiny_model.py")
PIP_REQUIREMENTS = ["mlflow==3.17.2", "numpy", "pandas"]
GOOD_WEIGHTS: dict[str, Any] = {"coef": {"x1": 2.0, "x2": 1.0}, "intercept": 0.0}
WEAK_WEIGHTS: dict[str, Any] = {"coef": {"x1": 0.4, "x2": -0.8}, "intercept": 0.1}


def make_template_db(folder: Path) -> Path:
    """An empty, fully migrated MLflow SQLite database (migrations take seconds; copies take ms)."""
    from mlflow import MlflowClient

    db = folder / "template.db"
    with contextlib.chdir(folder):  # the default experiment's artifact root lands in the temp folder
        MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def fresh_store(template: Path, folder: Path) -> str:
    """A copy of the template database in ``folder``; returns its tracking URI."""
    db = folder / "tracking.db"  # not mlflow.db: that is MLflow's default store name in the cwd
    shutil.copyfile(template, db)
    return f"sqlite:///{db}"


def make_spec(
    *,
    name: str = "toy",
    floors: dict[str, float] | None = None,
    primary_metric: str = "roc_auc",
    min_improvement: float = 0.0,
    cold_start: str = "floors_only",
    mode: str = "enforce",
    **gate: Any,
) -> Any:
    """A small spec: two numeric features ``x1``, ``x2``; target ``label``; ``gate`` adds gate fields."""
    from conveyor.config import ModelSpec

    return ModelSpec.model_validate(
        {
            "name": name,
            "registered_model_name": f"conveyor-{name}",
            "description": "toy model for tests",
            "data": {"id_column": "row_id", "event_time_column": "event_date", "target": "label"},
            "numeric_features": [{"name": "x1"}, {"name": "x2"}],
            "trainer": {"kind": "sklearn_pipeline", "seed": 3},
            "gate": {
                "primary_metric": primary_metric,
                "floors": {"roc_auc": 0.6} if floors is None else floors,
                "min_improvement": min_improvement,
                "cold_start": cold_start,
                "mode": mode,
                **gate,
            },
        }
    )


def make_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Labelled rows where ``label`` follows ``sigmoid(2*x1 + x2)`` (GOOD_WEIGHTS is the true model)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    p = 1.0 / (1.0 + np.exp(-(2.0 * x1 + x2)))
    return pd.DataFrame(
        {
            "row_id": np.arange(rows),
            "x1": x1,
            "x2": x2,
            "label": (rng.uniform(size=rows) < p).astype(int),
        }
    )


def log_tiny_model(client: Any, run_id: str, weights: dict[str, Any]) -> str:
    """Log the tiny pyfunc into ``run_id`` the way trainers do (models-from-code, explicit signature
    and requirements); return the ``models:/m-...`` URI. MLflow's global URI is restored afterwards.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from conveyor.registry.tracking import store_side_tracking_uri

    signature = ModelSignature(
        inputs=Schema([ColSpec("double", "x1"), ColSpec("double", "x2")]),
        outputs=Schema([ColSpec("double", "probability"), ColSpec("long", "prediction")]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        weights_file = Path(tmp) / "weights.json"
        weights_file.write_text(json.dumps(weights))
        with store_side_tracking_uri(client), mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # trainers log an input example; the tests skip it (it costs a model load per log)
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(TINY_MODEL_CODE),
                artifacts={"weights": str(weights_file)},
                signature=signature,
                pip_requirements=PIP_REQUIREMENTS,
            )
        # start_run(run_id=...) ends the run on exit; tasks keep logging into it, so reopen it.
        client.update_run(run_id, status="RUNNING")
    return str(info.model_uri)


def expected_probability(weights: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    logit = float(weights.get("intercept", 0.0)) + sum(
        w * frame[f].to_numpy() for f, w in weights["coef"].items()
    )
    return 1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=float)))
