from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import PermanentError
from conveyor.registry.aliases import (
    ANY,
    LEDGER_EXPERIMENT,
    AliasConflictError,
    VersionNotFoundError,
    delete_alias,
    get_alias_version,
    ledger,
    set_alias,
)

pytestmark = pytest.mark.unit

NAME = "conveyor-toy"
ACTOR = "airflow:conveyor_deploy/manual__1"


@pytest.fixture
def versions(client: Any, tmp_path: Path) -> list[str]:
    """Three versions of ``conveyor-toy`` (alias moves need versions, not model files)."""
    client.create_registered_model(NAME)
    source = (tmp_path / "model").as_uri()
    return [str(client.create_model_version(NAME, source=source).version) for _ in range(3)]


def _ledger_runs(client: Any) -> list[Any]:
    experiment = client.get_experiment_by_name(LEDGER_EXPERIMENT)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def test_get_alias_version_is_none_when_unset_or_unregistered(client: Any, versions: list[str]) -> None:
    assert get_alias_version(client, NAME, "champion") is None
    assert get_alias_version(client, "conveyor-never-registered", "champion") is None
    client.set_registered_model_alias(NAME, "champion", "2")
    assert get_alias_version(client, NAME, "champion") == "2"


def test_set_alias_moves_it_and_writes_one_ledger_entry(client: Any, versions: list[str]) -> None:
    entry = set_alias(
        client,
        NAME,
        "champion",
        "1",
        expected_version=None,
        actor=ACTOR,
        reason="first deploy passed golden rows",
        dag_run_id="manual__1",
        details={"p95_ms": 12.5, "gate": {"passed": True}},
    )
    assert get_alias_version(client, NAME, "champion") == "1"
    assert (entry.from_version, entry.to_version, entry.action, entry.noop) == (None, "1", "set", False)
    assert entry.ledger_run_id is not None
    run = client.get_run(entry.ledger_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {
        "model": NAME,
        "alias": "champion",
        "from_version": "none",
        "to_version": "1",
        "actor": ACTOR,
        "reason": "first deploy passed golden rows",
        "dag_run_id": "manual__1",
    }
    assert run.data.tags["conveyor.dag_run_id"] == "manual__1"
    assert client.get_experiment(run.info.experiment_id).name == LEDGER_EXPERIMENT
    artifacts = [a.path for a in client.list_artifacts(entry.ledger_run_id, "ledger")]
    assert artifacts == ["ledger/entry.json"]
    stamped = client.get_model_version(NAME, "1").tags
    assert stamped["conveyor.alias.champion.set_at"] == entry.moved_at.isoformat()
    [read_back] = ledger(client, NAME)
    assert read_back == entry


def test_a_stale_expectation_raises_and_changes_nothing(client: Any, versions: list[str]) -> None:
    set_alias(client, NAME, "champion", "1", expected_version=None, actor=ACTOR, reason="first")
    with pytest.raises(AliasConflictError) as caught:
        set_alias(client, NAME, "champion", "3", expected_version="2", actor="alice", reason="mine")
    error = caught.value
    assert isinstance(error, PermanentError)  # Airflow must not retry it
    assert (error.expected, error.actual, error.target) == ("2", "1", "3")
    message = str(error)
    assert "alice expected conveyor-toy@champion to name v2" in message
    assert "names v1" in message and "expected_version='1'" in message
    assert get_alias_version(client, NAME, "champion") == "1"
    assert len(ledger(client, NAME)) == 1
    assert len(_ledger_runs(client)) == 1  # no half-written entry either


def test_expecting_unset_when_set_is_a_conflict(client: Any, versions: list[str]) -> None:
    set_alias(client, NAME, "challenger", "1", expected_version=None, actor=ACTOR, reason="first")
    with pytest.raises(AliasConflictError, match="expected conveyor-toy@challenger to name nothing"):
        set_alias(client, NAME, "challenger", "2", expected_version=None, actor=ACTOR, reason="second")


def test_re_setting_the_same_version_is_a_recorded_no_op(client: Any, versions: list[str]) -> None:
    first = set_alias(client, NAME, "champion", "2", expected_version=None, actor=ACTOR, reason="deploy")
    # a retried task still holding its old expectation (None) must not fail, nor write a duplicate
    again = set_alias(
        client, NAME, "champion", 2, expected_version=None, actor=ACTOR, reason="deploy (retry)"
    )
    assert again.noop is True
    assert again.ledger_run_id == first.ledger_run_id
    assert again.model_copy(update={"noop": False}) == first
    assert len(ledger(client, NAME)) == 1
    assert len(_ledger_runs(client)) == 1


def test_no_op_on_an_alias_set_outside_conveyor(client: Any, versions: list[str]) -> None:
    client.set_registered_model_alias(NAME, "champion", "3")  # e.g. by hand in the MLflow UI
    entry = set_alias(client, NAME, "champion", "3", expected_version=ANY, actor="bob", reason="adopt")
    assert (entry.noop, entry.ledger_run_id, entry.to_version) == (True, None, "3")
    assert ledger(client, NAME) == []


def test_any_skips_the_compare(client: Any, versions: list[str]) -> None:
    set_alias(client, NAME, "champion", "1", expected_version=None, actor=ACTOR, reason="first")
    entry = set_alias(
        client, NAME, "champion", "3", expected_version=ANY, actor="oncall", reason="forced rollback"
    )
    assert (entry.from_version, entry.to_version) == ("1", "3")
    assert repr(ANY) == "ANY"


def test_unknown_version_is_refused(client: Any, versions: list[str]) -> None:
    with pytest.raises(VersionNotFoundError, match="v9: no such version"):
        set_alias(client, NAME, "champion", "9", expected_version=None, actor=ACTOR, reason="typo")
    assert _ledger_runs(client) == []


def test_ledger_is_newest_first_and_filters_by_alias(client: Any, versions: list[str]) -> None:
    set_alias(client, NAME, "champion", "1", expected_version=None, actor="a1", reason="r1", dag_run_id="d1")
    set_alias(client, NAME, "challenger", "2", expected_version=None, actor="a2", reason="r2")
    set_alias(client, NAME, "champion", "2", expected_version="1", actor="a3", reason="r3", dag_run_id="d3")
    set_alias(client, NAME, "champion", "1", expected_version="2", actor="a4", reason="rollback")
    champion = ledger(client, NAME, alias="champion")
    assert [(e.from_version, e.to_version, e.actor, e.reason) for e in champion] == [
        ("2", "1", "a4", "rollback"),
        ("1", "2", "a3", "r3"),
        (None, "1", "a1", "r1"),
    ]
    assert [e.dag_run_id for e in champion] == [None, "d3", "d1"]
    assert [e.actor for e in ledger(client, NAME)] == ["a4", "a3", "a2", "a1"]
    assert [e.actor for e in ledger(client, NAME, limit=2)] == ["a4", "a3"]
    assert ledger(client, "conveyor-other") == []
    moments = [e.moved_at for e in ledger(client, NAME)]
    assert moments == sorted(moments, reverse=True)


def test_delete_alias_goes_through_the_same_path(client: Any, versions: list[str]) -> None:
    set_alias(client, NAME, "challenger", "2", expected_version=None, actor=ACTOR, reason="candidate")
    with pytest.raises(AliasConflictError):
        delete_alias(client, NAME, "challenger", expected_version="1", actor=ACTOR, reason="stale")
    entry = delete_alias(client, NAME, "challenger", expected_version="2", actor=ACTOR, reason="rejected")
    assert (entry.action, entry.from_version, entry.to_version) == ("delete", "2", None)
    assert get_alias_version(client, NAME, "challenger") is None
    assert "conveyor.alias.challenger.removed_at" in client.get_model_version(NAME, "2").tags
    again = delete_alias(client, NAME, "challenger", expected_version="2", actor=ACTOR, reason="retry")
    assert again.noop is True and again.ledger_run_id == entry.ledger_run_id
    assert [e.action for e in ledger(client, NAME)] == ["delete", "set"]


def test_a_move_overwritten_mid_flight_is_failed_not_ledgered(
    client: Any, versions: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = client.set_registered_model_alias

    def racing_writer(name: str, alias: str, version: str) -> None:
        real(name, alias, version)
        real(name, alias, "3")  # another writer lands right after us

    monkeypatch.setattr(client, "set_registered_model_alias", racing_writer)
    with pytest.raises(AliasConflictError, match="moved by someone else") as caught:
        set_alias(client, NAME, "champion", "2", expected_version=None, actor=ACTOR, reason="deploy")
    assert caught.value.actual == "3"
    [run] = _ledger_runs(client)
    assert run.info.status == "FAILED"
    assert ledger(client, NAME) == []


def test_large_details_stay_in_the_artifact(client: Any, versions: list[str], tmp_path: Path) -> None:
    details = {"reasons": ["x" * 100] * 100}
    entry = set_alias(
        client, NAME, "champion", "1", expected_version=None, actor=ACTOR, reason="r", details=details
    )
    assert entry.details == details
    [listed] = ledger(client, NAME)
    assert listed.details == {"artifact": f"runs:/{entry.ledger_run_id}/ledger/entry.json"}
    import json

    local = client.download_artifacts(entry.ledger_run_id, "ledger/entry.json", str(tmp_path))
    with open(local) as fh:
        assert json.load(fh)["details"] == details


def test_the_model_page_shows_the_latest_moves_and_keeps_what_people_wrote(
    client: Any, versions: list[str]
) -> None:
    from conveyor.registry.aliases import MOVES_BEGIN, MOVES_END

    client.update_registered_model(NAME, description="Churn model of the EU region. Owner: ml-team.")
    set_alias(client, NAME, "challenger", "1", expected_version=None, actor=ACTOR, reason="gate | passed")
    set_alias(client, NAME, "champion", "1", expected_version=None, actor=ACTOR, reason="deployed")
    description = client.get_registered_model(NAME).description
    assert description.startswith("Churn model of the EU region. Owner: ml-team.")
    assert description.count(MOVES_BEGIN) == 1 and description.endswith(MOVES_END)
    rows = [line for line in description.splitlines() if line.startswith("| 20")]
    assert len(rows) == 2 and "| champion | - → v1 |" in rows[0] and "gate \\| passed" in rows[1]
    set_alias(client, NAME, "champion", "2", expected_version="1", actor=ACTOR, reason="next")
    description = client.get_registered_model(NAME).description
    assert description.count(MOVES_BEGIN) == 1 and "| champion | v1 → v2 |" in description
    assert description.startswith("Churn model of the EU region.")
