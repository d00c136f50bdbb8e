"""A real ``mlflow server`` delivers alias moves to the registry relay (uvicorn in this process).

The server runs with what the embedded stack gives it (``conveyor.stack.mlflow_webhook_env``), the
webhook is registered with :func:`conveyor.registry_relay.ensure_webhook`, and aliases are moved
with ``MlflowClient``: MLflow's own delivery (headers, HMAC signature, retries) reaches the relay,
which verifies it. What the relay posts to Airflow is recorded through its ``post_event`` argument
(the ``extra`` of the asset event, built by the relay's own functions); "Airflow down" goes through
the real :class:`AirflowAssetPoster` to a port nobody listens on, and MLflow retries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from support import servers
from unit.test_registry_relay import Recorder, serve_in_thread

from conveyor import registry_relay as relay
from conveyor import stack
from conveyor.names import CHALLENGER, CHAMPION
from conveyor.settings import Settings

pytestmark = pytest.mark.integration

SECRET = "integration-relay-secret"


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-webhooks")
    state = stack.StackState(ports=stack.StackPorts(airflow=1, mlflow=1, model_server=1), data_root="")
    env = {
        **stack.mlflow_webhook_env(state),
        # re-read the webhook list at once after a test changes the registration; retry quickly
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        "MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES": "2",
    }
    proc, uri, _log = servers.start_mlflow_server(root, env=env, timeout=180)
    try:
        yield uri
    finally:
        servers.stop_process(proc, timeout=20)


@pytest.fixture(scope="module")
def mlflow(mlflow_uri: str) -> Any:
    from conveyor.registry.tracking import client_for

    return client_for(mlflow_uri)


def _model(client: Any, versions: int) -> str:
    name = f"relay-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(f"relay-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    for _ in range(versions):
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return name


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> float:
    """Seconds until ``condition`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        registry_webhook_secret=SecretStr(SECRET),
        airflow_url=f"http://127.0.0.1:{stack.free_port()}",  # nobody listens there
        airflow_password=SecretStr("pw"),
    )


def _register(mlflow: Any, base: str, secret: str = SECRET) -> None:
    relay.ensure_webhook(mlflow, f"{base}{relay.WEBHOOK_PATH}", secret)
    time.sleep(1.2)  # the server's webhook cache (TTL 1 s) sees the new registration


def test_a_challenger_move_is_delivered_verified_and_relayed_within_a_second(
    mlflow: Any, tmp_path: Path
) -> None:
    recorder = Recorder()
    app = relay.create_app(_settings(tmp_path), post_event=recorder)
    with serve_in_thread(app) as base:
        _register(mlflow, base)
        name = _model(mlflow, versions=3)

        mlflow.set_registered_model_alias(name, CHALLENGER, "2")
        latency = _wait(lambda: len(recorder.posted) == 1)
        print(f"\nalias set -> relay posted: {latency * 1000:.0f} ms")
        assert latency < 5.0
        [extra] = recorder.posted
        assert extra == relay.asset_event_extra(extra["payload"]) and extra["from_webhook"] is True
        payload = extra["payload"]
        assert (payload["registered_model"], payload["alias"], payload["version"]) == (name, CHALLENGER, "2")
        assert payload["previous_version"] is None and payload["detected_at"]

        # champion and removals are acknowledged, not relayed; the next move of challenger is
        mlflow.set_registered_model_alias(name, CHAMPION, "2")
        mlflow.delete_registered_model_alias(name, CHALLENGER)
        mlflow.set_registered_model_alias(name, CHALLENGER, "3")
        _wait(lambda: len(recorder.posted) == 2)
        _wait(lambda: app.state.counts["ignored"] >= 1)
        time.sleep(0.5)
        assert [e["payload"]["version"] for e in recorder.posted] == ["2", "3"]
        assert app.state.counts["refused"] == 0


def test_a_delivery_signed_with_another_secret_is_refused(mlflow: Any, tmp_path: Path) -> None:
    recorder = Recorder()
    app = relay.create_app(_settings(tmp_path), post_event=recorder)
    with serve_in_thread(app) as base:
        _register(mlflow, base, secret="not-the-relays-secret")
        name = _model(mlflow, versions=1)
        mlflow.set_registered_model_alias(name, CHALLENGER, "1")
        _wait(lambda: app.state.counts["refused"] >= 1)
        time.sleep(0.5)
        assert recorder.posted == []


def test_while_airflow_is_down_mlflow_retries_and_the_move_is_posted_once(
    mlflow: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    down = relay.AirflowAssetPoster(lambda: relay.airflow_client_from_settings(settings))
    recorder = Recorder()
    attempts: list[str] = []

    def post_event(extra: Mapping[str, Any]) -> Mapping[str, Any]:
        attempts.append(extra["payload"]["version"])
        if len(attempts) == 1:
            return down(extra)  # Airflow unreachable: the relay answers 503
        return recorder(extra)  # Airflow is back when MLflow retries

    app = relay.create_app(settings, post_event=post_event)
    with serve_in_thread(app) as base:
        _register(mlflow, base)
        name = _model(mlflow, versions=1)
        mlflow.set_registered_model_alias(name, CHALLENGER, "1")
        _wait(lambda: len(recorder.posted) == 1, timeout=30)
        time.sleep(1.0)
    assert attempts == ["1", "1"]
    assert app.state.counts["airflow_failed"] == 1 and app.state.counts["relayed"] == 1
    assert [e["payload"]["version"] for e in recorder.posted] == ["1"]
    down.close()


@pytest.mark.slow
def test_on_the_embedded_stack_a_move_reaches_airflow_as_an_asset_event(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``conveyor up`` runs the relay and registers it; a move of challenger becomes an asset event of
    the deploy DAG's asset in the real Airflow, with the watcher's payload and ``from_webhook``."""
    settings = stack.isolated_settings(tmp_path_factory.mktemp("relay-stack") / "home")
    try:
        info = stack.up(settings, timeout=900)
        components = {c.name: c for c in stack.status(settings)}
        assert components[stack.REGISTRY_RELAY].healthy, components[stack.REGISTRY_RELAY]
        from conveyor.registry.tracking import client_for

        mlflow = client_for(info.mlflow_url)
        [webhook] = [w for w in mlflow.list_webhooks() if w.name == relay.WEBHOOK_NAME]
        assert webhook.url == info.registry_relay_url
        with info.airflow_client() as client:
            client.wait_for_dag("conveyor_deploy", timeout=300)
            asset = client.find_asset(uri=relay.ASSET_URI)
            assert asset is not None and asset["name"] == relay.ASSET_NAME

            name = _model(mlflow, versions=1)  # no spec: the deploy run it starts plans nothing
            mlflow.set_registered_model_alias(name, CHALLENGER, "1")

            def pushed() -> list[dict[str, Any]]:
                body = client._json(
                    "GET",
                    "/api/v2/assets/events",
                    params={"asset_id": asset["id"], "limit": 50, "order_by": "-timestamp"},
                )
                return [
                    e
                    for e in body.get("asset_events", [])
                    if (e.get("extra") or {}).get("from_webhook")
                    and e["extra"]["payload"]["registered_model"] == name
                ]

            latency = _wait(lambda: bool(pushed()), timeout=30)
            print(f"\nalias set -> asset event in Airflow: {latency:.2f} s")
            [event] = pushed()
            assert event["extra"]["payload"]["version"] == "1"
            assert event["extra"]["payload"]["alias"] == CHALLENGER
            assert event["extra"]["from_rest_api"] is True
    finally:
        stack.down(settings)
