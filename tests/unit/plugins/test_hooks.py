"""Hooks: URLs from Airflow connections, credentials kept out of os.environ."""

from __future__ import annotations

import os

import pytest
from airflow.sdk import Connection

from conveyor_airflow.hooks._urls import url_from_connection
from conveyor_airflow.hooks.mlflow import MlflowHook
from conveyor_airflow.hooks.model_server import ModelServerHook

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"host": "mlflow.internal", "port": 5000}, "http://mlflow.internal:5000"),
        ({"host": "mlflow.internal", "port": 443, "schema": "https"}, "https://mlflow.internal:443"),
        ({"host": "https://mlflow.internal/prefix/", "port": 8443}, "https://mlflow.internal:8443/prefix"),
        ({"host": "http://127.0.0.1:5000"}, "http://127.0.0.1:5000"),
        ({"host": "http://mallory:pw@10.0.0.1:5000"}, "http://10.0.0.1:5000"),
        ({"host": "mlflow.internal"}, "http://mlflow.internal"),
    ],
)
def test_url_from_connection_fields(fields: dict[str, object], expected: str) -> None:
    conn = Connection(conn_id="c", conn_type="http", **fields)  # type: ignore[arg-type]
    assert url_from_connection(conn) == expected


def test_url_from_connection_written_as_uri_keeps_scheme_and_path() -> None:
    # A URI-form connection puts the scheme in conn_type and the path in schema.
    conn = Connection.from_uri("https://mlflow.example:8443/prefix", conn_id="c")
    assert url_from_connection(conn) == "https://mlflow.example:8443/prefix"


def test_url_from_connection_percent_encodes_credentials() -> None:
    conn = Connection(conn_id="c", conn_type="http", host="h", port=5000, login="ops@corp", password="p:w/@!")
    assert url_from_connection(conn) == "http://h:5000"
    assert url_from_connection(conn, with_credentials=True) == "http://ops%40corp:p%3Aw%2F%40%21@h:5000"


def test_url_from_connection_without_host_says_which_connection() -> None:
    with pytest.raises(ValueError, match="'empty' has no host"):
        url_from_connection(Connection(conn_id="empty", conn_type="http"))


def test_mlflow_hook_reads_the_default_connection_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://admin:s%40cret@mlflow.example:5000")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    environ_before = dict(os.environ)

    hook = MlflowHook()
    client = hook.get_conn()

    assert hook.mlflow_conn_id == "mlflow_default"
    assert hook.tracking_uri == "http://mlflow.example:5000"
    # The credentials travel inside the client's URI (requests turns userinfo into basic auth) ...
    assert client.tracking_uri == "http://admin:s%40cret@mlflow.example:5000"
    assert client._registry_uri == client.tracking_uri
    # ... and never through the process environment.
    assert dict(os.environ) == environ_before


def test_mlflow_hook_named_connection_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_PROD", "https://mlflow.prod.example")
    hook = MlflowHook(mlflow_conn_id="mlflow_prod")
    assert hook.get_conn().tracking_uri == "https://mlflow.prod.example"


def test_mlflow_hook_test_connection_reports_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    ok, message = MlflowHook().test_connection()
    assert ok is False
    assert "http://127.0.0.1:1" in message


def test_model_server_hook_base_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", "http://:adm1n-token@127.0.0.1:8000")
    hook = ModelServerHook()
    assert hook.model_server_conn_id == "model_server_default"
    assert hook.base_url == "http://127.0.0.1:8000"
    assert hook.connection.password == "adm1n-token"


def test_model_server_hook_builds_the_client_with_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import conveyor.serving.client as client_module

    captured: dict[str, object] = {}

    class RecordingClient:
        def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
            captured.update(base_url=base_url, token=token, timeout=timeout)

    monkeypatch.setattr(client_module, "ModelServerClient", RecordingClient)
    monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", "http://:tok@models.example:8000")
    ModelServerHook(timeout=5.0).get_conn()
    assert captured == {"base_url": "http://models.example:8000", "token": "tok", "timeout": 5.0}
