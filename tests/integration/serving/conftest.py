"""A real MLflow tracking server and a real model-server process (uvicorn), one pair per module."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import servers
from unit.serving import support  # the unit tests' tiny spec, data and contract-honouring models

REGISTERED = "conveyor-it-tiny"


@dataclass
class Stack:
    """The running pair plus what was registered."""

    mlflow_uri: str
    server_url: str
    token: str
    data_root: Path
    specs_dir: Path
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
    mlflow_proc, mlflow_uri, _ = servers.start_mlflow_server(root)
    server_proc = None
    try:
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
        server_port = servers.free_port()
        env = servers.clean_env(
            CONVEYOR_HOME=str(root / "home"),
            CONVEYOR_SPECS_DIR=str(specs),
            CONVEYOR_MLFLOW_TRACKING_URI=mlflow_uri,
            CONVEYOR_DATA_ROOT=data_root.as_uri(),
            CONVEYOR_MODEL_SERVER_TOKEN=token,
        )
        with server_log.open("wb") as log:
            server_proc = subprocess.Popen(
                [
                    str(servers.BIN / "uvicorn"),
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
        servers.wait_http(f"{server_url}/health/live", server_proc, server_log)
        yield Stack(
            mlflow_uri=mlflow_uri,
            server_url=server_url,
            token=token,
            data_root=data_root,
            specs_dir=specs,
            versions=versions,
            weights=weights,
            server=server_proc,
            server_log=server_log,
            train=train,
        )
    finally:
        if server_proc is not None:
            servers.stop_process(server_proc)
        servers.stop_process(mlflow_proc)


@pytest.fixture(scope="module")
def stop_server() -> Any:
    return servers.stop_process
