"""AirflowClient against an in-memory Airflow API: auth, errors, triggering and waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.airflow_api import AirflowApiError, AirflowClient
from conveyor.demo import explain_failure

from .fake_airflow import FakeAirflow

pytestmark = pytest.mark.unit


@pytest.fixture
def fake() -> FakeAirflow:
    fake = FakeAirflow()
    fake.dags["conveyor_train_churn"] = {
        "dag_id": "conveyor_train_churn",
        "is_paused": True,
        "is_stale": False,
    }
    return fake


@pytest.fixture
def client(fake: FakeAirflow) -> AirflowClient:
    return AirflowClient("http://airflow", "admin", "pw", transport=fake.transport())


def test_token_is_fetched_once_and_renewed_after_401(fake: FakeAirflow, client: AirflowClient) -> None:
    client.get_pool("none")
    client.get_pool("none")
    assert fake.token_requests == 1
    fake.expire_tokens()
    assert client.get_pool("none") is None
    assert fake.token_requests == 2


def test_bad_credentials_say_which_call_and_status(fake: FakeAirflow) -> None:
    client = AirflowClient("http://airflow", "admin", "wrong", transport=fake.transport())
    with pytest.raises(
        AirflowApiError, match=r"POST /auth/token as 'admin' answered 401: Invalid credentials"
    ):
        client.get_dag("x")


def test_errors_name_method_path_status_and_detail(client: AirflowClient) -> None:
    with pytest.raises(AirflowApiError) as err:
        client.dag_run("conveyor_train_churn", "nope")
    assert err.value.status_code == 404
    assert "GET /api/v2/dags/conveyor_train_churn/dagRuns/nope answered 404: run nope not found" in str(
        err.value
    )


def test_unreachable_airflow_is_reported_as_such() -> None:
    client = AirflowClient("http://127.0.0.1:9", "admin", "pw", timeout=2)
    with pytest.raises(AirflowApiError, match="unreachable"):
        client.health()


def test_wait_for_dag_unpauses_when_asked(fake: FakeAirflow, client: AirflowClient) -> None:
    with pytest.raises(AirflowApiError, match="paused"):
        client.wait_for_dag("conveyor_train_churn", timeout=0, poll=0)
    dag = client.wait_for_dag("conveyor_train_churn", timeout=0, unpause=True, poll=0)
    assert dag["is_paused"] is False and fake.dags["conveyor_train_churn"]["is_paused"] is False


def test_wait_for_missing_dag_shows_import_errors(fake: FakeAirflow, client: AirflowClient) -> None:
    with pytest.raises(AirflowApiError, match=r"not parsed within 0s\. No import errors"):
        client.wait_for_dag("ghost", timeout=0, poll=0)
    fake.import_errors.append({"filename": "/dags/ghost.py", "stack_trace": "SyntaxError: boom"})
    with pytest.raises(AirflowApiError, match=r"(?s)Import errors:.*ghost\.py.*SyntaxError: boom"):
        client.wait_for_dag("ghost", timeout=0, poll=0)


def test_trigger_sends_an_aware_logical_date_and_conf(fake: FakeAirflow, client: AirflowClient) -> None:
    run_id = client.trigger("conveyor_train_churn", {"window_days": 3})
    sent = fake.triggered[-1]
    assert sent["conf"] == {"window_days": 3}
    assert datetime.fromisoformat(sent["logical_date"]).tzinfo is not None
    assert run_id == f"manual__{sent['logical_date']}"
    naive = datetime(2026, 1, 2, 3, 4, 5)
    client.trigger("conveyor_train_churn", {}, logical_date=naive, run_id="r1")
    assert fake.triggered[-1]["logical_date"] == "2026-01-02T03:04:05+00:00"
    assert fake.triggered[-1]["dag_run_id"] == "r1"


def test_wait_for_run_reports_every_poll_and_returns_the_final_state(
    fake: FakeAirflow, client: AirflowClient
) -> None:
    run_id = client.trigger("conveyor_train_churn", {}, run_id="r")
    fake.task_instances["r"] = [{"task_id": "train", "state": "running", "try_number": 1}]
    seen: list[tuple[str, list[dict[str, Any]]]] = []

    def on_update(run: dict[str, Any], tis: list[dict[str, Any]]) -> None:
        seen.append((run["state"], tis))
        if len(seen) == 2:
            fake.runs["conveyor_train_churn"][0]["state"] = "success"

    final = client.wait_for_run("conveyor_train_churn", run_id, timeout=10, on_update=on_update, poll=0)
    assert final["state"] == "success"
    assert [s for s, _ in seen] == ["queued", "queued", "success"]
    assert seen[0][1][0]["task_id"] == "train"


def test_wait_for_run_times_out_naming_the_run(client: AirflowClient) -> None:
    client.trigger("conveyor_train_churn", {}, run_id="slow")
    with pytest.raises(AirflowApiError, match="run slow of conveyor_train_churn is still queued"):
        client.wait_for_run("conveyor_train_churn", "slow", timeout=0, poll=0)


def test_wait_for_new_run_ignores_runs_queued_before(fake: FakeAirflow, client: AirflowClient) -> None:
    fake.dags["conveyor_deploy"] = {"dag_id": "conveyor_deploy", "is_paused": False}
    now = datetime.now(UTC)
    client.trigger("conveyor_deploy", {}, logical_date=now - timedelta(minutes=5), run_id="old")
    with pytest.raises(AirflowApiError, match="no run of conveyor_deploy was queued after"):
        client.wait_for_new_run("conveyor_deploy", after=now, timeout=0, poll=0)
    client.trigger("conveyor_deploy", {}, logical_date=now + timedelta(seconds=2), run_id="new")
    client.trigger("conveyor_deploy", {}, logical_date=now + timedelta(seconds=9), run_id="newer")
    assert client.wait_for_new_run("conveyor_deploy", after=now, timeout=0)["dag_run_id"] == "new"


def test_failed_task_is_named_with_its_log_tail(fake: FakeAirflow, client: AirflowClient) -> None:
    tis = [
        {"task_id": "validate_data", "state": "failed", "try_number": 2},
        {"task_id": "train", "state": "upstream_failed", "try_number": 0},
    ]
    text = explain_failure(client, "conveyor_train_churn", "r", tis, log_lines=3)
    assert "task validate_data failed (try 2)" in text
    assert "validate_data line 49" in text and "validate_data line 46" not in text
    assert "not run because of it: train" in text
