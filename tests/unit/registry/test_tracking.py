from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from conveyor.registry.tracking import (
    DAG_RUN_ID_TAG,
    InvalidRunIdError,
    client_for,
    ensure_experiment,
    experiment_for,
    get_or_create_run,
    log_json_artifact,
    log_text_artifact,
)

pytestmark = pytest.mark.unit

DAG_RUN = "manual__2026-11-23T10:00:00+00:00"


def _read_artifact(client: Any, run_id: str, path: str, tmp_path: Any) -> str:
    local = client.download_artifacts(run_id, path, str(tmp_path))
    with open(local) as fh:
        return fh.read()


def test_client_for_defaults_to_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.settings import get_settings

    uri = "http://127.0.0.1:5999"  # a server URI: building the client opens no store
    monkeypatch.setenv("CONVEYOR_MLFLOW_TRACKING_URI", uri)
    get_settings.cache_clear()
    client = client_for()
    assert client.tracking_uri == uri
    assert client._registry_uri == uri
    assert client_for("http://mlflow.example:5000").tracking_uri == "http://mlflow.example:5000"


def test_experiment_for_creates_once_then_finds(client: Any, spec: Any) -> None:
    first = experiment_for(client, spec)
    second = experiment_for(client, spec)
    assert first == second
    experiment = client.get_experiment(first)
    assert experiment.name == "conveyor/toy"
    assert experiment.tags["conveyor.model"] == "toy"


def test_experiment_for_restores_a_deleted_experiment(client: Any, spec: Any) -> None:
    experiment_id = experiment_for(client, spec)
    client.delete_experiment(experiment_id)
    assert experiment_for(client, spec) == experiment_id
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


def test_ensure_experiment_survives_losing_the_create_race(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = client.create_experiment("conveyor/raced")
    real = client.get_experiment_by_name
    calls = {"n": 0}

    def stale_first_read(name: str) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(name)  # the other worker created it after our read

    monkeypatch.setattr(client, "get_experiment_by_name", stale_first_read)
    assert ensure_experiment(client, "conveyor/raced") == winner
    assert calls["n"] == 2


def test_get_or_create_run_is_idempotent_per_dag_run(client: Any, spec: Any) -> None:
    run_id = get_or_create_run(client, spec, DAG_RUN, "conveyor_training__toy")
    again = get_or_create_run(client, spec, DAG_RUN, "conveyor_training__toy", tags={"conveyor.extra": "x"})
    other = get_or_create_run(client, spec, "scheduled__2026-11-24T02:00:00+00:00", "conveyor_training__toy")
    assert again == run_id
    assert other != run_id
    run = client.get_run(run_id)
    assert run.info.run_name == DAG_RUN
    assert run.data.tags[DAG_RUN_ID_TAG] == DAG_RUN
    assert run.data.tags["conveyor.dag_id"] == "conveyor_training__toy"
    assert run.data.tags["conveyor.extra"] == "x"
    assert run.info.experiment_id == experiment_for(client, spec)
    runs = client.search_runs([run.info.experiment_id])
    assert len(runs) == 2


def test_get_or_create_run_keeps_the_oldest_run_when_two_attempts_race(
    client: Any, spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id = experiment_for(client, spec)
    earlier = client.create_run(experiment_id, start_time=1, tags={DAG_RUN_ID_TAG: DAG_RUN}).info.run_id
    real = client.search_runs
    calls = {"n": 0}

    def blind_first_search(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return [] if calls["n"] == 1 else real(*args, **kwargs)  # the other attempt's run is not visible yet

    monkeypatch.setattr(client, "search_runs", blind_first_search)
    assert get_or_create_run(client, spec, DAG_RUN, "d") == earlier
    monkeypatch.setattr(client, "search_runs", real)
    active = client.search_runs([experiment_id])
    assert [r.info.run_id for r in active] == [earlier]


@pytest.mark.parametrize("bad", ["it's", 'say "hi"', "back\\slash"])
def test_quotes_in_a_dag_run_id_are_refused(client: Any, spec: Any, bad: str) -> None:
    with pytest.raises(InvalidRunIdError, match="quote or backslash"):
        get_or_create_run(client, spec, bad, "d")


class _Payload(BaseModel):
    name: str
    score: float


def test_json_and_text_artifacts_round_trip(client: Any, spec: Any, tmp_path: Any) -> None:
    run_id = get_or_create_run(client, spec, DAG_RUN, "d")
    log_json_artifact(client, run_id, {"b": 1, "a": [1, 2]}, "reports/plain.json")
    log_json_artifact(client, run_id, _Payload(name="x", score=0.5), "reports/model.json")
    log_text_artifact(client, run_id, "# hello\n", "reports/readme.md")
    assert json.loads(_read_artifact(client, run_id, "reports/plain.json", tmp_path / "a")) == {
        "a": [1, 2],
        "b": 1,
    }
    assert json.loads(_read_artifact(client, run_id, "reports/model.json", tmp_path / "b")) == {
        "name": "x",
        "score": 0.5,
    }
    assert _read_artifact(client, run_id, "reports/readme.md", tmp_path / "c") == "# hello\n"
