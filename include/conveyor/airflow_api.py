"""A small client for Airflow 3's REST API (``/api/v2``), used by the CLI, the demo and the tests.

Conveyor's domain code never imports Airflow: it talks to a running Airflow over HTTP. Airflow 3
authenticates API calls with a JWT; with the simple auth manager (what ``airflow standalone``
uses) the token comes from ``POST /auth/token`` with a username and password. The client fetches a
token lazily and fetches a new one once when a call answers 401 (tokens expire after
``[api_auth] jwt_expiration_time``, a day by default).

Every failed call raises :class:`AirflowApiError`, which names the call, the HTTP status and
Airflow's own explanation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from conveyor.errors import ConveyorError

#: Dag-run states after which nothing more happens.
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: Task-instance states that mean the task will not run again in this dag run.
FINISHED_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})

RunCallback = Callable[[dict[str, Any], list[dict[str, Any]]], None]


class AirflowApiError(ConveyorError):
    """A call to Airflow's REST API failed (or an awaited state never came)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_api_datetime(value: str | None) -> datetime | None:
    """Parse a timestamp as Airflow's API writes it (ISO 8601, ``Z`` for UTC)."""
    if not value:
        return None
    return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def _explain(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:500]


class AirflowClient:
    """Airflow 3 REST API client authenticated as one simple-auth-manager user.

    Args:
        base_url: The API server, e.g. ``http://127.0.0.1:8080``.
        username: A user of the simple auth manager (``admin`` on the local stack).
        password: Its password (the local stack reads it from standalone's generated file).
        timeout: Seconds per HTTP call.
        transport: An httpx transport (tests hand in ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self._token: str | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"AirflowClient({self.base_url!r}, username={self.username!r})"

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _fetch_token(self) -> str:
        try:
            response = self._http.post(
                "/auth/token", json={"username": self.username, "password": self._password}
            )
        except httpx.HTTPError as exc:
            raise AirflowApiError(
                f"POST /auth/token: Airflow at {self.base_url} is unreachable: {exc}"
            ) from exc
        if response.status_code not in (200, 201):
            raise AirflowApiError(
                f"POST /auth/token as {self.username!r} answered {response.status_code}: "
                f"{_explain(response)}",
                status_code=response.status_code,
            )
        token = response.json().get("access_token")
        if not token:
            raise AirflowApiError("POST /auth/token answered without an access_token")
        return str(token)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        expect: Sequence[int] = (200,),
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one authenticated call; on 401 fetch a new token and retry once."""
        for attempt in (1, 2):
            if self._token is None:
                self._token = self._fetch_token()
            all_headers = {"Authorization": f"Bearer {self._token}", **(headers or {})}
            try:
                response = self._http.request(method, path, params=params, json=json, headers=all_headers)
            except httpx.HTTPError as exc:
                raise AirflowApiError(
                    f"{method} {path}: Airflow at {self.base_url} is unreachable: {exc}"
                ) from exc
            if response.status_code == 401 and attempt == 1:
                self._token = None
                continue
            if response.status_code not in expect:
                raise AirflowApiError(
                    f"{method} {path} answered {response.status_code}: {_explain(response)}",
                    status_code=response.status_code,
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- health and DAGs ------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /api/v2/monitor/health``: status of the metadata DB, scheduler, triggerer, DAG processor."""
        try:
            response = self._http.get("/api/v2/monitor/health")
        except httpx.HTTPError as exc:
            raise AirflowApiError(
                f"GET /api/v2/monitor/health: Airflow at {self.base_url} is unreachable: {exc}"
            ) from exc
        if response.status_code != 200:
            raise AirflowApiError(
                f"GET /api/v2/monitor/health answered {response.status_code}: {_explain(response)}",
                status_code=response.status_code,
            )
        return dict(response.json())

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the API describes it, or None when it has not been parsed (yet)."""
        response = self._request("GET", f"/api/v2/dags/{quote(dag_id)}", expect=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return dict(self._json("PATCH", f"/api/v2/dags/{quote(dag_id)}", json={"is_paused": paused}))

    def import_errors(self) -> list[dict[str, Any]]:
        """DAG files that failed to import (``filename``, ``stack_trace``)."""
        body = self._json("GET", "/api/v2/importErrors", params={"limit": 100})
        return list(body.get("import_errors", []))

    def wait_for_dag(
        self, dag_id: str, timeout: float = 180.0, *, unpause: bool = False, poll: float = 2.0
    ) -> dict[str, Any]:
        """Wait until ``dag_id`` is parsed and not paused.

        Args:
            dag_id: The DAG to wait for.
            timeout: Seconds to wait.
            unpause: Unpause the DAG if it is paused (instead of waiting for someone else to).
            poll: Seconds between checks.

        Raises:
            AirflowApiError: Not parsed (or still paused) in time; the message lists import errors.
        """
        deadline = time.monotonic() + timeout
        dag: dict[str, Any] | None = None
        while True:
            dag = self.get_dag(dag_id)
            if dag is not None and dag.get("is_paused") and unpause:
                dag = self.set_paused(dag_id, False)
            if dag is not None and not dag.get("is_paused") and not dag.get("is_stale"):
                return dag
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
        if dag is not None:
            raise AirflowApiError(
                f"DAG {dag_id} is parsed but paused after {timeout:.0f}s; unpause it in the UI "
                "or call wait_for_dag(..., unpause=True)"
            )
        errors = self.import_errors()
        details = "".join(
            f"\n--- {e.get('filename')}\n{str(e.get('stack_trace', ''))[-1500:]}" for e in errors
        )
        raise AirflowApiError(
            f"DAG {dag_id} was not parsed within {timeout:.0f}s. "
            + (f"Import errors:{details}" if errors else "No import errors reported; is the DAG file there?")
        )

    # -- DAG runs -------------------------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        logical_date: datetime | None = None,
        *,
        run_id: str | None = None,
        note: str | None = None,
    ) -> str:
        """Start a manual run of ``dag_id`` and return its ``dag_run_id``.

        Args:
            dag_id: The DAG.
            conf: The run's params (validated by Airflow against the DAG's ``Param``s).
            logical_date: The run's logical date; now (UTC) when omitted.
            run_id: An explicit run id; Airflow generates ``manual__<time>`` when omitted.
            note: A note shown on the run in the UI.
        """
        body: dict[str, Any] = {
            "logical_date": _utc(logical_date or datetime.now(UTC)).isoformat(),
            "conf": dict(conf or {}),
        }
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        run = self._json("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns", json=body, expect=(200,))
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"))

    def dag_runs(
        self, dag_id: str, limit: int = 25, order_by: str = "-run_after", **filters: Any
    ) -> list[dict[str, Any]]:
        """Runs of ``dag_id``, newest first by default.

        Args:
            dag_id: The DAG.
            limit: At most this many runs.
            order_by: A field of the run (``run_after``, ``start_date``, ``id``...), ``-`` for descending.
            **filters: Extra query parameters of ``GET /dags/{dag_id}/dagRuns``, e.g.
                ``run_after_gte=<iso time>`` or ``state=["running"]``.
        """
        params: dict[str, Any] = {"limit": limit, "order_by": order_by}
        for key, value in filters.items():
            params[key] = value.isoformat() if isinstance(value, datetime) else value
        body = self._json("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns", params=params)
        return list(body.get("dag_runs", []))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The task instances of one run (``task_id``, ``state``, ``try_number``, ``duration``...)."""
        body = self._json(
            "GET",
            f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances",
            params={"limit": 100},
        )
        return list(body.get("task_instances", []))

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, *, map_index: int = -1
    ) -> str:
        """The log of one task try as plain text (one event per line)."""
        body = self._json(
            "GET",
            f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"
            f"/taskInstances/{quote(task_id)}/logs/{max(try_number, 0)}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        lines: list[str] = []
        for item in body.get("content", []):
            if isinstance(item, str):
                lines.append(item)
                continue
            event = str(item.get("event", ""))
            level = item.get("level")
            stamp = item.get("timestamp") or ""
            prefix = f"[{stamp}] {str(level).upper() + ' ' if level else ''}"
            lines.append(f"{prefix}{event}" if stamp or level else event)
            if item.get("error_detail"):
                lines.append(str(item["error_detail"]))
        return "\n".join(lines)

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", *, map_index: int = -1
    ) -> Any:
        """The XCom ``key`` a task instance pushed (its return value by default), as plain JSON.

        Returns ``None`` when there is none (the task did not run, failed, or returned nothing).
        """
        response = self._request(
            "GET",
            f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"
            f"/taskInstances/{quote(task_id)}/xcomEntries/{quote(key)}",
            params={"map_index": map_index},
            expect=(200, 404),
        )
        if response.status_code == 404:
            return None
        value = response.json().get("value")
        # The native form is what the database holds: a JSON document, or its text.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 1800.0,
        on_update: RunCallback | None = None,
        *,
        poll: float = 2.0,
    ) -> dict[str, Any]:
        """Poll a run until it succeeds or fails and return its final state.

        Args:
            dag_id: The DAG.
            run_id: The run.
            timeout: Seconds to wait before raising.
            on_update: Called after every poll with the run and its task instances.
            poll: Seconds between polls.

        Raises:
            AirflowApiError: The run did not finish within ``timeout`` (its state is in the message).
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if on_update is not None:
                on_update(run, self.task_instances(dag_id, run_id))
            if run.get("state") in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowApiError(
                    f"run {run_id} of {dag_id} is still {run.get('state')} after {timeout:.0f}s"
                )
            time.sleep(poll)

    def wait_for_new_run(
        self, dag_id: str, after: datetime, timeout: float = 600.0, *, poll: float = 2.0
    ) -> dict[str, Any]:
        """Wait for a run of ``dag_id`` queued after ``after`` (e.g. one an asset event set off).

        Returns the oldest such run, so two calls with the same ``after`` agree.

        Raises:
            AirflowApiError: No such run within ``timeout``.
        """
        after = _utc(after)
        deadline = time.monotonic() + timeout
        while True:
            runs = self.dag_runs(dag_id, limit=50, order_by="-id")
            fresh = [r for r in runs if (_queued_at(r) or datetime.min.replace(tzinfo=UTC)) >= after]
            if fresh:
                return min(fresh, key=lambda r: _queued_at(r) or after)
            if time.monotonic() > deadline:
                raise AirflowApiError(
                    f"no run of {dag_id} was queued after {after.isoformat()} within {timeout:.0f}s"
                )
            time.sleep(poll)

    # -- assets ---------------------------------------------------------------------------------

    def find_asset(self, *, uri: str | None = None, name: str | None = None) -> dict[str, Any] | None:
        """The active asset whose URI (and/or name) is exactly the one given, or None.

        ``GET /api/v2/assets`` filters with ``uri_pattern``/``name_pattern``, which match substrings
        (SQL ``LIKE``); the exact match is picked from the answer.

        Raises:
            ValueError: Neither ``uri`` nor ``name`` is given.
        """
        if uri is None and name is None:
            raise ValueError("find_asset needs a uri or a name")
        params: dict[str, Any] = {"limit": 100}
        if uri is not None:
            params["uri_pattern"] = uri
        if name is not None:
            params["name_pattern"] = name
        body = self._json("GET", "/api/v2/assets", params=params)
        for asset in body.get("assets", []):
            if (uri is None or asset.get("uri") == uri) and (name is None or asset.get("name") == name):
                return dict(asset)
        return None

    def create_asset_event(self, asset_id: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``POST /api/v2/assets/events``: record an event of the asset, as a producing task would.

        DAGs scheduled on the asset see it in ``triggering_asset_events`` with this ``extra`` (Airflow
        adds ``"from_rest_api": true``).

        Returns:
            The event (``id``, ``asset_id``, ``extra``, ``timestamp``...).

        Raises:
            AirflowApiError: 404 when no asset has ``asset_id``.
        """
        body = {"asset_id": asset_id, "extra": dict(extra or {})}
        return dict(self._json("POST", "/api/v2/assets/events", json=body))

    # -- human-in-the-loop ----------------------------------------------------------------------

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1) -> dict[str, Any]:
        """A human-in-the-loop task's request and answer (``subject``, ``options``, ``chosen_options``...)."""
        return dict(
            self._json(
                "GET",
                f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"
                f"/taskInstances/{quote(task_id)}/{map_index}/hitlDetails",
            )
        )

    def extra_links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """A task instance's operator extra links, ``{name: url}`` (``None`` for an empty link)."""
        answer = self._json(
            "GET",
            f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"
            f"/taskInstances/{quote(task_id)}/links",
        )
        return dict(answer.get("extra_links") or {})

    def respond_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen_options: Sequence[str],
        params_input: Mapping[str, Any] | None = None,
        *,
        map_index: int = -1,
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop task as this client's user (what *Required Actions* does).

        Returns:
            Airflow's answer: ``responded_by``, ``responded_at``, ``chosen_options``.

        Raises:
            AirflowApiError: 404 while the task has not asked yet, 409 once it was answered.
        """
        return dict(
            self._json(
                "PATCH",
                f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"
                f"/taskInstances/{quote(task_id)}/{map_index}/hitlDetails",
                json={"chosen_options": list(chosen_options), "params_input": dict(params_input or {})},
            )
        )

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: Sequence[str], timeout: float = 600.0
    ) -> str:
        """Poll until ``task_id`` of the run is in one of ``states`` and return that state.

        Raises:
            AirflowApiError: Not within ``timeout``, or the run ended first.
        """
        deadline = time.monotonic() + timeout
        while True:
            tis = {ti["task_id"]: ti.get("state") for ti in self.task_instances(dag_id, run_id)}
            if tis.get(task_id) in states:
                return str(tis[task_id])
            run_state = self.dag_run(dag_id, run_id).get("state")
            if run_state in TERMINAL_RUN_STATES or time.monotonic() > deadline:
                raise AirflowApiError(
                    f"{task_id} of {dag_id} run {run_id} is {tis.get(task_id)} (run {run_state}), "
                    f"not one of {list(states)}"
                )
            time.sleep(2.0)

    # -- connections, pools, variables ----------------------------------------------------------

    def get_connection(self, conn_id: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/api/v2/connections/{quote(conn_id)}", expect=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

    def set_connection(self, connection: Mapping[str, Any]) -> str:
        """Create or update a connection (``connection_id``, ``conn_type``, ``host``, ``port``...).

        Returns:
            ``"created"`` or ``"updated"``.
        """
        body = {k: v for k, v in connection.items() if v is not None}
        path = "/api/v2/connections"
        response = self._request("POST", path, json=body, expect=(201, 409))
        if response.status_code == 201:
            return "created"
        self._request("PATCH", f"{path}/{quote(str(body['connection_id']))}", json=body)
        return "updated"

    def get_pool(self, name: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/api/v2/pools/{quote(name)}", expect=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

    def set_pool(self, name: str, slots: int, description: str | None = None) -> str:
        """Create or update a pool. Returns ``"created"`` or ``"updated"``."""
        body: dict[str, Any] = {"name": name, "slots": slots, "include_deferred": False}
        if description is not None:
            body["description"] = description
        response = self._request("POST", "/api/v2/pools", json=body, expect=(201, 409))
        if response.status_code == 201:
            return "created"
        self._request("PATCH", f"/api/v2/pools/{quote(name)}", json=body)
        return "updated"

    def get_variable(self, key: str) -> str | None:
        response = self._request("GET", f"/api/v2/variables/{quote(key)}", expect=(200, 404))
        return None if response.status_code == 404 else response.json().get("value")

    def set_variable(self, key: str, value: str, description: str | None = None) -> str:
        """Create or update a variable. Returns ``"created"`` or ``"updated"``."""
        body: dict[str, Any] = {"key": key, "value": value}
        if description is not None:
            body["description"] = description
        response = self._request("POST", "/api/v2/variables", json=body, expect=(201, 409))
        if response.status_code == 201:
            return "created"
        self._request("PATCH", f"/api/v2/variables/{quote(key)}", json=body)
        return "updated"


def _queued_at(run: Mapping[str, Any]) -> datetime | None:
    return parse_api_datetime(run.get("queued_at")) or parse_api_datetime(run.get("run_after"))
