"""run_monitor end to end on a real MLflow store: drift, quality alerts, MLflow logging, empty windows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.monitoring.monitor import MonitorReport, run_monitor

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _land(root: str, frame: Any, day: str) -> None:
    from conveyor.data.storage import join_uri, write_parquet

    write_parquet(frame, join_uri(root, "landing", "tiny", f"date={day}", "batch.parquet"))


def _offline_probability(support_module: Any, mlflow_store: dict[str, Any], frame: Any) -> Any:
    return support_module.offline_predict(mlflow_store["weights"], frame)["probability"].to_numpy()


def test_shifted_traffic_recommends_retraining_and_is_logged_to_mlflow(
    spec: Any, write_log: Any, support_module: Any, mlflow_client: Any, mlflow_store: Any, tmp_path: Path
) -> None:
    live = support_module.make_frame(300, seed=21, shift=1.0)
    root = write_log(
        live, ts=NOW - timedelta(days=1), probability=_offline_probability(support_module, mlflow_store, live)
    )
    _land(root, live, "2026-03-10")

    report = run_monitor(
        mlflow_client,
        spec,
        now=NOW,
        served_version=None,
        data_root=root,
        html_uri=str(tmp_path / "kept.html"),
    )
    assert isinstance(report, MonitorReport)
    assert report.version == "1" and report.reference_version == mlflow_store["version"]
    assert report.window_start == NOW - timedelta(days=7) and report.window_end == NOW
    assert report.n_predictions == 300 and report.n_labelled == 300
    assert report.drift is not None and report.drift.dataset_drift
    assert report.retrain_recommended is True
    assert any(a.startswith("Dataset drift: 3 of 3 features drifted") for a in report.alerts)
    assert report.live["metrics"]["accuracy"] > 0.6  # the model still ranks well: no quality alert
    assert not any("accuracy" in a for a in report.alerts)
    assert report.drift.html_uri and (tmp_path / "kept.html").read_text().lower().count("<html") >= 1
    json.dumps(report.model_dump(mode="json"))  # XCom-safe

    run = mlflow_client.get_run(report.mlflow_run_id)
    experiment = mlflow_client.get_experiment(run.info.experiment_id)
    assert experiment.name == "conveyor/tiny/monitoring"
    assert run.data.tags["conveyor.served_version"] == "1"
    assert run.data.metrics["n_predictions"] == 300
    assert run.data.metrics["dataset_drift"] == 1
    assert run.data.metrics["retrain_recommended"] == 1
    assert "drift_score.x1" in run.data.metrics and "live_accuracy" in run.data.metrics
    artifacts = {a.path for a in mlflow_client.list_artifacts(report.mlflow_run_id)}
    assert {"monitor_report.json", "drift_report.html"} <= artifacts

    again = run_monitor(mlflow_client, spec, now=NOW, served_version="1", data_root=root)
    assert again.mlflow_run_id == report.mlflow_run_id, "a rerun for the same window reuses its run"


def test_stable_traffic_with_poor_labels_raises_a_quality_alert(
    spec: Any, write_log: Any, support_module: Any, mlflow_client: Any, mlflow_store: Any
) -> None:
    live = support_module.make_frame(200, seed=22)
    root = write_log(
        live, ts=NOW - timedelta(days=2), probability=_offline_probability(support_module, mlflow_store, live)
    )
    flipped = live.assign(label=1 - live["label"])  # the world changed its mind: same inputs, new labels
    _land(root, flipped, "2026-03-09")

    report = run_monitor(
        mlflow_client, spec, now=NOW, served_version="1", data_root=root, log_to_mlflow=False
    )
    assert report.drift is not None and report.drift.dataset_drift is False
    assert report.live["metrics"]["accuracy"] < spec.monitor.min_live_accuracy
    assert report.retrain_recommended is True
    assert any("below the floor 0.600" in a for a in report.alerts)
    assert report.mlflow_run_id is None


def test_server_errors_raise_an_alert_without_retraining(
    spec: Any, write_log: Any, support_module: Any, mlflow_client: Any, mlflow_store: Any
) -> None:
    live = support_module.make_frame(50, seed=23)
    errors = [{"status": 500, "request_id": f"e{i}"} for i in range(3)]
    root = write_log(
        live,
        ts=NOW - timedelta(hours=5),
        probability=_offline_probability(support_module, mlflow_store, live),
        errors=errors,
    )
    report = run_monitor(
        mlflow_client, spec, now=NOW, served_version="1", data_root=root, log_to_mlflow=False
    )
    assert any(a.startswith("Version 1 failed 3 of 4 requests") for a in report.alerts)
    assert report.retrain_recommended is False
    assert "labelled" not in " ".join(report.alerts)


def test_an_empty_window_gives_a_report_that_says_so(
    spec: Any, mlflow_client: Any, mlflow_store: Any, tmp_path: Path
) -> None:
    later = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)  # its own window, so its own MLflow run
    report = run_monitor(mlflow_client, spec, now=later, served_version=None, data_root=tmp_path.as_uri())
    assert report.n_predictions == 0 and report.n_labelled == 0
    assert report.drift is None and report.alerts == () and report.retrain_recommended is False
    assert report.message.startswith("no predictions between 2026-04-03 12:00 and 2026-04-10 12:00 UTC")
    assert report.live["metrics"] is None
    run = mlflow_client.get_run(report.mlflow_run_id)
    assert run.data.metrics["n_predictions"] == 0
    assert run.data.tags["conveyor.served_version"] == "none"
    assert np.isclose(run.data.metrics["retrain_recommended"], 0)


def test_a_version_without_reference_gives_an_alert_not_a_crash(
    spec: Any, write_log: Any, support_module: Any, mlflow_client: Any
) -> None:
    root = write_log(support_module.make_frame(30, seed=24), ts=NOW - timedelta(hours=2))
    report = run_monitor(
        mlflow_client, spec, now=NOW, served_version="999", data_root=root, log_to_mlflow=False
    )
    assert report.drift is None and report.n_predictions == 30
    assert report.alerts == (
        "Could not read artifacts/reference.parquet of conveyor-test-monitor v999, "
        "so drift was not measured (see the task log).",
    )
