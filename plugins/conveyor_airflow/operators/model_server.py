"""Operators that deploy model versions to Conveyor's model server."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conveyor.serving.client import ModelServerClient
    from conveyor.serving.schemas import StageReport
    from conveyor_airflow.hooks.model_server import ModelServerHook


class ModelServerDeployOperator(BaseOperator):
    """Stage a version on the model server, check it, swap it in, and verify the server serves it.

    1. ``stage``: the server loads the version next to the serving one and replays its golden rows
       and a latency probe; serving traffic is untouched.
    2. Fail (no retries) when it did not load, a golden row differs, or, with
       ``require_within_budget``, its p95 latency is over the budget; the message carries the report.
    3. ``promote``: one reference swap, so no request fails.
    4. Poll ``/health/ready`` until the model reports ``version`` loaded and ready.

    Args:
        model_name: The server's model name, i.e. the spec name such as ``churn`` (templated).
        version: Registered model version to deploy (templated).
        model_server_conn_id: Airflow connection of the model server (password = admin token).
        require_within_budget: Refuse a version whose p95 latency exceeds the spec's budget.
        ready_timeout: Seconds to wait for the server to report the new version ready.
        request_timeout: Per-request timeout of the client, in seconds (staging loads a model).
        **kwargs: Passed to ``BaseOperator``.

    Returns (XCom):
        The stage report as JSON plus ``previous_version`` (what served before) and ``changed``.
    """

    template_fields: Sequence[str] = ("model_name", "version")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        model_name: str,
        version: str | int,
        model_server_conn_id: str = "model_server_default",
        require_within_budget: bool = True,
        ready_timeout: float = 120.0,
        request_timeout: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.model_server_conn_id = model_server_conn_id
        self.require_within_budget = require_within_budget
        self.ready_timeout = ready_timeout
        self.request_timeout = request_timeout

    @cached_property
    def hook(self) -> ModelServerHook:
        """The model server hook (built on first use, inside ``execute``)."""
        from conveyor_airflow.hooks.model_server import ModelServerHook

        return ModelServerHook(model_server_conn_id=self.model_server_conn_id, timeout=self.request_timeout)

    def execute(self, context: Context) -> dict[str, Any]:
        """Stage, check, promote and verify; see the class docstring."""
        from airflow.sdk.exceptions import AirflowFailException

        from conveyor.serving.client import ModelServerRefused

        name, version = str(self.model_name), str(self.version)
        client = self.hook.get_conn()
        try:
            self.log.info("Staging %s v%s on %s", name, version, self.hook.base_url)
            report = client.stage(name, version)
            summary: dict[str, Any] = report.model_dump(mode="json")
            self.log.info("Stage report: %s", json.dumps(summary, sort_keys=True))
            problems = self.problems(report)
            if problems:
                raise AirflowFailException(
                    f"{name} v{version} was not deployed: {'; '.join(problems)}. "
                    f"The serving version is unchanged. Stage report: {json.dumps(summary, sort_keys=True)}"
                )
            if not report.within_budget:
                self.log.warning("%s v%s is over its latency budget; deploying anyway", name, version)
            promoted = client.promote(name, version)
            self.log.info("%s: v%s now serves (was v%s)", name, promoted.version, promoted.previous_version)
            self._wait_until_serving(client, name, version)
        except ModelServerRefused as err:
            raise AirflowFailException(f"model server refused {name} v{version}: {err}") from err
        finally:
            client.close()
        return {**summary, "previous_version": promoted.previous_version, "changed": promoted.changed}

    def problems(self, report: StageReport) -> list[str]:
        """Why a stage report forbids promotion (empty when it may be promoted)."""
        if not report.loaded:
            return [f"it did not load ({report.error or 'no detail'})"]
        problems = []
        if not report.golden_passed:
            problems.append(
                f"its golden rows do not match the offline predictions (max |diff| {report.max_abs_diff}, "
                f"{report.prediction_mismatches} label mismatches of {report.n_golden})"
            )
        if self.require_within_budget and not report.within_budget:
            problems.append(
                f"p95 latency {report.p95_latency_ms} ms exceeds the budget of {report.latency_budget_ms} ms"
            )
        return problems

    def _wait_until_serving(self, client: ModelServerClient, name: str, version: str) -> None:
        from airflow.sdk.exceptions import AirflowException

        deadline = time.monotonic() + self.ready_timeout
        while True:
            doc = client.ready()
            model = (doc.get("models") or {}).get(name) or {}
            if str(model.get("version")) == version and model.get("ready"):
                self.log.info("Server reports %s v%s ready: %s", name, version, model.get("detail", ""))
                return
            if time.monotonic() >= deadline:
                raise AirflowException(
                    f"the server did not report {name} v{version} ready within {self.ready_timeout}s "
                    f"after promotion; last readiness: {json.dumps(model, sort_keys=True, default=str)}"
                )
            time.sleep(1.0)
