"""Operators and sensors: no work in __init__, templated fields, the deploy decision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import pytest
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from conveyor.serving.client import ModelServerError, server_error
from conveyor.serving.schemas import PromoteResult, StageReport
from conveyor_airflow.operators.model_server import ModelServerDeployOperator
from conveyor_airflow.operators.registry import MlflowSetModelAliasOperator, actor_from_context
from conveyor_airflow.sensors.mlflow import MlflowModelAliasSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

pytestmark = pytest.mark.unit


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) any connection lookup."""
    asked: list[str] = []

    def refuse(conn_id: str) -> Any:
        asked.append(conn_id)
        raise AssertionError(f"connection {conn_id!r} looked up")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(lambda cls, conn_id: refuse(conn_id)))
    return asked


def test_constructors_do_no_work(no_connections: list[str]) -> None:
    operators = [
        MlflowSetModelAliasOperator(
            task_id="alias",
            registered_model_name="conveyor-churn",
            alias="champion",
            version="{{ ti.xcom_pull('register') }}",
            reason="gate passed",
            mlflow_conn_id="does_not_exist",
        ),
        ModelServerDeployOperator(
            task_id="deploy", model_name="churn", version="3", model_server_conn_id="does_not_exist"
        ),
        MlflowModelAliasSensor(
            task_id="wait", registered_model_name="conveyor-churn", alias="challenger", mlflow_conn_id="nope"
        ),
    ]
    assert no_connections == []
    for op in operators:
        assert "hook" not in vars(op)  # the cached hook is only built in execute/poke


def test_templated_fields() -> None:
    assert set(MlflowSetModelAliasOperator.template_fields) >= {
        "registered_model_name",
        "alias",
        "version",
        "expected_version",
        "reason",
    }
    assert set(ModelServerDeployOperator.template_fields) == {"model_name", "version"}
    assert set(MlflowModelAliasSensor.template_fields) == {"registered_model_name", "alias", "version"}


def test_actor_from_context() -> None:
    class TI:
        dag_id = "deploy"
        run_id = "asset_triggered__2026-01-01"

    with_run_id = cast("Context", {"ti": TI(), "run_id": "manual__1"})
    assert actor_from_context(with_run_id) == ("airflow:deploy/manual__1", "manual__1")
    assert actor_from_context(cast("Context", {"ti": TI()})) == (
        "airflow:deploy/asset_triggered__2026-01-01",
        "asset_triggered__2026-01-01",
    )


def _report(**overrides: Any) -> StageReport:
    fields: dict[str, Any] = {
        "model": "churn",
        "registered_model_name": "conveyor-churn",
        "version": "3",
        "model_uri": "models:/conveyor-churn/3",
        "loaded": True,
        "golden_passed": True,
        "n_golden": 8,
        "max_abs_diff": 1e-7,
        "p95_latency_ms": 4.0,
        "latency_budget_ms": 250.0,
        "within_budget": True,
        "checked_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return StageReport(**{**fields, **overrides})


class FakeServer:
    """Stands in for ModelServerClient: records calls, serves what it is told."""

    def __init__(self, report: StageReport, *, ready_version: str | None = "3") -> None:
        self.report = report
        self.ready_version = ready_version
        self.calls: list[tuple[str, ...]] = []
        self.closed = False

    def stage(self, name: str, version: str) -> StageReport:
        self.calls.append(("stage", name, version))
        return self.report

    def promote(self, name: str, version: str) -> PromoteResult:
        self.calls.append(("promote", name, version))
        now = datetime.now(UTC)
        return PromoteResult(model=name, version=version, previous_version="2", changed=True, at=now)

    def ready(self) -> dict[str, Any]:
        self.calls.append(("ready",))
        model = {"state": "loaded", "ready": True, "version": self.ready_version, "detail": "ok"}
        return {"ready": True, "models": {"churn": model}}

    def close(self) -> None:
        self.closed = True


def _deploy(fake: Any, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> ModelServerDeployOperator:
    monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", "http://:token@127.0.0.1:8000")
    op = ModelServerDeployOperator(task_id="deploy", model_name="churn", version=3, **kwargs)
    monkeypatch.setattr(type(op.hook), "get_conn", lambda self: fake)
    return op


def test_deploy_stages_promotes_verifies_and_returns_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer(_report())
    result = _deploy(fake, monkeypatch).execute({})
    assert fake.calls == [("stage", "churn", "3"), ("promote", "churn", "3"), ("ready",)]
    assert fake.closed
    assert result["version"] == "3"
    assert result["golden_passed"] is True
    assert result["previous_version"] == "2"
    assert result["changed"] is True


@pytest.mark.parametrize(
    ("report", "needle"),
    [
        (_report(loaded=False, golden_passed=False, error="no such version"), "did not load (no such"),
        (_report(golden_passed=False, max_abs_diff=0.3, prediction_mismatches=2), "golden rows do not"),
        (_report(within_budget=False, p95_latency_ms=900.0), "p95 latency 900.0 ms exceeds the budget"),
    ],
)
def test_deploy_refuses_a_bad_candidate_without_promoting(
    report: StageReport, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeServer(report)
    with pytest.raises(AirflowFailException) as failure:
        _deploy(fake, monkeypatch).execute({})
    assert needle in str(failure.value)
    assert '"registered_model_name": "conveyor-churn"' in str(failure.value)  # the report rides along
    assert [c[0] for c in fake.calls] == ["stage"]
    assert fake.closed


def test_deploy_over_budget_may_be_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer(_report(within_budget=False, p95_latency_ms=900.0))
    result = _deploy(fake, monkeypatch, require_within_budget=False).execute({})
    assert result["within_budget"] is False
    assert ("promote", "churn", "3") in fake.calls


def test_deploy_fails_over_to_retry_when_the_server_never_reports_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeServer(_report(), ready_version="2")
    with pytest.raises(AirflowException, match="did not report churn v3 ready") as failure:
        _deploy(fake, monkeypatch, ready_timeout=0.0).execute({})
    assert not isinstance(failure.value, AirflowFailException)  # transient: Airflow may retry


@pytest.mark.parametrize(
    ("status", "fails_hard"), [(409, True), (404, True), (422, True), (429, False), (503, False), (0, False)]
)
def test_deploy_maps_server_errors(status: int, fails_hard: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing(FakeServer):
        def promote(self, name: str, version: str) -> PromoteResult:
            raise server_error(status, {"error": "nope"})

    with pytest.raises((AirflowFailException, ModelServerError)) as failure:
        _deploy(Refusing(_report()), monkeypatch).execute({})
    assert isinstance(failure.value, AirflowFailException) is fails_hard


@pytest.mark.parametrize(
    "error",
    [
        "conveyor.training.base:FeatureSchemaError",
        "conveyor.training.base:PredictionContractError",
        "conveyor.compression.tflite:CompressionError",
        "conveyor.monitoring.drift:DriftError",
        "conveyor.evaluation.promotion:RegistrationRefused",
        "conveyor.pipeline:RunParamsError",
    ],
)
def test_deterministic_domain_errors_fail_the_task_without_retry(error: str) -> None:
    import importlib

    from conveyor_airflow.stage import run_stage

    module, name = error.split(":")
    cls = getattr(importlib.import_module(module), name)

    def stage() -> dict:
        raise cls("the same input fails the same way")

    with pytest.raises(AirflowFailException, match="the same input fails the same way"):
        run_stage(stage)
