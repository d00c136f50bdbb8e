"""The deploy path's invariant: after a deploy that could not move ``champion``, the model server
serves exactly what ``champion`` names (the real app, a real MLflow store, the real alias CAS)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.unit


def _server_client(app_client: Any) -> Any:
    from conveyor.serving.client import ModelServerClient

    from .conftest import TOKEN

    client = ModelServerClient("http://testserver", token=TOKEN)
    client._http = app_client  # the in-process app (a TestClient is an httpx.Client)
    return client


def _served_version(app_client: Any) -> str:
    response = app_client.post(
        "/models/tiny/invocations",
        json={"dataframe_split": {"columns": ["x1", "x2", "color"], "data": [[0.1, 0.2, "red"]]}},
    )
    assert response.status_code == 200, response.text
    return str(response.headers["X-Model-Version"])


def test_a_champion_conflict_sends_the_server_back_to_champion(app_client: Any, store: Any) -> None:
    from mlflow import MlflowClient

    from conveyor.config import ModelSpec
    from conveyor.deploy.local import deploy_candidate
    from conveyor.registry.aliases import AliasConflictError, get_alias_version

    registry = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    champion = store.versions["good"]
    assert get_alias_version(registry, "conveyor-test-tiny", "champion") == champion
    assert _served_version(app_client) == champion
    spec: ModelSpec = app_client.app.state.server.slots["tiny"].spec

    # the deploy believes there is no champion yet: its compare-and-set fails after the swap
    with pytest.raises(AliasConflictError):
        deploy_candidate(
            registry,
            _server_client(app_client),
            spec,
            store.versions["candidate"],
            expected_champion=None,
            actor="test",
        )
    assert get_alias_version(registry, "conveyor-test-tiny", "champion") == champion
    assert _served_version(app_client) == champion  # not the candidate it had swapped in
