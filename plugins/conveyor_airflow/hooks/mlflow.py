"""Airflow hook for the MLflow tracking server and model registry.

Connection (``conn_type`` ``http``, default id ``mlflow_default``)::

    host      mlflow.internal          (or a full URL: https://mlflow.internal/prefix)
    port      5000                     (optional)
    schema    http | https             (optional, default http; ignored when host holds a URL)
    login     MLflow basic-auth user   (optional)
    password  MLflow basic-auth secret (optional)

How credentials reach MLflow without ``os.environ``: ``MlflowClient`` builds a REST store per
call from its tracking URI, and the only per-client credential source MLflow has besides the
``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` environment variables is the URI itself.
``MlflowHostCreds`` cannot be handed to an ``MlflowClient``, and request-header/auth provider
plugins are process-global. So :meth:`MlflowHook.get_conn` gives the client a URI with the
percent-encoded login and password in its userinfo (``http://user:pass@host:port``); ``requests``
turns URL userinfo into an HTTP basic ``Authorization`` header for tracking, registry and
``mlflow-artifacts`` calls alike. The credentialled URI stays inside the client: the public
:attr:`MlflowHook.tracking_uri` has no credentials (safe to log or put in XCom), and the encoded
password is registered with Airflow's secrets masker so that an MLflow error message quoting
the request URL is masked in task logs.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseHook

from conveyor_airflow.hooks._urls import url_from_connection

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from mlflow import MlflowClient


class MlflowHook(BaseHook):
    """Build ``MlflowClient`` objects for an MLflow tracking server from an Airflow connection.

    Args:
        mlflow_conn_id: Airflow connection id of the tracking server.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def connection(self) -> Connection:
        """The Airflow connection, fetched once per hook."""
        return self.get_connection(self.mlflow_conn_id)

    @property
    def tracking_uri(self) -> str:
        """Tracking URI without credentials (safe to log and to pass through XCom)."""
        return url_from_connection(self.connection)

    def authenticated_tracking_uri(self) -> str:
        """The tracking URI with the connection's credentials, for code that builds its own client.

        Domain stages (``conveyor.pipeline``) take a tracking URI and log through MLflow's fluent API
        as well as a client; this URI carries the basic-auth login in its userinfo, the password is
        registered with the secrets masker, and it must never be logged or returned through XCom.
        """
        return self._authenticated_uri()

    def _authenticated_uri(self) -> str:
        conn = self.connection
        if conn.password:
            encoded = quote(conn.password, safe="")
            if encoded != conn.password:
                from airflow.sdk.log import mask_secret

                mask_secret(encoded)
        return url_from_connection(conn, with_credentials=True)

    def get_conn(self) -> MlflowClient:
        """Return an ``MlflowClient`` for tracking and registry calls, authenticated if configured."""
        from mlflow import MlflowClient

        uri = self._authenticated_uri()
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def test_connection(self) -> tuple[bool, str]:
        """Check that the registry answers (the UI's "Test" button and ``airflow connections test``).

        Returns:
            ``(True, message)`` when a registry search succeeds, else ``(False, reason)``.
        """
        try:
            self.get_conn().search_registered_models(max_results=1)
        except Exception as err:
            return False, f"MLflow at {self.tracking_uri} did not answer a registry search: {err}"
        return True, f"Connected to the MLflow registry at {self.tracking_uri}"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Label the generic connection form for MLflow."""
        return {
            "hidden_fields": ["extra"],
            "relabeling": {"login": "MLflow user (basic auth)", "password": "MLflow password"},
            "placeholders": {"host": "mlflow.internal or https://mlflow.internal", "port": "5000"},
        }
