"""Event trigger that fires when a model alias in the MLflow registry needs deploying.

Used through an ``AssetWatcher`` so that the deploy DAG runs when the training DAG (or a person in
the MLflow UI) points ``challenger`` at a new version::

    Asset("conveyor-registry-aliases", watchers=[AssetWatcher(
        name="mlflow-challenger", trigger=MlflowAliasChangedTrigger(mlflow_conn_id="mlflow_default"))])

How Airflow 3.3 runs an asset-watcher trigger (read from ``airflow/jobs/triggerer_job_runner.py``,
``airflow/models/trigger.py`` and ``airflow/dag_processing/collection.py``) and what follows:

* One ``Trigger`` row per distinct ``(classpath, serialize() kwargs)``: the DAG processor hashes
  the kwargs (``BaseEventTrigger.hash``), so equal kwargs in several assets share one running
  trigger. ``__init__`` normalises (sorts, de-duplicates) the lists so equal configurations hash
  equal. The row lives while an active, *unpaused* DAG schedules on the asset.
* The triggerer re-instantiates the class from those kwargs every time it (re)starts the trigger:
  after a triggerer restart or hand-over, when the DAG is unpaused, and also about one second
  after ``run()`` *returns or raises* (the row is still assigned, so the next ``load_triggers``
  loop creates it again). Nothing in the instance survives any of these.
* Every yielded ``TriggerEvent`` becomes an ``AssetEvent`` whose ``extra`` is
  ``{"from_trigger": True, "payload": <event payload>}``; the consuming DAG reads it from
  ``triggering_asset_events[asset][i].extra["payload"]``. The runner keeps iterating ``run()``
  after a yield, so a watcher may yield many events from one long-lived generator.

So the baseline cannot live in the trigger's memory alone (a restart would forget a move made while
it was down, or re-fire for an old one after every yield-and-return), and the trigger must not mark
anything itself (no side effects, and marking before the event is persisted could lose it).
Instead "is there work?" is a function of a durable marker the deploy side owns, in the registry
itself, plus the moves this ``run()`` saw:

    alias A of model M points at version V, V is not what the ``champion`` alias names
    (``settled_alias``), and either the registered-model tag ``conveyor.handled.<A>`` names another
    version than V (the deploy side has not decided on this move), or this ``run()`` saw A name
    something else at an earlier poll (A was moved, perhaps back to a version decided before).

The deploy side writes ``conveyor.handled.<A> = V`` when it deploys or rejects V; a rollback that
removes ``challenger`` writes ``none``. So every move counts, including back to a version that was
deployed or rejected before. A registry written before that tag existed has none on its models;
there the version tag ``conveyor.deploy_status`` (``settled_tag``) with a value in
:data:`SETTLED_STATUSES` marks V decided, as it used to.

Within one ``run()`` the trigger yields one event per move and does not repeat it while the alias
stays there (the deploy run is in flight). After any restart it fires once more for a move that is
still undecided: delivery is at least once, never lost, never endless; the deploy DAG is idempotent
("champion already names V" is a no-op). Moves made and undone between two polls are not seen
(three moves within one poll interval are one event for the last). The trigger never returns, so
the triggerer never has to recreate it.

When the watched alias is the settled alias itself (watching ``champion``), there is no marker to
compare with; the trigger then reports moves after the baseline of its first poll, and a restart
takes a new baseline (a move made while it was down is not reported).

Event payload (small JSON, the asset event's ``extra["payload"]``)::

    {"registered_model": "conveyor-churn", "alias": "challenger", "version": "7",
     "previous_version": "6", "detected_at": "2026-01-01T02:03:04+00:00"}

``previous_version`` is what this ``run()`` saw the alias name at the poll before (``None`` when the
alias was unset, or unknown because the trigger just started); the deploy DAG reads the current
``champion`` itself for its compare-and-set.

The trigger talks to MLflow's REST API (``/api/2.0/mlflow/...``) with ``httpx.AsyncClient``
instead of ``MlflowClient``: the calls are truly asynchronous (the triggerer's event loop is shared
by every trigger), they use this trigger's own timeout and backoff instead of MLflow's blocking
retry loop (minutes per call when the server is down), and the triggerer process does not import
mlflow. Any failure (server down, HTTP error, bad connection) is logged and retried with
exponential backoff up to ``max_backoff`` seconds; ``run()`` never raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from conveyor.names import CHALLENGER, CHAMPION, DEPLOY_STATUS_TAG, DEPLOY_STATUSES, handled_tag

if TYPE_CHECKING:
    import httpx

SETTLED_STATUSES: frozenset[str] = DEPLOY_STATUSES
"""Values of the ``settled_tag`` version tag that mean "decided" in a registry without handled tags."""

DEFAULT_SETTLED_ALIAS = CHAMPION
DEFAULT_SETTLED_TAG = DEPLOY_STATUS_TAG
_SEARCH_PAGE_SIZE = 200
_API = "/api/2.0/mlflow"


class RegistryUnavailableError(RuntimeError):
    """The registry did not answer a poll; the trigger backs off and polls again."""


@dataclass(frozen=True)
class AliasObservation:
    """One watched alias of one registered model as seen in one poll."""

    registered_model: str
    alias: str
    version: str | None
    pending: bool
    """The deploy side has not decided on this alias naming this version (durable, from the registry)."""
    serving: bool = False
    """The version is the one the settled alias (champion) names: nothing to deploy."""


class MlflowAliasChangedTrigger(BaseEventTrigger):
    """Fire one event per model alias that points at a version waiting to be deployed.

    Args:
        tracking_uri: MLflow tracking server URL (``http://host:port``); ignored when
            ``mlflow_conn_id`` is set. Put no credentials here (kwargs are stored in the metadata DB).
        aliases: Aliases to watch (default ``["challenger"]``).
        registered_models: Registered model names to watch; ``None`` watches every model.
        poll_interval: Seconds between polls of the registry.
        mlflow_conn_id: Airflow connection to read the URL and basic-auth credentials from, in
            the triggerer, at run time (preferred over ``tracking_uri`` when the server needs auth).
        settled_alias: Alias naming the version that production serves (``champion``).
        settled_tag: Model-version tag whose value in :data:`SETTLED_STATUSES` marks a decided version
            in a registry whose models carry no ``conveyor.handled.<alias>`` tag yet.
        max_backoff: Upper bound in seconds for the wait after consecutive failed polls.
        request_timeout: Timeout in seconds for each HTTP request to MLflow.

    Raises:
        ValueError: Neither ``tracking_uri`` nor ``mlflow_conn_id`` is given, no alias is watched,
            or an interval is not positive (found when the DAG is parsed, not in the triggerer).
    """

    def __init__(
        self,
        *,
        tracking_uri: str | None = None,
        aliases: Iterable[str] | None = None,
        registered_models: Iterable[str] | None = None,
        poll_interval: float = 10.0,
        mlflow_conn_id: str | None = None,
        settled_alias: str = DEFAULT_SETTLED_ALIAS,
        settled_tag: str = DEFAULT_SETTLED_TAG,
        max_backoff: float = 300.0,
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.tracking_uri = tracking_uri.rstrip("/") if tracking_uri else None
        self.aliases = sorted(set(aliases if aliases is not None else [CHALLENGER]))
        self.registered_models = sorted(set(registered_models)) if registered_models is not None else None
        self.poll_interval = float(poll_interval)
        self.mlflow_conn_id = mlflow_conn_id
        self.settled_alias = settled_alias
        self.settled_tag = settled_tag
        self.max_backoff = float(max_backoff)
        self.request_timeout = float(request_timeout)
        if not self.tracking_uri and not self.mlflow_conn_id:
            raise ValueError("MlflowAliasChangedTrigger needs tracking_uri or mlflow_conn_id")
        if not self.aliases:
            raise ValueError("MlflowAliasChangedTrigger needs at least one alias to watch")
        if self.poll_interval <= 0 or self.max_backoff <= 0 or self.request_timeout <= 0:
            raise ValueError("poll_interval, max_backoff and request_timeout must be positive")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and the (normalised) kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "tracking_uri": self.tracking_uri,
                "aliases": list(self.aliases),
                "registered_models": list(self.registered_models)
                if self.registered_models is not None
                else None,
                "poll_interval": self.poll_interval,
                "mlflow_conn_id": self.mlflow_conn_id,
                "settled_alias": self.settled_alias,
                "settled_tag": self.settled_tag,
                "max_backoff": self.max_backoff,
                "request_timeout": self.request_timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the registry forever; yield one event per newly pending alias (see the module doc)."""
        import httpx

        # (model, alias) -> the pending version already reported by this run(): no repeats.
        last_fired: dict[tuple[str, str], str] = {}
        # (model, alias) -> what it named at the previous poll; None until the first poll succeeds.
        last_seen: dict[tuple[str, str], str | None] | None = None
        failures = 0
        endpoint: tuple[str, tuple[str, str] | None] | None = None
        async with httpx.AsyncClient(timeout=self.request_timeout, follow_redirects=True) as http:
            while True:
                try:
                    endpoint = endpoint or await self._endpoint()
                    observations = await self.observe(http, *endpoint)
                except Exception as err:  # never let the triggerer recreate us in a tight loop
                    endpoint = None  # re-read the connection: its password may have been rotated
                    failures += 1
                    delay = min(self.poll_interval * 2 ** (failures - 1), self.max_backoff)
                    self.log.warning(
                        "MLflow registry poll failed (%d in a row); retrying in %.1fs: %s",
                        failures,
                        delay,
                        err,
                    )
                    await asyncio.sleep(delay)
                    continue
                if failures:
                    self.log.info("MLflow registry reachable again after %d failed polls", failures)
                failures = 0

                for obs in observations:
                    key = (obs.registered_model, obs.alias)
                    previous = last_seen.get(key) if last_seen is not None else None
                    moved = last_seen is not None and key in last_seen and previous != obs.version
                    if obs.alias == self.settled_alias:
                        # No marker to compare with: report moves after the first poll's baseline.
                        if moved and obs.version is not None:
                            yield self._event(obs, previous_version=previous)
                        continue
                    if obs.version is None or obs.serving:
                        last_fired.pop(key, None)
                    elif moved or (obs.pending and last_fired.get(key) != obs.version):
                        # a move seen by this run() counts even back to a version decided before
                        last_fired[key] = obs.version
                        yield self._event(obs, previous_version=previous)
                    elif not obs.pending:
                        last_fired.pop(key, None)
                last_seen = {(o.registered_model, o.alias): o.version for o in observations}
                await asyncio.sleep(self.poll_interval)

    def _event(self, obs: AliasObservation, *, previous_version: str | None) -> TriggerEvent:
        payload = {
            "registered_model": obs.registered_model,
            "alias": obs.alias,
            "version": obs.version,
            "previous_version": previous_version,
            "detected_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.log.info(
            "%s@%s now names v%s (was %s)", obs.registered_model, obs.alias, obs.version, previous_version
        )
        return TriggerEvent(payload)

    async def _endpoint(self) -> tuple[str, tuple[str, str] | None]:
        """Resolve the base URL and basic-auth pair, from the connection when one is named."""
        if not self.mlflow_conn_id:
            assert self.tracking_uri is not None  # checked in __init__
            return self.tracking_uri, None
        from airflow.sdk import BaseHook

        from conveyor_airflow.hooks._urls import url_from_connection

        conn = await BaseHook.aget_connection(self.mlflow_conn_id)
        auth = (conn.login, conn.password or "") if conn.login else None
        return url_from_connection(conn), auth

    async def observe(
        self, http: httpx.AsyncClient, base_url: str, auth: tuple[str, str] | None = None
    ) -> list[AliasObservation]:
        """Read every watched alias once, sorted by model and alias.

        Args:
            http: The HTTP client.
            base_url: MLflow tracking server URL without credentials.
            auth: Basic-auth ``(user, password)``, or ``None``.

        Returns:
            One observation per watched model and alias (``version`` ``None`` when unset).

        Raises:
            RegistryUnavailableError: A request failed or MLflow answered with an error.
        """
        models = await self._watched_models(http, base_url, auth)
        observations = []
        for model in sorted(models, key=lambda m: m["name"]):
            aliases = {a["alias"]: str(a["version"]) for a in model.get("aliases", [])}
            model_tags = {t["key"]: t.get("value", "") for t in model.get("tags", [])}
            settled_version = aliases.get(self.settled_alias)
            for alias in self.aliases:
                version = aliases.get(alias)
                pending = serving = False
                if version is not None and alias != self.settled_alias:
                    serving = version == settled_version
                    handled = model_tags.get(handled_tag(alias))
                    if serving:
                        pending = False
                    elif handled is not None:
                        pending = handled != version
                    else:  # a registry from before handled tags: the version's own status decides
                        tags = await self._version_tags(http, base_url, auth, model["name"], version)
                        pending = tags.get(self.settled_tag) not in SETTLED_STATUSES
                observations.append(AliasObservation(model["name"], alias, version, pending, serving))
        return observations

    async def _watched_models(
        self, http: httpx.AsyncClient, base_url: str, auth: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = []
        if self.registered_models is not None:
            for name in self.registered_models:
                body = await self._get(http, base_url, auth, "/registered-models/get", {"name": name})
                if body is not None:  # a model not registered yet has no aliases to watch
                    models.append(body["registered_model"])
            return models
        page_token: str | None = None
        while True:
            params: dict[str, Any] = {"max_results": _SEARCH_PAGE_SIZE}
            if page_token:
                params["page_token"] = page_token
            body = await self._get(http, base_url, auth, "/registered-models/search", params)
            body = body or {}
            models.extend(body.get("registered_models", []))
            page_token = body.get("next_page_token")
            if not page_token:
                return models

    async def _version_tags(
        self, http: httpx.AsyncClient, base_url: str, auth: tuple[str, str] | None, name: str, version: str
    ) -> dict[str, str]:
        params = {"name": name, "version": version}
        body = await self._get(http, base_url, auth, "/model-versions/get", params)
        if body is None:  # deleted between the two requests: treat as untagged, the next poll settles it
            return {}
        return {t["key"]: t.get("value", "") for t in body["model_version"].get("tags", [])}

    @staticmethod
    async def _get(
        http: httpx.AsyncClient,
        base_url: str,
        auth: tuple[str, str] | None,
        path: str,
        params: dict[str, Any],
    ) -> dict[str, Any] | None:
        """GET an MLflow REST endpoint; ``None`` for RESOURCE_DOES_NOT_EXIST."""
        import httpx

        url = f"{base_url}{_API}{path}"
        try:
            response = await http.get(url, params=params, auth=auth)
        except httpx.HTTPError as err:
            raise RegistryUnavailableError(f"GET {url} failed: {err!r}") from err
        if response.status_code == 404:
            try:
                if response.json().get("error_code") == "RESOURCE_DOES_NOT_EXIST":
                    return None
            except ValueError:
                pass
        if response.status_code != 200:
            detail = response.text[:300]
            raise RegistryUnavailableError(f"GET {url} answered {response.status_code}: {detail}")
        body: dict[str, Any] = response.json()
        return body
