"""Who may promote a challenger: the gate's outcome, an approval, or a justified override."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.evaluation.promotion import RegistrationRefused, authorize
from conveyor.pipeline import RunParamsError, check_run_params
from conveyor.stages import GateOutcome

pytestmark = pytest.mark.unit


def _decision(action: str, passed: bool, **extra: Any) -> GateOutcome:
    mode = {"register": "enforce", "reject": "enforce", "dry_run": "dry_run"}.get(action, "require_approval")
    return GateOutcome.model_validate(
        {
            "action": action,
            "passed": passed,
            "mode": mode,
            "reasons": ["r1", "r2"],
            "primary_metric": "roc_auc",
            "checks": [],
            "challenger_metrics": {"roc_auc": 0.9},
            "cold_start": True,
            "register": action == "register" or bool(extra.get("forced")),
            "await_approval": action == "await_approval",
            **extra,
        }
    )


APPROVED = {"chosen_options": ["Approve"], "responded_by_user": {"id": "7", "name": "bob"}}
REJECTED = {"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "bob"}}


def test_a_passing_enforced_challenger_is_promoted_by_the_gate_on_the_triggering_users_word() -> None:
    granted = authorize("m", _decision("register", True), triggered_by="alice")
    assert (granted.how, granted.actor, granted.triggered_by) == ("gate", "alice", "alice")
    scheduled = authorize("m", _decision("register", True))
    assert scheduled.actor == "airflow-scheduler"


@pytest.mark.parametrize(
    ("decision", "approval", "message"),
    [
        (_decision("dry_run", True), None, "dry run registers nothing"),
        (_decision("dry_run", False, forced=True, justification="x"), None, "dry run registers nothing"),
        (_decision("reject", False), None, "only an override"),
        (_decision("reject", False, forced=True, justification="  "), None, "has no justification"),
        (_decision("await_approval", True), None, "nobody approved"),
        (_decision("await_approval", True), REJECTED, "nobody approved"),
        (_decision("reject", False), APPROVED, "only an override"),  # an approval cannot lift a failure
        (_decision("register", False), None, "only an override"),  # inconsistent: never trusted
    ],
)
def test_refusals_name_the_decision(decision: GateOutcome, approval: dict | None, message: str) -> None:
    with pytest.raises(RegistrationRefused, match=message) as err:
        authorize("churn", decision, approval=approval, triggered_by="alice")
    assert "churn" in str(err.value) and repr(decision.action) in str(err.value)
    with pytest.raises(RegistrationRefused, match=message):  # the same from its XCom JSON
        authorize("churn", decision.xcom(), approval=approval, triggered_by="alice")


def test_an_approval_is_credited_to_the_approver() -> None:
    granted = authorize("m", _decision("await_approval", True), approval=APPROVED, triggered_by="alice")
    assert (granted.how, granted.actor, granted.approved_by, granted.triggered_by) == (
        "approval",
        "bob",
        "bob",
        "alice",
    )


def test_an_override_carries_its_justification_and_user() -> None:
    decision = _decision("reject", False, forced=True, justification="hotfix for INC-42")
    granted = authorize("m", decision, triggered_by="alice")
    assert granted.is_override and granted.actor == "alice" and granted.justification == "hotfix for INC-42"
    assert authorize("m", decision.xcom(), triggered_by="alice") == granted


def test_run_params_are_checked_before_any_work() -> None:
    assert str(check_run_params("m", window_end="2026-12-01")) == "2026-12-01"
    with pytest.raises(RunParamsError, match="is not a date"):
        check_run_params("m", window_end="2026-13-01")
    with pytest.raises(RunParamsError, match="needs a justification"):
        check_run_params("m", window_end="2026-12-01", force=True, justification=" ")
    check_run_params("m", window_end="2026-12-01", force=True, justification="INC-42")
