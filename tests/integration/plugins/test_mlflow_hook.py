"""MlflowHook against a real MLflow server (also behind basic auth)."""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest

from conveyor_airflow.hooks.mlflow import MlflowHook

from .conftest import ADMIN_PASSWORD, ADMIN_USER, MlflowServer

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_conn(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEST", mlflow_server.uri)
    return "mlflow_test"


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
    # A write through the authenticated client (the path every registry task takes) works too.
    client = MlflowHook("mlflow_admin").get_conn()
    name = f"auth-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    assert client.get_registered_model(name).name == name
    assert dict(os.environ) == environ_before
