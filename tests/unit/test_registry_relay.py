"""The registry webhook relay: MLflow's signature checked, alias moves relayed once, the rest ignored.

The relay is the real ASGI app (``TestClient``, or uvicorn in a thread where MLflow's own delivery
code sends to it). What it posts to Airflow goes through its ``post_event`` argument: here a list
records the ``extra`` it would post; the real Airflow call is :class:`AirflowAssetPoster`, exercised
for "Airflow is down" against a port nobody listens on.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from conveyor import registry_relay as relay
from conveyor.names import CHALLENGER, CHAMPION
from conveyor.settings import Settings

pytestmark = pytest.mark.unit

SECRET = "relay-test-secret"
PAYLOAD_KEYS = {"registered_model", "alias", "version", "previous_version", "detected_at"}


class Recorder:
    """The relay's ``post_event``: keeps the ``extra`` of every asset event it was asked to post."""

    def __init__(self) -> None:
        self.posted: list[Mapping[str, Any]] = []

    def __call__(self, extra: Mapping[str, Any]) -> Mapping[str, Any]:
        self.posted.append(extra)
        return {"id": len(self.posted), "extra": dict(extra)}


def free_port() -> int:
    from conveyor.stack import free_port as stack_free_port

    return stack_free_port()


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a daemon thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the relay did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def delivery(
    entity: str = "model_version_alias",
    action: str = "created",
    *,
    name: str = "conveyor-churn",
    alias: str = CHALLENGER,
    version: str = "7",
) -> bytes:
    """A delivery body as MLflow writes it."""
    body = {
        "entity": entity,
        "action": action,
        "timestamp": "2026-01-01T02:03:04.567890+00:00",
        "data": {"name": name, "alias": alias, "version": version},
    }
    return json.dumps(body).encode()


def headers(
    body: bytes, *, secret: str = SECRET, delivery_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        relay.DELIVERY_ID_HEADER: delivery_id,
        relay.TIMESTAMP_HEADER: stamp,
        relay.SIGNATURE_HEADER: relay.sign(secret, delivery_id, stamp, body),
    }


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": tmp_path,
        "registry_webhook_secret": SecretStr(SECRET),
        "airflow_url": f"http://127.0.0.1:{free_port()}",  # nobody listens there
        "airflow_password": SecretStr("pw"),
    }
    return Settings(**(values | overrides))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app_client(tmp_path: Path, recorder: Recorder) -> Iterator[TestClient]:
    with TestClient(relay.create_app(settings_for(tmp_path), post_event=recorder)) as client:
        yield client


# ------------------------------------------------------------------------------------------------
# Signatures
# ------------------------------------------------------------------------------------------------


def test_the_relay_signs_exactly_as_mlflow_does() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = delivery()
    assert relay.sign(SECRET, "d-1", "1767225784", body) == _generate_hmac_signature(
        SECRET, "d-1", "1767225784", body.decode()
    )


def test_a_signed_challenger_move_is_posted_with_the_watchers_payload(
    app_client: TestClient, recorder: Recorder
) -> None:
    body = delivery(version="7")
    response = app_client.post(relay.WEBHOOK_PATH, content=body, headers=headers(body))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "relayed" and response.json()["asset_event_id"] == 1
    [extra] = recorder.posted
    assert extra["from_webhook"] is True
    payload = extra["payload"]
    assert set(payload) == PAYLOAD_KEYS
    assert payload == {
        "registered_model": "conveyor-churn",
        "alias": CHALLENGER,
        "version": "7",
        "previous_version": None,
        # MLflow's timestamp, written as the registry watcher writes detected_at
        "detected_at": "2026-01-01T02:03:04+00:00",
    }


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "tampered body", "other delivery id", "other timestamp", "garbage signature"],
)
def test_a_signature_that_does_not_match_is_refused_401(
    app_client: TestClient, recorder: Recorder, tamper: str
) -> None:
    body = delivery()
    sent = headers(body, secret="not-the-secret" if tamper == "wrong secret" else SECRET)
    if tamper == "tampered body":
        body = delivery(version="8")
    elif tamper == "other delivery id":
        sent[relay.DELIVERY_ID_HEADER] = str(uuid.uuid4())
    elif tamper == "other timestamp":
        sent[relay.TIMESTAMP_HEADER] = str(int(sent[relay.TIMESTAMP_HEADER]) - 1)
    elif tamper == "garbage signature":
        sent[relay.SIGNATURE_HEADER] = "v1,AAAA"
    response = app_client.post(relay.WEBHOOK_PATH, content=body, headers=sent)
    assert response.status_code == 401
    assert "X-MLflow-Signature does not match" in response.json()["detail"]
    assert recorder.posted == []


def test_one_matching_signature_among_several_is_enough(app_client: TestClient, recorder: Recorder) -> None:
    body = delivery()
    sent = headers(body)
    sent[relay.SIGNATURE_HEADER] = f"v1,bm9wZQ== {sent[relay.SIGNATURE_HEADER]}"
    assert app_client.post(relay.WEBHOOK_PATH, content=body, headers=sent).status_code == 200
    assert len(recorder.posted) == 1


@pytest.mark.parametrize("header", [relay.SIGNATURE_HEADER, relay.TIMESTAMP_HEADER, relay.DELIVERY_ID_HEADER])
def test_a_missing_header_is_refused_401_and_named(
    app_client: TestClient, recorder: Recorder, header: str
) -> None:
    body = delivery()
    sent = headers(body)
    del sent[header]
    response = app_client.post(relay.WEBHOOK_PATH, content=body, headers=sent)
    assert response.status_code == 401
    assert response.json()["detail"] == f"missing header {header}"
    assert recorder.posted == []


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_stale_or_future_timestamp_is_refused_401(
    app_client: TestClient, recorder: Recorder, offset: int
) -> None:
    body = delivery()
    response = app_client.post(
        relay.WEBHOOK_PATH, content=body, headers=headers(body, timestamp=int(time.time()) - offset)
    )
    assert response.status_code == 401
    assert "refusing a replay" in response.json()["detail"]
    assert ("old" if offset > 0 else "ahead") in response.json()["detail"]
    assert recorder.posted == []


def test_a_timestamp_within_five_minutes_is_accepted(app_client: TestClient) -> None:
    body = delivery()
    sent = headers(body, timestamp=int(time.time()) - 290)
    assert app_client.post(relay.WEBHOOK_PATH, content=body, headers=sent).status_code == 200


def test_a_timestamp_that_is_not_a_number_is_refused_401(app_client: TestClient) -> None:
    body = delivery()
    sent = headers(body)
    sent[relay.TIMESTAMP_HEADER] = "yesterday"
    response = app_client.post(relay.WEBHOOK_PATH, content=body, headers=sent)
    assert response.status_code == 401 and "not Unix seconds" in response.json()["detail"]


# ------------------------------------------------------------------------------------------------
# Bodies and events
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"not json", "the body is not JSON"),
        (b"[1, 2]", "the body is JSON list, not an object"),
        (
            json.dumps(
                {"entity": "model_version_alias", "action": "created", "data": {"name": "m"}}
            ).encode(),
            "lacks data.alias, data.version",
        ),
        (
            json.dumps({"entity": "model_version_alias", "action": "created"}).encode(),
            "needs a 'data' object",
        ),
    ],
)
def test_a_signed_body_that_is_not_a_delivery_is_refused_400(
    app_client: TestClient, recorder: Recorder, body: bytes, detail: str
) -> None:
    response = app_client.post(relay.WEBHOOK_PATH, content=body, headers=headers(body))
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert recorder.posted == []


def test_a_huge_body_is_refused_unread(app_client: TestClient) -> None:
    body = b"{" + b" " * (relay.MAX_BODY_BYTES + 1) + b"}"
    response = app_client.post(relay.WEBHOOK_PATH, content=body, headers=headers(body))
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "event"),
    [
        (delivery("model_version", "created"), "model_version.created"),
        (delivery("model_version_alias", "deleted"), "model_version_alias.deleted"),
        (delivery("registered_model", "created"), "registered_model.created"),
        (delivery(alias=CHAMPION), "model_version_alias.created"),
        (delivery(alias="staging"), "model_version_alias.created"),
    ],
)
def test_other_events_and_aliases_are_acknowledged_and_ignored(
    app_client: TestClient, recorder: Recorder, body: bytes, event: str
) -> None:
    response = app_client.post(relay.WEBHOOK_PATH, content=body, headers=headers(body))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "event": event}
    assert recorder.posted == []


def test_a_redelivery_posts_once(app_client: TestClient, recorder: Recorder) -> None:
    body = delivery()
    sent = headers(body)
    first = app_client.post(relay.WEBHOOK_PATH, content=body, headers=sent)
    again = app_client.post(relay.WEBHOOK_PATH, content=body, headers=sent)
    assert first.json()["status"] == "relayed"
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(recorder.posted) == 1
    # a new delivery of the same move (MLflow sends one per alias set) is posted again
    other = app_client.post(relay.WEBHOOK_PATH, content=body, headers=headers(body))
    assert other.json()["status"] == "relayed" and len(recorder.posted) == 2
    health = app_client.get("/health").json()
    assert health["status"] == "ok" and health["relayed"] == 2 and health["duplicate"] == 1


def test_the_delivery_log_is_bounded_and_forgets_the_oldest() -> None:
    log = relay.DeliveryLog(size=2)
    for delivery_id in ("a", "b", "c"):
        assert log.claim(delivery_id)
        log.done(delivery_id)
    assert "a" not in log and "b" in log and "c" in log
    assert not log.claim("b")  # relayed already
    assert log.claim("d") and not log.claim("d")  # in flight: a concurrent retry does not post too
    log.release("d")
    assert log.claim("d")


# ------------------------------------------------------------------------------------------------
# Airflow down, and the relay's own configuration
# ------------------------------------------------------------------------------------------------


def test_airflow_down_answers_503_so_mlflow_retries(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    body = delivery()
    sent = headers(body)
    with TestClient(relay.create_app(settings)) as client:
        response = client.post(relay.WEBHOOK_PATH, content=body, headers=sent)
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        detail = response.json()["detail"]
        assert "MLflow will retry" in detail and "unreachable" in detail
        assert settings.airflow_url in detail
        # not remembered: MLflow's retry of this delivery is relayed once Airflow answers
        assert sent[relay.DELIVERY_ID_HEADER] not in client.app.state.deliveries  # type: ignore[attr-defined]
        assert client.get("/health").json()["airflow_failed"] == 1


def test_without_an_airflow_password_the_relay_answers_503_naming_the_setting(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, airflow_password=SecretStr(""))
    body = delivery()
    with TestClient(relay.create_app(settings)) as client:
        response = client.post(relay.WEBHOOK_PATH, content=body, headers=headers(body))
    assert response.status_code == 503
    assert "CONVEYOR_AIRFLOW_PASSWORD" in response.json()["detail"]


def test_the_relay_will_not_run_without_a_secret(tmp_path: Path) -> None:
    with pytest.raises(relay.RelayError, match="CONVEYOR_REGISTRY_WEBHOOK_SECRET is not set"):
        relay.create_app(Settings(home=tmp_path))


def test_the_secret_is_read_from_the_environment_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_REGISTRY_WEBHOOK_SECRET", "from-the-env")
    settings = Settings(home=tmp_path)
    assert settings.registry_webhook_secret.get_secret_value() == "from-the-env"
    assert "from-the-env" not in repr(settings) and "from-the-env" not in str(settings.model_dump())


# ------------------------------------------------------------------------------------------------
# MLflow's own delivery code and webhook registration, on a real MLflow store
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def local_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let MLflow deliver over plain HTTP to 127.0.0.1 (what the embedded stack sets for its server)."""
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")


def _mlflow_delivers(webhook: Any, data: dict[str, str]) -> Any:
    """Send one delivery with MLflow's own code (what the tracking server does for an alias set)."""
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.webhooks.delivery import _get_or_create_webhook_session, _send_webhook_request

    event = WebhookEvent.from_str(relay.WEBHOOK_EVENT)
    return _send_webhook_request(webhook, data, event, _get_or_create_webhook_session())  # type: ignore[arg-type]


@pytest.mark.usefixtures("local_webhooks")
def test_mlflow_deliveries_are_verified_and_relayed(client: Any, tmp_path: Path, recorder: Recorder) -> None:
    app = relay.create_app(settings_for(tmp_path), post_event=recorder)
    with serve_in_thread(app) as base:
        url = f"{base}{relay.WEBHOOK_PATH}"
        assert relay.ensure_webhook(client, url, SECRET) == "created"
        [webhook] = [w for w in client.list_webhooks() if w.name == relay.WEBHOOK_NAME]
        stored = client._get_registry_client().store.get_webhook(webhook.webhook_id)
        response = _mlflow_delivers(stored, {"name": "conveyor-churn", "alias": CHALLENGER, "version": "3"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "relayed"
        assert [e["payload"]["version"] for e in recorder.posted] == ["3"]

        # the same webhook with another secret: MLflow's signature is refused, nothing posted
        relay.ensure_webhook(client, url, "another-secret")
        stored = client._get_registry_client().store.get_webhook(webhook.webhook_id)
        refused = _mlflow_delivers(stored, {"name": "conveyor-churn", "alias": CHALLENGER, "version": "4"})
        assert refused.status_code == 401
        assert len(recorder.posted) == 1


@pytest.mark.usefixtures("local_webhooks")
def test_ensure_webhook_is_idempotent_by_name(client: Any) -> None:
    url = "http://127.0.0.1:8090/webhooks/mlflow"
    assert relay.ensure_webhook(client, url, SECRET) == "created"
    [first] = client.list_webhooks()
    assert relay.ensure_webhook(client, "http://127.0.0.1:9999/webhooks/mlflow", SECRET) == "updated"
    [after] = client.list_webhooks()
    assert after.webhook_id == first.webhook_id
    assert after.url == "http://127.0.0.1:9999/webhooks/mlflow"
    assert [str(e) for e in after.events] == [relay.WEBHOOK_EVENT]
    assert str(after.status) == "ACTIVE"
    # a second webhook of the same name (made by hand) is folded into the first
    client.create_webhook(name=relay.WEBHOOK_NAME, url=url, events=[relay.WEBHOOK_EVENT], secret="x")
    assert relay.ensure_webhook(client, url, SECRET) == "updated"
    assert [w.webhook_id for w in client.list_webhooks()] == [first.webhook_id]


def test_ensure_webhook_needs_a_secret(client: Any) -> None:
    with pytest.raises(ValueError, match="needs a secret"):
        relay.ensure_webhook(client, "http://127.0.0.1:8090/webhooks/mlflow", "")
