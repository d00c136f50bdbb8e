"""An in-memory Airflow whose training runs end as scripted, for ``conveyor ci``'s tests.

Extends the REST API stand-in of the stack tests (:class:`unit.stack.fake_airflow.FakeAirflow`: JWT
auth, DAGs, triggering, runs, task instances, logs) with what ``conveyor ci`` reads after a run:
XCom entries (``.../taskInstances/{task}/xcomEntries/{key}``, the value as the metadata database
holds it: JSON text) and a human-in-the-loop task's answer (``.../{map_index}/hitlDetails``). A
triggered run is already finished, in the state of the :class:`Script` set for its DAG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from unit.stack.fake_airflow import FakeAirflow

#: Task states of a run that registered its challenger.
REGISTERED = {
    "validate_data": "success",
    "data_changed": "success",
    "train": "success",
    "evaluate_gate": "success",
    "gate": "success",
    "promote": "success",
    "await_approval": "skipped",
    "not_promoted": "skipped",
    "compress": "success",
    "register": "success",
}


@dataclass
class Script:
    """How the next run of a DAG ends: its state, its tasks' states and their return values."""

    state: str = "success"
    tasks: dict[str, str] = field(default_factory=lambda: dict(REGISTERED))
    xcoms: dict[str, Any] = field(default_factory=dict)
    approval: dict[str, Any] | None = None

    @classmethod
    def with_states(cls, state: str = "success", **states: str) -> Script:
        return cls(state=state, tasks={**REGISTERED, **states})


class FakeTrainingAirflow(FakeAirflow):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, Script] = {}
        self.xcoms: dict[tuple[str, str, str], Any] = {}
        self.approvals: dict[tuple[str, str], dict[str, Any]] = {}
        #: Store XCom values natively (as the Task Execution API may) instead of as JSON text.
        self.native_xcom = False

    def add_dag(self, dag_id: str, script: Script, *, paused: bool = False) -> None:
        self.dags[dag_id] = {"dag_id": dag_id, "is_paused": paused, "is_stale": False}
        self.scripts[dag_id] = script

    def _dags(self, method: str, parts: list[str], body: Any, request: httpx.Request) -> httpx.Response:
        dag_id = parts[0]
        if len(parts) == 7 and parts[5] == "xcomEntries" and method == "GET":
            key = (dag_id, parts[2], parts[4])
            if parts[6] != "return_value" or key not in self.xcoms:
                return httpx.Response(404, json={"detail": f"XCom entry with key: `{parts[6]}` not found"})
            value = self.xcoms[key]
            return httpx.Response(
                200, json={"key": parts[6], "value": value if self.native_xcom else json.dumps(value)}
            )
        if len(parts) == 7 and parts[6] == "hitlDetails" and method == "GET":
            answer = self.approvals.get((dag_id, parts[2]))
            if answer is None:
                return httpx.Response(404, json={"detail": "no HITL detail"})
            return httpx.Response(200, json=answer)
        response = super()._dags(method, parts, body, request)
        if len(parts) == 2 and parts[1] == "dagRuns" and method == "POST" and response.status_code == 200:
            self._finish(dag_id, response.json()["dag_run_id"])
        return response

    def _finish(self, dag_id: str, run_id: str) -> None:
        script = self.scripts[dag_id]
        for run in self.runs[dag_id]:
            if run["dag_run_id"] == run_id:
                run["state"] = script.state
        self.task_instances[run_id] = [
            {"task_id": task, "state": state, "try_number": 1, "map_index": -1}
            for task, state in script.tasks.items()
        ]
        for task, value in script.xcoms.items():
            self.xcoms[(dag_id, run_id, task)] = value
        if script.approval is not None:
            self.approvals[(dag_id, run_id)] = script.approval
