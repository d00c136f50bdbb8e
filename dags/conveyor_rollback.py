"""
# Conveyor rollback: put an earlier version back in production

Manual only. Re-points `champion` of one model at an earlier version through the same path as a
deploy: the target is loaded into a staging slot of the model server and must load, answer its
golden rows and meet its latency budget; only then is it swapped in (no failed request), `champion`
moves with compare-and-set and a ledger entry naming who triggered the run and why, and the served
version is verified. A target that fails its checks is refused and the current champion keeps
serving. The version left is tagged `conveyor.deploy_status=rolled_back`, and `challenger` is removed
if it still names it (so it is not deployed again until someone moves `challenger` on purpose).

| Param | meaning |
|---|---|
| `model` | the spec name (`include/specs/<model>.yaml`) |
| `to_version` | a version number, or `previous`: the champion before the current one, from the ledger |
| `reason` | why, in words (kept in the ledger and on the version) |

The same from a terminal, without Airflow: `conveyor rollback MODEL [--to VERSION] --reason "..."`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from conveyor.config import scan_specs

_MODELS = sorted(spec.name for spec in scan_specs()[0]) or ["churn"]


@dag(
    dag_id="conveyor_rollback",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # a refused rollback is deterministic (it fails once); a registry or server outage is retried
    default_args={"owner": "conveyor", "retries": 1, "retry_delay": pendulum.duration(seconds=20)},
    doc_md=__doc__,
    tags=["conveyor", "deploy", "rollback"],
    params={
        "model": Param(_MODELS[0], type="string", enum=_MODELS, title="Model spec to roll back"),
        "to_version": Param(
            "previous",
            type="string",
            pattern=r"^(previous|[0-9]+)$",
            title="Version to put back",
            description="A version number, or `previous`: the champion before the current one (ledger).",
        ),
        "reason": Param("", type="string", minLength=1, maxLength=2000, title="Why (kept in the ledger)"),
    },
)
def conveyor_rollback() -> None:
    @task(pool="conveyor_serving")
    def rollback() -> dict:
        from conveyor.config import load_spec
        from conveyor.deploy.local import rollback as roll_back
        from conveyor_airflow.hooks.mlflow import MlflowHook
        from conveyor_airflow.hooks.model_server import ModelServerHook
        from conveyor_airflow.stage import run_stage

        ctx = get_current_context()
        params = ctx["params"]
        dag_run = ctx["dag_run"]
        who = getattr(dag_run, "triggering_user_name", None) or dag_run.run_type
        return run_stage(
            roll_back,
            MlflowHook().get_conn(),
            ModelServerHook().get_conn(),
            load_spec(params["model"]),
            to_version=params["to_version"],
            actor=f"airflow:{ctx['dag'].dag_id}/{ctx['run_id']} (by {who})",
            reason=params["reason"],
            dag_run_id=ctx["run_id"],
        )

    rollback()


conveyor_rollback()
