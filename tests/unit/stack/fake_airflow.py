"""A tiny in-memory stand-in for the parts of Airflow 3's REST API that Conveyor uses.

It answers like Airflow does (status codes, field names, JWT from ``POST /auth/token``, 401 for a
stale token, 409 on a duplicate create) so :class:`conveyor.airflow_api.AirflowClient` can be
exercised without a 40-second Airflow start. The integration tests run the same calls for real.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx


class FakeAirflow:
    def __init__(self, username: str = "admin", password: str = "pw") -> None:
        self.username = username
        self.password = password
        self.valid_tokens: set[str] = set()
        self.token_requests = 0
        self.connections: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, dict[str, Any]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.dags: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.task_instances: dict[str, list[dict[str, Any]]] = {}
        self.import_errors: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.triggered: list[dict[str, Any]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    # -- request handling -------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.calls.append((method, path))
        if path == "/auth/token" and method == "POST":
            self.token_requests += 1
            body = json.loads(request.content)
            if body != {"username": self.username, "password": self.password}:
                return httpx.Response(401, json={"detail": "Invalid credentials"})
            token = secrets.token_hex(8)
            self.valid_tokens.add(token)
            return httpx.Response(201, json={"access_token": token})
        if path == "/api/v2/monitor/health":
            return httpx.Response(200, json={"metadatabase": {"status": "healthy"}})
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return httpx.Response(401, json={"detail": "Not authenticated"})
        body = json.loads(request.content) if request.content else None
        parts = path.removeprefix("/api/v2/").split("/")
        kind = parts[0]
        if kind in ("connections", "pools", "variables"):
            return self._crud(kind, method, parts[1] if len(parts) > 1 else None, body)
        if kind == "importErrors":
            return httpx.Response(200, json={"import_errors": self.import_errors})
        if kind == "dags":
            return self._dags(method, parts[1:], body, request)
        return httpx.Response(404, json={"detail": f"no route {path}"})

    def _crud(self, kind: str, method: str, key: str | None, body: Any) -> httpx.Response:
        store = getattr(self, kind)
        id_field = {"connections": "connection_id", "pools": "name", "variables": "key"}[kind]
        if method == "GET" and key:
            if key not in store:
                return httpx.Response(404, json={"detail": f"{key} not found"})
            item = dict(store[key])
            if kind == "connections" and item.get("password"):
                item["password"] = "***"
            return httpx.Response(200, json=item)
        if method == "POST":
            if kind == "pools" and "include_deferred" not in body:
                body = {**body, "include_deferred": False}
            if body[id_field] in store:
                return httpx.Response(409, json={"detail": f"{body[id_field]} already exists"})
            store[body[id_field]] = body
            return httpx.Response(201, json=body)
        if method == "PATCH" and key:
            if key not in store:
                return httpx.Response(404, json={"detail": f"{key} not found"})
            if kind == "pools" and "include_deferred" not in body:  # as Airflow 3.3 answers
                return httpx.Response(422, json={"detail": [{"loc": ["include_deferred"], "msg": "missing"}]})
            store[key] = {**store[key], **body}
            return httpx.Response(200, json=store[key])
        return httpx.Response(405, json={"detail": "method not allowed"})

    def _dags(self, method: str, parts: list[str], body: Any, request: httpx.Request) -> httpx.Response:
        dag_id = parts[0]
        if len(parts) == 1:
            if dag_id not in self.dags:
                return httpx.Response(404, json={"detail": f"DAG {dag_id} not found"})
            if method == "PATCH":
                self.dags[dag_id].update(body)
            return httpx.Response(200, json=self.dags[dag_id])
        if parts[1] == "dagRuns" and len(parts) == 2 and method == "POST":
            if "logical_date" not in body:
                return httpx.Response(422, json={"detail": "logical_date: Field required"})
            run = {
                "dag_run_id": body.get("dag_run_id") or f"manual__{body['logical_date']}",
                "dag_id": dag_id,
                "state": "queued",
                "queued_at": body["logical_date"],
                "conf": body.get("conf", {}),
            }
            self.triggered.append(body)
            self.runs.setdefault(dag_id, []).append(run)
            return httpx.Response(200, json=run)
        if parts[1] == "dagRuns" and len(parts) == 2 and method == "GET":
            return httpx.Response(200, json={"dag_runs": list(reversed(self.runs.get(dag_id, [])))})
        if parts[1] == "dagRuns" and len(parts) == 3:
            run_id = parts[2]
            for run in self.runs.get(dag_id, []):
                if run["dag_run_id"] == run_id:
                    return httpx.Response(200, json=run)
            return httpx.Response(404, json={"detail": f"run {run_id} not found"})
        if parts[1] == "dagRuns" and parts[3] == "taskInstances" and len(parts) == 4:
            return httpx.Response(200, json={"task_instances": self.task_instances.get(parts[2], [])})
        if parts[1] == "dagRuns" and "logs" in parts:
            task_id = parts[4]
            lines = [
                {"timestamp": "2026-01-01T00:00:00Z", "event": f"{task_id} line {i}", "level": "info"}
                for i in range(50)
            ]
            return httpx.Response(200, json={"content": lines, "continuation_token": None})
        return httpx.Response(404, json={"detail": "no route"})
