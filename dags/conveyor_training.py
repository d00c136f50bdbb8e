"""
# Conveyor training: validate-data → train → evaluate-gate → compress → register

One DAG per model spec in `include/specs/*.yaml` (`conveyor_train_<model>`).

| task | what it does |
|---|---|
| `validate_data` | loads the data window from the landing area, runs the model's Great Expectations contract, freezes a train/eval snapshot (fingerprinted). A bad batch fails here, naming the failing checks and rows. |
| `data_changed` | ends the run here, green, when the window is exactly the rows the current `champion` was trained on ("unchanged data"; every later task is skipped), unless `force_retrain`. |
| `train` | trains the spec's trainer (Keras 3 MLP, scikit-learn Pipeline or the team's own entrypoint, optionally tuned) for its task type and logs it to MLflow with signature, input example, golden rows and pinned requirements. |
| `evaluate_gate` | scores challenger and current `champion` on the same frozen eval snapshot; floors, minimum improvement, paired bootstrap, cold-start rule. |
| `gate` | branches: `promote` when the gate let the challenger through (or an override with a justification); `await_approval` (Airflow's HITL approval, gate mode `require_approval`, passing challengers only) → `promote` once a person approves; else `not_promoted` (nothing is compressed or registered). |
| `promote` | records who let the challenger through (the gate, the approver, or the override's user and justification); refuses anything else. Only after it succeeds do `compress` and `register` run. |
| `compress` | builds compressed variants (TFLite dynamic range), measures them in their serving runtime, keeps the best within budget. |
| `register` | checks the promotion against the gate decision once more, registers one model version per DAG run (idempotent) with lineage tags (who promoted it and how), then points the `challenger` alias at it — which starts `conveyor_deploy`. |

Trigger by hand from the UI ("Trigger DAG" with the form) or the REST API with the params below.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task

from conveyor.config import scan_specs
from conveyor_airflow.links import gate_report_task
from conveyor_airflow.stage import run_stage

if TYPE_CHECKING:
    from conveyor.stages import RunContext

log = logging.getLogger(__name__)

DEFAULT_ARGS = {"owner": "conveyor", "retries": 1, "retry_delay": pendulum.duration(seconds=30)}


def _mlflow_uri() -> str:
    from conveyor_airflow.hooks.mlflow import MlflowHook

    # Stages build their own MLflow client: give them the connection's credentials (never in XCom).
    return MlflowHook().authenticated_tracking_uri()


def _source_url(model: str) -> str | None:
    """The SQLAlchemy URL of a ``kind: sql`` data source's Airflow connection (it may hold a password:
    passed to the stage, never logged, never in XCom); ``None`` for file sources."""
    from conveyor.config import load_spec

    source = load_spec(model).data.source
    if source.kind != "sql":
        return None
    from conveyor_airflow.hooks.sql import sqlalchemy_url

    return sqlalchemy_url(source.conn_id)


def _run_context(model: str) -> RunContext:
    """What every stage is told about the DAG run: its ids, who triggered it, its params.

    Built from the task's own context (it never goes through XCom); no MLflow URI in it.
    """
    from conveyor.stages import RunContext

    ctx = get_current_context()
    params, dag_run = ctx["params"], ctx["dag_run"]
    return RunContext(
        model=model,
        dag_id=ctx["dag"].dag_id,
        dag_run_id=ctx["run_id"],
        triggered_by=dag_run.triggering_user_name,
        window_end=params["window_end"] or str(pendulum.instance(dag_run.run_after).date()),
        window_days=params["window_days"] or None,
        gate_mode=params["gate_mode"],
        compression=params["compression"] or None,
        force=params["force"],
        justification=params.get("justification"),
        force_retrain=params.get("force_retrain", False),
        commit=(params.get("commit") or "").strip() or None,
    )


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
            # Every optional Param allows null, so the trigger form submits with its defaults.
            "window_end": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Window end",
                description="Last landed day to train on (a date picker); empty = the run's logical date.",
            ),
            "window_days": Param(
                0, type="integer", minimum=0, title="Window length in days", description="0 = the spec's."
            ),
            "gate_mode": Param(
                "spec",
                type="string",
                enum=["spec", "enforce", "dry_run", "require_approval"],
                title="Gate mode",
                description=(
                    "spec: the spec's gate.mode; enforce registers only when the gate passes; dry_run "
                    "evaluates and reports, never registers; require_approval waits for a person to "
                    "approve a passing challenger (Browse → Required Actions)."
                ),
            ),
            "compression": Param(
                None,
                type=["null", "array"],
                items={"type": "string", "enum": ["tflite_dynamic_range", "none"]},
                title="Compression methods",
                description="Empty = the spec's compression.methods.",
            ),
            "force_retrain": Param(
                False,
                type="boolean",
                title="Retrain even if the data is unchanged",
                description="Without it a window whose rows are exactly the champion's training data ends "
                "the run early as 'unchanged data'.",
            ),
            "force": Param(
                False,
                type="boolean",
                title="Override: register even if the gate rejects",
                description="Needs a justification; recorded on the version and in the alias ledger. "
                "Never applies to dry_run.",
                section="Override the gate (needs a justification)",
            ),
            "justification": Param(
                None,
                type=["null", "string"],
                title="Override justification",
                description="Why this challenger should be registered although the gate may reject it "
                "(required with force).",
                section="Override the gate (needs a justification)",
            ),
            "commit": Param(
                None,
                type=["null", "string"],
                maxLength=200,
                title="Source commit",
                description="The git commit of the model code and specs this run trains (set by "
                "`conveyor ci`); recorded as the version's conveyor.git_commit. Empty = the worker's "
                "checkout.",
            ),
        },
        render_template_as_native_obj=True,
    )
    def training() -> None:
        # Each task hands its stage the run's context and the upstream results as XCom (plain JSON);
        # the stage reads them into the models of conveyor.stages and run_stage returns its .xcom().
        @task(pool="conveyor_training")
        def validate_data() -> dict:
            from conveyor import pipeline

            return run_stage(
                pipeline.validate_data,
                _run_context(spec_name),
                tracking_uri=_mlflow_uri(),
                source_url=_source_url(spec_name),
            )

        # An unchanged window skips every task after this one (a short circuit ignores their trigger
        # rules), so the run ends green without training, gating or registering.
        @task.short_circuit
        def data_changed(validated: dict) -> bool:
            return not validated["unchanged"]

        @task(pool="conveyor_training")
        def train(validated: dict) -> dict:
            from conveyor import pipeline

            return run_stage(
                pipeline.train, _run_context(spec_name), validated=validated, tracking_uri=_mlflow_uri()
            )

        # Same as @task, plus the "MLflow gate report" button (the decision's report_url) on its
        # task instance page.
        @gate_report_task
        def evaluate_gate(validated: dict, trained: dict) -> dict:
            from conveyor import pipeline

            return run_stage(
                pipeline.evaluate_gate,
                _run_context(spec_name),
                validated=validated,
                trained=trained,
                tracking_uri=_mlflow_uri(),
            )

        @task.branch
        def gate(decision: dict) -> str:
            if decision["register"]:
                return "promote"
            return "await_approval" if decision["await_approval"] else "not_promoted"

        @task
        def not_promoted(decision: dict) -> None:
            from conveyor import pipeline

            pipeline.report_not_promoted(_run_context(spec_name), decision)

        # gate_mode=require_approval: a person approves in the Airflow UI (Required Actions). Reject
        # skips `promote` (the approval's only downstream), and with it compress and register.
        await_approval = ApprovalOperator(
            task_id="await_approval",
            subject=f"Promote the new {spec_name} challenger?",
            body=(
                "{{ ti.xcom_pull(task_ids='evaluate_gate')['reasons'] | join('\n') }}\n\n"
                "Gate report: {{ ti.xcom_pull(task_ids='evaluate_gate')['report_url'] }}"
            ),
            # a plain timedelta: Airflow 3.3 ships it to the supervisor, which cannot encode pendulum's
            response_timeout=timedelta(days=2),
        )

        # Runs when the branch chose it (await_approval is then skipped) or after an approval. The
        # branch skips it directly when it chose not_promoted, and a Reject skips it, so neither
        # path reaches compress or register, whose trigger rule is all_success.
        @task(trigger_rule="none_failed_min_one_success")
        def promote(decision: dict) -> dict:
            from conveyor import pipeline

            approval = get_current_context()["ti"].xcom_pull(task_ids="await_approval")
            return run_stage(pipeline.promote, _run_context(spec_name), decision=decision, approval=approval)

        @task(pool="conveyor_training")
        def compress(validated: dict, trained: dict) -> dict:
            from conveyor import pipeline

            return run_stage(
                pipeline.compress,
                _run_context(spec_name),
                validated=validated,
                trained=trained,
                tracking_uri=_mlflow_uri(),
            )

        @task
        def register(
            validated: dict, trained: dict, decision: dict, compressed: dict, promoted: dict
        ) -> dict:
            from conveyor import pipeline

            return run_stage(
                pipeline.register,
                _run_context(spec_name),
                validated=validated,
                trained=trained,
                decision=decision,
                compressed=compressed,
                tracking_uri=_mlflow_uri(),
                promotion=promoted,
            )

        validated = validate_data()
        trained = train(validated)
        data_changed(validated) >> trained
        decision = evaluate_gate(validated, trained)
        branch = gate(decision)
        promoted = promote(decision)
        branch >> [promoted, await_approval, not_promoted(decision)]
        await_approval >> promoted
        compressed = compress(validated, trained)
        promoted >> compressed
        register(validated, trained, decision, compressed, promoted)

    return training()


def build_spec_error_dag(file_name: str, error: str) -> object:
    """A spec file that does not validate still shows up, as a DAG that says what is wrong.

    Raising here would take every training DAG of this file down with it (Airflow drops all the DAGs
    of a file that fails to import); instead the others load, this one's page shows the error, and
    triggering it fails once with the same message. Fix the file and the real DAG replaces it at the
    DAG processor's next parse.
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", file_name.removesuffix(".yaml"))
    message = f"model spec {file_name} is invalid, so its training DAG cannot be built: {error}"
    log.error(message)

    @dag(
        dag_id=f"conveyor_train_{stem}",
        description=f"INVALID SPEC {file_name}: fix the file (see the DAG docs)",
        doc_md=f"# Invalid model spec `{file_name}`\n\n```\n{error}\n```\n\nFix the file; the training "
        "DAG replaces this one at the DAG processor's next parse.",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        default_args=DEFAULT_ARGS,
        tags=["conveyor", "training"],
    )
    def spec_error() -> None:
        @task
        def check_spec() -> None:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(message)

        check_spec()

    return spec_error()


# One bad spec file never takes the other models' DAGs down (scan_specs reports it instead).
_specs, _spec_errors = scan_specs()
for _spec in _specs:
    globals()[f"conveyor_train_{_spec.name}"] = build_training_dag(
        _spec.name, _spec.schedule, _spec.description
    )
for _file_name, _error in _spec_errors.items():
    _broken = build_spec_error_dag(_file_name, _error)
    globals()[getattr(_broken, "dag_id", _file_name)] = _broken
