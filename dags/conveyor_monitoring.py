"""
# Conveyor monitoring: drift and live quality of what production serves

Hourly, for every model spec with a `champion`: reads the model server's prediction log for the
look-back window, compares each feature's distribution with the champion's training reference
(Evidently), joins delayed labels from the landing area to compute live quality with the task's
metrics (classification: accuracy against `monitor.min_live_accuracy`; regression: RMSE against
`monitor.max_live_rmse`), and logs the report to the MLflow experiment `conveyor/<model>/monitoring`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, get_current_context, task

from conveyor.config import scan_specs
from conveyor.names import CHAMPION


@dag(
    dag_id="conveyor_monitor",
    schedule="15 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "conveyor", "retries": 1, "retry_delay": pendulum.duration(minutes=1)},
    doc_md=__doc__,
    tags=["conveyor", "monitoring"],
)
def conveyor_monitor() -> None:
    @task
    def monitor(model: str) -> dict:
        from conveyor.config import load_spec
        from conveyor.monitoring.monitor import run_monitor
        from conveyor.registry.aliases import get_alias_version
        from conveyor_airflow.hooks.mlflow import MlflowHook

        spec = load_spec(model)
        client = MlflowHook().get_conn()
        champion = get_alias_version(client, spec.registered_model_name, CHAMPION)
        if champion is None:
            return {"model": model, "skipped": "no champion yet"}
        now = pendulum.instance(get_current_context()["dag_run"].run_after)
        report = run_monitor(client, spec, now=now, served_version=champion)
        return report.model_dump(mode="json")

    # Every spec that validates, read at each parse: a spec added to a running stack is monitored
    # from the next parse on, and a broken one (reported by its training DAG) is left out.
    monitor.expand(model=[spec.name for spec in scan_specs()[0]])


conveyor_monitor()
