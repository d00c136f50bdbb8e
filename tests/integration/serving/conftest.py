"""A real MLflow tracking server and a real model-server process (uvicorn), one pair per module."""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent
REGISTERED = "conveyor-it-tiny"


def _load_support() -> ModuleType:
    # The unit tests' helper (tiny spec, data, contract-honouring models), loaded by path on purpose.
    name = "conveyor_test_serving_support"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "unit" / "serving" / "support.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


support = _load_support()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CONVEYOR_"))}
    env.update(extra)
    return env


def _wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{url}: process exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{log_path.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


@dataclass
class Stack:
    """The running pair plus what was registered."""

    mlflow_uri: str
    server_url: str
    token: str
    data_root: Path
    versions: dict[str, str]
    weights: dict[str, dict[str, Any]]
    server: subprocess.Popen[bytes]
    server_log: Path
    train: Any


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """MLflow server (SQLite + proxied artifacts) with v1 @champion and v2 registered; then the
    model server as ``uvicorn conveyor.serving.app:create_app --factory`` against it."""
    root = tmp_path_factory.mktemp("serving-it")
    mlflow_port, server_port = _free_port(), _free_port()
    mlflow_log = root / "mlflow.log"
    with mlflow_log.open("wb") as log:
        mlflow_proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
            cwd=root,
        )
    server_proc = None
    try:
        mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
        _wait_http(f"{mlflow_uri}/health", mlflow_proc, mlflow_log)

        train = support.make_frame(300, seed=0)
        versions, weights = {}, {}
        for role, kwargs in {"v1": {}, "v2": {"offset": 0.4}}.items():
            uri, weights[role] = support.log_tiny_model(
                mlflow_uri, train, artifact_root=None, experiment="conveyor/tiny", **kwargs
            )
            versions[role] = support.register(
                mlflow_uri, REGISTERED, uri, alias="champion" if role == "v1" else None
            )

        specs = root / "specs"
        support.write_spec(specs, "tiny", REGISTERED)
        token = secrets.token_urlsafe(16)
        data_root = root / "data"
        server_log = root / "model-server.log"
        env = _clean_env(
            CONVEYOR_HOME=str(root / "home"),
            CONVEYOR_SPECS_DIR=str(specs),
            CONVEYOR_MLFLOW_TRACKING_URI=mlflow_uri,
            CONVEYOR_DATA_ROOT=data_root.as_uri(),
            CONVEYOR_MODEL_SERVER_TOKEN=token,
        )
        with server_log.open("wb") as log:
            server_proc = subprocess.Popen(
                [
                    str(BIN / "uvicorn"),
                    "conveyor.serving.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(server_port),
                    "--no-access-log",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
            )
        server_url = f"http://127.0.0.1:{server_port}"
        _wait_http(f"{server_url}/health/live", server_proc, server_log)
        yield Stack(
            mlflow_uri=mlflow_uri,
            server_url=server_url,
            token=token,
            data_root=data_root,
            versions=versions,
            weights=weights,
            server=server_proc,
            server_log=server_log,
            train=train,
        )
    finally:
        if server_proc is not None:
            _stop(server_proc)
        _stop(mlflow_proc)


@pytest.fixture(scope="module")
def stop_server() -> Any:
    return _stop
