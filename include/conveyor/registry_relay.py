"""The push path of alias moves: an MLflow registry webhook relayed to Airflow as an asset event.

The deploy DAG (``conveyor_deploy``) is scheduled on the asset ``mlflow_registry_aliases``, which the
registry watcher (:mod:`conveyor_airflow.triggers.mlflow_alias`) feeds by polling MLflow every few
seconds. This relay adds a push path beside it: MLflow calls ``POST /webhooks/mlflow`` when an alias
is set (event ``model_version_alias.created``), the relay checks the delivery's signature and posts
an event of the same asset through Airflow's REST API, so a move of ``challenger`` starts a deploy
without waiting for the next poll. Polling stays: it catches what a lost delivery misses, and a
move reported twice (push and poll) costs one run that finds nothing to do.

Run it with ``uvicorn conveyor.registry_relay:create_app --factory`` (the embedded stack runs it as
the ``registry-relay`` program) and register it in MLflow with :func:`ensure_webhook`.

How MLflow 3 delivers (``mlflow/webhooks/delivery.py``), and so what is checked here:

* The body is JSON: ``{"entity": "model_version_alias", "action": "created", "timestamp": <ISO>,
  "data": {"name": <model>, "alias": <alias>, "version": <version>}}``.
* Headers ``X-MLflow-Delivery-Id`` (a UUID), ``X-MLflow-Timestamp`` (Unix seconds) and
  ``X-MLflow-Signature``: ``v1,`` + base64 of HMAC-SHA256, keyed with the webhook's secret, over
  ``<delivery id>.<timestamp>.<body>``. A refused signature, a missing header or a timestamp more
  than :data:`MAX_AGE_S` away from now answers 401; a signed body that is not a JSON object, 400.
* MLflow retries a delivery on 429 and 5xx (with the same id, timestamp and signature), so Airflow
  being unreachable answers 503; an id already relayed is acknowledged without posting again
  (a bounded in-memory LRU of delivery ids).
* Other events, and aliases the deploy side does not watch, are acknowledged (200) and ignored.

The asset event's ``extra`` is ``{"payload": {...}, "from_webhook": true}`` with the payload the
registry watcher yields (``registered_model``, ``alias``, ``version``, ``previous_version``,
``detected_at``); ``previous_version`` is ``None`` (a webhook names the new version only), which the
watcher also sends when it does not know. The deploy DAG re-reads the registry in any case.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError
from conveyor.names import CHALLENGER, REGISTRY_ALIASES_ASSET, REGISTRY_ALIASES_ASSET_URI

if TYPE_CHECKING:
    from fastapi import FastAPI

    from conveyor.airflow_api import AirflowClient
    from conveyor.settings import Settings

log = logging.getLogger(__name__)

#: The MLflow webhook the relay is registered as (one per registry; :func:`ensure_webhook`).
WEBHOOK_NAME = "conveyor-deploy-relay"
#: The one event relayed: an alias was set (MLflow sends it for a new alias and for a moved one).
WEBHOOK_EVENT = "model_version_alias.created"
#: Where MLflow delivers.
WEBHOOK_PATH = "/webhooks/mlflow"
#: MLflow's delivery headers (``mlflow.webhooks.constants``).
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"
SIGNATURE_VERSION = "v1"
#: Deliveries signed longer ago (or further ahead) than this are refused as replays.
MAX_AGE_S = 300.0
#: A delivery is a few hundred bytes; anything far larger is refused unread.
MAX_BODY_BYTES = 64 * 1024
#: Aliases whose moves the deploy side acts on (what the deploy DAG's watcher watches).
RELAYED_ALIASES: frozenset[str] = frozenset({CHALLENGER})
#: The asset the deploy DAG is scheduled on (``dags/conveyor_deploy.py``).
ASSET_NAME = REGISTRY_ALIASES_ASSET
ASSET_URI = REGISTRY_ALIASES_ASSET_URI
#: How many delivery ids are remembered for de-duplication.
DELIVERY_LOG_SIZE = 4096


class RelayError(ConveyorError):
    """The relay cannot start (no secret) or cannot take a delivery."""


class DeliveryRefused(RelayError):
    """A delivery is not from MLflow, or not one to act on; ``status_code`` is the answer (401, 400)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


# ------------------------------------------------------------------------------------------------
# Signatures and payloads (pure functions)
# ------------------------------------------------------------------------------------------------


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` MLflow sends for ``body``: ``v1,<base64 HMAC-SHA256>``."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify_delivery(
    secret: str,
    *,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float | None = None,
    max_age_s: float = MAX_AGE_S,
) -> None:
    """Check a delivery's headers against its body, the way MLflow signed it.

    The signature header may carry several space-separated ``v1,<sig>`` entries (Standard Webhooks);
    one must match. Comparisons are constant-time.

    Raises:
        DeliveryRefused: 401, naming the missing header, the stale timestamp or the bad signature.
    """
    missing = [
        name
        for name, value in (
            (DELIVERY_ID_HEADER, delivery_id),
            (TIMESTAMP_HEADER, timestamp),
            (SIGNATURE_HEADER, signature),
        )
        if not value
    ]
    if missing:
        raise DeliveryRefused(f"missing header {', '.join(missing)}", 401)
    assert delivery_id is not None and timestamp is not None and signature is not None
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise DeliveryRefused(f"{TIMESTAMP_HEADER} is not Unix seconds: {timestamp[:40]!r}", 401) from None
    expected = sign(secret, delivery_id, timestamp, body).encode()
    offered = [part.encode() for part in signature.split() if part.startswith(f"{SIGNATURE_VERSION},")]
    # compare against every offered signature (no early exit), constant time each
    matched = False
    for candidate in offered:
        matched |= hmac.compare_digest(candidate, expected)
    if not matched:
        raise DeliveryRefused(f"{SIGNATURE_HEADER} does not match the body (wrong secret?)", 401)
    age = (time.time() if now is None else now) - sent_at
    if abs(age) > max_age_s:
        raise DeliveryRefused(
            f"{TIMESTAMP_HEADER} is {abs(age):.0f} s {'old' if age > 0 else 'ahead'} "
            f"(limit {max_age_s:.0f} s); refusing a replay",
            401,
        )


def parse_delivery(body: bytes) -> dict[str, Any]:
    """The delivery's JSON object.

    Raises:
        DeliveryRefused: 400 when the body is not JSON or not an object.
    """
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeliveryRefused(f"the body is not JSON: {exc}", 400) from None
    if not isinstance(parsed, dict):
        raise DeliveryRefused(f"the body is JSON {type(parsed).__name__}, not an object", 400)
    return parsed


def event_name(delivery: Mapping[str, Any]) -> str:
    """``<entity>.<action>`` of a delivery, e.g. ``model_version_alias.created``."""
    return f"{delivery.get('entity')}.{delivery.get('action')}"


def _detected_at(delivery: Mapping[str, Any]) -> str:
    """When MLflow saw the move (its ``timestamp``), written like the registry watcher writes it."""
    raw = delivery.get("timestamp")
    if isinstance(raw, str):
        try:
            stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            stamp = None
        if stamp is not None:
            stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            return stamp.astimezone(UTC).isoformat(timespec="seconds")
    return datetime.now(UTC).isoformat(timespec="seconds")


def alias_move_payload(
    delivery: Mapping[str, Any], aliases: Iterable[str] = RELAYED_ALIASES
) -> dict[str, Any] | None:
    """The registry watcher's event payload for an alias move, or None when there is nothing to relay.

    Returns:
        ``{"registered_model", "alias", "version", "previous_version", "detected_at"}`` for a
        ``model_version_alias.created`` delivery of a watched alias; None for any other event or alias.

    Raises:
        DeliveryRefused: 400 when an alias delivery lacks ``data.name``, ``data.alias`` or ``data.version``.
    """
    if event_name(delivery) != WEBHOOK_EVENT:
        return None
    data = delivery.get("data")
    if not isinstance(data, dict):
        raise DeliveryRefused(f"a {WEBHOOK_EVENT} delivery needs a 'data' object", 400)
    missing = [key for key in ("name", "alias", "version") if data.get(key) in (None, "")]
    if missing:
        raise DeliveryRefused(f"a {WEBHOOK_EVENT} delivery lacks data.{', data.'.join(missing)}", 400)
    if str(data["alias"]) not in set(aliases):
        return None
    return {
        "registered_model": str(data["name"]),
        "alias": str(data["alias"]),
        "version": str(data["version"]),
        "previous_version": None,
        "detected_at": _detected_at(delivery),
    }


def asset_event_extra(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The ``extra`` of the asset event posted for ``payload`` (the deploy DAG reads ``payload``)."""
    return {"payload": dict(payload), "from_webhook": True}


# ------------------------------------------------------------------------------------------------
# De-duplication and the Airflow side
# ------------------------------------------------------------------------------------------------


class DeliveryLog:
    """Delivery ids already relayed (bounded, least recently seen dropped first) and those in flight.

    :meth:`claim` before posting; then :meth:`done` (remembered) or :meth:`release` (failed: a retry
    of the same delivery may post).
    """

    def __init__(self, size: int = DELIVERY_LOG_SIZE) -> None:
        self.size = size
        self._done: OrderedDict[str, None] = OrderedDict()
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, delivery_id: str) -> bool:
        """True when this delivery is neither relayed nor being relayed; it is then in flight."""
        with self._lock:
            if delivery_id in self._done:
                self._done.move_to_end(delivery_id)
                return False
            if delivery_id in self._in_flight:
                return False
            self._in_flight.add(delivery_id)
            return True

    def done(self, delivery_id: str) -> None:
        with self._lock:
            self._in_flight.discard(delivery_id)
            self._done[delivery_id] = None
            self._done.move_to_end(delivery_id)
            while len(self._done) > self.size:
                self._done.popitem(last=False)

    def release(self, delivery_id: str) -> None:
        with self._lock:
            self._in_flight.discard(delivery_id)

    def __contains__(self, delivery_id: object) -> bool:
        with self._lock:
            return delivery_id in self._done


PostEvent = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Posts one asset event with the given ``extra`` and returns Airflow's answer (``id``...)."""


class AirflowAssetPoster:
    """Posts events of the deploy DAG's asset through Airflow's REST API (the asset id is looked up
    by URI once, and again after Airflow answers 404 for it)."""

    def __init__(self, client_factory: Callable[[], AirflowClient], asset_uri: str = ASSET_URI) -> None:
        self._client_factory = client_factory
        self._client: AirflowClient | None = None
        self.asset_uri = asset_uri
        self._asset_id: int | None = None
        self._lock = threading.Lock()

    def _client_now(self) -> AirflowClient:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def asset_id(self) -> int:
        if self._asset_id is None:
            asset = self._client_now().find_asset(uri=self.asset_uri)
            if asset is None:
                from conveyor.airflow_api import AirflowApiError

                raise AirflowApiError(
                    f"Airflow has no asset {self.asset_uri} (is the conveyor_deploy DAG parsed and "
                    "unpaused?)",
                    status_code=404,
                )
            self._asset_id = int(asset["id"])
        return self._asset_id

    def __call__(self, extra: Mapping[str, Any]) -> Mapping[str, Any]:
        from conveyor.airflow_api import AirflowApiError

        try:
            return self._client_now().create_asset_event(self.asset_id(), extra)
        except AirflowApiError as exc:
            if exc.status_code == 404:
                self._asset_id = None  # the asset was re-created: look it up again next time
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def airflow_client_from_settings(settings: Settings) -> AirflowClient:
    """The Airflow client the relay posts with: ``airflow_url``/``airflow_username``/``airflow_password``
    from the settings, the embedded stack's URL and generated admin password where they are empty."""
    from conveyor.airflow_api import AirflowClient

    url = settings.airflow_url or f"http://127.0.0.1:{settings.airflow_port}"
    password = settings.airflow_password.get_secret_value()
    if not password:
        from conveyor.stack import StackPaths, read_airflow_password

        password = read_airflow_password(StackPaths(settings.home), settings.airflow_username) or ""
    if not password:
        raise RelayError(
            "no Airflow password: set CONVEYOR_AIRFLOW_PASSWORD (the embedded stack's admin password "
            f"file in {settings.home}/airflow is not there yet)"
        )
    return AirflowClient(url, settings.airflow_username, password, timeout=10.0)


# ------------------------------------------------------------------------------------------------
# The app
# ------------------------------------------------------------------------------------------------


def create_app(
    settings: Settings | None = None,
    *,
    post_event: PostEvent | None = None,
    clock: Callable[[], float] = time.time,
    delivery_log_size: int = DELIVERY_LOG_SIZE,
) -> FastAPI:
    """The relay's FastAPI app (``uvicorn conveyor.registry_relay:create_app --factory``).

    Args:
        settings: The secret (``registry_webhook_secret``) and Airflow's address; the process's by default.
        post_event: Posts one asset event given its ``extra``; by default an
            :class:`AirflowAssetPoster` on the Airflow the settings name.
        clock: Unix time now (for the timestamp check).
        delivery_log_size: How many delivery ids are remembered.

    Raises:
        RelayError: No webhook secret is set (the relay never accepts unsigned deliveries).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from conveyor.airflow_api import AirflowApiError
    from conveyor.settings import get_settings

    settings = settings or get_settings()
    secret = settings.registry_webhook_secret.get_secret_value()
    if not secret:
        raise RelayError(
            "CONVEYOR_REGISTRY_WEBHOOK_SECRET is not set: the relay refuses to run without the secret "
            "MLflow signs its deliveries with"
        )
    poster: AirflowAssetPoster | None = None
    if post_event is None:
        poster = AirflowAssetPoster(lambda: airflow_client_from_settings(settings))
        post_event = poster
    deliveries = DeliveryLog(delivery_log_size)
    counts = {"relayed": 0, "duplicate": 0, "ignored": 0, "refused": 0, "airflow_failed": 0}
    counts_lock = threading.Lock()

    def count(key: str) -> None:
        with counts_lock:
            counts[key] += 1

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if poster is not None:
                poster.close()

    app = FastAPI(title="Conveyor registry relay", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.deliveries = deliveries
    app.state.counts = counts

    def refuse(exc: DeliveryRefused, delivery_id: str | None) -> JSONResponse:
        count("refused")
        log.warning("refused delivery %s: %s", delivery_id or "(no id)", exc)
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    @app.get("/health")
    def health() -> dict[str, Any]:
        with counts_lock:
            return {"status": "ok", **counts}

    async def receive(request: Request) -> JSONResponse:
        delivery_id = request.headers.get(DELIVERY_ID_HEADER)
        too_large = DeliveryRefused(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return refuse(too_large, delivery_id)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return refuse(too_large, delivery_id)
        try:
            verify_delivery(
                secret,
                delivery_id=delivery_id,
                timestamp=request.headers.get(TIMESTAMP_HEADER),
                signature=request.headers.get(SIGNATURE_HEADER),
                body=body,
                now=clock(),
            )
            delivery = parse_delivery(body)
            payload = alias_move_payload(delivery)
        except DeliveryRefused as exc:
            return refuse(exc, delivery_id)
        assert delivery_id is not None  # verify_delivery refuses a delivery without one
        if payload is None:
            count("ignored")
            log.info("delivery %s: %s is not a move to relay; ignored", delivery_id, event_name(delivery))
            return JSONResponse({"status": "ignored", "event": event_name(delivery)})
        if not deliveries.claim(delivery_id):
            count("duplicate")
            log.info("delivery %s was relayed already (or is being relayed); not posting again", delivery_id)
            return JSONResponse({"status": "duplicate", "delivery_id": delivery_id})
        try:
            event = await run_in_threadpool(post_event, asset_event_extra(payload))
        except (AirflowApiError, RelayError) as exc:
            deliveries.release(delivery_id)
            count("airflow_failed")
            log.warning("delivery %s: Airflow did not take the asset event: %s", delivery_id, exc)
            return JSONResponse(
                {"detail": f"Airflow did not take the asset event (MLflow will retry): {exc}"},
                status_code=503,
                headers={"Retry-After": "2"},
            )
        deliveries.done(delivery_id)
        count("relayed")
        log.info(
            "delivery %s: %s@%s -> v%s posted as asset event %s",
            delivery_id,
            payload["registered_model"],
            payload["alias"],
            payload["version"],
            event.get("id"),
        )
        return JSONResponse(
            {"status": "relayed", "asset_event_id": event.get("id"), "payload": payload}, status_code=200
        )

    # A plain Starlette route: the handler reads the raw body (the signature covers its exact bytes).
    app.router.add_route(WEBHOOK_PATH, receive, methods=["POST"], include_in_schema=False)
    return app


# ------------------------------------------------------------------------------------------------
# Registration
# ------------------------------------------------------------------------------------------------


def ensure_webhook(
    client: Any, url: str, secret: str, *, name: str = WEBHOOK_NAME, description: str | None = None
) -> str:
    """Create or update the MLflow webhook ``name`` so that it delivers alias moves to ``url``.

    Idempotent by name: an existing webhook of that name gets this URL, event, secret and status
    ACTIVE (MLflow never returns a secret, so it is always set again); further webhooks of the same
    name are deleted.

    Args:
        client: An ``MlflowClient`` of the registry (its server stores the secret encrypted with
            ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY``).
        url: Where MLflow delivers, e.g. ``https://relay.example.org/webhooks/mlflow``.
        secret: The secret the relay verifies signatures with.
        name: The webhook's name.
        description: Shown in MLflow; a default says what it is for.

    Returns:
        ``"created"`` or ``"updated"``.

    Raises:
        ValueError: ``secret`` is empty (the relay refuses unsigned deliveries).
    """
    if not secret:
        raise ValueError("ensure_webhook needs a secret: the relay refuses unsigned deliveries")
    description = description or "Conveyor: alias moves to the deploy DAG (conveyor.registry_relay)"
    same_name: list[Any] = []
    page_token: str | None = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=page_token)
        same_name.extend(w for w in page if w.name == name)
        page_token = page.token
        if not page_token:
            break
    if not same_name:
        client.create_webhook(
            name=name,
            url=url,
            events=[WEBHOOK_EVENT],
            description=description,
            secret=secret,
            status="ACTIVE",
        )
        return "created"
    keep, *extra = sorted(same_name, key=lambda w: (w.creation_timestamp or 0, w.webhook_id))
    client.update_webhook(
        keep.webhook_id,
        url=url,
        events=[WEBHOOK_EVENT],
        description=description,
        secret=secret,
        status="ACTIVE",
    )
    for duplicate in extra:
        client.delete_webhook(duplicate.webhook_id)
    return "updated"
