"""Rollback through the deploy's own path (``conveyor.deploy.local.rollback``): the real app, a real
MLflow store, the real alias compare-and-set and ledger.

A rollback stages its target in the server first: a target failing its golden rows is refused and
the champion keeps serving; a good one is swapped in, ``champion`` moves with a ledger entry naming
who and why, the served version is verified, and the version left is tagged ``rolled_back``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .test_deploy_invariant import _served_version, _server_client

pytestmark = pytest.mark.unit
REGISTERED = "conveyor-test-tiny"


@pytest.fixture
def registry(store: Any) -> Iterator[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    yield client
    from conveyor.registry.aliases import ANY, set_alias

    # through the ledger, as any Conveyor move: later tests read the ledger's newest champion entry
    set_alias(
        client,
        REGISTERED,
        "champion",
        store.versions["good"],
        expected_version=ANY,
        actor="t",
        reason="reset",
    )


def _spec(app_client: Any) -> Any:
    return app_client.app.state.server.slots["tiny"].spec


def test_deploy_then_rollback_to_the_previous_champion(app_client: Any, store: Any, registry: Any) -> None:
    from conveyor.deploy.local import deploy_candidate, rollback
    from conveyor.names import CHALLENGER, CHAMPION, handled_tag
    from conveyor.registry.aliases import get_alias_version, ledger

    good, candidate = store.versions["good"], store.versions["candidate"]
    server = _server_client(app_client)
    registry.set_registered_model_alias(REGISTERED, CHALLENGER, candidate)
    deploy_candidate(
        registry, server, _spec(app_client), candidate, expected_champion=good, actor="test-deploy"
    )
    assert _served_version(app_client) == candidate
    assert registry.get_registered_model(REGISTERED).tags[handled_tag(CHALLENGER)] == candidate

    result = rollback(registry, server, _spec(app_client), actor="cli:oncall", reason="p99 doubled")
    assert (result["previous"], result["version"], result["changed"]) == (candidate, good, True)
    assert get_alias_version(registry, REGISTERED, CHAMPION) == good
    assert _served_version(app_client) == good  # champion names exactly what is served
    newest = ledger(registry, REGISTERED, limit=2)
    champion_move = next(e for e in newest if e.alias == CHAMPION)
    assert (champion_move.from_version, champion_move.to_version) == (candidate, good)
    assert champion_move.actor == "cli:oncall" and champion_move.reason == "rollback: p99 doubled"
    tags = registry.get_model_version(REGISTERED, candidate).tags
    assert tags["conveyor.deploy_status"] == "rolled_back" and "p99 doubled" in tags["conveyor.deploy_detail"]
    # challenger named the version left: removed (through the ledger), and no move counts as handled,
    # so pointing challenger at it again is a new deploy request
    assert get_alias_version(registry, REGISTERED, CHALLENGER) is None
    assert registry.get_registered_model(REGISTERED).tags[handled_tag(CHALLENGER)] == "none"
    # "previous" again undoes the rollback (the ledger's previous champion is now the candidate)
    again = rollback(registry, server, _spec(app_client), actor="cli:oncall", reason="false alarm")
    assert again["version"] == candidate and _served_version(app_client) == candidate


def test_a_rollback_target_failing_its_golden_rows_is_refused(
    app_client: Any, store: Any, registry: Any
) -> None:
    from conveyor.deploy.local import RollbackRefusedError, rollback
    from conveyor.errors import PermanentError
    from conveyor.registry.aliases import get_alias_version, ledger

    good, bad = store.versions["good"], store.versions["bad_golden"]
    before = ledger(registry, REGISTERED, alias="champion", limit=1)
    with pytest.raises(
        RollbackRefusedError, match=rf"refusing to roll .* back to v{bad}: golden rows"
    ) as caught:
        rollback(
            registry, _server_client(app_client), _spec(app_client), to_version=bad, actor="t", reason="r"
        )
    assert isinstance(caught.value, PermanentError)  # fails once, without retries
    assert f"Champion v{good} keeps serving" in str(caught.value)
    assert get_alias_version(registry, REGISTERED, "champion") == good
    assert _served_version(app_client) == good
    assert ledger(registry, REGISTERED, alias="champion", limit=1) == before  # nothing recorded as moved


def test_a_rollback_names_its_target_or_finds_one(app_client: Any, store: Any, registry: Any) -> None:
    from conveyor.deploy.local import RollbackRefusedError, rollback

    good = store.versions["good"]
    server, spec = _server_client(app_client), _spec(app_client)
    with pytest.raises(RollbackRefusedError, match="no such version"):
        rollback(registry, server, spec, to_version="999", actor="t", reason="r")
    with pytest.raises(RollbackRefusedError, match="needs a reason"):
        rollback(registry, server, spec, to_version=good, actor="t", reason="  ")
    same = rollback(registry, server, spec, to_version=good, actor="t", reason="r")
    assert same["changed"] is False and _served_version(app_client) == good


def test_the_same_move_reported_twice_is_planned_once_and_a_later_move_back_again(
    store: Any, registry: Any, specs_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook and polling both report each move: an event detected before the deploy side
    decided on that very move plans nothing; a move back to that version later is planned."""
    from datetime import UTC, datetime, timedelta

    from conveyor.deploy.local import _mark_handled, plan_deployments

    monkeypatch.setenv("CONVEYOR_SPECS_DIR", str(specs_dir))
    candidate = store.versions["candidate"]
    registry.set_registered_model_alias(REGISTERED, "challenger", candidate)
    try:
        before = (datetime.now(UTC) - timedelta(seconds=2)).isoformat(timespec="seconds")
        event = {"registered_model": REGISTERED, "version": candidate, "detected_at": before}
        assert [p["version"] for p in plan_deployments(registry, [event])] == [candidate]
        _mark_handled(registry, REGISTERED, candidate)  # e.g. rejected by the first run
        assert plan_deployments(registry, [event]) == []  # the second report of that move
        later = {**event, "detected_at": (datetime.now(UTC) + timedelta(seconds=2)).isoformat()}
        assert [p["version"] for p in plan_deployments(registry, [later])] == [candidate]
        manual = {"registered_model": REGISTERED, "detected_at": "manual"}
        assert [p["version"] for p in plan_deployments(registry, [manual])] == [candidate]
    finally:
        registry.delete_registered_model_alias(REGISTERED, "challenger")
        registry.delete_registered_model_tag(REGISTERED, "conveyor.handled.challenger")
