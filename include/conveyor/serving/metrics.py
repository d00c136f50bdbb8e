"""Prometheus metrics of one model-server app (own registry, so several apps can live in one process)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """Counters, histograms and gauges the server exposes on ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "conveyor_requests",
            "Prediction requests by model, served version, route and HTTP status.",
            ["model", "version", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "conveyor_request_latency_seconds",
            "Prediction request latency, parsing to response, by model, version and route.",
            ["model", "version", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "conveyor_predictions",
            "Rows predicted, by model, version and predicted class.",
            ["model", "version", "prediction"],
            registry=self.registry,
        )
        self.loaded_version = Gauge(
            "conveyor_model_loaded_version",
            "1 for the version each model serves (label version), absent when none is loaded.",
            ["model", "version"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "conveyor_model_ready",
            "1 when the model is loaded and answered its golden rows within tolerance.",
            ["model"],
            registry=self.registry,
        )
        self.golden_passed = Gauge(
            "conveyor_golden_check_passed",
            "Result of the last golden-row replay per model version and slot (1 passed, 0 failed).",
            ["model", "version", "slot"],
            registry=self.registry,
        )
        self.golden_max_abs_diff = Gauge(
            "conveyor_golden_max_abs_diff",
            "Largest |probability - stored golden probability| of the last replay.",
            ["model", "version", "slot"],
            registry=self.registry,
        )
        self.golden_p95_latency = Gauge(
            "conveyor_golden_p95_latency_seconds",
            "p95 single-row latency measured over the golden rows at load time.",
            ["model", "version", "slot"],
            registry=self.registry,
        )
        self.swaps = Counter(
            "conveyor_model_swaps",
            "Model versions swapped into serving (promote or reload).",
            ["model"],
            registry=self.registry,
        )
        self.log_written = Counter(
            "conveyor_prediction_log_rows_written",
            "Prediction-log rows written to the data root.",
            ["model"],
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "conveyor_prediction_log_rows_dropped",
            "Prediction-log rows lost (queue full or write error); requests are never failed for it.",
            ["model", "reason"],
            registry=self.registry,
        )

    def set_serving(self, model: str, old_version: str | None, new_version: str | None, ready: bool) -> None:
        """Point the loaded-version gauge at ``new_version`` (one label per model at a time)."""
        if old_version is not None and old_version != new_version:
            with contextlib.suppress(KeyError):
                self.loaded_version.remove(model, old_version)
        if new_version is not None:
            self.loaded_version.labels(model, new_version).set(1)
        self.model_ready.labels(model).set(1 if ready else 0)

    def set_golden(
        self,
        model: str,
        version: str,
        slot: str,
        passed: bool,
        max_abs_diff: float | None,
        p95_ms: float | None,
    ) -> None:
        self.golden_passed.labels(model, version, slot).set(1 if passed else 0)
        if max_abs_diff is not None:
            self.golden_max_abs_diff.labels(model, version, slot).set(max_abs_diff)
        if p95_ms is not None:
            self.golden_p95_latency.labels(model, version, slot).set(p95_ms / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
