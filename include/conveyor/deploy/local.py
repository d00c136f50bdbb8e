"""Deploy a registered candidate to the model server, then move ``champion``.

Order matters: the candidate is loaded into a staging slot of the running server and checked there
(loads, answers its golden rows with its offline predictions, meets the latency budget); only then
is it swapped in (one reference swap, no failed request) and only after that does ``champion`` move
— so ``champion`` always names what production serves. A rejected candidate is tagged on its model
version and production keeps serving the old champion.
"""

from __future__ import annotations

import logging
from typing import Any

from conveyor.config import ModelSpec
from conveyor.errors import PermanentError
from conveyor.registry.tracking import TAG_PREFIX

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
# The registry watcher treats a version whose status tag is set as decided ("settled") and stops
# firing for it; see conveyor_airflow.triggers.mlflow_alias.
STATUS_TAG = "conveyor.deploy_status"
DETAIL_TAG = "conveyor.deploy_detail"
DEPLOYED_AT_TAG = "conveyor.deployed_at"


class CandidateRejectedError(PermanentError):
    """The candidate failed its checks in the server; production still serves the champion."""


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
        for old in superseded:
            old_version = old.get("version")
            if (
                old.get("registered_model") == name
                and old_version
                and old_version not in (challenger, champion)
            ):
                log.info("%s v%s superseded by a later alias move; not deploying it", name, old_version)
                client.set_model_version_tag(name, old_version, STATUS_TAG, "superseded")
        if challenger is None:
            log.info("%s: no challenger alias any more (event %s); nothing to deploy", name, event)
            continue
        if challenger == champion:
            log.info("%s: challenger v%s is already champion; nothing to deploy", name, challenger)
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

    Raises:
        CandidateRejectedError: golden rows or latency failed in the server; nothing was swapped.
    """
    from datetime import UTC, datetime

    from conveyor.registry.aliases import set_alias

    name = spec.registered_model_name
    report = server.stage(spec.name, version)
    summary = report.model_dump(mode="json") if hasattr(report, "model_dump") else dict(report)
    problems = []
    if not summary.get("loaded", False):
        problems.append("the candidate did not load")
    if not summary.get("golden_passed", False):
        problems.append(
            f"golden rows differ from the offline predictions (max abs diff {summary.get('max_abs_diff')})"
        )
    if not summary.get("within_budget", False):
        problems.append(
            f"p95 latency {summary.get('p95_latency_ms')} ms exceeds the budget "
            f"{summary.get('latency_budget_ms')} ms"
        )
    if problems:
        client.set_model_version_tag(name, version, STATUS_TAG, "rejected")
        client.set_model_version_tag(name, version, DETAIL_TAG, "; ".join(problems)[:4000])
        raise CandidateRejectedError(
            f"{name} v{version} rejected by the model server: {'; '.join(problems)}. "
            f"Production keeps serving champion v{expected_champion}. Inspect the version in MLflow, "
            "fix the model and register a new challenger."
        )
    server.promote(spec.name, version)
    try:
        entry = set_alias(
            client,
            name,
            CHAMPION,
            version,
            expected_version=expected_champion,
            actor=actor,
            reason=f"deployed after server checks: {summary}",
            dag_run_id=dag_run_id,
            details={"stage_report": summary, **gate_details(client.get_model_version(name, version).tags)},
        )
    except BaseException:
        # champion did not move (a conflict, or the registry failed): the server goes back to what
        # champion names, so it never serves a version the registry does not call champion.
        _serve_champion_again(server, spec, version)
        raise
    client.set_model_version_tag(name, version, STATUS_TAG, "deployed")
    client.set_model_version_tag(name, version, DEPLOYED_AT_TAG, datetime.now(UTC).isoformat())
    log.info("%s v%s is champion and serving (previous: v%s)", name, version, expected_champion)
    ledger = entry.model_dump(mode="json") if hasattr(entry, "model_dump") else str(entry)
    return {
        "model": spec.name,
        "version": version,
        "previous": expected_champion,
        "stage": summary,
        "ledger": ledger,
    }
