"""The pipeline's stages as plain functions: typed models in, typed models out.

Each stage takes the run's :class:`~conveyor.stages.RunContext` and the results of the stages before
it, and returns a frozen model of :mod:`conveyor.stages` whose ``.xcom()`` is small JSON, so an
Airflow task (or a pod, or the CLI) is a one-line call and XCom stays small. A stage accepts a
result either as its model or as that JSON (what a task gets from XCom) and reads it once, at the
top. Data and models live in the data root and in MLflow, never in the results; the MLflow tracking
URI (it may carry credentials) is a separate argument and in no result. Every stage is idempotent
for the same DAG run: it logs into the same MLflow run and never creates a second model version.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from conveyor.config import ModelSpec, load_spec
from conveyor.errors import PermanentError
from conveyor.evaluation.promotion import APPROVE, SCHEDULER_ACTOR, Promotion, authorize
from conveyor.names import CHALLENGER, CHAMPION
from conveyor.registry.session import MlflowSession
from conveyor.registry.tracking import (
    DATA_FINGERPRINT_TAG,
    LABEL_MIX_TAG,
    OUTCOME_TAG,
    QUARANTINE_URI_TAG,
    QUARANTINED_ROWS_TAG,
)
from conveyor.settings import REPO_ROOT
from conveyor.stages import (
    CompressionResult,
    GateOutcome,
    Registered,
    RunContext,
    TrainResult,
    Validated,
)

log = logging.getLogger(__name__)

#: The ``conveyor.outcome`` of a run that ended early because its data is the champion's.
UNCHANGED_DATA = "unchanged_data"


def _session(tracking_uri: str) -> MlflowSession:
    """The stage's one MLflow session (the URI may carry credentials: never put in ``os.environ``)."""
    return MlflowSession(tracking_uri)


def _run_key(dag_run_id: str) -> str:
    """A filesystem-safe key for a DAG run id (``manual__2026-11-23T10:00:00+00:00``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in dag_run_id)


def _git_commit() -> str:
    """The commit of the checkout this process runs from; ``unknown`` without git or a repository."""
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


class RunParamsError(PermanentError, ValueError):
    """The run's params contradict each other or are malformed; the run fails at its first task."""


def check_run_params(
    model: str, *, window_end: str, force: bool = False, justification: str | None = None
) -> date:
    """Check what a person typed into the trigger form before any work is done.

    Returns:
        ``window_end`` as a date.

    Raises:
        RunParamsError: ``window_end`` is not a ``YYYY-MM-DD`` date, or ``force`` is set without a
            non-empty ``justification``.
    """
    try:
        end = date.fromisoformat(str(window_end))
    except ValueError:
        raise RunParamsError(
            f"{model}: window_end {window_end!r} is not a date; give the last landed day as YYYY-MM-DD "
            "(or leave it empty for the run's logical date)"
        ) from None
    if force and not (justification or "").strip():
        raise RunParamsError(
            f"{model}: force (override the gate) needs a justification: trigger again with a non-empty "
            "'justification' saying why this challenger should be registered although the gate may reject "
            "it; it is recorded on the model version and in the alias ledger"
        )
    return end


def validate_data(
    run: RunContext | Mapping[str, Any], *, tracking_uri: str, source_url: str | None = None
) -> Validated:
    """Load the data window, run the data contract, freeze a fingerprinted train/eval snapshot.

    Rows that fail a check of severity ``quarantine`` are set aside: written to
    ``quarantine/<model>/<run_key>/rows.parquet`` (each with the checks it failed; rewritten by a re-run
    of the same DAG run, removed when a re-run quarantines nothing) and left out of everything that
    follows. The ``label_mix`` check compares the window's label shares with those the current
    ``champion`` was trained on (its version's ``conveyor.label_mix`` tag; no champion or no tag, no
    check). The clean rows' label mix goes into the result and onto the MLflow run, and from there
    onto the version :func:`register` creates.

    When the clean rows' fingerprint equals the one the current ``champion`` was trained on, nothing
    is frozen and the result says ``unchanged``: the DAG ends there (retraining on the same rows gives
    the same model), unless ``force_retrain``.

    The window is ``run.window_days`` (or the spec's) days up to ``run.window_end``, read from the
    spec's ``data.source`` (the landing folder by default). A ``kind: sql`` source needs ``source_url``:
    the SQLAlchemy URL of its Airflow connection (credentials included; never logged or returned).

    Raises:
        RunParamsError: the run's params are malformed (see :func:`check_run_params`); nothing ran.
        PermanentError: a ``kind: sql`` source and no ``source_url`` (the message names the connection);
            the source cannot be read (unreachable database, refused credentials, failing query).
        PermanentError: the window has no data or a batch breaks the contract (including more
            quarantined rows than ``data.max_quarantine_share``); nothing is frozen and the message names
            the failing checks and rows.
    """
    run = RunContext.of(run)
    model, dag_run_id = run.model, run.dag_run_id
    end = check_run_params(model, window_end=run.window_end, force=run.force, justification=run.justification)
    from conveyor.data.contracts import DataValidationError, label_mix, unreadable_report, validate_batch
    from conveyor.data.landing import UnreadableBatchError, load_window
    from conveyor.data.snapshot import fingerprint, freeze_snapshot
    from conveyor.registry.tracking import get_or_create_run, set_run_tags

    spec = load_spec(model)
    source = spec.data.source
    if source.kind == "sql" and not source_url:
        raise PermanentError(
            f"{model}: data.source is a SQL query through the Airflow connection {source.conn_id!r}, but "
            "validate_data was given no source_url: resolve that connection to a SQLAlchemy URL "
            "(conveyor_airflow.hooks.sql.sqlalchemy_url) and pass it"
        )
    client = _session(tracking_uri).client()
    run_id = get_or_create_run(client, spec, dag_run_id=dag_run_id, dag_id=run.dag_id)
    days = run.window_days or spec.data.window_days
    try:
        df = load_window(spec, end, days, source_url=source_url)
    except UnreadableBatchError as exc:
        _log_validation(client, run_id, unreadable_report(spec, exc.files))
        raise
    champion = _champion(client, spec)
    report = validate_batch(spec, df, reference_label_mix=_reference_label_mix(spec, champion))
    client.log_metric(run_id, "validation_rows", float(len(df)))
    client.log_metric(run_id, "validation_failed_checks", float(len(report.failed)))
    _log_validation(client, run_id, report)
    if not report.success:
        raise DataValidationError(report, spec.data.event_time_column)
    client.log_param(run_id, "window_end", run.window_end)
    client.log_param(run_id, "window_days", days)
    run_key = _run_key(dag_run_id)
    clean, quarantined_rows, quarantine_uri = _set_aside(client, run_id, spec, df, report, run_key)
    window_fingerprint = fingerprint(clean)
    mix = {label: round(share, 6) for label, share in label_mix(spec, clean).items()}
    set_run_tags(
        client,
        run_id,
        {DATA_FINGERPRINT_TAG: window_fingerprint, LABEL_MIX_TAG: json.dumps(mix, sort_keys=True)},
    )
    found: dict[str, Any] = {
        "run_id": run_id,
        "dag_run_id": dag_run_id,
        "fingerprint": window_fingerprint,
        "rows": len(df),
        "checks": report.evaluated,
        "quarantined_rows": quarantined_rows,
        "quarantine_uri": quarantine_uri,
        "label_mix": mix,
    }
    start = end - timedelta(days=days - 1)
    unchanged = _trained_on(champion, window_fingerprint)
    if unchanged is not None and not run.force_retrain:
        client.set_tag(run_id, OUTCOME_TAG, UNCHANGED_DATA)
        log.warning(
            "%s: unchanged data: the window %s..%s (%d rows, fingerprint %s) is the one champion v%s was "
            "trained on; ending without training. Trigger with force_retrain to train anyway.",
            model,
            start,
            end,
            len(clean),
            window_fingerprint,
            unchanged,
        )
        return Validated(**found, unchanged=True, champion_version=unchanged)
    snapshot = freeze_snapshot(spec, clean, run_key=run_key)
    log.info(
        "validated %s rows of %s (%s..%s, %s quarantined): fingerprint %s",
        len(df),
        model,
        start,
        end,
        quarantined_rows,
        snapshot.fingerprint,
    )
    return Validated(**found, unchanged=False, snapshot=snapshot)


def _set_aside(
    client: Any, run_id: str, spec: ModelSpec, df: Any, report: Any, run_key: str
) -> tuple[Any, int, str | None]:
    """Split off the rows the report quarantines and write them under ``run_key``.

    Idempotent per DAG run: a re-run overwrites the file, and removes it (and the run's URI tag) when
    it quarantines nothing. The run's ``conveyor.quarantined_rows`` tag says how many (``0`` for none).

    Returns:
        ``(clean rows, quarantined row count, the quarantine file's URI or None)``.
    """
    from conveyor.data.contracts import quarantine_rows, write_quarantine
    from conveyor.registry.tracking import set_run_tags

    split = quarantine_rows(spec, df, report)
    uri = write_quarantine(spec, split.quarantined, run_key)
    tags = {QUARANTINED_ROWS_TAG: str(split.total)}
    if uri is None:
        if QUARANTINE_URI_TAG in client.get_run(run_id).data.tags:  # an earlier try of this run wrote one
            client.delete_tag(run_id, QUARANTINE_URI_TAG)
    else:
        tags[QUARANTINE_URI_TAG] = uri
        log.warning(
            "%s: quarantined %d of %d rows (%s); they are left out of the snapshot and written to %s",
            spec.name,
            split.total,
            len(df),
            ", ".join(f"{check}: {rows}" for check, rows in split.counts.items()),
            uri,
        )
    set_run_tags(client, run_id, tags)
    return split.clean, split.total, uri


def _champion(client: Any, spec: ModelSpec) -> tuple[str, dict[str, str]] | None:
    """The ``champion`` version and its tags, or ``None`` when no version is champion."""
    from conveyor.registry.aliases import get_alias_version

    version = get_alias_version(client, spec.registered_model_name, CHAMPION)
    if version is None:
        return None
    mv = client.get_model_version(spec.registered_model_name, version)
    return version, {str(k): str(v) for k, v in (mv.tags or {}).items()}


def _trained_on(champion: tuple[str, dict[str, str]] | None, data_fingerprint: str) -> str | None:
    """The ``champion`` version when it was trained on exactly these rows, else ``None``."""
    if champion is None:
        return None
    version, tags = champion
    return version if tags.get(DATA_FINGERPRINT_TAG) == data_fingerprint else None


def _reference_label_mix(
    spec: ModelSpec, champion: tuple[str, dict[str, str]] | None
) -> dict[str, float] | None:
    """The label mix the ``champion`` was trained on (its ``conveyor.label_mix`` tag), else ``None``."""
    if champion is None or LABEL_MIX_TAG not in champion[1]:
        return None
    version, tags = champion
    try:
        mix = json.loads(tags[LABEL_MIX_TAG])
        return {str(label): float(share) for label, share in mix.items()}
    except (ValueError, TypeError, AttributeError):
        log.warning(
            "%s: champion v%s's %s tag %r is not a JSON object of label shares; no label_mix check",
            spec.name,
            version,
            LABEL_MIX_TAG,
            tags[LABEL_MIX_TAG],
        )
        return None


def _log_validation(client: Any, run_id: str, report: Any) -> None:
    """The verdict tag and the report (JSON + Markdown) on the DAG run's MLflow run."""
    from conveyor.registry.tracking import log_json_artifact, log_text_artifact

    client.set_tag(run_id, "conveyor.validation", "passed" if report.success else "failed")
    log_json_artifact(client, run_id, json.loads(report.to_json()), "validation/report.json")
    log_text_artifact(client, run_id, report.markdown(), "validation/report.md")


def _snapshot(validated: Validated) -> tuple[Any, Any]:
    from conveyor.data.snapshot import load_snapshot

    if validated.snapshot is None:
        raise PermanentError(
            f"DAG run {validated.dag_run_id}: the window is unchanged (champion "
            f"v{validated.champion_version}'s training data), so no snapshot was frozen; trigger with "
            "force_retrain to train on it anyway"
        )
    return load_snapshot(validated.snapshot)


def train(
    run: RunContext | Mapping[str, Any], *, validated: Validated | Mapping[str, Any], tracking_uri: str
) -> TrainResult:
    """Train the spec's trainer on the frozen snapshot and log the model into the DAG run's MLflow run."""
    from conveyor.training import train as train_model

    run, validated = RunContext.of(run), Validated.of(validated)
    spec = load_spec(run.model)
    train_df, eval_df = _snapshot(validated)
    with _session(tracking_uri).fluent():  # trainers log through MLflow's fluent API
        return train_model(spec, train_df, eval_df, run_id=validated.run_id)


def evaluate_gate(
    run: RunContext | Mapping[str, Any],
    *,
    validated: Validated | Mapping[str, Any],
    trained: TrainResult | Mapping[str, Any],
    tracking_uri: str,
) -> GateOutcome:
    """Champion vs challenger on the same frozen eval snapshot; the report goes to the MLflow run.

    The gate runs in ``run.gate_mode`` (``spec``: the spec's ``gate.mode``). Returns the decision plus
    where the DAG goes next: ``register`` (promote now: the gate let it through, or an override),
    ``await_approval`` (a person decides) or neither (not promoted). ``forced`` marks an override:
    ``run.force`` asked for and needed (the gate alone would not register), never for a dry run;
    ``run.justification`` goes with it (see :meth:`GateOutcome.decide`).
    """
    from conveyor.evaluation.champion import evaluate, write_gate_report

    run, validated, trained = RunContext.of(run), Validated.of(validated), TrainResult.of(trained)
    spec = load_spec(run.model)
    if run.gate_mode != "spec":
        spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"mode": run.gate_mode})})
    _, eval_df = _snapshot(validated)
    with _session(tracking_uri).fluent() as client:
        evaluation = evaluate(client, spec, trained.model_uri, eval_df)
        write_gate_report(client, validated.run_id, evaluation)
        report_url = mlflow_run_url(
            tracking_uri, client.get_run(validated.run_id).info.experiment_id, validated.run_id
        )
    outcome = GateOutcome.decide(
        evaluation.decision, force=run.force, justification=run.justification, report_url=report_url
    )
    log.info("gate report (JSON, Markdown, plots) on the MLflow run: %s", report_url)
    for reason in outcome.reasons:
        log.info("gate: %s", reason)
    if outcome.forced:
        log.warning("gate: OVERRIDE requested (force): %s", run.justification)
    return outcome


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run (credentials stripped), or ``runs:/<id>`` for a non-HTTP store."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return f"runs:/{run_id}"
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    base = urlunsplit(parts._replace(netloc=netloc, query="", fragment="")).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def promote(
    run: RunContext | Mapping[str, Any],
    *,
    decision: GateOutcome | Mapping[str, Any],
    approval: Mapping[str, Any] | None = None,
) -> Promotion:
    """The promotion the gate's outcome grants (see :mod:`conveyor.evaluation.promotion`).

    ``approval`` is the ``await_approval`` task's answer, if a person gave one; the run's
    ``triggered_by`` is answerable for a gate pass or an override.

    Raises:
        RegistrationRefused: the outcome does not allow registering the challenger.
    """
    run = RunContext.of(run)
    granted = authorize(run.model, decision, approval=approval, triggered_by=run.triggered_by)
    log.info("%s: challenger promoted by %s (%s)", run.model, granted.actor, granted.how)
    return granted


def report_not_promoted(
    run: RunContext | Mapping[str, Any], decision: GateOutcome | Mapping[str, Any]
) -> None:
    """Log why the challenger stops here; the run ends green as "not promoted" with nothing registered."""
    run, outcome = RunContext.of(run), GateOutcome.of(decision)
    log.warning(
        "%s: challenger NOT promoted (action=%s). Reasons:\n  - %s",
        run.model,
        outcome.action,
        "\n  - ".join(outcome.reasons),
    )


def compress(
    run: RunContext | Mapping[str, Any],
    *,
    validated: Validated | Mapping[str, Any],
    trained: TrainResult | Mapping[str, Any],
    tracking_uri: str,
) -> CompressionResult:
    """Build and measure compressed variants; keep the best within the spec's budget.

    The methods are ``run.compression``, or the spec's ``compression.methods`` when not given.
    """
    from conveyor.compression import compress as compress_model

    run, validated, trained = RunContext.of(run), Validated.of(validated), TrainResult.of(trained)
    spec = load_spec(run.model)
    if run.compression:
        spec = spec.model_copy(
            update={"compression": spec.compression.model_copy(update={"methods": run.compression})}
        )
    train_df, eval_df = _snapshot(validated)
    with _session(tracking_uri).fluent():
        return compress_model(spec, trained, train_df, eval_df, run_id=validated.run_id)


def register(
    run: RunContext | Mapping[str, Any],
    *,
    validated: Validated | Mapping[str, Any],
    trained: TrainResult | Mapping[str, Any],
    decision: GateOutcome | Mapping[str, Any],
    compressed: CompressionResult | Mapping[str, Any],
    tracking_uri: str,
    promotion: Promotion | Mapping[str, Any] | None = None,
) -> Registered:
    """Register one model version for this DAG run (idempotent) and point ``challenger`` at it.

    ``promotion`` is what :func:`promote` granted. The grant is checked again against ``decision``
    here, so no wiring can register a challenger the gate did not let through. The version's lineage
    records the run's params (``run.params()``).

    Raises:
        RegistrationRefused: the decision (with the promotion) does not allow registration; nothing
            is registered and no alias moves.
    """
    from conveyor.registry.aliases import get_alias_version, set_alias
    from conveyor.registry.versions import register_version

    run, validated, trained = RunContext.of(run), Validated.of(validated), TrainResult.of(trained)
    outcome, compressed = GateOutcome.of(decision), CompressionResult.of(compressed)
    granted = Promotion.of(promotion) if promotion else None
    approval = (
        {"chosen_options": [APPROVE], "responded_by_user": {"name": granted.approved_by}}
        if granted is not None and granted.approved_by
        else None
    )
    checked = authorize(
        run.model, outcome, approval=approval, triggered_by=granted.triggered_by if granted else None
    )
    spec = load_spec(run.model)
    client = _session(tracking_uri).client()
    lineage: dict[str, Any] = {
        "dag_id": run.dag_id,
        "dag_run_id": run.dag_run_id,
        "data_fingerprint": validated.fingerprint,
        "validation": _validation_summary(validated),
        "gate": ("forced: " if checked.is_override else "") + outcome.action,
        "gate_verdict": "passed" if outcome.passed else "failed",
        "gate_mode": outcome.mode,
        "promotion": checked.how,
        "promoted_by": checked.actor,
        "triggered_by": checked.triggered_by or SCHEDULER_ACTOR,
        "compression": compressed.chosen,
        "parent_model_uri": trained.model_uri,
        "git_commit": _source_commit(run),
        "params": json.dumps(run.params(), sort_keys=True, default=str),
        "trainer": spec.trainer.kind,
    }
    if validated.label_mix:
        lineage["label_mix"] = validated.label_mix  # stored as JSON, as on the MLflow run
    if trained.tuning is not None:  # the search whose best params the model was fitted on
        lineage["tuned"] = "true"
        lineage[f"tuning_best_{trained.tuning.metric}"] = trained.tuning.best_value
        lineage["tuning"] = trained.tuning.xcom()
    if checked.approved_by:
        lineage["approved_by"] = checked.approved_by
    if checked.is_override:
        lineage["override"] = "true"
        lineage["override_justification"] = checked.justification
    result = register_version(
        client,
        spec,
        model_uri=compressed.model_uri,
        run_id=validated.run_id,
        dag_run_id=run.dag_run_id,
        lineage=lineage,
    )
    current = get_alias_version(client, spec.registered_model_name, CHALLENGER)
    if current != result.version:
        set_alias(
            client,
            spec.registered_model_name,
            CHALLENGER,
            result.version,
            expected_version=current,
            actor=checked.actor,
            reason=_promotion_reason(checked, outcome),
            dag_run_id=run.dag_run_id,
            details={
                "gate": outcome.xcom(),
                "compression": compressed.chosen,
                "promotion": checked.xcom(),
                "override": checked.is_override,
            },
        )
    return Registered(**dict(result), alias=CHALLENGER)


def _source_commit(run: RunContext) -> str:
    """The run's ``commit`` (what ``conveyor ci`` tested), else the worker's own checkout.

    A worker that knows its commit and runs other code than the one asked for is logged: the
    lineage then names the commit the run was triggered for, not the code that trained it.
    """
    local = _git_commit()
    if not run.commit:
        return local
    if local != "unknown" and not (local.startswith(run.commit) or run.commit.startswith(local)):
        log.warning(
            "%s: the run was triggered for commit %s but this worker runs %s; the lineage records %s",
            run.model,
            run.commit,
            local,
            run.commit,
        )
    return run.commit


def _validation_summary(validated: Validated) -> str:
    """``passed (N checks on M rows)``, plus how many of them were quarantined when any were."""
    quarantined = validated.quarantined_rows
    aside = f"; {quarantined} quarantined, not trained on" if quarantined else ""
    return f"passed ({validated.checks} checks on {validated.rows} rows{aside})"


def _promotion_reason(granted: Promotion, outcome: GateOutcome) -> str:
    if granted.is_override:
        head = f"OVERRIDE by {granted.actor} (gate {outcome.action}): {granted.justification}"
    elif granted.how == "approval":
        head = f"approved by {granted.approved_by} in Airflow"
    else:
        head = f"gate {outcome.action}"
    return head + " | " + "; ".join(outcome.reasons[-2:])


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
