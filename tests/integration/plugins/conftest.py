"""Real MLflow tracking servers for the Airflow adapter tests (one per session, subprocesses)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import servers

ADMIN_USER = "admin"
ADMIN_PASSWORD = "s3cret/pass@word!"  # characters that must be percent-encoded in a URI


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server."""

    uri: str
    host: str
    port: int


def _start(
    root: Path, *, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], MlflowServer]:
    proc, uri, _ = servers.start_mlflow_server(root, extra_args=extra_args, env=env, timeout=120)
    port = int(uri.rsplit(":", 1)[1])
    return proc, MlflowServer(uri=uri, host="127.0.0.1", port=port)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An MLflow tracking server without authentication on a SQLite store."""
    proc, server = _start(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        servers.stop_process(proc, timeout=20)


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An MLflow tracking server with basic auth (``--app-name basic-auth``); see ADMIN_USER/PASSWORD."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    proc, server = _start(
        root,
        extra_args=("--app-name", "basic-auth"),
        env={
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),  # CSRF key the auth app requires
        },
    )
    try:
        yield server
    finally:
        servers.stop_process(proc, timeout=20)
