"""
# Conveyor deploy: registry alias change → checked rollout → `champion`

Scheduled on the asset `mlflow_registry_aliases`, which an `AssetWatcher` feeds from
`MlflowAliasChangedTrigger`: whenever a `challenger` alias is set or moved in the MLflow registry —
by the training DAG or by a person in the MLflow UI, to a new version or back to one deployed or
rejected before — this DAG runs. (The deploy records the move it decided on in the registered-model
tag `conveyor.handled.challenger`; moving `challenger` again is a new request.)

| task | what it does |
|---|---|
| `plan` | the latest alias event per model wins (Airflow batches events; older ones are logged as superseded); re-reads the registry and skips models whose challenger already is champion; versions a later move overtook are tagged `superseded`. |
| `deploy` | per model: loads the candidate into a staging slot of the model server, replays its golden rows against its offline predictions and checks the latency budget, swaps it in (no failed request), then moves `champion` with compare-and-set and a ledger entry. A rejected candidate is tagged and the old champion keeps serving. |

Trigger by hand with `model` (spec name) to redeploy that model's current `challenger`. To go back
to an earlier version, use `conveyor_rollback` (or `conveyor rollback MODEL`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetWatcher, Param, dag, get_current_context, task

from conveyor.names import CHALLENGER, REGISTRY_ALIASES_ASSET, REGISTRY_ALIASES_ASSET_URI
from conveyor_airflow.stage import run_stage
from conveyor_airflow.triggers.mlflow_alias import MlflowAliasChangedTrigger

registry_aliases = Asset(
    name=REGISTRY_ALIASES_ASSET,
    uri=REGISTRY_ALIASES_ASSET_URI,
    watchers=[
        AssetWatcher(
            name="mlflow_challenger_alias_watcher",
            trigger=MlflowAliasChangedTrigger(
                mlflow_conn_id="mlflow_default", aliases=[CHALLENGER], poll_interval=5.0
            ),
        )
    ],
)


@dag(
    dag_id="conveyor_deploy",
    schedule=[registry_aliases],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "conveyor", "retries": 1, "retry_delay": pendulum.duration(seconds=20)},
    doc_md=__doc__,
    tags=["conveyor", "deploy"],
    params={"model": Param("", type="string", title="Model spec to redeploy (manual runs only)")},
)
def conveyor_deploy() -> None:
    @task
    def plan() -> list[dict]:
        from conveyor.deploy.local import plan_deployments
        from conveyor_airflow.hooks.mlflow import MlflowHook

        ctx = get_current_context()
        events: list[dict] = []
        for asset_events in ctx["triggering_asset_events"].values():
            # A watcher's event arrives as extra={"from_trigger": True, "payload": {...}}.
            events.extend(dict((ev.extra or {}).get("payload") or {}) for ev in asset_events)
        if ctx["params"].get("model"):
            from conveyor.config import load_spec

            spec = load_spec(ctx["params"]["model"])
            events.append({"registered_model": spec.registered_model_name, "detected_at": "manual"})
        return plan_deployments(MlflowHook().get_conn(), events)

    @task(pool="conveyor_serving")
    def deploy(item: dict) -> dict:
        from conveyor.config import load_spec
        from conveyor.deploy.local import deploy_candidate
        from conveyor_airflow.hooks.mlflow import MlflowHook
        from conveyor_airflow.hooks.model_server import ModelServerHook

        ctx = get_current_context()
        return run_stage(
            deploy_candidate,
            MlflowHook().get_conn(),
            ModelServerHook().get_conn(),
            load_spec(item["model"]),
            item["version"],
            expected_champion=item["expected_champion"],
            actor=f"airflow:{ctx['dag'].dag_id}/{ctx['run_id']}",
            dag_run_id=ctx["run_id"],
        )

    deploy.expand(item=plan())


conveyor_deploy()
