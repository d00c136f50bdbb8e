"""Register step: Conveyor's ``register_version`` vs MLflow's default path, same model, same store.

Conveyor registers the already-logged model (``source=models:/<id>``, no copy, pinned requirements
were written at train time). The peer is what MLflow does by default for the same fitted
scikit-learn pipeline: ``mlflow.sklearn.log_model`` (requirements inferred) + ``mlflow.register_model``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from bench import BenchResult

MODEL = "breast_cancer"
END = date(2026, 11, 23)
MAX_RATIO = 0.05
PEER_NAME = "bench-peer-breast-cancer"


@contextmanager
def _isolated_home() -> Iterator[Path]:
    """A throwaway Conveyor home + data root, cwd inside it; env and cwd restored afterwards."""
    from conveyor.settings import get_settings

    keys = ("CONVEYOR_HOME", "CONVEYOR_DATA_ROOT", "MLFLOW_TRACKING_URI")
    saved = {k: os.environ.get(k) for k in keys}
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp:
        home = Path(tmp)
        os.environ["CONVEYOR_HOME"] = str(home)
        os.environ["CONVEYOR_DATA_ROOT"] = (home / "data").as_uri()
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        get_settings.cache_clear()
        os.chdir(home)
        try:
            yield home
        finally:
            os.chdir(cwd)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            get_settings.cache_clear()


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(quick: bool) -> list[BenchResult]:
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from conveyor import pipeline
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.data.snapshot import load_snapshot
    from conveyor.registry.tracking import client_for
    from conveyor.registry.versions import register_version
    from conveyor.stages import RunContext

    reps, peer_reps = (2, 1) if quick else (5, 3)
    with _isolated_home() as home:
        tracking_uri = f"sqlite:///{home}/mlflow.db"
        spec = load_spec(MODEL)
        days = 3 if quick else spec.data.window_days
        land_demo_data(spec, days=days, end_day=END, seed=0)
        run = RunContext(
            model=MODEL,
            dag_id=f"conveyor_train_{MODEL}",
            dag_run_id="bench__train",
            window_end=END.isoformat(),
            window_days=days,
        )
        validated = pipeline.validate_data(run, tracking_uri=tracking_uri)
        trained = pipeline.train(run, validated=validated, tracking_uri=tracking_uri)
        client = client_for(tracking_uri)
        lineage = {
            "dag_id": f"conveyor_train_{MODEL}",
            "data_fingerprint": validated.fingerprint,
            "validation": "passed",
            "gate": "register",
            "compression": "none",
            "parent_model_uri": trained.model_uri,
            "git_commit": "bench",
            "params": "{}",
            "trainer": spec.trainer.kind,
        }

        def conveyor_once(i: int) -> float:
            dag_run_id = f"bench__register_{i}"
            return _timed(
                lambda: register_version(
                    client,
                    spec,
                    model_uri=trained.model_uri,
                    run_id=validated.run_id,
                    dag_run_id=dag_run_id,
                    lineage={**lineage, "dag_run_id": dag_run_id},
                )
            )

        conveyor_s = statistics.median(conveyor_once(i) for i in range(reps))

        # The peer: the same features, a plain fitted scikit-learn Pipeline, MLflow's default path.
        train_df, _ = load_snapshot(validated.snapshot)
        features = spec.feature_names
        fitted = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))])
        fitted.fit(train_df[features], train_df[spec.data.target])
        mlflow.set_tracking_uri(tracking_uri)
        experiment = client.get_run(validated.run_id).info.experiment_id

        def peer_once(i: int) -> float:
            with mlflow.start_run(experiment_id=experiment, run_name=f"bench-peer-{i}"):
                t0 = time.perf_counter()
                info = mlflow.sklearn.log_model(fitted, name="model")
                mlflow.register_model(info.model_uri, PEER_NAME)
                return time.perf_counter() - t0

        peer_s = statistics.median(peer_once(i) for i in range(peer_reps))

    ratio = conveyor_s / peer_s if peer_s > 0 else float("nan")
    return [
        BenchResult(
            name="register",
            conveyor=conveyor_s,
            peer=peer_s,
            unit="s",
            target=f"ratio <= {MAX_RATIO}",
            passed=ratio <= MAX_RATIO,
            details={
                "repetitions": reps,
                "peer_repetitions": peer_reps,
                "peer": "mlflow.sklearn.log_model (inferred requirements) + mlflow.register_model",
                "rows": validated.rows,
            },
        )
    ]
