"""The scikit-learn pipeline trainer on real data, logged into a real MLflow store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.config import load_spec
from conveyor.training import train
from conveyor.training.sklearn_pipeline import train_sklearn_pipeline

from .support import breast_cancer_frame, cancer_spec, churn_frame

pytestmark = pytest.mark.unit


def test_breast_cancer_pipeline_scores_and_is_recorded_in_the_run(
    new_run: Callable[[], str], tracking: dict[str, str], check_model_contract: Callable[..., Any]
) -> None:
    from mlflow import MlflowClient

    spec = cancer_spec()
    frame = breast_cancer_frame()
    train_df, eval_df = frame.iloc[::2], frame.iloc[1::2]
    run_id = new_run()

    result = train(spec, train_df, eval_df, run_id)

    assert result.metrics["roc_auc"] > 0.95
    assert result.trainer == "sklearn_pipeline" and result.model_uri.startswith("models:/")
    assert (result.n_train, result.n_eval) == (len(train_df), len(eval_df))
    assert result.model_size_bytes > 0 and result.train_seconds > 0
    check_model_contract(spec, result.model_uri, eval_df)

    run = MlflowClient(tracking["uri"]).get_run(run_id)
    assert run.info.status == "RUNNING"  # a task logs into the DAG run's run; it never ends it
    assert run.data.metrics["eval_roc_auc"] == pytest.approx(result.metrics["roc_auc"])
    assert run.data.metrics["model_size_bytes"] == result.model_size_bytes
    assert run.data.params["trainer.kind"] == "sklearn_pipeline"
    assert run.data.params["trainer.C"] == "1.0"


def test_same_data_and_seed_give_the_same_model_with_categoricals(new_run: Callable[[], str]) -> None:
    import mlflow

    spec = load_spec("churn").model_copy(
        update={"trainer": cancer_spec().trainer.model_copy(update={"seed": 3})}
    )
    frame = churn_frame(600, seed=5)
    frame.loc[frame.index[:15], "contract"] = None
    train_df, eval_df = frame.iloc[:450], frame.iloc[450:]

    first = train_sklearn_pipeline(spec, train_df, eval_df, new_run())
    second = train_sklearn_pipeline(spec, train_df, eval_df, new_run())

    assert first.metrics == second.metrics
    assert first.metrics["roc_auc"] > 0.7
    rows = eval_df[spec.feature_names].head(3).copy()
    rows.loc[rows.index[0], "contract"] = "lifetime"  # never seen: one-hot ignores it
    rows.loc[rows.index[1], "payment_method"] = None
    rows.loc[rows.index[2], "total_charges"] = np.nan
    out_first = mlflow.pyfunc.load_model(first.model_uri).predict(rows)
    out_second = mlflow.pyfunc.load_model(second.model_uri).predict(rows)
    assert np.isfinite(out_first["probability"]).all()
    np.testing.assert_array_equal(out_first["probability"], out_second["probability"])


def test_pipeline_file_holds_only_trusted_types(new_run: Callable[[], str], tmp_path: Path) -> None:
    import mlflow
    import skops.io

    from conveyor.training.pyfunc_sklearn import TRUSTED_TYPES

    spec = load_spec("churn").model_copy(update={"trainer": cancer_spec().trainer})
    frame = churn_frame(200, seed=1)
    result = train_sklearn_pipeline(spec, frame.iloc[:150], frame.iloc[150:], new_run())
    local = Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp_path)))
    untrusted = skops.io.get_untrusted_types(file=local / "artifacts" / "pipeline.skops")
    assert set(untrusted) <= set(TRUSTED_TYPES)
