"""The model server converges on the registry and the specs folder by itself (``reconcile``).

Hand moves of ``@champion`` (as in the MLflow UI) are followed, back to an earlier version too; a
champion that fails its golden rows is refused once and the old version keeps serving; a model whose
spec left the folder is dropped. Real app, real MLflow store; each test puts ``champion`` back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_discovery import ROW, _specs

pytestmark = pytest.mark.unit
REGISTERED = "conveyor-test-tiny"


@pytest.fixture
def registry(store: Any) -> Iterator[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    yield client
    client.set_registered_model_alias(REGISTERED, "champion", store.versions["good"])


def _served(client: Any) -> str:
    response = client.post("/models/tiny/invocations", json=ROW)
    assert response.status_code == 200, response.text
    return str(response.headers["X-Model-Version"])


def test_hand_moves_of_champion_are_followed_back_and_forth(
    app_client: Any, store: Any, registry: Any
) -> None:
    server = app_client.app.state.server
    good, candidate = store.versions["good"], store.versions["candidate"]
    assert _served(app_client) == good
    registry.set_registered_model_alias(REGISTERED, "champion", candidate)
    assert server.reconcile() == {}  # seen once: a deploy may be between its swap and its move
    assert _served(app_client) == good
    assert server.reconcile() == {"tiny": f"v{good} -> v{candidate}"}
    assert _served(app_client) == candidate
    # the ledger records the hand move, once, as manual
    from conveyor.registry.aliases import ledger

    (entry,) = ledger(registry, REGISTERED, alias="champion", limit=1)
    assert (entry.from_version, entry.to_version) == (good, candidate)
    assert entry.actor.startswith("manual") and "the model server followed" in entry.reason
    server.reconcile()
    assert ledger(registry, REGISTERED, alias="champion", limit=1)[0].ledger_run_id == entry.ledger_run_id
    # back to the version served before
    registry.set_registered_model_alias(REGISTERED, "champion", good)
    server.reconcile()
    assert server.reconcile() == {"tiny": f"v{candidate} -> v{good}"}
    assert _served(app_client) == good
    assert server.reconcile() == {}  # converged: nothing to do


def test_a_champion_failing_its_golden_rows_is_refused_once_and_the_old_one_serves(
    app_client: Any, store: Any, registry: Any
) -> None:
    server = app_client.app.state.server
    good, bad = store.versions["good"], store.versions["bad_golden"]
    registry.set_registered_model_alias(REGISTERED, "champion", bad)
    server.reconcile()
    outcome = server.reconcile()
    assert outcome["tiny"].startswith(f"kept v{good}") and "golden rows" in outcome["tiny"], outcome
    assert _served(app_client) == good
    from conveyor.registry.aliases import ledger

    (entry,) = ledger(registry, REGISTERED, alias="champion", limit=1)
    assert entry.to_version == bad and "refused" in entry.reason  # the move is history either way
    assert server.reconcile() == {} and server.reconcile() == {}  # not retried while champion stays


def test_a_model_whose_spec_left_the_folder_is_dropped(
    make_settings: Any, start_app: Any, tmp_path: Path, support_module: Any
) -> None:
    specs = _specs(tmp_path, support_module, tiny=REGISTERED, twin=REGISTERED)
    client = start_app(make_settings(specs_dir=specs))
    assert client.post("/models/twin/invocations", json=ROW).status_code == 200
    (specs / "twin.yaml").unlink()
    assert client.app.state.server.reconcile() == {"twin": "dropped (spec removed)"}
    gone = client.post("/models/twin/invocations", json=ROW)
    assert gone.status_code == 404 and "this server serves ['tiny']" in gone.json()["error"]
    assert client.get("/health/ready").status_code == 200


def test_the_server_reconciles_on_its_own_timer(
    make_settings: Any, start_app: Any, store: Any, registry: Any
) -> None:
    import time

    client = start_app(make_settings(model_server_reconcile_s=0.2))
    registry.set_registered_model_alias(REGISTERED, "champion", store.versions["candidate"])
    deadline = time.monotonic() + 30
    while _served(client) != store.versions["candidate"]:
        assert time.monotonic() < deadline, "the server did not follow champion within 30 s"
        time.sleep(0.1)
