"""One monitoring pass over a model: drift, live quality, alerts, logged to MLflow.

``run_monitor`` is what the monitoring DAG calls on schedule. It reads the last
``spec.monitor.lookback_days`` of the prediction log, compares the features with the training
reference of the version that serves (``artifacts/reference.parquet``), joins labels that have
landed since, and turns the result into sentences a person can act on plus a single
``retrain_recommended`` flag for this window alone. What to do across windows (retrain after N of
M breaches, roll back inside the bake window, one incident and one alert) is
:mod:`conveyor.monitoring.decisions`, from the window's verdict; the monitoring DAG does not act on
it yet.

Live quality is judged per task: classification accuracy against ``monitor.min_live_accuracy``
(a floor), regression RMSE against ``monitor.max_live_rmse`` (a ceiling), each once at least
``min_labelled`` predictions are labelled; the task's other metrics are reported and logged. The
drift of the model's output (:func:`conveyor.monitoring.drift.output_drift`) is reported and
logged (``drift_score.prediction``) but raises no alert on its own.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from conveyor.data.storage import write_text
from conveyor.monitoring.drift import DriftReport, FeatureDrift, feature_drift, output_drift
from conveyor.monitoring.live import live_quality, load_labels, read_prediction_log
from conveyor.names import CHAMPION

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

log = logging.getLogger(__name__)

# Fewer labelled predictions than this say little about accuracy: no quality alert from them.
DEFAULT_MIN_LABELLED = 30
# Share of requests failing with a server error (5xx) above which an alert is raised.
DEFAULT_MAX_SERVER_ERROR_RATE = 0.05
WINDOW_END_TAG = "conveyor.monitor.window_end"


class MonitorReport(BaseModel):
    """The result of one monitoring pass (small JSON: fits XCom with ``model_dump(mode="json")``)."""

    model_config = ConfigDict(frozen=True)

    model: str
    registered_model_name: str
    version: str | None
    reference_version: str | None
    window_start: datetime
    window_end: datetime
    n_predictions: int
    n_labelled: int
    drift: DriftReport | None
    #: The served predictions against the training target (binary/multiclass: predicted class,
    #: regression: predicted value); informational.
    output_drift: FeatureDrift | None = None
    live: dict[str, Any]
    alerts: tuple[str, ...]
    retrain_recommended: bool
    message: str
    mlflow_run_id: str | None = None


def run_monitor(
    client: Any,
    spec: ModelSpec,
    *,
    now: datetime,
    served_version: str | None,
    data_root: str | None = None,
    min_labelled: int = DEFAULT_MIN_LABELLED,
    max_server_error_rate: float = DEFAULT_MAX_SERVER_ERROR_RATE,
    log_to_mlflow: bool = True,
    html_uri: str | None = None,
) -> MonitorReport:
    """Monitor ``spec`` over ``[now - lookback_days, now)``.

    Args:
        client: an ``MlflowClient`` (tracking and registry) the report is logged with.
        spec: the model.
        now: end of the window (the DAG run's logical end, never the wall clock, so reruns agree).
        served_version: the version the server reports serving; the drift reference is that
            version's ``artifacts/reference.parquet`` (``@champion``'s when ``None``).
        data_root: where the prediction log and landing data live (configured root by default).
        min_labelled: labelled predictions needed before live accuracy can raise an alert.
        max_server_error_rate: share of 5xx requests that raises an alert.
        log_to_mlflow: log metrics, report JSON and the Evidently HTML to
            ``conveyor/<spec.name>/monitoring`` (one run per window end, reused on rerun).
        html_uri: also keep the Evidently HTML report there (local path or data-root URI).

    Returns:
        The report; an empty window gives a report that says so (no drift, no metrics).
    """
    with tempfile.TemporaryDirectory(prefix=f"conveyor-monitor-{spec.name}-") as workdir:
        return _run_monitor(
            client,
            spec,
            now=now,
            served_version=served_version,
            data_root=data_root,
            min_labelled=min_labelled,
            max_server_error_rate=max_server_error_rate,
            log_to_mlflow=log_to_mlflow,
            html_uri=html_uri,
            html_path=Path(workdir) / "drift_report.html",
        )


def _run_monitor(
    client: Any,
    spec: ModelSpec,
    *,
    now: datetime,
    served_version: str | None,
    data_root: str | None,
    min_labelled: int,
    max_server_error_rate: float,
    log_to_mlflow: bool,
    html_uri: str | None,
    html_path: Path,
) -> MonitorReport:
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    start = now - timedelta(days=spec.monitor.lookback_days)
    events = read_prediction_log(spec, start, now, data_root=data_root, events=("prediction", "error"))
    predictions = events[events["event"] == "prediction"]
    version = served_version or _dominant_version(predictions)
    alerts: list[str] = []
    notes: list[str] = []

    reference_version = served_version or _champion_version(client, spec)
    drift: DriftReport | None = None
    prediction_drift: FeatureDrift | None = None
    if predictions.empty:
        notes.append(f"no predictions between {start:%Y-%m-%d %H:%M} and {now:%Y-%m-%d %H:%M} UTC")
    elif reference_version is None:
        notes.append(f"{spec.registered_model_name!r} has no @champion: no drift reference")
    else:
        reference = _reference(client, spec, reference_version)
        if reference is None:
            alerts.append(
                f"Could not read artifacts/reference.parquet of {spec.registered_model_name} "
                f"v{reference_version}, so drift was not measured (see the task log)."
            )
        else:
            drift = feature_drift(spec, reference, predictions, html_path=html_path)
            prediction_drift = output_drift(spec, reference, predictions)
            if html_uri is not None:
                kept = write_text(html_path.read_text(encoding="utf-8"), _as_uri(html_uri))
                drift = drift.model_copy(update={"html_uri": kept})
            if drift.dataset_drift:
                alerts.append(
                    f"Dataset drift: {drift.n_drifted} of {len(drift.features)} features drifted "
                    f"(share {drift.drift_share:.2f} >= {drift.drift_share_alert:.2f}): "
                    f"{', '.join(drift.drifted_features)}."
                )

    labels = load_labels(spec, start, data_root=data_root)
    live = live_quality(spec, events, labels)
    quality, quality_alert, quality_note = judge_quality(spec, live, min_labelled)
    if quality_alert:
        alerts.append(quality_alert)
    if quality_note:
        notes.append(quality_note)
    for v, stats in live["per_version"].items():
        if stats["n_requests"] and stats["server_error_rate"] > max_server_error_rate:
            alerts.append(
                f"Version {v} failed {stats['n_server_errors']} of {stats['n_requests']} requests "
                f"({stats['server_error_rate']:.1%} > {max_server_error_rate:.0%})."
            )

    retrain = bool((drift is not None and drift.dataset_drift) or quality == "breach")
    if drift is not None:
        notes.insert(0, drift.summary())
    if prediction_drift is not None:
        verdict = "drifted" if prediction_drift.drifted else "stable"
        notes.insert(1 if drift is not None else 0, f"output {verdict} ({prediction_drift.note})")
    if live["metrics"] is not None:
        name = _quality_metric(spec)
        value = live["metrics"].get(name)
        shown = f"{value:.3f}" if value is not None else "undefined"
        notes.append(f"live {name} {shown} on {live['n_labelled']} labelled")
    report = MonitorReport(
        model=spec.name,
        registered_model_name=spec.registered_model_name,
        version=version,
        reference_version=reference_version,
        window_start=start,
        window_end=now,
        n_predictions=len(predictions),
        n_labelled=int(live["n_labelled"]),
        drift=drift,
        output_drift=prediction_drift,
        live=live,
        alerts=tuple(alerts),
        retrain_recommended=retrain,
        message="; ".join(notes) if notes else "nothing to report",
    )
    if log_to_mlflow:
        run_id = _log_to_mlflow(client, spec, report, html_path if html_path.exists() else None)
        report = report.model_copy(update={"mlflow_run_id": run_id})
    return report


def _quality_metric(spec: ModelSpec) -> str:
    """The live metric a threshold applies to: ``rmse`` for regression, ``accuracy`` otherwise."""
    return "rmse" if spec.task == "regression" else "accuracy"


def judge_quality(
    spec: ModelSpec, live: dict[str, Any], min_labelled: int
) -> tuple[Literal["breach", "clean", "no_data"], str | None, str | None]:
    """(verdict, the alert sentence, a note) from the live metrics and the spec's threshold.

    Classification: accuracy below ``monitor.min_live_accuracy``; regression: RMSE above
    ``monitor.max_live_rmse`` (in the target's units). Judged only on ``min_labelled`` labels or more;
    without a threshold, a metric or enough labels the verdict is ``no_data``.
    """
    name = _quality_metric(spec)
    value = (live.get("metrics") or {}).get(name)
    n = int(live["n_labelled"])
    limit = spec.monitor.max_live_rmse if spec.task == "regression" else spec.monitor.min_live_accuracy
    if limit is None:
        return "no_data", None, None
    if 0 < n < min_labelled:
        return "no_data", None, f"only {n} labelled predictions (< {min_labelled}): {name} not judged"
    if value is None or n < min_labelled:
        return "no_data", None, None
    if spec.task == "regression" and value > limit:
        return (
            "breach",
            f"Live RMSE {value:.4g} on {n} labelled predictions is above the ceiling {limit:.4g}.",
            None,
        )
    if spec.task != "regression" and value < limit:
        return (
            "breach",
            f"Live accuracy {value:.3f} on {n} labelled predictions is below the floor {limit:.3f}.",
            None,
        )
    return "clean", None, None


def monitoring_experiment(spec: ModelSpec) -> str:
    return f"conveyor/{spec.name}/monitoring"


def _as_uri(target: str) -> str:
    return target if "://" in target else Path(target).resolve().as_uri()


def _dominant_version(predictions: pd.DataFrame) -> str | None:
    versions = predictions["version"].dropna().astype(str)
    return str(versions.value_counts().idxmax()) if len(versions) else None


def _champion_version(client: Any, spec: ModelSpec) -> str | None:
    try:
        return str(client.get_model_version_by_alias(spec.registered_model_name, CHAMPION).version)
    except Exception as exc:
        log.info("%s: no @%s (%s)", spec.registered_model_name, CHAMPION, exc)
        return None


def _reference(client: Any, spec: ModelSpec, version: str) -> pd.DataFrame | None:
    """``artifacts/reference.parquet`` of a registered version, or None when it has none."""
    import mlflow
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        try:
            base = str(client.get_model_version_download_uri(spec.registered_model_name, version)).rstrip("/")
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{base}/artifacts/reference.parquet",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
        except Exception as exc:
            log.warning("%s v%s: no reference.parquet (%s)", spec.registered_model_name, version, exc)
            return None
        return pd.read_parquet(local)


def _log_to_mlflow(client: Any, spec: ModelSpec, report: MonitorReport, html: Path | None) -> str:
    from mlflow.entities import Metric, Param, RunTag

    name = monitoring_experiment(spec)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    window_end = report.window_end.isoformat()
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{WINDOW_END_TAG}` = '{window_end}'", max_results=1
    )
    tags = {
        WINDOW_END_TAG: window_end,
        "conveyor.monitor.window_start": report.window_start.isoformat(),
        "conveyor.model": spec.name,
        "conveyor.served_version": report.version or "none",
        "conveyor.reference_version": report.reference_version or "none",
        "conveyor.retrain_recommended": str(report.retrain_recommended).lower(),
    }
    if found:
        run_id = found[0].info.run_id  # a rerun for the same window updates its run
    else:
        run = client.create_run(experiment_id, run_name=f"monitor-{report.window_end:%Y%m%dT%H%M%S}")
        run_id = run.info.run_id
    timestamp = int(report.window_end.timestamp() * 1000)
    metrics = {
        "n_predictions": report.n_predictions,
        "n_labelled": report.n_labelled,
        "n_alerts": len(report.alerts),
        "retrain_recommended": int(report.retrain_recommended),
        "n_requests": report.live["n_requests"],
        "n_server_errors": report.live["n_server_errors"],
        "n_client_errors": report.live["n_client_errors"],
        "n_out_of_contract": report.live.get("n_out_of_contract", 0),
    }
    if report.live.get("p95_latency_ms") is not None:
        metrics["p95_latency_ms"] = report.live["p95_latency_ms"]
    for key, value in (report.live.get("metrics") or {}).items():
        if value is not None:
            metrics[f"live_{key}"] = value
    if report.output_drift is not None and report.output_drift.score is not None:
        metrics["drift_score.prediction"] = report.output_drift.score
        metrics["output_drift"] = int(report.output_drift.drifted)
    if report.drift is not None:
        metrics["drift_share"] = report.drift.drift_share
        metrics["n_drifted_features"] = report.drift.n_drifted
        metrics["dataset_drift"] = int(report.drift.dataset_drift)
        for feature in report.drift.features:
            if feature.score is not None:
                metrics[f"drift_score.{feature.name}"] = feature.score
    client.log_batch(
        run_id,
        metrics=[
            Metric(k, float(v), timestamp, 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(v)
        ],
        params=[] if found else [Param("lookback_days", str(spec.monitor.lookback_days))],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    body = report.model_copy(update={"mlflow_run_id": run_id}).model_dump(mode="json")
    client.log_text(run_id, json.dumps(body, indent=2), "monitor_report.json")
    if html is not None:
        client.log_artifact(run_id, str(html))
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)
