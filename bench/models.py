"""Models the benchmarks serve and compress: demo data → a Conveyor trainer → MLflow, in a child process.

Everything here sets MLflow's process-wide tracking URI, so it only runs inside a benchmark's child
interpreter (see :func:`bench.support.run_child`), never in the runner's own process.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec
    from conveyor.training import TrainResult

#: A fixed last day, so every run lands the same demo data.
END_DAY = dt.date(2026, 11, 20)


def demo_frames(spec: ModelSpec, days: int, rows_per_day: int = 400, seed: int = 0) -> tuple[Any, Any]:
    """``(train_df, eval_df)`` of ``days`` demo batches, split by id hash as snapshots split them."""
    import pandas as pd

    from conveyor.data.generate import breast_cancer_batches, generate_churn
    from conveyor.data.snapshot import split_is_eval

    if spec.name == "breast_cancer":
        frames = [frame for _, frame in breast_cancer_batches(spec, days, END_DAY, seed)]
    else:
        frames = [
            generate_churn(spec, rows_per_day, END_DAY - dt.timedelta(days=k), seed) for k in range(days)
        ]
    df = pd.concat(frames, ignore_index=True)
    is_eval = split_is_eval(df[spec.data.id_column].tolist(), spec.data.holdout_fraction)
    return df[~is_eval].reset_index(drop=True), df[is_eval].reset_index(drop=True)


def train_logged(
    spec: ModelSpec, train_df: pd.DataFrame, eval_df: pd.DataFrame, tracking_uri: str, run_key: str
) -> tuple[Any, TrainResult]:
    """Train ``spec`` with Conveyor's trainer into a fresh MLflow run; return the client and result."""
    import mlflow

    from conveyor.registry.tracking import client_for, get_or_create_run
    from conveyor.training import train

    mlflow.set_tracking_uri(tracking_uri)
    client = client_for(tracking_uri)
    run_id = get_or_create_run(client, spec, dag_run_id=run_key, dag_id="bench")
    return client, train(spec, train_df, eval_df, run_id)


def register_champion(client: Any, spec: ModelSpec, trained: TrainResult, run_key: str) -> str:
    """Register ``trained`` as a version of ``spec``'s model and point ``champion`` at it."""
    from conveyor.registry.versions import register_version

    lineage = {
        "dag_id": "bench",
        "dag_run_id": run_key,
        "data_fingerprint": "bench",
        "validation": "skipped (benchmark)",
        "gate": "register",
        "compression": "none",
        "parent_model_uri": trained.model_uri,
        "git_commit": "bench",
        "params": "{}",
        "trainer": spec.trainer.kind,
    }
    ref = register_version(
        client, spec, model_uri=trained.model_uri, run_id=trained.run_id, dag_run_id=run_key, lineage=lineage
    )
    client.set_registered_model_alias(spec.registered_model_name, "champion", ref.version)
    return str(ref.version)
