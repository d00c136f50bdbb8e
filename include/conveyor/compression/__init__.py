"""Compression: build smaller variants of a trained model and keep the best one within budget.

Each variant is logged as its own pyfunc (artifact contract included: its own golden rows, the
original's reference) and measured in the runtime that would serve it: the pyfunc loaded back
from MLflow, predicting on the evaluation rows (primary-metric drop) and on single rows (p50
latency). The smallest accepted variant wins; when none is accepted the uncompressed model ships.

The metric is the spec's ``gate.primary_metric``, scored with ``conveyor.tasks`` for the spec's task
(binary, multiclass or regression). A variant's drop is how much worse it scores than the original,
oriented by ``LOWER_IS_BETTER`` (an error metric that rises has dropped) and absolute, in the
metric's own units: ``compression.max_metric_drop`` is 0.01 of ROC AUC or accuracy, or 0.01 of RMSE
in the target's units, so a regression spec sets it for the scale of its target.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from conveyor import tasks
from conveyor.compression.tflite import PREPROCESSING_FILE, CompressionError
from conveyor.stages import CompressionResult, VariantReport  # the stage contract's models
from conveyor.training.base import (
    TrainResult,
    feature_frame,
    input_example,
    log_pyfunc_model,
    mlflow_client,
    model_config_for,
    tracking_scope,
    tracking_uri,
)

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

__all__ = ["CompressionError", "CompressionResult", "VariantReport", "compress"]

NONE = "none"
REPORT_ARTIFACT = "compression/report.json"
#: Single-row predictions timed per variant (after a short warm-up).
LATENCY_SAMPLES = 50
LATENCY_WARMUP = 5


def compress(
    spec: ModelSpec,
    train_result: TrainResult,
    train_df: pd.DataFrame,
    eval_df: pd.DataFrame,
    run_id: str,
) -> CompressionResult:
    """Build, log and measure ``spec.compression.methods`` variants of ``train_result``'s model.

    ``train_df`` is accepted for methods that need training data (distillation, calibration); the
    TFLite dynamic-range variant does not. The decision is logged into run ``run_id`` as metrics
    ``compression.<method>.*``, the tag ``conveyor.compression`` and ``compression/report.json``.

    Returns:
        ``chosen`` names the accepted method (or ``"none"``) and ``model_uri`` the model to register.
    """
    methods: list[str] = [m for m in spec.compression.methods if m != NONE]
    primary = spec.gate.primary_metric
    budget = spec.compression.max_metric_drop
    if not methods:
        reason = "the spec asks for no compression (compression.methods: [none])"
        result = _uncompressed(train_result, primary, budget, reason)
    else:
        with tracking_scope():
            if _has_preprocessing(train_result.model_uri):
                result = _compress_keras(spec, train_result, eval_df, run_id, methods)
            else:
                reason = (
                    f"{methods} need a Keras model on Conveyor's preprocessing (the keras_mlp trainer, or "
                    f"a fit function built on context.keras_preprocessing); this {train_result.trainer} "
                    "model ships uncompressed"
                )
                result = _uncompressed(train_result, primary, budget, reason)
    _log_decision(run_id, result)
    return result


def _has_preprocessing(model_uri: str) -> bool:
    """Whether the logged model carries ``preprocessing.json`` (what a TFLite variant is built from)."""
    import mlflow.artifacts

    from conveyor.registry.versions import ModelUriError, resolve_artifact_location

    try:
        location = resolve_artifact_location(mlflow_client(), model_uri)
    except ModelUriError:  # no such model: nothing to build a variant from
        return False
    listed = mlflow.artifacts.list_artifacts(
        artifact_uri=f"{location}/artifacts", tracking_uri=tracking_uri()
    )
    return any(Path(item.path).name == PREPROCESSING_FILE for item in listed)


def _uncompressed(train_result: TrainResult, primary: str, budget: float, reason: str) -> CompressionResult:
    return CompressionResult(
        chosen=NONE,
        model_uri=train_result.model_uri,
        primary_metric=primary,
        max_metric_drop=budget,
        reason=reason,
    )


def _compress_keras(
    spec: ModelSpec, train_result: TrainResult, eval_df: pd.DataFrame, run_id: str, methods: list[str]
) -> CompressionResult:
    import mlflow

    from conveyor.compression.tflite import PYFUNC_CODE, build_tflite_variant

    primary = spec.gate.primary_metric
    budget = spec.compression.max_metric_drop
    features = feature_frame(spec, eval_df)
    if spec.data.target not in eval_df.columns:
        raise CompressionError(
            f"model {spec.name!r}: the evaluation rows lack the target {spec.data.target!r}; "
            "compression scores each variant against it"
        )
    labels = tasks.encode_target(spec, eval_df[spec.data.target])
    with tempfile.TemporaryDirectory(prefix="conveyor-compress-") as tmp:
        original_dir = mlflow.artifacts.download_artifacts(
            artifact_uri=train_result.model_uri,
            dst_path=str(Path(tmp) / "original"),
            tracking_uri=tracking_uri(),
        )
        baseline_metric, baseline_latency = _measure(
            spec, mlflow.pyfunc.load_model(original_dir), features, labels, primary
        )
        baseline = VariantReport(
            method=NONE,
            model_uri=train_result.model_uri,
            size_bytes=train_result.model_size_bytes,
            size_ratio=1.0,
            metric=baseline_metric,
            metric_drop=0.0,
            p50_latency_ms=baseline_latency,
            accepted=True,
            reason="the uncompressed model (fallback)",
        )
        variants = []
        for method in methods:
            if method != "tflite_dynamic_range":
                raise CompressionError(
                    f"unknown compression method {method!r}; use tflite_dynamic_range or none in the spec"
                )
            artifacts, requirements, size_files = build_tflite_variant(
                spec, original_dir, eval_df, Path(tmp) / method, quantize=True
            )
            info = log_pyfunc_model(
                spec,
                PYFUNC_CODE,
                artifacts,
                run_id,
                pip_requirements=requirements,
                example=input_example(spec, eval_df),
                model_config=model_config_for(spec),
                tags={
                    "conveyor.trainer": train_result.trainer,
                    "conveyor.compression": method,
                    "conveyor.parent_model_uri": train_result.model_uri,
                },
            )
            metric, latency = _measure(
                spec, mlflow.pyfunc.load_model(info.model_uri), features, labels, primary
            )
            size = sum(p.stat().st_size for p in size_files)
            variants.append(_judge(method, info.model_uri, size, metric, latency, baseline, primary, budget))

    accepted = sorted((v for v in variants if v.accepted), key=lambda v: (v.size_bytes, v.p50_latency_ms))
    if accepted:
        best = accepted[0]
        return CompressionResult(
            chosen=best.method,
            model_uri=best.model_uri,
            primary_metric=primary,
            max_metric_drop=budget,
            reason=f"{best.method}: {best.reason}",
            baseline=baseline,
            variants=variants,
        )
    return CompressionResult(
        chosen=NONE,
        model_uri=train_result.model_uri,
        primary_metric=primary,
        max_metric_drop=budget,
        reason="no variant within budget; shipping the uncompressed model",
        baseline=baseline,
        variants=variants,
    )


def _judge(
    method: str,
    model_uri: str,
    size: int,
    metric: float,
    latency: float,
    baseline: VariantReport,
    primary: str,
    budget: float,
) -> VariantReport:
    # Absolute, in the metric's units, positive = worse (an error metric that rose has dropped).
    drop = -tasks.improvement(primary, metric, baseline.metric)
    ratio = size / baseline.size_bytes if baseline.size_bytes else float("inf")
    if math.isnan(drop):
        accepted, reason = False, f"{primary} is undefined on the evaluation set (one class only?)"
    elif drop > budget:
        accepted, reason = False, f"{primary} drops by {drop:.4f}, over the budget of {budget:.4f}"
    elif ratio >= 1.0:
        accepted, reason = False, f"not smaller than the original ({ratio:.2f}x its size)"
    else:
        accepted = True
        reason = f"{primary} drop {drop:.4f} within {budget:.4f}; {ratio:.1%} of the original size"
    return VariantReport(
        method=method,
        model_uri=model_uri,
        size_bytes=size,
        size_ratio=ratio,
        metric=metric,
        metric_drop=drop,
        p50_latency_ms=latency,
        accepted=accepted,
        reason=reason,
    )


def _measure(
    spec: ModelSpec, model: Any, features: pd.DataFrame, labels: np.ndarray, primary: str
) -> tuple[float, float]:
    """The primary metric on all rows (held to the task's output contract), and the p50 latency (ms)
    of single-row predictions.

    Raises:
        OutputContractError: the model's output breaks the task's contract.
    """
    outputs = tasks.check_outputs(spec, model.predict(features), len(features), where="the measured model")
    metric = tasks.metric(spec, primary, labels, tasks.scores_of(spec, outputs))
    rows = [features.iloc[[i % len(features)]] for i in range(min(len(features), LATENCY_SAMPLES))]
    for row in rows[:LATENCY_WARMUP]:
        model.predict(row)
    timings = []
    for i in range(LATENCY_SAMPLES):
        row = rows[i % len(rows)]
        started = time.perf_counter()
        model.predict(row)
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(metric), float(np.median(timings))


def _log_decision(run_id: str, result: CompressionResult) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for report in [*([result.baseline] if result.baseline else []), *result.variants]:
        prefix = f"compression.{report.method}"
        values = {
            "size_bytes": float(report.size_bytes),
            "size_ratio": report.size_ratio,
            "metric_drop": report.metric_drop,
            "p50_latency_ms": report.p50_latency_ms,
            "accepted": float(report.accepted),
        }
        metrics += [Metric(f"{prefix}.{key}", float(value), now, 0) for key, value in values.items()]
    client = mlflow_client()
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, "conveyor.compression", result.chosen)
    client.log_dict(run_id, result.model_dump(mode="json"), REPORT_ARTIFACT)
