"""Real MLflow tracking servers for the Airflow adapter tests (one per session, subprocesses)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")
ADMIN_USER = "admin"
ADMIN_PASSWORD = "s3cret/pass@word!"  # characters that must be percent-encoded in a URI


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server."""

    uri: str
    host: str
    port: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    root: Path, *, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], MlflowServer, Path]:
    port = _free_port()
    log_path = root / "server.log"
    proc_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        proc_env.pop(leaked, None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(MLFLOW_BIN),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=proc_env,
            cwd=root,
        )
    server = MlflowServer(uri=f"http://127.0.0.1:{port}", host="127.0.0.1", port=port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text()[-4000:]
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{server.uri}/health", timeout=2).status_code == 200:
                return proc, server, log_path
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"mlflow server did not become healthy:\n{log_path.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An MLflow tracking server without authentication on a SQLite store."""
    proc, server, _ = _start(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        _stop(proc)


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
    proc, server, _ = _start(
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
        _stop(proc)
