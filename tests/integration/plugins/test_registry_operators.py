"""MlflowSetModelAliasOperator, MlflowModelAliasSensor and MlflowHook against a real MLflow server."""

from __future__ import annotations

import os
import uuid
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

import pytest
from airflow.sdk.exceptions import AirflowFailException

from conveyor_airflow.hooks.mlflow import MlflowHook
from conveyor_airflow.operators.registry import MlflowSetModelAliasOperator
from conveyor_airflow.sensors.mlflow import MlflowModelAliasSensor

from .conftest import ADMIN_PASSWORD, ADMIN_USER, MlflowServer

if TYPE_CHECKING:
    from airflow.sdk import Context

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_conn(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEST", mlflow_server.uri)
    return "mlflow_test"


@pytest.fixture
def model(mlflow_server: MlflowServer) -> str:
    """A registered model with versions 1..3 and no aliases."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    name = f"ops-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    experiment_id = client.create_experiment(f"ops-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    for _ in range(3):
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return name


def context(run_id: str = "manual__2026-01-01T00:00:00+00:00") -> Context:
    """The part of a task context the operators read."""
    return cast("Context", {"ti": SimpleNamespace(dag_id="conveyor_deploy", run_id=run_id), "run_id": run_id})


def alias_of(uri: str, name: str, alias: str) -> str | None:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(name).aliases.get(alias)


def test_set_alias_moves_and_writes_the_ledger(
    mlflow_server: MlflowServer, mlflow_conn: str, model: str
) -> None:
    from conveyor.registry.aliases import ledger

    op = MlflowSetModelAliasOperator(
        task_id="promote",
        registered_model_name=model,
        alias="champion",
        version=2,
        expected_version=None,
        reason="first champion",
        details={"gate": "passed"},
        mlflow_conn_id=mlflow_conn,
    )
    result = op.execute(context())
    assert alias_of(mlflow_server.uri, model, "champion") == "2"
    assert result["from_version"] is None
    assert result["to_version"] == "2"
    assert result["actor"] == "airflow:conveyor_deploy/manual__2026-01-01T00:00:00+00:00"
    assert result["noop"] is False

    entries = ledger(MlflowHook(mlflow_conn).get_conn(), model, alias="champion")
    assert [(e.from_version, e.to_version, e.reason) for e in entries] == [(None, "2", "first champion")]
    assert entries[0].dag_run_id == "manual__2026-01-01T00:00:00+00:00"

    # A retried task (same DAG run) finds the alias already moved: a no-op, not a conflict.
    again = op.execute(context())
    assert again["noop"] is True
    assert len(ledger(MlflowHook(mlflow_conn).get_conn(), model, alias="champion")) == 1


def test_expected_current_reads_the_alias_at_start(
    mlflow_server: MlflowServer, mlflow_conn: str, model: str
) -> None:
    for version in (1, 3):
        MlflowSetModelAliasOperator(
            task_id="move",
            registered_model_name=model,
            alias="challenger",
            version=str(version),
            reason="new candidate",
            mlflow_conn_id=mlflow_conn,
        ).execute(context(f"run-{version}"))
        assert alias_of(mlflow_server.uri, model, "challenger") == str(version)


def test_conflict_fails_without_retry_and_moves_nothing(
    mlflow_server: MlflowServer, mlflow_conn: str, model: str
) -> None:
    MlflowSetModelAliasOperator(
        task_id="seed",
        registered_model_name=model,
        alias="champion",
        version="1",
        expected_version="",
        reason="seed",
        mlflow_conn_id=mlflow_conn,
    ).execute(context("seed"))

    stale = MlflowSetModelAliasOperator(
        task_id="promote",
        registered_model_name=model,
        alias="champion",
        version="3",
        expected_version="2",  # someone else's view: the alias names v1
        reason="stale promotion",
        mlflow_conn_id=mlflow_conn,
    )
    with pytest.raises(AirflowFailException, match=r"expected .*@champion to name v2 .* but it names v1"):
        stale.execute(context())
    assert alias_of(mlflow_server.uri, model, "champion") == "1"


def test_missing_version_fails_without_retry(mlflow_conn: str, model: str) -> None:
    op = MlflowSetModelAliasOperator(
        task_id="promote",
        registered_model_name=model,
        alias="champion",
        version="99",
        reason="typo",
        mlflow_conn_id=mlflow_conn,
    )
    with pytest.raises(AirflowFailException, match="no such version"):
        op.execute(context())


def test_sensor_pokes_until_the_alias_names_the_version(
    mlflow_server: MlflowServer, mlflow_conn: str, model: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    any_version = MlflowModelAliasSensor(
        task_id="wait_any", registered_model_name=model, alias="challenger", mlflow_conn_id=mlflow_conn
    )
    exact = MlflowModelAliasSensor(
        task_id="wait_v2",
        registered_model_name=model,
        alias="challenger",
        version=2,
        mlflow_conn_id=mlflow_conn,
    )
    assert any_version.poke(context()).is_done is False
    client.set_registered_model_alias(model, "challenger", "1")
    done = any_version.poke(context())
    assert (done.is_done, done.xcom_value) == (True, "1")
    assert exact.poke(context()).is_done is False
    client.set_registered_model_alias(model, "challenger", "2")
    assert exact.poke(context()).xcom_value == "2"


def test_hook_against_the_real_server(mlflow_server: MlflowServer, mlflow_conn: str) -> None:
    hook = MlflowHook(mlflow_conn)
    assert hook.tracking_uri == mlflow_server.uri
    assert hook.test_connection() == (True, f"Connected to the MLflow registry at {mlflow_server.uri}")


def test_hook_passes_basic_auth_credentials_explicitly(
    mlflow_auth_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = mlflow_auth_server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    secret = quote(ADMIN_PASSWORD, safe="")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_ADMIN", f"http://{ADMIN_USER}:{secret}@{server.host}:{server.port}"
    )
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_ANON", server.uri)
    environ_before = dict(os.environ)

    ok, message = MlflowHook("mlflow_admin").test_connection()
    assert ok, message
    assert ADMIN_PASSWORD not in message and secret not in message
    # The server really checks: the same server without credentials refuses.
    refused, why = MlflowHook("mlflow_anon").test_connection()
    assert refused is False
    assert "401" in why or "Unauthorized" in why or "UNAUTHENTICATED" in why
    # A write through the authenticated client (the alias operator's path) works too.
    client = MlflowHook("mlflow_admin").get_conn()
    name = f"auth-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    assert client.get_registered_model(name).name == name
    assert dict(os.environ) == environ_before
