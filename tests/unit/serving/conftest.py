"""Fixtures for the model-server tests: one real MLflow store with tiny logged models per session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from unit.serving import support

TOKEN = "s3cret-admin-token"
REGISTERED = "conveyor-test-tiny"


@dataclass
class Store:
    """A session's MLflow store: tracking URI, model URIs by role and their weights."""

    root: Path
    tracking_uri: str
    train: Any
    uris: dict[str, str] = field(default_factory=dict)
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="package", autouse=True)
def _no_global_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point MLflow's process-global default at an empty store: code that forgets its explicit
    tracking URI fails here instead of quietly reading (or creating) ./mlflow.db."""
    decoy = tmp_path_factory.mktemp("decoy") / "global-default-must-not-be-used.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{decoy}")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield


@pytest.fixture(scope="package", autouse=True)
def _no_grpc_port() -> Iterator[None]:
    """Apps started here answer REST only unless a test gives them a free gRPC port
    (``grpc_port`` below): several apps at once must not all bind the default 8001."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVEYOR_MODEL_SERVER_GRPC_PORT", "0")
        yield


@pytest.fixture
def grpc_port() -> int:
    """A TCP port free right now on 127.0.0.1, for an app's gRPC server."""
    from conveyor.stack import free_port

    return free_port()


@pytest.fixture(scope="session")
def support_module() -> ModuleType:
    return support


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """``conveyor-test-tiny`` v1 (@champion), v2 (a better candidate), v3 (golden rows it fails)."""
    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    train = support.make_frame(300, seed=0)
    out = Store(root=root, tracking_uri=tracking_uri, train=train)
    roles = {
        "good": {},
        "candidate": {"offset": 0.4},
        "bad_golden": {"corrupt_golden": True},
    }
    for role, kwargs in roles.items():
        uri, weights = support.log_tiny_model(tracking_uri, train, artifact_root=root / "artifacts", **kwargs)
        out.uris[role], out.weights[role] = uri, weights
        out.versions[role] = support.register(
            tracking_uri, REGISTERED, uri, alias="champion" if role == "good" else None
        )
    return out


@pytest.fixture(scope="session")
def specs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` (has a champion) and ``pending`` (registered model does not exist yet)."""
    path = tmp_path_factory.mktemp("specs")
    support.write_spec(path, "tiny", REGISTERED)
    support.write_spec(path, "pending", "conveyor-test-pending")
    return path


@pytest.fixture(scope="session")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared so the model cache (<home>/serving/cache) is filled once per session.
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def make_settings(store: Store, specs_dir: Path, server_home: Path, tmp_path: Path) -> Any:
    from conveyor.settings import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": server_home,
            "specs_dir": specs_dir,
            "mlflow_tracking_uri": store.tracking_uri,
            "data_root": (tmp_path / "data").as_uri(),
            "model_server_token": TOKEN,
            "model_server_reconcile_s": 0,  # tests call reconcile() themselves
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def start_app() -> Iterator[Any]:
    """Start an app (lifespan included) and wait for its first load pass."""
    from fastapi.testclient import TestClient

    from conveyor.serving.app import create_app

    opened: list[Any] = []

    def start(settings: Any, **kwargs: Any) -> TestClient:
        app = create_app(settings, load_attempts=1, **kwargs)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        assert app.state.server.initial_load_done.wait(120), "models did not load within 120 s"
        return client

    yield start
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def app_client(make_settings: Any, start_app: Any) -> Any:
    return start_app(make_settings())


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
