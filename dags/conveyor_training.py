"""
# Conveyor training: validate-data → train → evaluate-gate → compress → register

One DAG per model spec in `include/specs/*.yaml` (`conveyor_train_<model>`).

| task | what it does |
|---|---|
| `validate_data` | loads the data window from the landing area, runs the model's Great Expectations contract, freezes a train/eval snapshot (fingerprinted). A bad batch fails here, naming the failing checks and rows. |
| `train` | trains the spec's trainer (Keras 3 MLP or scikit-learn Pipeline) and logs it to MLflow with signature, input example, golden rows and pinned requirements. |
| `evaluate_gate` | scores challenger and current `champion` on the same frozen eval snapshot; floors, minimum improvement, paired bootstrap, cold-start rule. |
| `gate` | branches: `promote` → `compress` when the gate passed; `await_approval` (Airflow's HITL approval, gate mode `require_approval`) → `compress` once a person approves; else `not_promoted` (nothing is registered). |
| `compress` | builds compressed variants (TFLite dynamic range), measures them in their serving runtime, keeps the best within budget. |
| `register` | one model version per DAG run (idempotent) with lineage tags, then points the `challenger` alias at it — which starts `conveyor_deploy`. |

Trigger by hand from the UI ("Trigger DAG" with the form) or the REST API with the params below.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task

from conveyor.config import load_all_specs
from conveyor_airflow.stage import run_stage

DEFAULT_ARGS = {"owner": "conveyor", "retries": 1, "retry_delay": pendulum.duration(seconds=30)}


def _mlflow_uri() -> str:
    from conveyor_airflow.hooks.mlflow import MlflowHook

    # Stages build their own MLflow client: give them the connection's credentials (never in XCom).
    return MlflowHook().authenticated_tracking_uri()


def _run_context() -> dict:
    """The few context values stages need, as plain JSON."""
    ctx = get_current_context()
    run_after = ctx["dag_run"].run_after
    return {
        "dag_id": ctx["dag"].dag_id,
        "dag_run_id": ctx["run_id"],
        "run_day": str(pendulum.instance(run_after).date()),
        "params": dict(ctx["params"]),
    }


def build_training_dag(spec_name: str, schedule: str | None, description: str) -> object:
    @dag(
        dag_id=f"conveyor_train_{spec_name}",
        description=description or f"Train, gate, compress and register {spec_name}",
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        doc_md=__doc__,
        tags=["conveyor", "training", spec_name],
        params={
            "window_end": Param(
                "",
                type="string",
                title="Window end (YYYY-MM-DD)",
                description="Last landed day to train on; empty = the run's logical date.",
            ),
            "window_days": Param(0, type="integer", minimum=0, title="Window length in days (0 = spec)"),
            "gate_mode": Param(
                "spec",
                type="string",
                enum=["spec", "enforce", "dry_run", "require_approval"],
                title="Gate mode",
                description=(
                    "enforce registers only when the gate passes; dry_run never registers; "
                    "require_approval waits for a person to approve a passing challenger in the UI."
                ),
            ),
            "compression": Param(
                [],
                type="array",
                items={"type": "string", "enum": ["tflite_dynamic_range", "none"]},
                title="Compression methods (empty = spec)",
            ),
            "force": Param(False, type="boolean", title="Register even if the gate fails"),
        },
        render_template_as_native_obj=True,
    )
    def training() -> None:
        @task(pool="conveyor_training")
        def validate_data() -> dict:
            from conveyor import pipeline

            run = _run_context()
            return run_stage(
                pipeline.validate_data,
                spec_name,
                dag_id=run["dag_id"],
                dag_run_id=run["dag_run_id"],
                tracking_uri=_mlflow_uri(),
                window_end=run["params"]["window_end"] or run["run_day"],
                window_days=run["params"]["window_days"] or None,
            )

        @task(pool="conveyor_training")
        def train(validated: dict) -> dict:
            from conveyor import pipeline

            return run_stage(pipeline.train, spec_name, validated=validated, tracking_uri=_mlflow_uri())

        @task
        def evaluate_gate(validated: dict, trained: dict) -> dict:
            from conveyor import pipeline

            params = _run_context()["params"]
            return run_stage(
                pipeline.evaluate_gate,
                spec_name,
                validated=validated,
                trained=trained,
                tracking_uri=_mlflow_uri(),
                mode=params["gate_mode"],
                force=params["force"],
            )

        @task.branch
        def gate(decision: dict) -> str:
            if decision["register"]:
                return "promote"
            return "await_approval" if decision["await_approval"] else "not_promoted"

        @task
        def not_promoted(decision: dict) -> None:
            from conveyor import pipeline

            pipeline.report_not_promoted(spec_name, decision)

        promote = EmptyOperator(task_id="promote")
        # gate_mode=require_approval: a person approves in the Airflow UI (Required Actions); Reject
        # skips compress and register, so nothing is registered.
        await_approval = ApprovalOperator(
            task_id="await_approval",
            subject=f"Promote the new {spec_name} challenger?",
            body="{{ ti.xcom_pull(task_ids='evaluate_gate')['reasons'] | join('\n') }}",
            response_timeout=pendulum.duration(days=2),
        )

        @task(pool="conveyor_training", trigger_rule="none_failed_min_one_success")
        def compress(validated: dict, trained: dict) -> dict:
            from conveyor import pipeline

            params = _run_context()["params"]
            return run_stage(
                pipeline.compress,
                spec_name,
                validated=validated,
                trained=trained,
                tracking_uri=_mlflow_uri(),
                methods=params["compression"] or None,
            )

        @task
        def register(validated: dict, trained: dict, decision: dict, compressed: dict) -> dict:
            from conveyor import pipeline

            run = _run_context()
            return run_stage(
                pipeline.register,
                spec_name,
                validated=validated,
                trained=trained,
                decision=decision,
                compressed=compressed,
                tracking_uri=_mlflow_uri(),
                dag_id=run["dag_id"],
                dag_run_id=run["dag_run_id"],
                params=run["params"],
            )

        validated = validate_data()
        trained = train(validated)
        decision = evaluate_gate(validated, trained)
        branch = gate(decision)
        compressed = compress(validated, trained)
        branch >> [promote, await_approval, not_promoted(decision)]
        [promote, await_approval] >> compressed
        register(validated, trained, decision, compressed)

    return training()


for _spec in load_all_specs():
    globals()[f"conveyor_train_{_spec.name}"] = build_training_dag(
        _spec.name, _spec.schedule, _spec.description
    )
