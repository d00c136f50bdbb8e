"""The gate for multiclass and regression models: floors and ceilings, the paired tests, slices."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor import tasks
from conveyor.config import TASK_METRICS
from conveyor.evaluation.gate import (
    GateDecision,
    decide,
    mcnemar_test,
    paired_bootstrap,
    paired_test,
    resampled_metric,
    slice_results,
)
from unit.evaluation.task_support import (
    MC_TRUE,
    MC_WEAK,
    REG_TRUE,
    REG_WEAK,
    make_frame,
    make_spec,
    multiclass_proba,
    regression_prediction,
)

pytestmark = pytest.mark.unit

REG = {"rmse": 1.2, "mae": 0.9, "r2": 0.85, "mape": 0.4}
MC = {m: 0.8 for m in TASK_METRICS["multiclass"]} | {"log_loss": 0.5}


def _check(decision: GateDecision, name: str) -> Any:
    [check] = [c for c in decision.checks if c.name == name]
    return check


def _mc_spec(k: int = 3, **gate: Any) -> Any:
    from conveyor.config import ModelSpec

    raw = make_spec("multiclass", **gate).model_dump(mode="json")
    raw["data"]["classes"] = list(range(k))
    return ModelSpec.model_validate(raw)


# --- floors ------------------------------------------------------------------------------------------


def test_a_floor_on_a_regression_error_metric_is_a_ceiling() -> None:
    spec = make_spec("regression", floors={"rmse": 1.0, "mae": 1.0, "r2": 0.8})
    decision = decide(spec, REG, None, paired=None)
    assert decision.task == "regression" and decision.primary_metric == "rmse"
    rmse = _check(decision, "floor:rmse")
    assert rmse.passed is False
    assert rmse.reason == "Challenger rmse 1.2000 exceeds the ceiling 1.0000."
    assert _check(decision, "floor:mae").reason == "Challenger mae 0.9000 is at most the ceiling 1.0000."
    assert _check(decision, "floor:r2").reason == "Challenger r2 0.8500 is at least the floor 0.8000."
    assert decision.passed is False and decision.reasons[-1].startswith(
        "Verdict: FAILED (1 failing: floor:rmse)"
    )
    assert decide(spec, {**REG, "rmse": 0.95}, None, paired=None).passed is True


def test_multiclass_floors_and_the_log_loss_ceiling() -> None:
    spec = make_spec("multiclass", floors={"f1_macro": 0.85, "log_loss": 0.6, "roc_auc_ovr": 0.7})
    decision = decide(spec, MC, None, paired=None)
    assert decision.task == "multiclass" and decision.primary_metric == "accuracy"
    assert (
        _check(decision, "floor:f1_macro").reason == "Challenger f1_macro 0.8000 is below the floor 0.8500."
    )
    assert (
        _check(decision, "floor:log_loss").reason
        == "Challenger log_loss 0.5000 is at most the ceiling 0.6000."
    )
    assert _check(decision, "floor:roc_auc_ovr").passed is True
    assert decision.passed is False
    assert decision.model_dump(mode="json")["task"] == "multiclass"


def test_a_point_estimate_on_rmse_is_oriented() -> None:
    spec = make_spec("regression", min_improvement=0.05, decide_on="point_estimate")
    better = decide(spec, {**REG, "rmse": 1.10}, REG, paired=None)
    assert better.passed is True
    check = _check(better, "min_improvement:rmse")
    assert check.value == pytest.approx(0.10) and "(lower is better)" in check.reason
    assert decide(spec, {**REG, "rmse": 1.25}, REG, paired=None).passed is False


# --- the paired tests through the gate ---------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_rows() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spec, target, and three models: the true one, a weak one, one better only by noise."""
    frame = make_frame("regression", rows=800, seed=1)
    spec = make_spec("regression")
    y = tasks.encode_target(spec, frame["label"])
    good = regression_prediction(REG_TRUE, frame)
    weak = regression_prediction(REG_WEAK, frame)
    near = regression_prediction({"x1": 2.97, "x2": -2.02}, frame)
    return spec, y, good, weak, near


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_regression_gate_promotes_a_clearly_better_challenger(
    regression_rows: tuple[Any, ...], metric: str
) -> None:
    _, y, good, weak, _ = regression_rows
    spec = make_spec("regression", primary_metric=metric)
    paired = paired_test(y, good, weak, metric, spec=spec, n=500, seed=3)
    ours, theirs = tasks.metrics(spec, y, good), tasks.metrics(spec, y, weak)
    assert paired.method == "bootstrap" and paired.n_boot == 500 and paired.seed == 3
    assert paired.delta == pytest.approx(tasks.improvement(metric, ours[metric], theirs[metric]), abs=1e-12)
    assert paired.ci_low > 0 and paired.p_value < 0.01
    decision = decide(spec, ours, theirs, paired=paired, champion_version="2")
    assert decision.passed is True and decision.action == "register"
    assert _check(decision, f"paired_bootstrap:{metric}").passed is True
    # and the other way round
    reverse = paired_test(y, weak, good, metric, spec=spec, n=500, seed=3)
    assert reverse.ci_high < 0
    assert decide(spec, theirs, ours, paired=reverse).passed is False


def test_regression_gate_rejects_a_challenger_better_only_by_noise(
    regression_rows: tuple[Any, ...],
) -> None:
    spec, y, good, _, near = regression_rows
    paired = paired_test(y, good, near, "rmse", spec=spec, n=1000, seed=0)
    assert paired.delta > 0  # better on these rows...
    assert paired.ci_low < 0 < paired.ci_high  # ...by less than their noise
    decision = decide(spec, tasks.metrics(spec, y, good), tasks.metrics(spec, y, near), paired=paired)
    check = _check(decision, "paired_bootstrap:rmse")
    assert check.passed is False and "within what noise explains" in check.reason
    assert decision.passed is False and decision.action == "reject"


@pytest.fixture(scope="module")
def multiclass_rows() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    frame = make_frame("multiclass", rows=900, seed=2)
    spec = make_spec("multiclass")
    y = tasks.encode_target(spec, frame["label"])
    good = multiclass_proba(MC_TRUE, frame)
    weak = multiclass_proba(MC_WEAK, frame)
    near = multiclass_proba([{"x1": 2.05}, {"x2": 1.95}, {"x1": -1.5, "x2": -1.45}], frame)
    return spec, y, good, weak, near


@pytest.mark.parametrize("metric", ["f1_macro", "recall_weighted", "log_loss", "roc_auc_ovr"])
def test_multiclass_gate_promotes_a_clearly_better_challenger(
    multiclass_rows: tuple[Any, ...], metric: str
) -> None:
    spec, y, good, weak, _ = multiclass_rows
    paired = paired_test(y, good, weak, metric, spec=spec, n=400, seed=1)
    ours, theirs = tasks.metrics(spec, y, good), tasks.metrics(spec, y, weak)
    assert paired.delta == pytest.approx(tasks.improvement(metric, ours[metric], theirs[metric]), abs=1e-12)
    assert paired.ci_low > 0 and paired.n_boot == 400
    gated = make_spec("multiclass", primary_metric=metric)
    assert decide(gated, ours, theirs, paired=paired).passed is True
    assert paired_test(y, weak, good, metric, spec=spec, n=400, seed=1).ci_high < 0


def test_multiclass_gate_rejects_a_challenger_better_only_by_noise(multiclass_rows: tuple[Any, ...]) -> None:
    spec, y, good, _, near = multiclass_rows
    gated = make_spec("multiclass", primary_metric="log_loss")
    paired = paired_test(y, good, near, "log_loss", spec=spec, n=1000, seed=0)
    assert paired.delta > 0 and paired.ci_low < 0 < paired.ci_high
    decision = decide(gated, tasks.metrics(spec, y, good), tasks.metrics(spec, y, near), paired=paired)
    assert decision.passed is False
    assert "within what noise explains" in _check(decision, "paired_bootstrap:log_loss").reason


def test_mcnemar_decides_a_multiclass_accuracy_gate() -> None:
    spec = make_spec("multiclass", min_improvement=0.0)
    rng = np.random.default_rng(0)
    y = np.tile([0, 1, 2], 100)  # 300 rows
    right = np.eye(3)[y] * 0.7 + 0.1  # the true class at 0.8, the others at 0.1
    wrong = np.eye(3)[(y + 1) % 3] * 0.7 + 0.1  # the next class most probable
    champion = right.copy()
    champion[:45] = wrong[:45]  # wrong on 45 of 300 rows
    noisy = champion.copy()
    noisy[:6] = right[:6]  # fixes 6...
    noisy[200:202] = wrong[200:202]  # ...and breaks 2
    test = paired_test(y, noisy, champion, "accuracy", spec=spec)
    assert test.method == "mcnemar" and test.discordant == (6, 2)
    assert test.delta == pytest.approx(4 / 300) and test.ci_low < 0 < test.ci_high
    assert test.p_value == pytest.approx(0.1445, abs=1e-3)  # exact binomial: P(X >= 6 | 8, 0.5)
    metrics_old = tasks.metrics(spec, y, champion)
    rejected = decide(spec, tasks.metrics(spec, y, noisy), metrics_old, paired=test)
    assert rejected.passed is False
    assert (
        "McNemar's test on 300 rows (6 rows only the challenger"
        in _check(rejected, "mcnemar:accuracy").reason
    )
    better = champion.copy()
    better[:40] = right[:40]
    strong = mcnemar_test(y, better, champion, spec=spec)
    assert strong.discordant == (40, 0) and strong.ci_low > 0 and strong.p_value < 1e-10
    assert decide(spec, tasks.metrics(spec, y, better), metrics_old, paired=strong).passed is True
    # labels the shuffle of rows cannot change: the same test on a permutation
    order = rng.permutation(300)
    assert mcnemar_test(y[order], better[order], champion[order], spec=spec).discordant == (40, 0)


def test_mcnemar_refuses_regression_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="regression model does not have"):
        mcnemar_test([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], spec=make_spec("regression"))
    with pytest.raises(ValueError, match="same rows"):
        mcnemar_test([0, 1], np.full((2, 2), 0.5), np.full((2, 3), 1 / 3), spec=make_spec("multiclass"))


# --- the bootstrap's arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "metric"),
    [("regression", m) for m in TASK_METRICS["regression"]]
    + [("multiclass", m) for m in TASK_METRICS["multiclass"]],
)
def test_identical_models_give_a_zero_interval(task: str, metric: str) -> None:
    spec = make_spec(task)
    frame = make_frame(task, rows=300, seed=4)
    y = tasks.encode_target(spec, frame["label"])
    scores = (
        regression_prediction(REG_WEAK, frame) if task == "regression" else multiclass_proba(MC_WEAK, frame)
    )
    test = paired_bootstrap(y, scores, scores.copy(), metric, n=200, seed=0, spec=spec)
    assert (test.delta, test.ci_low, test.ci_high, test.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert test.n_boot == 200


@pytest.mark.parametrize("metric", TASK_METRICS["multiclass"])
def test_multiclass_resamples_equal_tasks_metrics(metric: str) -> None:
    spec = _mc_spec(k=4)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 40)
    scores = np.round(rng.dirichlet(np.full(4, 0.7), 40), 2)  # rounded: ties, as real models have
    scores /= scores.sum(axis=1, keepdims=True)
    idx = rng.integers(0, 40, size=(30, 40))
    idx[0] = np.flatnonzero(y != 3)[idx[0] % np.count_nonzero(y != 3)]  # a resample missing a class
    idx[1] = np.flatnonzero(y == 2)[0]  # one row, one class: ROC AUC undefined
    expected = [tasks.metric(spec, metric, y[i], scores[i]) for i in idx]
    got = resampled_metric(metric, y, scores, idx, spec=spec)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("metric", TASK_METRICS["regression"])
def test_regression_resamples_equal_tasks_metrics(metric: str) -> None:
    spec = make_spec("regression")
    rng = np.random.default_rng(1)
    y = rng.normal(2.0, 3.0, 50)
    y[:3] = 0.0  # MAPE's epsilon
    yhat = y + rng.normal(0, 1, 50)
    yhat[3] = y[3]
    idx = rng.integers(0, 50, size=(30, 50))
    idx[0] = 3  # a constant target predicted exactly: R² 1
    idx[1] = 5  # a constant target predicted wrongly: R² 0
    expected = [tasks.metric(spec, metric, y[i], yhat[i]) for i in idx]
    got = resampled_metric(metric, y, yhat, idx, spec=spec)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("task", "metric"), [("regression", "r2"), ("multiclass", "f1_macro"), ("multiclass", "roc_auc_ovr")]
)
def test_the_bootstrap_is_the_plain_loop_over_the_seeded_draws(task: str, metric: str) -> None:
    """Same draws as the binary bootstrap (one seeded generator, rows x resamples): the vectorised
    interval equals scoring each resample with conveyor.tasks one by one."""
    spec = make_spec(task)
    frame = make_frame(task, rows=60, seed=5)
    y = tasks.encode_target(spec, frame["label"])
    if task == "regression":
        new, old = regression_prediction(REG_TRUE, frame), regression_prediction(REG_WEAK, frame)
    else:
        new, old = multiclass_proba(MC_TRUE, frame), multiclass_proba(MC_WEAK, frame)
    test = paired_bootstrap(y, new, old, metric, n=300, seed=11, spec=spec)
    draws = np.random.default_rng(11).integers(0, 60, size=(300, 60))
    deltas = np.array(
        [tasks.metric(spec, metric, y[i], new[i]) - tasks.metric(spec, metric, y[i], old[i]) for i in draws]
    )
    deltas = deltas[~np.isnan(deltas)]
    low, high = np.quantile(deltas, [0.025, 0.975])
    assert test.n_boot == deltas.size
    assert (test.ci_low, test.ci_high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert test.p_value == pytest.approx((1 + np.count_nonzero(deltas <= 0)) / (1 + deltas.size))
    again = paired_bootstrap(y, new, old, metric, n=300, seed=11, spec=spec)
    assert again == test
    assert paired_bootstrap(y, new, old, metric, n=300, seed=12, spec=spec).ci_low != test.ci_low


def test_a_thousand_resamples_of_two_thousand_rows_take_under_two_seconds() -> None:
    rng = np.random.default_rng(0)
    k, rows = 10, 2000
    spec = _mc_spec(k=k)
    y = rng.integers(0, k, rows)
    new, old = rng.dirichlet(np.ones(k), rows), rng.dirichlet(np.ones(k), rows)
    regression = make_spec("regression")
    target = rng.normal(size=rows)
    paired_bootstrap(y, new, old, "f1_macro", n=20, seed=0, spec=spec)  # warm-up (imports)
    timings = {}
    for metric in ("f1_macro", "log_loss", "roc_auc_ovr"):
        start = time.perf_counter()
        assert paired_bootstrap(y, new, old, metric, n=1000, seed=0, spec=spec).n_boot == 1000
        timings[metric] = time.perf_counter() - start
    for metric in ("rmse", "r2"):
        start = time.perf_counter()
        paired_bootstrap(target, target + 0.1, target - 0.2, metric, n=1000, seed=0, spec=regression)
        timings[metric] = time.perf_counter() - start
    slow = {m: round(t, 2) for m, t in timings.items() if t > 2.0}
    assert not slow, f"paired bootstrap, 2000 rows x 1000 resamples, seconds: {slow}"


def test_bad_inputs_are_refused_naming_the_task() -> None:
    regression = make_spec("regression")
    with pytest.raises(ValueError, match=r"unknown metric 'roc_auc' for a regression model; use one of"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], "roc_auc", spec=regression)
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], [1.0], "rmse", spec=regression)
    with pytest.raises(ValueError, match="at least one row"):
        paired_bootstrap([], [], [], "rmse", spec=regression)
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([1.0, 2.0], [1.0, np.nan], [1.0, 2.0], "rmse", spec=regression)
    multiclass = make_spec("multiclass")
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        paired_bootstrap([0, 1], np.full((2, 2), 0.5), np.full((2, 2), 0.5), "log_loss", spec=multiclass)
    with pytest.raises(ValueError, match=r"class indices 0\.\.2"):
        paired_bootstrap([0, 3], np.full((2, 3), 1 / 3), np.full((2, 3), 1 / 3), "log_loss", spec=multiclass)


# --- slices ------------------------------------------------------------------------------------------


def test_multiclass_slices_are_scored_with_the_tasks_metrics() -> None:
    spec = make_spec(
        "multiclass",
        slices={
            "columns": [{"column": "plan"}],
            "floors": {"f1_weighted": 0.9, "roc_auc_ovr": 0.5},
            "min_rows": 3,
        },
    )
    frame = pd.DataFrame({"x1": 0.0, "x2": 0.0, "plan": ["basic"] * 6 + ["pro"] * 4})
    y = np.array([0, 1, 2, 0, 1, 2, 1, 1, 1, 1])  # "pro" holds one class only
    right = np.eye(3)[y] * 0.7 + 0.1
    new = right.copy()
    new[0] = [0.1, 0.8, 0.1]  # one mistake in "basic"
    slices = slice_results(spec, frame, y, new, right)
    basic, pro = slices
    assert (basic.label, basic.rows, pro.label, pro.rows) == ("plan=basic", 6, "plan=pro", 4)
    assert set(basic.challenger) == set(TASK_METRICS["multiclass"])
    assert basic.challenger == tasks.metrics(spec, y[:6], new[:6])
    assert basic.champion == tasks.metrics(spec, y[:6], right[:6])
    assert np.isnan(pro.challenger["roc_auc_ovr"])  # one class: undefined
    decision = decide(spec, tasks.metrics(spec, y, new), None, paired=None, slices=slices)
    assert _check(decision, "slice:plan=basic:f1_weighted").passed is False  # 0.822
    undefined = _check(decision, "slice:plan=pro:roc_auc_ovr")
    assert undefined.informational is True and "undefined" in undefined.reason
    assert _check(decision, "slice:plan=pro:f1_weighted").passed is True
    assert decision.passed is False


def test_regression_slices_judge_an_error_ceiling() -> None:
    spec = make_spec(
        "regression",
        slices={"columns": [{"column": "x1", "bins": [-10, 0, 10]}], "floors": {"rmse": 0.5}, "min_rows": 5},
    )
    rng = np.random.default_rng(3)
    x1 = rng.uniform(-3, 3, 200)
    y = 2 * x1
    yhat = y + np.where(x1 < 0, rng.normal(0, 1.0, 200), rng.normal(0, 0.1, 200))
    frame = pd.DataFrame({"x1": x1, "x2": 0.0, "plan": "basic"})
    slices = slice_results(spec, frame, y, yhat)
    low, _ = slices
    assert low.challenger["rmse"] == pytest.approx(tasks.metric(spec, "rmse", y[x1 < 0], yhat[x1 < 0]))
    assert low.champion is None
    decision = decide(spec, tasks.metrics(spec, y, yhat), None, paired=None, slices=slices)
    blocked = _check(decision, "slice:x1∈[-10, 0):rmse")
    assert blocked.passed is False and "exceeds the ceiling 0.5000" in blocked.reason
    assert _check(decision, "slice:x1∈[0, 10]:rmse").passed is True
