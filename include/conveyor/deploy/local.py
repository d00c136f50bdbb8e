"""Deploy a registered candidate to the model server, then move ``champion``; roll back the same way.

Order matters: the candidate is loaded into a staging slot of the running server and checked there
(loads, answers its golden rows with its offline predictions, meets the latency budget); only then
is it swapped in (one reference swap, no failed request) and only after that does ``champion`` move
— so ``champion`` always names what production serves. A rejected candidate is tagged on its model
version and production keeps serving the old champion. A rollback is the same path towards an older
version (:func:`rollback`): one implementation, which the deploy and rollback DAGs and the
``conveyor rollback`` command call.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from conveyor.config import ModelSpec
from conveyor.errors import PermanentError
from conveyor.names import (
    CHALLENGER,
    CHAMPION,
    DEPLOY_DETAIL_TAG,
    DEPLOY_STATUS_TAG,
    DEPLOYED,
    DEPLOYED_AT_TAG,
    NOTHING_HANDLED,
    REJECTED,
    ROLLED_BACK,
    SUPERSEDED,
    handled_at_tag,
    handled_tag,
)
from conveyor.registry.tracking import TAG_PREFIX

log = logging.getLogger(__name__)


class CandidateRejectedError(PermanentError):
    """The candidate failed its checks in the server; production still serves the champion."""


class RollbackRefusedError(PermanentError):
    """The rollback target failed its checks (or there is none); the current champion keeps serving."""


class ServedVersionMismatchError(PermanentError):
    """After a switch the server does not report the version ``champion`` now names."""


def plan_deployments(client: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn a batch of alias-change events into at most one deployment per registered model.

    Airflow batches asset events, so several moves can arrive in one run: the latest event per model
    wins and the others are reported as superseded. The registry is re-read so the plan deploys what
    ``challenger`` names *now*, and a model whose challenger already is champion is skipped.
    """
    from conveyor.pipeline import spec_for_registered_model
    from conveyor.registry.aliases import get_alias_version

    latest: dict[str, dict[str, Any]] = {}
    superseded: list[dict[str, Any]] = []
    for event in events:
        name = event.get("registered_model")
        if not name:
            continue
        prior = latest.get(name)
        if prior is None or str(event.get("detected_at", "")) >= str(prior.get("detected_at", "")):
            if prior is not None:
                superseded.append(prior)
            latest[name] = event
        else:
            superseded.append(event)
    plan: list[dict[str, Any]] = []
    for name, event in sorted(latest.items()):
        spec = spec_for_registered_model(name)
        challenger = get_alias_version(client, name, CHALLENGER)
        champion = get_alias_version(client, name, CHAMPION)
        stale = {event.get("version")} | {
            old.get("version") for old in superseded if old.get("registered_model") == name
        }
        for old_version in sorted(v for v in stale if v and v not in (challenger, champion)):
            log.info("%s v%s superseded by a later alias move; not deploying it", name, old_version)
            client.set_model_version_tag(name, old_version, DEPLOY_STATUS_TAG, SUPERSEDED)
            client.set_model_version_tag(
                name,
                old_version,
                DEPLOY_DETAIL_TAG,
                f"{CHALLENGER} moved on to v{challenger} before it was deployed",
            )
        if challenger is None:
            log.info("%s: no challenger alias any more (event %s); nothing to deploy", name, event)
            continue
        if challenger == champion:
            log.info("%s: challenger v%s is already champion; nothing to deploy", name, challenger)
            continue
        batch = [e for e in events if e.get("registered_model") == name]
        if decided_at := _already_decided(client, name, challenger, batch):
            log.info(
                "%s: challenger v%s was decided at %s, after these events; nothing new",
                name,
                challenger,
                decided_at,
            )
            continue
        plan.append(
            {
                "model": spec.name,
                "registered_model": name,
                "version": challenger,
                "expected_champion": champion,
                "event_version": event.get("version"),
            }
        )
    return plan


def gate_details(tags: dict[str, str]) -> dict[str, Any]:
    """The gate's verdict on a version, from its lineage tags, as kept in a champion move's ledger entry."""
    if f"{TAG_PREFIX}gate_verdict" not in tags:
        return {}
    return {
        "gate": {
            "passed": tags[f"{TAG_PREFIX}gate_verdict"] == "passed",
            "mode": tags.get(f"{TAG_PREFIX}gate_mode", "?"),
            "action": tags.get(f"{TAG_PREFIX}gate", "?"),
        },
        "override": tags.get(f"{TAG_PREFIX}override") == "true",
    }


def _serve_champion_again(server: Any, spec: ModelSpec, swapped_in: str) -> None:
    """After a swap whose champion move failed: reload ``@champion`` in the server (best effort; the
    server's own reconciliation and readiness report what this cannot fix)."""
    try:
        result = server.reload(spec.name)
        log.warning(
            "%s: champion did not move to v%s; the server went back to champion (%s)",
            spec.registered_model_name,
            swapped_in,
            getattr(result, "version", result),
        )
    except Exception:
        log.exception(
            "%s: champion did not move to v%s and the server could not reload champion; it may serve "
            "v%s until reloaded (POST /admin/models/%s/reload)",
            spec.registered_model_name,
            swapped_in,
            swapped_in,
            spec.name,
        )


def _mark_handled(client: Any, name: str, version: str) -> None:
    """Record that the deploy side decided on ``challenger`` naming ``version`` (and when)."""
    client.set_registered_model_tag(name, handled_tag(CHALLENGER), version)
    client.set_registered_model_tag(name, handled_at_tag(CHALLENGER), datetime.now(UTC).isoformat())


def _already_decided(client: Any, name: str, challenger: str, events: list[dict[str, Any]]) -> str | None:
    """When every event of this batch was detected before the deploy side decided on ``challenger``
    naming this version, they report that same move again (the webhook and polling both report each
    move): the time of that decision; else ``None``."""
    tags = client.get_registered_model(name).tags or {}
    decided_at = tags.get(handled_at_tag(CHALLENGER))
    if tags.get(handled_tag(CHALLENGER)) != challenger or not decided_at:
        return None
    try:
        decided = datetime.fromisoformat(decided_at)
        detected = [datetime.fromisoformat(str(e["detected_at"])) for e in events]
    except (KeyError, TypeError, ValueError):  # a manual run ("detected_at": "manual") always plans
        return None
    return decided_at if detected and all(d <= decided for d in detected) else None


def _check_in_server(server: Any, spec: ModelSpec, version: str) -> tuple[dict[str, Any], list[str]]:
    """Stage ``version`` in the server (serving untouched); its report and the checks it failed."""
    report = server.stage(spec.name, version)
    summary: dict[str, Any] = (
        report.model_dump(mode="json") if hasattr(report, "model_dump") else dict(report)
    )
    problems = []
    if not summary.get("loaded", False):
        problems.append(f"the version did not load ({summary.get('error') or 'no detail'})")
    elif not summary.get("golden_passed", False):
        problems.append(
            f"golden rows differ from the offline predictions (max abs diff {summary.get('max_abs_diff')})"
        )
    if summary.get("loaded", False) and not summary.get("within_budget", False):
        problems.append(
            f"p95 latency {summary.get('p95_latency_ms')} ms exceeds the budget "
            f"{summary.get('latency_budget_ms')} ms"
        )
    return summary, problems


def _switch(
    client: Any,
    server: Any,
    spec: ModelSpec,
    version: str,
    *,
    expected_champion: str | None,
    actor: str,
    reason: str,
    dag_run_id: str | None,
    details: dict[str, Any],
) -> Any:
    """Swap the staged ``version`` in, move ``champion`` with compare-and-set, verify what is served.

    The one switch of every deploy and rollback. Should ``champion`` not move (a conflict, a registry
    failure), the server goes back to what ``champion`` names before the error is raised.
    """
    from conveyor.registry.aliases import set_alias

    name = spec.registered_model_name
    server.promote(spec.name, version)
    try:
        entry = set_alias(
            client,
            name,
            CHAMPION,
            version,
            expected_version=expected_champion,
            actor=actor,
            reason=reason,
            dag_run_id=dag_run_id,
            details=details,
        )
    except BaseException:
        # champion did not move (a conflict, or the registry failed): the server goes back to what
        # champion names, so it never serves a version the registry does not call champion.
        _serve_champion_again(server, spec, version)
        raise
    served = served_version(server, spec)
    if served != version:
        raise ServedVersionMismatchError(
            f"{name}: champion names v{version} but the model server reports v{served}; "
            f"its reconciliation reloads champion within CONVEYOR_MODEL_SERVER_RECONCILE_S"
        )
    client.set_model_version_tag(name, version, DEPLOY_STATUS_TAG, DEPLOYED)
    client.set_model_version_tag(name, version, DEPLOYED_AT_TAG, datetime.now(UTC).isoformat())
    return entry


def served_version(server: Any, spec: ModelSpec) -> str | None:
    """The version the model server reports serving for ``spec`` (``None``: nothing)."""
    for status in server.models():
        if status.name == spec.name:
            return None if status.version is None else str(status.version)
    return None


def _ledger_json(entry: Any) -> Any:
    return entry.model_dump(mode="json") if hasattr(entry, "model_dump") else str(entry)


def deploy_candidate(
    client: Any,
    server: Any,
    spec: ModelSpec,
    version: str,
    *,
    expected_champion: str | None,
    actor: str,
    dag_run_id: str | None = None,
) -> dict[str, Any]:
    """Stage, check, swap in and only then promote ``version`` to ``champion``.

    Either way the move of ``challenger`` to ``version`` is then handled (registered-model tag
    ``conveyor.handled.challenger``), so the registry watcher stops reporting it; moving
    ``challenger`` again, to any version, asks for a new deploy.

    Raises:
        CandidateRejectedError: golden rows or latency failed in the server; nothing was swapped.
    """
    name = spec.registered_model_name
    summary, problems = _check_in_server(server, spec, version)
    if problems:
        client.set_model_version_tag(name, version, DEPLOY_STATUS_TAG, REJECTED)
        client.set_model_version_tag(name, version, DEPLOY_DETAIL_TAG, "; ".join(problems)[:4000])
        _mark_handled(client, name, version)
        raise CandidateRejectedError(
            f"{name} v{version} rejected by the model server: {'; '.join(problems)}. "
            f"Production keeps serving champion v{expected_champion}. Inspect the version in MLflow, "
            "fix the model and register a new challenger."
        )
    entry = _switch(
        client,
        server,
        spec,
        version,
        expected_champion=expected_champion,
        actor=actor,
        reason=f"deployed after server checks: {summary}",
        dag_run_id=dag_run_id,
        details={"stage_report": summary, **gate_details(client.get_model_version(name, version).tags)},
    )
    _mark_handled(client, name, version)
    log.info("%s v%s is champion and serving (previous: v%s)", name, version, expected_champion)
    return {
        "model": spec.name,
        "version": version,
        "previous": expected_champion,
        "stage": summary,
        "ledger": _ledger_json(entry),
    }


def previous_champion(client: Any, spec: ModelSpec) -> str:
    """The version ``champion`` named before its current one, from the ledger.

    That is the ``from_version`` of the ledger entry that put ``champion`` where it is (so a second
    rollback undoes the first, as ``kubectl rollout undo`` does); when the current champion has no
    entry (moved outside Conveyor before the ledger saw it), the newest other version it named.

    Raises:
        RollbackRefusedError: the ledger knows no earlier champion.
    """
    from conveyor.registry.aliases import get_alias_version, ledger

    name = spec.registered_model_name
    current = get_alias_version(client, name, CHAMPION)
    entries = [e for e in ledger(client, name, alias=CHAMPION, limit=50) if e.action == "set"]
    for entry in entries:
        if entry.to_version == current and entry.from_version and entry.from_version != current:
            return str(entry.from_version)
        if entry.to_version == current:
            break
    for entry in entries:
        if entry.to_version and entry.to_version != current:
            return str(entry.to_version)
    raise RollbackRefusedError(
        f"{name}: the ledger records no champion before v{current}; name the version to roll back to "
        "(conveyor rollback MODEL --to VERSION, or the DAG's to_version Param)"
    )


def rollback(
    client: Any,
    server: Any,
    spec: ModelSpec,
    *,
    to_version: str | None = None,
    actor: str,
    reason: str,
    dag_run_id: str | None = None,
) -> dict[str, Any]:
    """Re-point ``champion`` at an earlier version through the deploy's own checks and switch.

    ``to_version`` ``None`` (or ``"previous"``) takes the ledger's previous champion
    (:func:`previous_champion`). The target is staged in the server and must load, answer its golden
    rows and meet its latency budget, as any deploy; then it is swapped in, ``champion`` moves with
    compare-and-set and a ledger entry naming ``actor`` and ``reason``, and the served version is
    verified. The version left is tagged ``rolled_back``; if ``challenger`` still names it, that alias
    is removed (through the ledger), so the watcher does not deploy it again and moving
    ``challenger`` back to it later is a new request.

    Returns:
        ``{"model", "version", "previous", "stage", "ledger"}``; ``changed`` False when the target
        already is champion (nothing moved).

    Raises:
        RollbackRefusedError: no target, the target does not exist, or it failed its checks; the
            current champion keeps serving and nothing moved.
    """
    from mlflow.exceptions import MlflowException

    from conveyor.registry.aliases import delete_alias, get_alias_version

    if not reason.strip():
        raise RollbackRefusedError("a rollback needs a reason (who reads the ledger later wants to know why)")
    name = spec.registered_model_name
    current = get_alias_version(client, name, CHAMPION)
    target = str(to_version) if to_version not in (None, "", "previous") else previous_champion(client, spec)
    try:
        client.get_model_version(name, target)
    except MlflowException as exc:
        raise RollbackRefusedError(
            f"cannot roll {name} back to v{target}: no such version ({exc.message})"
        ) from exc
    if target == current:
        log.info("%s: v%s already is champion; nothing to roll back", name, target)
        return {"model": spec.name, "version": target, "previous": current, "changed": False}
    summary, problems = _check_in_server(server, spec, target)
    if problems:
        raise RollbackRefusedError(
            f"refusing to roll {name} back to v{target}: {'; '.join(problems)}. Champion v{current} keeps "
            "serving; nothing moved."
        )
    entry = _switch(
        client,
        server,
        spec,
        target,
        expected_champion=current,
        actor=actor,
        reason=f"rollback: {reason}",
        dag_run_id=dag_run_id,
        details={"rollback": True, "rolled_back_from": current, "stage_report": summary},
    )
    if current is not None:
        client.set_model_version_tag(name, current, DEPLOY_STATUS_TAG, ROLLED_BACK)
        client.set_model_version_tag(
            name, current, DEPLOY_DETAIL_TAG, f"rolled back to v{target} by {actor}: {reason}"[:4000]
        )
        if get_alias_version(client, name, CHALLENGER) == current:
            delete_alias(
                client,
                name,
                CHALLENGER,
                expected_version=current,
                actor=actor,
                reason=f"rollback from v{current} to v{target}: {reason}",
                dag_run_id=dag_run_id,
            )
            # no challenger move is handled now: setting challenger to any version asks for a deploy
            client.set_registered_model_tag(name, handled_tag(CHALLENGER), NOTHING_HANDLED)
    log.info("%s rolled back: champion v%s -> v%s (%s)", name, current, target, reason)
    return {
        "model": spec.name,
        "version": target,
        "previous": current,
        "changed": True,
        "stage": summary,
        "ledger": _ledger_json(entry),
    }
