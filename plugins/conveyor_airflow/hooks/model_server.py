"""Airflow hook for Conveyor's model server (its admin API and inference routes).

Connection (``conn_type`` ``http``, default id ``model_server_default``)::

    host      127.0.0.1 (or a full URL: https://models.internal)
    port      8000      (optional)
    schema    http | https (optional, default http; ignored when host holds a URL)
    password  admin bearer token (optional; admin routes refuse requests without it)

The token is handed to :class:`conveyor.serving.client.ModelServerClient` as an argument, never
through the environment.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from conveyor_airflow.hooks._urls import url_from_connection

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from conveyor.serving.client import ModelServerClient


class ModelServerHook(BaseHook):
    """Build :class:`~conveyor.serving.client.ModelServerClient` objects from an Airflow connection.

    Args:
        model_server_conn_id: Airflow connection id of the model server.
        timeout: Per-request timeout in seconds for the client.
    """

    conn_name_attr = "model_server_conn_id"
    default_conn_name = "model_server_default"
    conn_type = "http"
    hook_name = "Conveyor model server"

    def __init__(self, model_server_conn_id: str = default_conn_name, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.model_server_conn_id = model_server_conn_id
        self.timeout = timeout

    @cached_property
    def connection(self) -> Connection:
        """The Airflow connection, fetched once per hook."""
        return self.get_connection(self.model_server_conn_id)

    @property
    def base_url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:8000`` (no credentials, no trailing slash)."""
        return url_from_connection(self.connection)

    def get_conn(self) -> ModelServerClient:
        """Return a client for the server; the connection's password is the admin bearer token."""
        from conveyor.serving.client import ModelServerClient

        return ModelServerClient(self.base_url, token=self.connection.password or None, timeout=self.timeout)

    def test_connection(self) -> tuple[bool, str]:
        """Check that the server answers its readiness route.

        Returns:
            ``(True, message)`` when ``ready()`` answers, else ``(False, reason)``.
        """
        try:
            self.get_conn().ready()
        except Exception as err:
            return False, f"Model server at {self.base_url} did not answer: {err}"
        return True, f"Model server at {self.base_url} answered its readiness check"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Label the generic connection form for the model server."""
        return {
            "hidden_fields": ["login", "extra"],
            "relabeling": {"password": "Admin token"},
            "placeholders": {"host": "127.0.0.1 or https://models.internal", "port": "8000"},
        }
