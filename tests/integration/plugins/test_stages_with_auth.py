"""The training stages against an MLflow server with basic auth, credentials from the connection.

The training DAG hands each stage ``MlflowHook().authenticated_tracking_uri()``; the stages build
their own client and use MLflow's fluent API too, so both must authenticate from that URI alone (no
``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` in the environment), and nothing the stages return (XCom)
may carry the password.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest

from conveyor_airflow.hooks.mlflow import MlflowHook

from .conftest import ADMIN_PASSWORD, ADMIN_USER, MlflowServer

pytestmark = pytest.mark.integration

END = date(2026, 11, 23)


def test_stages_register_through_basic_auth_with_the_hooks_credentials(
    mlflow_auth_server: MlflowServer, conveyor_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor import pipeline
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.stages import RunContext

    server = mlflow_auth_server
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    secret = quote(ADMIN_PASSWORD, safe="")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_STAGES", f"http://{ADMIN_USER}:{secret}@{server.host}:{server.port}"
    )
    hook = MlflowHook("mlflow_stages")
    uri = hook.authenticated_tracking_uri()
    assert hook.tracking_uri == server.uri and uri != server.uri

    spec = load_spec("breast_cancer")
    land_demo_data(spec, days=spec.data.window_days, end_day=END, seed=0)
    run = RunContext(
        model="breast_cancer",
        dag_id="conveyor_train_breast_cancer",
        dag_run_id="manual__auth",
        triggered_by=ADMIN_USER,
        window_end=END.isoformat(),
    )

    # Without the credentials the server refuses the first stage.
    with pytest.raises(Exception) as refused:
        pipeline.validate_data(run, tracking_uri=server.uri)
    why = str(refused.value)
    assert "401" in why or "Unauthorized" in why or "UNAUTHENTICATED" in why, why

    # While a stage logs (MLflow's fluent API included) the task's environment never holds the
    # password: a subprocess or an environment dump of the task would otherwise leak it.
    import os

    import mlflow.pyfunc

    environments: list[dict[str, str]] = []
    log_model = mlflow.pyfunc.log_model

    def watched_log_model(*args: object, **kwargs: object) -> object:
        environments.append(dict(os.environ))
        return log_model(*args, **kwargs)

    monkeypatch.setattr(mlflow.pyfunc, "log_model", watched_log_model)
    v = pipeline.validate_data(run, tracking_uri=uri)
    t = pipeline.train(run, validated=v, tracking_uri=uri)
    g = pipeline.evaluate_gate(run, validated=v, trained=t, tracking_uri=uri)
    assert g.registers, g
    p = pipeline.promote(run, decision=g)
    c = pipeline.compress(run, validated=v, trained=t, tracking_uri=uri)
    r = pipeline.register(
        run, validated=v, trained=t, decision=g, compressed=c, tracking_uri=uri, promotion=p
    )
    assert environments, "the trainer logged no model through the fluent API"
    for env in [*environments, dict(os.environ)]:
        # (AIRFLOW_CONN_MLFLOW_STAGES is this test's stand-in for the connection in Airflow's DB)
        leaked = [
            k
            for k, value in env.items()
            if (ADMIN_PASSWORD in value or secret in value) and k != "AIRFLOW_CONN_MLFLOW_STAGES"
        ]
        assert not leaked, leaked

    client = hook.get_conn()
    version = client.get_model_version(spec.registered_model_name, r.version)
    assert version.tags["conveyor.dag_run_id"] == "manual__auth"
    assert client.get_registered_model(spec.registered_model_name).aliases["challenger"] == r.version
    xcoms = json.dumps([result.xcom() for result in (run, v, t, g, p, c, r)])
    assert ADMIN_PASSWORD not in xcoms and secret not in xcoms
