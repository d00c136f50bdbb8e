"""Who may promote a challenger, and the proof that travels with it to ``register``.

The gate (:mod:`conveyor.evaluation.gate`) says whether a challenger passed and what its mode makes
of that (``action``). Registration needs more than a verdict: in ``require_approval`` mode a person
must have approved, and an override (``force``) needs a justification and a name behind it. This
module turns the gate's outcome, the approval (if any) and the run's trigger into a
:class:`Promotion`, and refuses when they do not add up to a "yes".

:func:`authorize` is called twice: by the DAG's ``promote`` task (so a refusal fails there, before
compression), and again by :func:`conveyor.pipeline.register` on whatever it is handed (defence in
depth: no DAG wiring can register a challenger the gate did not let through).

=======================  ===========================================  =====================
gate ``action``          registered when                              ``Promotion.how``
=======================  ===========================================  =====================
``register``             always (``enforce`` and passed)              ``gate``
``await_approval``       a person chose *Approve* in Airflow          ``approval``
``reject``               only with ``force`` and a justification      ``override``
``dry_run``              never (``force`` does not apply)             —
=======================  ===========================================  =====================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from conveyor.errors import PermanentError
from conveyor.stages import GateOutcome, StageModel

#: How a challenger was let through (``conveyor.promotion`` tag, ledger details).
PromotionHow = Literal["gate", "approval", "override"]
#: The approval operator's option that approves (Airflow's ``ApprovalOperator.APPROVE``).
APPROVE = "Approve"
#: The actor written when a run has no triggering user (the nightly schedule, an asset event).
SCHEDULER_ACTOR = "airflow-scheduler"


class RegistrationRefused(PermanentError):
    """The gate's outcome does not allow registering this challenger; nothing was registered."""


class Promotion(StageModel):
    """Why a challenger may be registered, and on whose word.

    Attributes:
        how: ``gate`` (enforce mode, passed), ``approval`` (a person approved a passing challenger)
            or ``override`` (``force`` with a justification).
        actor: The person or process answerable for it: the approver, or the user who triggered
            the run (``airflow-scheduler`` for scheduled runs).
        triggered_by: The Airflow user who triggered the DAG run (``None``: the scheduler).
        approved_by: The Airflow user who approved (``approval`` only).
        justification: The override's justification (``override`` only).
        gate_action: The gate's ``action`` this promotion was granted against.
        gate_passed: The gate's verdict.
    """

    how: PromotionHow
    actor: str
    triggered_by: str | None = None
    approved_by: str | None = None
    justification: str | None = None
    gate_action: str
    gate_passed: bool

    @property
    def is_override(self) -> bool:
        return self.how == "override"


def _approver(approval: Mapping[str, Any] | None) -> str | None:
    """The user who chose *Approve* in an ``ApprovalOperator`` result, else ``None``."""
    if not approval or APPROVE not in (approval.get("chosen_options") or []):
        return None
    user = approval.get("responded_by_user") or {}
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "") or None
    return str(user) or None


def authorize(
    model: str,
    decision: GateOutcome | Mapping[str, Any],
    *,
    approval: Mapping[str, Any] | None = None,
    triggered_by: str | None = None,
) -> Promotion:
    """The :class:`Promotion` the gate's outcome grants, or a refusal.

    Args:
        model: The model spec's name (for messages).
        decision: ``conveyor.pipeline.evaluate_gate``'s :class:`~conveyor.stages.GateOutcome` (or
            its XCom JSON): the gate decision plus ``forced`` and ``justification``.
        approval: The ``await_approval`` task's result (``chosen_options``, ``responded_by_user``),
            if a person answered.
        triggered_by: The Airflow user who triggered the run (``None``: the scheduler).

    Returns:
        The promotion.

    Raises:
        RegistrationRefused: dry run; a rejected challenger without an override; an override without
            a justification; an approval-gated challenger nobody approved.
    """
    outcome = GateOutcome.of(decision)
    action, passed, mode = outcome.action, outcome.passed, outcome.mode
    who = triggered_by or SCHEDULER_ACTOR
    verdict = f"the gate decided {action!r} (verdict {'PASSED' if passed else 'FAILED'}, mode {mode!r})"
    if action == "dry_run":
        raise RegistrationRefused(
            f"refusing to register {model}: {verdict}; a dry run registers nothing, even with force"
        )
    if outcome.forced:
        justification = (outcome.justification or "").strip()
        if not justification:
            raise RegistrationRefused(
                f"refusing to register {model}: {verdict} and the override (force) has no justification; "
                "trigger again with a non-empty 'justification'"
            )
        return Promotion(
            how="override",
            actor=who,
            justification=justification,
            triggered_by=triggered_by,
            gate_action=action,
            gate_passed=passed,
        )
    if action == "register" and passed:
        return Promotion(
            how="gate", actor=who, triggered_by=triggered_by, gate_action=action, gate_passed=passed
        )
    if action == "await_approval" and passed:
        approver = _approver(approval)
        if approver is None:
            raise RegistrationRefused(
                f"refusing to register {model}: {verdict} and nobody approved it "
                f"(approval answer: {(approval or {}).get('chosen_options')})"
            )
        return Promotion(
            how="approval",
            actor=approver,
            approved_by=approver,
            triggered_by=triggered_by,
            gate_action=action,
            gate_passed=passed,
        )
    raise RegistrationRefused(
        f"refusing to register {model}: {verdict}; only an override (force with a justification) "
        "registers a challenger the gate did not let through. Reasons: " + "; ".join(outcome.reasons[-3:])
    )
