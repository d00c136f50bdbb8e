"""Monitoring a multiclass and a regression model: the log read back per task, live quality with the
task's metrics, the RMSE ceiling, and the drift of the model's output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor import tasks
from conveyor.monitoring.live import live_quality, load_labels, read_prediction_log
from unit.serving import support

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _spec(tmp_path: Path, task: str, **monitor: Any) -> Any:
    name = "levels" if task == "multiclass" else "amount"
    return support.load_spec_file(support.write_task_spec(tmp_path / "specs", name, task, **monitor))


def _log(
    spec: Any, frame: pd.DataFrame, scores: Any, root: str, *, ts: datetime = NOW - timedelta(hours=2)
) -> None:
    """Log ``frame``'s rows with the outputs of ``scores`` the way the model server does."""
    from conveyor.serving.predlog import PredictionChunk, PredictionLogWriter

    writer = PredictionLogWriter(root, writer="test-writer")
    writer.start()
    writer.submit(
        PredictionChunk(
            model=spec.name,
            version="1",
            request_id="r-1",
            route="invocations",
            ts=ts,
            latency_ms=3.0,
            frame=frame[["x1", "x2", "color"]].reset_index(drop=True),
            outputs=tasks.outputs(spec, scores),
            ids=frame["row_id"].tolist(),
        )
    )
    writer.close()


def _land(spec: Any, frame: pd.DataFrame, root: str, day: str = "2026-03-10") -> None:
    from conveyor.data.storage import join_uri, write_parquet

    write_parquet(
        frame[["row_id", "label"]].reset_index(drop=True),
        join_uri(root, "landing", spec.name, f"date={day}", "labels.parquet"),
    )


def _window(spec: Any, root: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    start = NOW - timedelta(days=spec.monitor.lookback_days)
    log = read_prediction_log(spec, start, NOW, data_root=root, events=("prediction", "error"))
    return log, load_labels(spec, start, data_root=root)


def test_a_multiclass_log_reads_back_as_the_contracts_columns_and_scores_with_its_metrics(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, "multiclass", min_live_accuracy=0.5)
    root = (tmp_path / "data").as_uri()
    frame = support.make_task_frame("multiclass", 60, seed=2)
    truth = tasks.encode_target(spec, frame["label"])
    scores = np.full((60, 3), 0.1)
    scores[np.arange(60), truth] = 0.8  # right on every row ...
    scores[:15] = [0.2, 0.2, 0.6]  # ... but the first 15, which all say "high"
    _log(spec, frame, scores, root)
    _land(spec, frame, root)

    log, labels = _window(spec, root)
    assert [tasks.probability_column(c) for c in spec.classes] == [
        "probability_low",
        "probability_mid",
        "probability_high",
    ]
    np.testing.assert_allclose(tasks.scores_of(spec, log), scores)
    assert log["prediction"].tolist() == tasks.outputs(spec, scores)["prediction"].tolist()

    live = live_quality(spec, log, labels)
    assert live["n_labelled"] == 60
    expected = tasks.metrics(spec, truth, scores)
    assert set(live["metrics"]) == set(spec.metric_names) == set(expected)
    assert live["metrics"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert live["metrics"]["f1_macro"] == pytest.approx(expected["f1_macro"])
    assert live["per_version"]["1"]["metrics"]["accuracy"] == pytest.approx(expected["accuracy"])


@pytest.mark.parametrize(("ceiling", "alerted"), [(0.5, True), (50.0, False)])
def test_live_rmse_above_max_live_rmse_alerts_and_recommends_retraining(
    tmp_path: Path, ceiling: float, alerted: bool
) -> None:
    from conveyor.monitoring.monitor import run_monitor

    spec = _spec(tmp_path, "regression", max_live_rmse=ceiling)
    root = (tmp_path / "data").as_uri()
    frame = support.make_task_frame("regression", 50, seed=5)
    y = frame["label"].to_numpy(dtype=float)
    predicted = y + np.where(np.arange(50) % 2 == 0, 2.0, -2.0)  # RMSE exactly 2
    _log(spec, frame, predicted, root)
    _land(spec, frame, root)
    log, _ = _window(spec, root)
    assert log["prediction"].dtype == np.float64 and log["probability"].isna().all()

    report = run_monitor(
        None, spec, now=NOW, served_version=None, data_root=root, min_labelled=30, log_to_mlflow=False
    )
    metrics = report.live["metrics"]
    assert set(metrics) == {"rmse", "mae", "r2", "mape"}
    assert metrics["rmse"] == pytest.approx(2.0) and metrics["mae"] == pytest.approx(2.0)
    assert report.n_labelled == 50
    quality = [a for a in report.alerts if "RMSE" in a]
    if alerted:
        assert quality == [f"Live RMSE 2 on 50 labelled predictions is above the ceiling {ceiling:.4g}."]
        assert report.retrain_recommended
    else:
        assert quality == [] and not report.retrain_recommended
    assert "live rmse 2.000 on 50 labelled" in report.message


def test_few_labels_leave_the_rmse_unjudged(tmp_path: Path) -> None:
    from conveyor.monitoring.monitor import run_monitor

    spec = _spec(tmp_path, "regression", max_live_rmse=0.1)
    root = (tmp_path / "data").as_uri()
    frame = support.make_task_frame("regression", 10, seed=6)
    _log(spec, frame, frame["label"].to_numpy(dtype=float) + 5, root)
    _land(spec, frame, root)
    report = run_monitor(None, spec, now=NOW, served_version=None, data_root=root, log_to_mlflow=False)
    assert report.alerts == () and not report.retrain_recommended
    assert "only 10 labelled predictions (< 30): rmse not judged" in report.message


def test_unknown_landed_labels_are_dropped_not_fatal(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "multiclass")
    root = (tmp_path / "data").as_uri()
    frame = support.make_task_frame("multiclass", 12, seed=8)
    _log(spec, frame, np.tile([0.2, 0.3, 0.5], (12, 1)), root)
    landed = frame.copy()
    landed.loc[:2, "label"] = "extreme"
    _land(spec, landed, root)
    log, labels = _window(spec, root)
    live = live_quality(spec, log, labels)
    assert live["n_labelled"] == 9


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_output_drift_compares_served_predictions_with_the_training_target(task: str, tmp_path: Path) -> None:
    from conveyor.monitoring.drift import output_drift

    spec = _spec(tmp_path, task)
    reference = support.make_task_frame(task, 400, seed=1)
    current = support.make_task_frame(task, 300, seed=2)
    same = pd.DataFrame({"prediction": current["label"]})
    if task == "regression":
        moved = pd.DataFrame({"prediction": current["label"] + 15.0})
    else:
        moved = pd.DataFrame({"prediction": ["high"] * 250 + ["low"] * 50})
    stable = output_drift(spec, reference, same)
    drifted = output_drift(spec, reference, moved)
    assert stable is not None and drifted is not None
    assert stable.name == "prediction" and stable.kind == (
        "numeric" if task == "regression" else "categorical"
    )
    assert not stable.drifted and drifted.drifted
    assert output_drift(spec, reference.drop(columns=["label"]), same) is None
