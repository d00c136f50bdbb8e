from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from conveyor.evaluation.gate import GateDecision, PairedTest, decide, improvement
from unit.registry import support

pytestmark = pytest.mark.unit

GOOD = {"roc_auc": 0.91, "accuracy": 0.86, "precision": 0.8, "recall": 0.7, "f1": 0.75, "log_loss": 0.30}


def _spec(**gate: Any) -> Any:
    return support.make_spec(**gate)


def _check(decision: GateDecision, name: str) -> Any:
    [check] = [c for c in decision.checks if c.name == name]
    return check


def _paired(ci_low: float, ci_high: float, delta: float = 0.02) -> PairedTest:
    return PairedTest(
        metric="roc_auc", delta=delta, ci_low=ci_low, ci_high=ci_high, p_value=0.01, n_boot=1000, n_rows=500
    )


def test_floor_failure_rejects_with_numbers() -> None:
    spec = _spec(floors={"roc_auc": 0.9, "accuracy": 0.9})
    decision = decide(spec, GOOD, None, paired=None)
    assert decision.passed is False
    assert decision.action == "reject" and decision.promote is False
    assert _check(decision, "floor:roc_auc").passed is True
    failed = _check(decision, "floor:accuracy")
    assert (failed.passed, failed.value, failed.threshold) == (False, 0.86, 0.9)
    assert "Challenger accuracy 0.8600 is below the floor 0.9000." in decision.reasons
    assert decision.reasons[-1].startswith("Verdict: FAILED (1 failing: floor:accuracy)")


def test_nan_auc_fails_its_floor() -> None:
    decision = decide(_spec(floors={"roc_auc": 0.5}), {**GOOD, "roc_auc": float("nan")}, None, paired=None)
    check = _check(decision, "floor:roc_auc")
    assert check.passed is False and decision.passed is False
    assert "is NaN" in check.reason


def test_missing_metric_fails_its_floor() -> None:
    decision = decide(_spec(floors={"f1": 0.1}), {"roc_auc": 0.9}, None, paired=None)
    assert _check(decision, "floor:f1").passed is False
    assert "was not computed" in _check(decision, "floor:f1").reason


def test_cold_start_floors_only_passes_on_floors() -> None:
    decision = decide(_spec(floors={"roc_auc": 0.9}, cold_start="floors_only"), GOOD, None, paired=None)
    assert decision.cold_start is True
    assert decision.passed is True and decision.action == "register" and decision.promote is True
    assert _check(decision, "cold_start").passed is True
    assert "floors_only" in _check(decision, "cold_start").reason
    failing = decide(_spec(floors={"roc_auc": 0.95}, cold_start="floors_only"), GOOD, None, paired=None)
    assert failing.passed is False


def test_cold_start_reject_fails_with_a_reason() -> None:
    decision = decide(_spec(floors={"roc_auc": 0.5}, cold_start="reject"), GOOD, None, paired=None)
    assert decision.cold_start is True and decision.passed is False and decision.action == "reject"
    assert "cold-start rule is 'reject'" in _check(decision, "cold_start").reason


def test_improvement_pass_and_fail_against_the_champion() -> None:
    spec = _spec(floors={}, min_improvement=0.01, decide_on="point_estimate")
    champion = {**GOOD, "roc_auc": 0.90}
    passing = decide(spec, GOOD, champion, paired=None, champion_version="4")  # +0.0100, float-exact edge
    assert passing.passed is True and passing.cold_start is False
    check = _check(passing, "min_improvement:roc_auc")
    assert check.value == pytest.approx(0.01) and check.threshold == 0.01
    assert "vs champion v4 0.9000" in check.reason and "+0.0100 meets the required +0.0100" in check.reason
    failing = decide(spec, {**GOOD, "roc_auc": 0.905}, champion, paired=None)
    assert failing.passed is False and failing.action == "reject"
    assert "misses the required" in _check(failing, "min_improvement:roc_auc").reason


def test_negative_min_improvement_tolerates_a_small_regression() -> None:
    spec = _spec(floors={}, min_improvement=-0.01, decide_on="point_estimate")
    assert decide(spec, {**GOOD, "roc_auc": 0.905}, GOOD, paired=None).passed is True
    assert decide(spec, {**GOOD, "roc_auc": 0.895}, GOOD, paired=None).passed is False


def test_lower_is_better_metrics_are_oriented() -> None:
    assert improvement("log_loss", 0.30, 0.35) == pytest.approx(0.05)
    assert improvement("roc_auc", 0.80, 0.85) == pytest.approx(-0.05)
    spec = _spec(
        primary_metric="log_loss", floors={"log_loss": 0.4}, min_improvement=0.01, decide_on="point_estimate"
    )
    better = decide(spec, {**GOOD, "log_loss": 0.30}, {**GOOD, "log_loss": 0.35}, paired=None)
    assert better.passed is True
    assert "(lower is better)" in _check(better, "min_improvement:log_loss").reason
    worse = decide(spec, {**GOOD, "log_loss": 0.35}, {**GOOD, "log_loss": 0.30}, paired=None)
    assert worse.passed is False
    # a floor on a lower-is-better metric is a ceiling
    too_high = decide(spec, {**GOOD, "log_loss": 0.45}, None, paired=None)
    assert _check(too_high, "floor:log_loss").passed is False
    assert "exceeds the ceiling 0.4000" in _check(too_high, "floor:log_loss").reason


def test_nan_primary_metric_on_either_side_fails_the_comparison() -> None:
    spec = _spec(floors={}, decide_on="point_estimate")
    decision = decide(spec, GOOD, {**GOOD, "roc_auc": float("nan")}, paired=None)
    assert _check(decision, "min_improvement:roc_auc").passed is False
    assert decision.passed is False


def test_the_paired_interval_decides_by_default() -> None:
    champion = {**GOOD, "roc_auc": 0.89}
    # better by noise: the point estimate clears min_improvement 0, the interval's lower bound does not
    noise = decide(_spec(floors={}, min_improvement=0.0), GOOD, champion, paired=_paired(-0.01, 0.05))
    assert _check(noise, "min_improvement:roc_auc").passed is True
    assert _check(noise, "min_improvement:roc_auc").informational is True
    check = _check(noise, "paired_bootstrap:roc_auc")
    assert check.informational is False and check.passed is False and check.threshold == 0.0
    assert "within what noise explains" in check.reason
    assert noise.passed is False and noise.action == "reject" and noise.decide_on == "ci_lower_bound"
    demanding = decide(_spec(floors={}, min_improvement=0.01), GOOD, champion, paired=_paired(0.005, 0.05))
    assert demanding.passed is False  # significant, but not by the demanded 0.01
    significant = decide(_spec(floors={}, min_improvement=0.01), GOOD, champion, paired=_paired(0.012, 0.05))
    assert significant.passed is True
    assert "95% CI [0.0120, 0.0500]" in _check(significant, "paired_bootstrap:roc_auc").reason


def test_a_negative_min_improvement_is_a_non_inferiority_margin() -> None:
    spec = _spec(floors={}, min_improvement=-0.01)
    champion = {**GOOD, "roc_auc": 0.91}
    inside = decide(spec, GOOD, champion, paired=_paired(-0.008, 0.01, delta=0.0))
    assert inside.passed is True
    assert "non-inferiority margin -0.0100" in _check(inside, "paired_bootstrap:roc_auc").reason
    # the same observed difference with a wider interval could be more than 0.01 worse: not promoted
    wide = decide(spec, GOOD, champion, paired=_paired(-0.02, 0.02, delta=0.0))
    assert wide.passed is False


def test_point_estimate_mode_reports_the_interval_only() -> None:
    spec = _spec(floors={}, min_improvement=0.0, decide_on="point_estimate")
    champion = {**GOOD, "roc_auc": 0.89}
    decision = decide(spec, GOOD, champion, paired=_paired(-0.01, 0.05))
    assert _check(decision, "paired_bootstrap:roc_auc").informational is True
    assert decision.passed is True


def test_a_missing_paired_test_fails_an_interval_decision() -> None:
    decision = decide(_spec(floors={}), GOOD, {**GOOD, "roc_auc": 0.80}, paired=None)
    assert _check(decision, "paired_test:roc_auc").passed is False and decision.passed is False


def test_mcnemar_decides_an_accuracy_gate() -> None:
    from conveyor.evaluation.gate import mcnemar_test

    y = np.array([1, 0] * 200)
    champion = np.where(y == 1, 0.8, 0.2)
    champion[:60] = 1 - champion[:60]  # the champion gets 60 of 400 wrong
    # better by noise: the challenger fixes 6 of those and breaks 2 others
    noisy = champion.copy()
    noisy[:6] = 1 - noisy[:6]
    noisy[100:102] = 1 - noisy[100:102]
    test = mcnemar_test(y, noisy, champion)
    assert test.method == "mcnemar" and test.discordant == (6, 2)
    assert test.delta == pytest.approx(4 / 400) and test.ci_low < 0 < test.ci_high
    assert test.p_value == pytest.approx(0.1445, abs=1e-3)  # exact binomial: P(X >= 6 | 8, 0.5)
    spec = _spec(floors={}, primary_metric="accuracy", min_improvement=0.0)
    accuracy = {**GOOD, "accuracy": 0.86}
    rejected = decide(spec, {**accuracy, "accuracy": 0.86 + 0.01}, accuracy, paired=test)
    assert (
        rejected.passed is False
        and "McNemar's test on 400 rows" in _check(rejected, "mcnemar:accuracy").reason
    )
    # a real improvement: the challenger fixes 50 and breaks none
    better = champion.copy()
    better[:50] = 1 - better[:50]
    strong = mcnemar_test(y, better, champion)
    assert strong.ci_low > 0 and strong.p_value < 1e-10
    assert decide(spec, {**accuracy, "accuracy": 0.985}, accuracy, paired=strong).passed is True


def test_slices_below_their_floor_block_and_small_slices_are_reported() -> None:
    import pandas as pd

    from conveyor.evaluation.gate import slice_results

    spec = _spec(
        floors={},
        slices={
            "columns": [{"column": "x1", "bins": [-10, 0, 10]}],
            "floors": {"accuracy": 0.8},
            "min_rows": 20,
        },
    )
    rng = np.random.default_rng(0)
    x1 = np.concatenate([rng.uniform(-3, -0.1, 200), rng.uniform(0.1, 3, 10)])
    y = (x1 > 0).astype(int)
    p = np.where(x1 < 0, 0.1, 0.9)
    p[:60] = 0.9  # wrong on 60 of the 200 rows below 0: accuracy 0.70 there
    frame = pd.DataFrame({"x1": x1, "x2": 0.0, "label": y})
    slices = slice_results(spec, frame, y, p)
    assert [(s.label, s.rows, s.judged) for s in slices] == [
        ("x1∈[-10, 0)", 200, True),
        ("x1∈[0, 10]", 10, False),
    ]
    decision = decide(spec, GOOD, None, paired=None, slices=slices)
    blocked = _check(decision, "slice:x1∈[-10, 0):accuracy")
    assert blocked.passed is False and "0.7000 is below the floor 0.8000" in blocked.reason
    small = _check(decision, "slice:x1∈[0, 10]:accuracy")
    assert small.informational is True and "fewer than the 20 needed" in small.reason
    assert decision.passed is False and "slice:x1∈[-10, 0):accuracy" in decision.reasons[-1]


def test_categorical_slices_and_spec_validation() -> None:
    import pandas as pd

    from conveyor.config import ModelSpec
    from conveyor.evaluation.gate import slice_results

    raw = _spec().model_dump()
    raw["categorical_features"] = [{"name": "plan", "categories": ["a", "b"]}]
    raw["gate"]["slices"] = {"columns": [{"column": "plan"}], "floors": {"roc_auc": 0.5}, "min_rows": 2}
    spec = ModelSpec.model_validate(raw)
    frame = pd.DataFrame({"plan": ["a", "b", "a", "b", None], "x1": 0.0, "x2": 0.0})
    y = np.array([1, 0, 0, 1, 1])
    slices = slice_results(spec, frame, y, np.array([0.9, 0.2, 0.1, 0.8, 0.5]), np.full(5, 0.5))
    assert [(s.label, s.rows) for s in slices] == [("plan=a", 2), ("plan=b", 2)]
    assert slices[0].champion is not None and slices[0].challenger["accuracy"] == 1.0
    for bad, message in [
        ({"column": "nope"}, "is not a feature"),
        ({"column": "x1"}, "needs bins"),
        ({"column": "plan", "bins": [0, 1]}, "takes no bins"),
        ({"column": "x1", "bins": [1, 0]}, "strictly ascending"),
    ]:
        raw["gate"]["slices"] = {"columns": [bad]}
        with pytest.raises(ValueError, match=message):
            ModelSpec.model_validate(raw)


def test_modes_map_the_verdict_to_an_action() -> None:
    spec = _spec(floors={"roc_auc": 0.5})
    failing = {**GOOD, "roc_auc": 0.4}
    assert decide(spec, GOOD, None, paired=None, mode_override="dry_run").action == "dry_run"
    dry = decide(spec, GOOD, None, paired=None, mode_override="dry_run")
    assert dry.passed is True and dry.promote is False and dry.mode == "dry_run"
    assert decide(spec, failing, None, paired=None, mode_override="dry_run").action == "dry_run"
    approval = decide(_spec(floors={"roc_auc": 0.5}, mode="require_approval"), GOOD, None, paired=None)
    assert (approval.action, approval.promote) == ("await_approval", False)
    assert decide(_spec(mode="require_approval"), failing, None, paired=None).action == "reject"
    assert (
        decide(_spec(mode="dry_run"), GOOD, None, paired=None, mode_override="enforce").action == "register"
    )
    with pytest.raises(ValueError, match="unknown gate mode"):
        decide(spec, GOOD, None, paired=None, mode_override="yolo")


def test_unscorable_champion_fails_the_gate_and_says_what_to_do() -> None:
    decision = decide(_spec(floors={}), GOOD, None, paired=None, champion_version="3", champion_error="boom")
    assert decision.passed is False and decision.cold_start is False
    check = _check(decision, "champion_scored")
    assert "champion v3 could not be scored" in check.reason and "boom" in check.reason
    assert "set_alias" in check.reason


def test_decision_json_is_strict_json_and_round_trips() -> None:
    decision = decide(
        _spec(floors={"roc_auc": 0.5}), {**GOOD, "roc_auc": float("nan")}, GOOD, paired=_paired(0.01, 0.02)
    )
    dumped = decision.model_dump(mode="json")
    text = json.dumps(dumped, allow_nan=False)  # XCom / PostgreSQL JSON reject bare NaN
    assert dumped["challenger_metrics"]["roc_auc"] == "NaN"
    assert dumped["promote"] is False
    back = GateDecision.model_validate(json.loads(text))  # as the next task reads it from XCom
    assert math.isnan(back.challenger_metrics["roc_auc"])
    assert back.reasons == decision.reasons and back.action == decision.action
