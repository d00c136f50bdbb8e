"""The pipeline's stages as plain functions: JSON in, JSON out.

Each stage takes primitives (model name, URIs, run ids, small dicts from the previous stage) and
returns a small JSON-able dict, so an Airflow task (or a pod, or the CLI) is a one-line call and
XCom stays small. Data and models live in the data root and in MLflow, never in the return values.
Every stage is idempotent for the same DAG run: it logs into the same MLflow run and never creates a
second model version.
"""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import date
from typing import Any

from conveyor.config import ModelSpec, load_spec
from conveyor.errors import PermanentError
from conveyor.settings import REPO_ROOT

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"


def _client(tracking_uri: str) -> Any:
    import mlflow

    from conveyor.registry.tracking import client_for

    # Trainers log through MLflow's fluent API; point it at the same server as the client.
    mlflow.set_tracking_uri(tracking_uri)
    return client_for(tracking_uri)


def _run_key(dag_run_id: str) -> str:
    """A filesystem-safe key for a DAG run id (``manual__2026-11-23T10:00:00+00:00``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in dag_run_id)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def validate_data(
    model: str,
    *,
    dag_id: str,
    dag_run_id: str,
    tracking_uri: str,
    window_end: str,
    window_days: int | None = None,
) -> dict[str, Any]:
    """Load the data window, run the data contract, freeze a fingerprinted train/eval snapshot.

    Raises:
        PermanentError: the window has no data or a batch breaks the contract; nothing is frozen and
            the message names the failing checks and rows.
    """
    from conveyor.data.contracts import validate_batch
    from conveyor.data.landing import load_window
    from conveyor.data.snapshot import freeze_snapshot
    from conveyor.registry.tracking import get_or_create_run, log_json_artifact, log_text_artifact

    spec = load_spec(model)
    client = _client(tracking_uri)
    run_id = get_or_create_run(client, spec, dag_run_id=dag_run_id, dag_id=dag_id)
    end = date.fromisoformat(window_end)
    days = window_days or spec.data.window_days
    df = load_window(spec, end, days)
    report = validate_batch(spec, df)
    client.log_metric(run_id, "validation_rows", float(len(df)))
    client.log_metric(run_id, "validation_failed_checks", float(len(report.failed)))
    client.set_tag(run_id, "conveyor.validation", "passed" if report.success else "failed")
    log_json_artifact(client, run_id, json.loads(report.to_json()), "validation/report.json")
    log_text_artifact(client, run_id, report.markdown(), "validation/report.md")
    if not report.success:
        from conveyor.data.contracts import DataValidationError

        raise DataValidationError(report)
    snapshot = freeze_snapshot(spec, df, run_key=_run_key(dag_run_id))
    client.set_tag(run_id, "conveyor.data_fingerprint", snapshot.fingerprint)
    client.log_param(run_id, "window_end", window_end)
    client.log_param(run_id, "window_days", days)
    log.info(
        "validated %s rows of %s (%s..%s): fingerprint %s", len(df), model, end, days, snapshot.fingerprint
    )
    return {
        "run_id": run_id,
        "dag_run_id": dag_run_id,
        "snapshot": snapshot.model_dump(mode="json"),
        "fingerprint": snapshot.fingerprint,
        "rows": len(df),
        "checks": report.evaluated,
    }


def _snapshot(validated: dict[str, Any]) -> tuple[Any, Any]:
    from conveyor.data.snapshot import load_snapshot

    return load_snapshot(validated["snapshot"])


def train(model: str, *, validated: dict[str, Any], tracking_uri: str) -> dict[str, Any]:
    """Train the spec's trainer on the frozen snapshot and log the model into the DAG run's MLflow run."""
    from conveyor.training import train as train_model

    spec = load_spec(model)
    _client(tracking_uri)
    train_df, eval_df = _snapshot(validated)
    result = train_model(spec, train_df, eval_df, run_id=validated["run_id"])
    return result.model_dump(mode="json")


def evaluate_gate(
    model: str,
    *,
    validated: dict[str, Any],
    trained: dict[str, Any],
    tracking_uri: str,
    mode: str = "spec",
    force: bool = False,
) -> dict[str, Any]:
    """Champion vs challenger on the same frozen eval snapshot; the report goes to the MLflow run.

    Returns the decision plus ``register``: whether the pipeline goes on to compress and register.
    """
    from conveyor.evaluation.champion import evaluate, write_gate_report

    spec = load_spec(model)
    if mode != "spec":
        spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"mode": mode})})
    client = _client(tracking_uri)
    _, eval_df = _snapshot(validated)
    decision = evaluate(client, spec, trained["model_uri"], eval_df)
    write_gate_report(client, validated["run_id"], decision)
    register = decision.action == "register" or (force and decision.action != "dry_run")
    for reason in decision.reasons:
        log.info("gate: %s", reason)
    out = decision.model_dump(mode="json")
    out.update(
        {
            "register": register,
            "await_approval": decision.action == "await_approval" and not register,
            "forced": bool(force and decision.action != "register" and register),
        }
    )
    return out


def report_not_promoted(model: str, decision: dict[str, Any]) -> None:
    """Log why the challenger stops here; the run ends green as "not promoted" with nothing registered."""
    log.warning(
        "%s: challenger NOT promoted (action=%s). Reasons:\n  - %s",
        model,
        decision.get("action"),
        "\n  - ".join(decision.get("reasons", [])),
    )


def compress(
    model: str,
    *,
    validated: dict[str, Any],
    trained: dict[str, Any],
    tracking_uri: str,
    methods: list[str] | None = None,
) -> dict[str, Any]:
    """Build and measure compressed variants; keep the best within the spec's budget."""
    from conveyor.compression import compress as compress_model
    from conveyor.training.base import TrainResult

    spec = load_spec(model)
    if methods:
        spec = spec.model_copy(
            update={"compression": spec.compression.model_copy(update={"methods": tuple(methods)})}
        )
    _client(tracking_uri)
    train_df, eval_df = _snapshot(validated)
    result = compress_model(
        spec, TrainResult.model_validate(trained), train_df, eval_df, run_id=validated["run_id"]
    )
    return result.model_dump(mode="json")


def register(
    model: str,
    *,
    validated: dict[str, Any],
    trained: dict[str, Any],
    decision: dict[str, Any],
    compressed: dict[str, Any],
    tracking_uri: str,
    dag_id: str,
    dag_run_id: str,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register one model version for this DAG run (idempotent) and point ``challenger`` at it."""
    from conveyor.registry.aliases import get_alias_version, set_alias
    from conveyor.registry.versions import register_version

    spec = load_spec(model)
    client = _client(tracking_uri)
    model_uri = compressed["model_uri"]
    lineage = {
        "dag_id": dag_id,
        "dag_run_id": dag_run_id,
        "data_fingerprint": validated["fingerprint"],
        "validation": f"passed ({validated.get('checks', '?')} checks on {validated['rows']} rows)",
        "gate": ("forced: " if decision.get("forced") else "") + decision.get("action", "?"),
        "compression": compressed.get("chosen", "none"),
        "parent_model_uri": trained["model_uri"],
        "git_commit": _git_commit(),
        "params": json.dumps(params or {}, sort_keys=True, default=str),
        "trainer": spec.trainer.kind,
    }
    result = register_version(
        client, spec, model_uri=model_uri, run_id=validated["run_id"], dag_run_id=dag_run_id, lineage=lineage
    )
    current = get_alias_version(client, spec.registered_model_name, CHALLENGER)
    if current != result.version:
        set_alias(
            client,
            spec.registered_model_name,
            CHALLENGER,
            result.version,
            expected_version=current,
            actor=f"airflow:{dag_id}/{dag_run_id}",
            reason=f"gate {decision.get('action')}: " + "; ".join(decision.get("reasons", [])[:3]),
            dag_run_id=dag_run_id,
            details={"gate": decision, "compression": compressed.get("chosen")},
        )
    return {**result.model_dump(mode="json"), "alias": CHALLENGER}


def spec_for_registered_model(registered_name: str) -> ModelSpec:
    """The spec whose ``registered_model_name`` is ``registered_name``."""
    from conveyor.config import load_all_specs

    for spec in load_all_specs():
        if spec.registered_model_name == registered_name:
            return spec
    raise PermanentError(
        f"registered model {registered_name!r} has no spec in include/specs/; "
        "add a spec or stop pointing aliases of it at Conveyor"
    )
