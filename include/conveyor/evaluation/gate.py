"""The champion/challenger gate: a pure decision over metric dicts, and the paired tests.

Every task type (binary, multiclass, regression) goes through the same rules, on its own metrics
(``conveyor.config.TASK_METRICS``; the error metrics ``log_loss``, ``rmse``, ``mae`` and ``mape``
are lower-is-better, ``conveyor.config.LOWER_IS_BETTER``).

:func:`decide` takes the challenger's and the champion's metrics on the *same* frozen evaluation
snapshot and returns a :class:`GateDecision` whose every check carries its value, threshold and a
sentence with the numbers. The rules, in order:

1. **Floors** (``spec.gate.floors``): every listed metric of the challenger must be at least its
   floor; for lower-is-better metrics (``log_loss``, ``rmse``, ``mae``, ``mape``) the floor is a
   ceiling (value at most the threshold). A missing or NaN metric fails its floor.
2. **Slice floors** (``spec.gate.slices``): the same floors per slice of the evaluation snapshot
   (each category of a categorical feature, or numeric buckets). A slice with fewer than
   ``min_rows`` rows, or whose metric is undefined there (ROC AUC of a one-class slice), is reported
   and not judged.
3. **Champion comparison** (when a champion exists), on ``primary_metric`` oriented so that positive
   means "challenger better" (champion - challenger for lower-is-better metrics). By default
   (``decide_on: ci_lower_bound``) the *lower bound* of the paired test's confidence interval must
   reach ``min_improvement``: a challenger better by noise is not promoted. The paired test is
   McNemar's for ``accuracy`` (binary and multiclass: each row right or wrong; exact p-value on the
   discordant pairs; Bonett-Price interval of the paired difference) and a paired bootstrap of the
   rows for every other metric (:func:`paired_bootstrap`, vectorised per task). A negative
   ``min_improvement`` is a **non-inferiority margin**: the challenger may be worse by at most that
   much, with the test's confidence. ``decide_on: point_estimate`` judges the observed difference
   instead (the interval is then reported only). A NaN on either side fails.
4. **Cold start** (no champion): ``floors_only`` passes on the floors alone; ``reject`` fails.
5. **Champion not scorable**: if the current champion could not be loaded or scored, the gate fails
   (the comparison is never silently skipped); fix the champion or move ``@champion`` and re-run.

``passed`` is the verdict. ``action`` is what the pipeline does with it, by mode:

========================  ===================  ==================
mode                      passed               failed
========================  ===================  ==================
``enforce``               ``register``         ``reject``
``dry_run``               ``dry_run``          ``dry_run``
``require_approval``      ``await_approval``   ``reject``
========================  ===================  ==================

``promote`` is ``action == "register"``: a dry run never promotes, and an approval-gated pass
promotes only after a person approves (Airflow's human-in-the-loop step).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PlainSerializer, computed_field

from conveyor.config import LOWER_IS_BETTER, TASK_METRICS, ModelSpec, TaskType
from conveyor.evaluation.metrics import task_of

Mode = Literal["enforce", "dry_run", "require_approval"]
Action = Literal["register", "reject", "dry_run", "await_approval"]
MODES: tuple[str, ...] = ("enforce", "dry_run", "require_approval")
_EPS = 1e-12  # float slack when comparing an improvement with its threshold
_CLIP = 1e-7  # same clipping as conveyor.tasks' metrics


def _json_float(value: float | None) -> float | str | None:
    """NaN/inf as strings in JSON mode: XCom and report.json stay valid JSON and round-trip."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


JsonFloat = Annotated[float, PlainSerializer(_json_float, when_used="json")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class PairedTest(_Frozen):
    """A paired comparison of challenger and champion on the same rows (bootstrap or McNemar).

    Attributes:
        metric: The metric compared.
        method: ``bootstrap`` (percentile interval of resampled differences) or ``mcnemar``
            (accuracy: exact one-sided p-value on the discordant pairs, Bonett-Price interval).
        delta: Observed improvement of the challenger (positive = better; oriented for
            lower-is-better metrics).
        ci_low: Lower bound of the percentile bootstrap confidence interval of ``delta``.
        ci_high: Upper bound.
        p_value: One-sided p-value of "the challenger is not better": for the bootstrap
            ``(1 + #{resampled delta <= 0}) / (1 + n_boot)``; for McNemar the exact binomial test of
            the discordant pairs.
        n_boot: Resamples with a defined metric (a resample with one class has no ROC AUC); 0 for
            McNemar.
        discordant: McNemar's discordant pairs: (challenger right and champion wrong, the reverse).
        n_rows: Rows compared.
        confidence: Confidence level of the interval.
        seed: Seed of the resampling.
    """

    metric: str
    method: Literal["bootstrap", "mcnemar"] = "bootstrap"
    delta: JsonFloat
    ci_low: JsonFloat
    ci_high: JsonFloat
    p_value: JsonFloat
    n_boot: int
    n_rows: int
    confidence: float = 0.95
    seed: int | None = None
    discordant: tuple[int, int] | None = None


class SliceResult(_Frozen):
    """The challenger's (and champion's) metrics on one slice of the evaluation snapshot.

    Attributes:
        column: The sliced feature.
        label: ``contract=one-year`` or ``tenure_months∈[0, 12)``.
        rows: Evaluation rows in the slice.
        judged: Whether the slice has enough rows (``gate.slices.min_rows``) to be judged.
        challenger: The challenger's metrics on the slice.
        champion: The champion's, when there is one.
    """

    column: str
    label: str
    rows: int
    judged: bool
    challenger: dict[str, JsonFloat]
    champion: dict[str, JsonFloat] | None = None


class GateCheck(_Frozen):
    """One rule of the gate applied to the challenger.

    Attributes:
        name: ``floor:<metric>``, ``slice:<slice label>:<metric>``, ``min_improvement:<metric>``,
            ``paired_bootstrap:<metric>`` / ``mcnemar:accuracy``, ``cold_start`` or ``champion_scored``.
        kind: Which rule.
        value: The measured value (``None`` where the rule has none).
        threshold: What it is compared with.
        passed: Whether the rule holds.
        informational: Reported only; does not decide the verdict.
        reason: A sentence with the numbers.
    """

    name: str
    kind: Literal["floor", "slice", "improvement", "paired_test", "cold_start", "champion"]
    value: JsonFloat | None = None
    threshold: JsonFloat | None = None
    passed: bool
    informational: bool = False
    reason: str


class GateDecision(_Frozen):
    """The gate's verdict and what the pipeline does with it (see the module docstring)."""

    passed: bool
    action: Action
    mode: Mode
    #: The spec's task: which metrics the decision carries (``conveyor.config.TASK_METRICS``).
    task: TaskType = "binary"
    primary_metric: str
    reasons: list[str]
    checks: list[GateCheck]
    challenger_metrics: dict[str, JsonFloat]
    champion_metrics: dict[str, JsonFloat] | None = None
    champion_version: str | None = None
    champion_error: str | None = None
    cold_start: bool
    paired: PairedTest | None = None
    decide_on: Literal["ci_lower_bound", "point_estimate"] = "ci_lower_bound"
    slices: list[SliceResult] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def promote(self) -> bool:
        """Whether the challenger goes on to be registered now (``action == "register"``)."""
        return self.action == "register"


def improvement(metric: str, challenger: float, champion: float) -> float:
    """Challenger minus champion, sign-flipped for lower-is-better metrics: positive = better."""
    return champion - challenger if metric in LOWER_IS_BETTER else challenger - champion


def _num(value: float | None) -> str:
    if value is None:
        return "missing"
    return "NaN" if math.isnan(value) else f"{value:.4f}"


def _floor_check(metric: str, value: float | None, threshold: float) -> GateCheck:
    lower = metric in LOWER_IS_BETTER
    bound = "ceiling" if lower else "floor"
    if value is None or math.isnan(value):
        why = (
            "was not computed"
            if value is None
            else "is NaN (undefined on the evaluation set, e.g. ROC AUC with one class only)"
        )
        return GateCheck(
            name=f"floor:{metric}",
            kind="floor",
            value=value,
            threshold=threshold,
            passed=False,
            reason=f"Challenger {metric} {why}, which fails the {bound} {threshold:.4f}.",
        )
    passed = value <= threshold if lower else value >= threshold
    verb = ("is at most" if lower else "is at least") if passed else ("exceeds" if lower else "is below")
    return GateCheck(
        name=f"floor:{metric}",
        kind="floor",
        value=value,
        threshold=threshold,
        passed=passed,
        reason=f"Challenger {metric} {value:.4f} {verb} the {bound} {threshold:.4f}.",
    )


def _improvement_check(
    metric: str,
    challenger: float | None,
    champion: float | None,
    min_improvement: float,
    version: str | None,
    *,
    informational: bool,
) -> GateCheck:
    who = f"champion v{version}" if version else "the champion"
    rule = " (reported; the paired test's interval decides)" if informational else ""
    if challenger is None or champion is None or math.isnan(challenger) or math.isnan(champion):
        return GateCheck(
            name=f"min_improvement:{metric}",
            kind="improvement",
            value=float("nan"),
            threshold=min_improvement,
            passed=False,
            reason=(
                f"{metric} cannot be compared: challenger {_num(challenger)} vs {who} {_num(champion)}; "
                "the comparison fails."
            ),
        )
    delta = improvement(metric, challenger, champion)
    passed = delta >= min_improvement - _EPS
    direction = " (lower is better)" if metric in LOWER_IS_BETTER else ""
    return GateCheck(
        name=f"min_improvement:{metric}",
        kind="improvement",
        value=delta,
        threshold=min_improvement,
        passed=passed,
        informational=informational,
        reason=(
            f"Challenger {metric} {challenger:.4f} vs {who} {champion:.4f}{direction}: observed improvement "
            f"{delta:+.4f} {'meets' if passed else 'misses'} the required {min_improvement:+.4f}{rule}."
        ),
    )


def _margin(min_improvement: float) -> str:
    if min_improvement < 0:
        return f"the non-inferiority margin {min_improvement:+.4f} (at most {-min_improvement:.4f} worse)"
    if min_improvement > 0:
        return f"the required improvement {min_improvement:+.4f}"
    return "zero (no worse than the champion)"


def _paired_check(paired: PairedTest, min_improvement: float, *, informational: bool) -> GateCheck:
    ci_low = paired.ci_low
    passed = not math.isnan(ci_low) and ci_low >= min_improvement - _EPS
    pct = f"{paired.confidence:.0%}"
    if paired.method == "mcnemar":
        b, c = paired.discordant or (0, 0)
        how = (
            f"McNemar's test on {paired.n_rows} rows ({b} rows only the challenger gets right, {c} only "
            "the champion)"
        )
        name = f"mcnemar:{paired.metric}"
    else:
        how = f"Paired bootstrap on {paired.n_rows} rows ({paired.n_boot} resamples)"
        name = f"paired_bootstrap:{paired.metric}"
    if passed:
        verdict = f"its lower bound clears {_margin(min_improvement)}"
    elif math.isnan(ci_low):
        verdict = "no interval could be computed, so it cannot clear " + _margin(min_improvement)
    else:
        verdict = (
            f"its lower bound misses {_margin(min_improvement)}: the difference is within what noise explains"
            if paired.delta >= min_improvement
            else f"its lower bound misses {_margin(min_improvement)}"
        )
    rule = " (reported; decide_on is point_estimate)" if informational else ""
    return GateCheck(
        name=name,
        kind="paired_test",
        value=ci_low,
        threshold=min_improvement,
        passed=passed,
        informational=informational,
        reason=(
            f"{how}: {paired.metric} improvement {_num(paired.delta)}, {pct} CI [{_num(ci_low)}, "
            f"{_num(paired.ci_high)}], p = {_num(paired.p_value)}; {verdict}{rule}."
        ),
    )


def _slice_checks(spec: ModelSpec, slices: list[SliceResult]) -> list[GateCheck]:
    """One check per judged slice and floor; small slices and undefined metrics are reported only."""
    floors = spec.gate.slices.floors
    min_rows = spec.gate.slices.min_rows
    checks: list[GateCheck] = []
    for item in slices:
        for metric, threshold in floors.items():
            name = f"slice:{item.label}:{metric}"
            value = item.challenger.get(metric)
            if not item.judged:
                checks.append(
                    GateCheck(
                        name=name,
                        kind="slice",
                        value=value,
                        threshold=threshold,
                        passed=True,
                        informational=True,
                        reason=(
                            f"Slice {item.label}: {item.rows} evaluation rows, fewer than the {min_rows} "
                            f"needed to judge it; {metric} {_num(value)} is reported, not judged."
                        ),
                    )
                )
                continue
            if value is None or math.isnan(value):
                checks.append(
                    GateCheck(
                        name=name,
                        kind="slice",
                        value=value,
                        threshold=threshold,
                        passed=True,
                        informational=True,
                        reason=(
                            f"Slice {item.label}: {metric} is undefined on its {item.rows} rows (e.g. one "
                            "class only); reported, not judged."
                        ),
                    )
                )
                continue
            floor = _floor_check(metric, value, threshold)
            checks.append(
                GateCheck(
                    name=name,
                    kind="slice",
                    value=value,
                    threshold=threshold,
                    passed=floor.passed,
                    reason=f"Slice {item.label} ({item.rows} rows): {floor.reason}",
                )
            )
    return checks


def decide(
    spec: ModelSpec,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    *,
    paired: PairedTest | None,
    mode_override: str | None = None,
    champion_version: str | None = None,
    champion_error: str | None = None,
    slices: list[SliceResult] | None = None,
) -> GateDecision:
    """Apply the spec's gate to the challenger's metrics (pure; see the module docstring for the rules).

    Args:
        spec: The model spec (``spec.gate`` holds the rules).
        challenger: The challenger's metrics on the evaluation snapshot.
        champion: The champion's metrics on the same snapshot; ``None`` when there is no champion.
        paired: The paired test on the primary metric (:func:`paired_test`); with a champion and
            ``decide_on: ci_lower_bound`` a missing test fails the comparison.
        mode_override: ``enforce``, ``dry_run`` or ``require_approval`` instead of ``spec.gate.mode``.
        champion_version: The champion's version, for the report.
        champion_error: Why the champion could not be scored, if it could not; fails the gate.
        slices: The metrics per slice (:func:`slice_results`), judged against ``gate.slices.floors``.

    Returns:
        The decision.

    Raises:
        ValueError: ``mode_override`` is not a gate mode.
    """
    gate = spec.gate
    mode = mode_override or gate.mode
    if mode not in MODES:
        raise ValueError(f"unknown gate mode {mode!r}; use one of {list(MODES)}")
    primary = gate.primary_metric
    checks: list[GateCheck] = [
        _floor_check(metric, _get(challenger, metric), threshold) for metric, threshold in gate.floors.items()
    ]
    checks += _slice_checks(spec, slices or [])
    by_interval = gate.decide_on == "ci_lower_bound"
    cold_start = champion is None and champion_error is None
    if champion_error is not None:
        checks.append(
            GateCheck(
                name="champion_scored",
                kind="champion",
                passed=False,
                reason=(
                    f"The current champion{f' v{champion_version}' if champion_version else ''} could not be "
                    f"scored on the evaluation snapshot ({champion_error}); the gate fails rather than skip "
                    "the comparison. Fix the champion, or move @champion with "
                    "conveyor.registry.aliases.set_alias/delete_alias, and re-run."
                ),
            )
        )
    elif champion is None:
        floors = f"{len(gate.floors)} floor(s)" if gate.floors else "no floors"
        if gate.cold_start == "floors_only":
            checks.append(
                GateCheck(
                    name="cold_start",
                    kind="cold_start",
                    passed=True,
                    reason=(
                        f"No champion yet: under the cold-start rule 'floors_only' the challenger is judged "
                        f"on {floors} alone."
                    ),
                )
            )
        else:
            checks.append(
                GateCheck(
                    name="cold_start",
                    kind="cold_start",
                    passed=False,
                    reason=(
                        "No champion yet and the cold-start rule is 'reject': the first model must be "
                        "promoted by hand (set_alias), or change gate.cold_start to 'floors_only'."
                    ),
                )
            )
    else:
        checks.append(
            _improvement_check(
                primary,
                _get(challenger, primary),
                _get(champion, primary),
                gate.min_improvement,
                champion_version,
                informational=by_interval and paired is not None,
            )
        )
        if paired is not None:
            checks.append(_paired_check(paired, gate.min_improvement, informational=not by_interval))
        elif by_interval:
            checks.append(
                GateCheck(
                    name=f"paired_test:{primary}",
                    kind="paired_test",
                    passed=False,
                    reason=(
                        "decide_on is ci_lower_bound but no paired test was run against the champion; "
                        "the comparison fails."
                    ),
                )
            )

    passed = all(c.passed for c in checks if not c.informational)
    action: Action
    if mode == "enforce":
        action = "register" if passed else "reject"
    elif mode == "dry_run":
        action = "dry_run"
    else:
        action = "await_approval" if passed else "reject"
    failed = [c.name for c in checks if not c.passed and not c.informational]
    outcome = {
        "register": "the challenger goes on to be registered",
        "reject": "the challenger is not registered",
        "dry_run": "nothing is registered (dry run)",
        "await_approval": "the challenger waits for a person's approval before it is registered",
    }[action]
    verdict = (
        f"Verdict: {'PASSED' if passed else 'FAILED'}"
        + (f" ({len(failed)} failing: {', '.join(failed)})" if failed else "")
        + f"; mode {mode}, so {outcome}."
    )
    return GateDecision(
        passed=passed,
        action=action,
        mode=mode,  # type: ignore[arg-type]
        task=spec.task,
        primary_metric=primary,
        reasons=[*(c.reason for c in checks), verdict],
        checks=checks,
        challenger_metrics=dict(challenger),
        champion_metrics=dict(champion) if champion is not None else None,
        champion_version=champion_version,
        champion_error=champion_error,
        cold_start=cold_start,
        paired=paired if champion is not None else None,
        decide_on=gate.decide_on,
        slices=list(slices or []),
    )


def _get(metrics: dict[str, float], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)


# ---------------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------------


# Every metric here is a function of *cell counts*: how often each (label, prediction) or
# (score tie-group, label) cell occurs in a resample. A resample is a row of drawn indices; mapping
# them to cell codes and counting with one offset ``bincount`` scores a whole chunk of resamples at
# once, with no sort and no per-resample Python loop.


def _row_counts(codes: np.ndarray, cells: int) -> np.ndarray:
    """Per-row histograms of ``codes`` (shape ``(B, N)``, values in ``[0, cells)``) as ``(B, cells)``."""
    rows = codes.shape[0]
    codes += (np.arange(rows, dtype=codes.dtype) * cells)[:, None]  # codes is a fresh array: reuse it
    return np.bincount(codes.ravel(), minlength=rows * cells).reshape(rows, cells)


def _auc_from_counts(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """ROC AUC from ``(B, G)`` negative and positive counts per score group (ascending); ties count half.

    Integer counts stay integers (exact: twice the wins is ``pos * (2 * negatives below + tied)``);
    float weights work the same way.
    """
    below = np.cumsum(neg, axis=1)
    below -= neg
    below *= 2
    below += neg
    wins2 = np.einsum("ij,ij->i", pos, below)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, wins2 / (2.0 * pairs), np.nan)


def _from_confusion(
    metric: str, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray
) -> np.ndarray:
    """A threshold metric from confusion counts (``zero_division=0`` as in ``binary_metrics``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "accuracy":
            return (tp + tn) / (tp + fp + fn + tn)
        if metric == "precision":
            return np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        if metric == "recall":
            return np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)


class _Model:
    """One model's per-row codes for the cell counts."""

    def __init__(self, y: np.ndarray, p: np.ndarray, threshold: float) -> None:
        _, group = np.unique(p, return_inverse=True)  # tie groups, numbered in ascending score order
        group = group.astype(np.int64).ravel()
        self.groups = int(group.max()) + 1
        self.auc_code = y * self.groups + group  # negatives' groups first, then positives'
        self.pred = (p >= threshold).astype(np.int64)
        self.loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))

    def auc(self, idx: np.ndarray) -> np.ndarray:
        counts = _row_counts(self.auc_code[idx], self.groups * 2)
        return _auc_from_counts(counts[:, : self.groups], counts[:, self.groups :])


def _weighted_cells(codes: np.ndarray, cells: int, weights: np.ndarray) -> np.ndarray:
    return np.stack([np.bincount(codes, weights=w, minlength=cells) for w in weights])


def weighted_metric(
    metric: str, y: Any, probability: Any, weights: Any, threshold: float = 0.5
) -> np.ndarray:
    """``metric`` under each row of ``weights`` (a count per example); the bootstrap's arithmetic.

    Binary only. With ``weights`` all ones this equals ``binary_metrics(y, probability)[metric]``; with
    integer weights it equals ``binary_metrics`` on the rows repeated that many times. For tests and
    reuse.
    """
    _check_metric("binary", metric)
    y_arr = np.asarray(y).astype(np.int64)
    p = np.clip(np.asarray(probability, dtype=float), _CLIP, 1 - _CLIP)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    model = _Model(y_arr, p, threshold)
    if metric == "roc_auc":
        counts = _weighted_cells(model.auc_code, model.groups * 2, w)
        return _auc_from_counts(counts[:, : model.groups], counts[:, model.groups :])
    if metric == "log_loss":
        return (w @ model.loss) / w.sum(axis=1)
    cells = _weighted_cells(y_arr * 2 + model.pred, 4, w)
    return _from_confusion(metric, tp=cells[:, 3], fp=cells[:, 1], fn=cells[:, 2], tn=cells[:, 0])


class _PairedDelta:
    """The oriented improvement of one model over another, for a batch of resampled index rows."""

    def __init__(
        self, metric: str, y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray, threshold: float
    ) -> None:
        self.metric = metric
        self.new = _Model(y, p_new, threshold)
        self.old = _Model(y, p_old, threshold)
        # one code per row for both models' confusion cells: label, new prediction, old prediction
        self.joint = y * 4 + self.new.pred * 2 + self.old.pred
        self.loss_gain = self.old.loss - self.new.loss  # positive where the challenger's loss is lower

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        if self.metric == "roc_auc":
            return self.new.auc(idx) - self.old.auc(idx)
        if self.metric == "log_loss":
            return self.loss_gain[idx].mean(axis=1)
        c = _row_counts(self.joint[idx], 8)  # column = 4*y + 2*new + old
        tn_new, fp_new = c[:, 0] + c[:, 1], c[:, 2] + c[:, 3]
        fn_new, tp_new = c[:, 4] + c[:, 5], c[:, 6] + c[:, 7]
        tn_old, fp_old = c[:, 0] + c[:, 2], c[:, 1] + c[:, 3]
        fn_old, tp_old = c[:, 4] + c[:, 6], c[:, 5] + c[:, 7]
        return _from_confusion(self.metric, tp_new, fp_new, fn_new, tn_new) - _from_confusion(
            self.metric, tp_old, fp_old, fn_old, tn_old
        )


class _Regression:
    """One regression model's per-row errors; each metric of a resample is a mean or sum of them."""

    def __init__(self, y: np.ndarray, yhat: np.ndarray) -> None:
        error = yhat - y
        self.squared = error * error
        self.absolute = np.abs(error)
        # sklearn's mean_absolute_percentage_error: |error| / max(|y|, machine epsilon)
        self.percentage = self.absolute / np.maximum(np.abs(y), np.finfo(np.float64).eps)

    def values(self, metric: str, idx: np.ndarray, total: np.ndarray) -> np.ndarray:
        """``metric`` on each resample (``total``: the resample's total sum of squares, for R²)."""
        if metric == "rmse":
            return np.sqrt(self.squared[idx].mean(axis=1))
        if metric == "mae":
            return self.absolute[idx].mean(axis=1)
        if metric == "mape":
            return self.percentage[idx].mean(axis=1)
        residual = self.squared[idx].sum(axis=1)
        # sklearn's r2_score (force_finite): 1 - SSres/SStot; a constant target gives 1 when the
        # predictions are exact, else 0
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(total != 0, 1.0 - residual / total, np.where(residual == 0, 1.0, 0.0))
        return r2 if idx.shape[1] > 1 else np.full(idx.shape[0], np.nan)


def _total_squares(y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    drawn = y[idx]
    drawn -= drawn.mean(axis=1, keepdims=True)
    return np.einsum("ij,ij->i", drawn, drawn)


def _from_class_confusion(metric: str, cm: np.ndarray) -> np.ndarray:
    """A multiclass label metric from ``(B, k, k)`` confusion counts ``[true, predicted]``.

    As ``sklearn.metrics`` with ``labels=range(k)`` and ``zero_division=0``: every class counts in the
    macro average, also one absent from the resample.
    """
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(float)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    if metric == "accuracy":
        return tp.sum(axis=1) / cm.sum(axis=(1, 2))
    base, average = metric.rsplit("_", 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if base == "precision":
            per_class = np.where(predicted > 0, tp / predicted, 0.0)
        elif base == "recall":
            per_class = np.where(support > 0, tp / support, 0.0)
        else:
            per_class = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    if average == "macro":
        return per_class.mean(axis=1)
    return np.einsum("ij,ij->i", per_class, support) / support.sum(axis=1)


class _Multiclass:
    """One multiclass model's per-row codes: confusion cell, log loss, and per class its tie groups."""

    def __init__(self, y: np.ndarray, scores: np.ndarray) -> None:
        rows, k = scores.shape
        self.k = k
        self.cell = y * k + np.argmax(scores, axis=1)
        clipped = np.clip(scores, _CLIP, 1)  # as conveyor.tasks: clip, renormalise, then sklearn's clip
        chosen = clipped[np.arange(rows), y] / clipped.sum(axis=1)
        eps = np.finfo(np.float64).eps
        self.loss = -np.log(np.clip(chosen, eps, 1 - eps))
        self.auc_codes: list[tuple[int, np.ndarray]] = []
        # as conveyor.tasks: rows renormalised to sum to 1 (float32 softmax and TFLite drift a little)
        normalised = scores / np.clip(scores.sum(axis=1, keepdims=True), _CLIP, None)
        for c in range(k):
            _, group = np.unique(normalised[:, c], return_inverse=True)
            group = group.astype(np.int64).ravel()
            groups = int(group.max()) + 1 if rows else 1
            self.auc_codes.append((groups, (y == c).astype(np.int64) * groups + group))

    def ovr_auc(self, idx: np.ndarray) -> np.ndarray:
        """Macro one-vs-rest ROC AUC of each resample (meaningful where every class is present)."""
        total = np.zeros(idx.shape[0])
        for groups, code in self.auc_codes:
            counts = _row_counts(code[idx], groups * 2)
            total += _auc_from_counts(counts[:, :groups], counts[:, groups:])
        return total / self.k

    def values(self, metric: str, idx: np.ndarray) -> np.ndarray:
        if metric == "log_loss":
            return self.loss[idx].mean(axis=1)
        if metric == "roc_auc_ovr":
            return self.ovr_auc(idx)
        cm = _row_counts(self.cell[idx], self.k * self.k).reshape(idx.shape[0], self.k, self.k)
        return _from_class_confusion(metric, cm)


class _TaskDelta:
    """The oriented improvement on ``metric`` of a multiclass or regression challenger, per resample.

    Regression and the count-based multiclass metrics are vectorised over a chunk of resamples. The
    one-vs-rest ROC AUC of a resample that lacks a class is renormalised over the classes present by
    ``conveyor.tasks``; those (rare) resamples are scored one by one with ``conveyor.tasks`` itself.
    """

    def __init__(
        self, spec: ModelSpec, metric: str, y: np.ndarray, s_new: np.ndarray, s_old: np.ndarray
    ) -> None:
        self.spec, self.metric, self.y = spec, metric, y
        self.new_scores, self.old_scores = s_new, s_old
        self.sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        self.new: _Multiclass | _Regression
        self.old: _Multiclass | _Regression
        if spec.task == "regression":
            self.new, self.old = _Regression(y, s_new), _Regression(y, s_old)
        else:
            self.new, self.old = _Multiclass(y, s_new), _Multiclass(y, s_old)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        if isinstance(self.new, _Regression) and isinstance(self.old, _Regression):
            total = _total_squares(self.y, idx) if self.metric == "r2" else np.empty(0)
            delta = self.new.values(self.metric, idx, total) - self.old.values(self.metric, idx, total)
            return self.sign * delta
        assert isinstance(self.new, _Multiclass) and isinstance(self.old, _Multiclass)
        if self.metric == "log_loss":  # one gather for both models
            return (self.old.loss - self.new.loss)[idx].mean(axis=1)
        delta = self.sign * (self.new.values(self.metric, idx) - self.old.values(self.metric, idx))
        if self.metric == "roc_auc_ovr":
            present = np.count_nonzero(_row_counts(self.y[idx], self.new.k), axis=1)
            delta[present < 2] = np.nan
            partial = np.flatnonzero((present >= 2) & (present < self.new.k))
            if partial.size:
                from conveyor import tasks

                score = tasks.metric_function(self.spec, self.metric)
                for i in partial:
                    rows = idx[i]
                    y = self.y[rows]
                    delta[i] = score(y, self.new_scores[rows]) - score(y, self.old_scores[rows])
        return delta


def _check_metric(task: str, metric: str) -> None:
    if metric not in TASK_METRICS[task]:
        raise ValueError(
            f"unknown metric {metric!r} for a {task} model; use one of {list(TASK_METRICS[task])}"
        )


def _task_arrays(
    spec: ModelSpec, y: Any, scores: tuple[Any, ...], what: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Encoded labels and each model's scores of a multiclass or regression ``spec``, checked.

    Raises:
        ValueError: no rows, rows or classes that differ, labels outside the classes, non-finite scores.
    """
    if spec.task == "regression":
        y_arr = np.asarray(y, dtype=np.float64).ravel()
        arrays = [np.asarray(s, dtype=np.float64).ravel() for s in scores]
        expected: tuple[int, ...] = y_arr.shape
    else:
        k = len(spec.classes)
        y_arr = np.asarray(y).ravel().astype(np.int64)
        arrays = [np.asarray(s, dtype=np.float64) for s in scores]
        expected = (y_arr.size, k)
        if y_arr.size and (y_arr.min() < 0 or y_arr.max() >= k):
            raise ValueError(
                f"multiclass labels must be class indices 0..{k - 1} (conveyor.tasks.encode_target)"
            )
    if y_arr.size == 0:
        raise ValueError(f"{what} needs at least one row")
    if any(a.shape != expected for a in arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(
            f"labels and both models' scores must have the same rows: labels {y_arr.shape}, scores "
            f"{shapes} (expected {expected} for a {spec.task} model)"
        )
    if not all(np.isfinite(a).all() for a in arrays) or not np.isfinite(y_arr).all():
        raise ValueError(f"{what} needs finite labels and scores")
    return y_arr, arrays


def _resamples(rows: int, n: int, seed: int | None) -> Iterator[np.ndarray]:
    """The bootstrap's resamples, ``(size, rows)`` row indices per chunk: the same for every task."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n, 1_000_000 // rows))
    for start in range(0, n, chunk):
        yield rng.integers(0, rows, size=(min(chunk, n - start), rows))


def resampled_metric(
    metric: str, y: Any, scores: Any, idx: Any, *, spec: ModelSpec | None = None
) -> np.ndarray:
    """``metric`` of one model on each resample (row of row indices ``idx``): the bootstrap's arithmetic.

    Equals ``conveyor.tasks.metric(spec, metric, y[i], scores[i])`` for each row ``i`` of ``idx``. For
    tests and reuse.

    Args:
        metric: A metric of the spec's task.
        y: Encoded labels (``conveyor.tasks.encode_target``).
        scores: The model's scores (``conveyor.tasks.scores_of``).
        idx: ``(B, N)`` row indices.
        spec: The model's spec; ``None``: binary.
    """
    spec = task_of(spec)
    _check_metric(spec.task, metric)
    rows = np.atleast_2d(np.asarray(idx, dtype=np.int64))
    if spec.task == "binary":
        y_arr = np.asarray(y).astype(np.int64).ravel()
        weights = np.stack([np.bincount(r, minlength=y_arr.size) for r in rows])
        return weighted_metric(metric, y_arr, scores, weights)
    y_arr, (s,) = _task_arrays(spec, y, (scores,), "a resampled metric")
    if spec.task == "regression":
        model = _Regression(y_arr, s)
        total = _total_squares(y_arr, rows) if metric == "r2" else np.empty(0)
        return model.values(metric, rows, total)
    values = _Multiclass(y_arr, s).values(metric, rows)
    if metric == "roc_auc_ovr":
        from conveyor import tasks

        present = np.count_nonzero(_row_counts(y_arr[rows], len(spec.classes)), axis=1)
        for i in np.flatnonzero(present < len(spec.classes)):
            values[i] = tasks.metric(spec, metric, y_arr[rows[i]], s[rows[i]])
    return values


def paired_bootstrap(
    y: Any,
    p_challenger: Any,
    p_champion: Any,
    metric: str,
    n: int = 1000,
    seed: int | None = 0,
    *,
    confidence: float = 0.95,
    threshold: float = 0.5,
    spec: ModelSpec | None = None,
) -> PairedTest:
    """Bootstrap the challenger's improvement over the champion on the same rows.

    Each resample draws the rows with replacement once and scores *both* models on it (paired), so
    row difficulty cancels out. Resamples are drawn in chunks from one ``numpy`` generator seeded
    with ``seed`` (the same draws for every task) and scored a chunk at a time: binary metrics from
    cell counts (one ``bincount`` per chunk, no sorting), which keeps 10,000 rows x 1,000 resamples
    well under a second; regression metrics from per-row errors; multiclass metrics from per-resample
    confusion counts and per-class tie groups (the one-vs-rest ROC AUC of a resample missing a class
    is scored by ``conveyor.tasks``).

    Args:
        y: Encoded labels (binary 0/1, multiclass class indices, regression values).
        p_challenger: Challenger's scores per row (``conveyor.tasks.scores_of``: binary P(label == 1),
            multiclass ``(n, k)`` probabilities, regression predictions).
        p_champion: Champion's scores on the same rows, same order.
        metric: One of the task's metrics (``spec.metric_names``).
        n: Number of resamples.
        seed: Seed of the resampling (``None``: fresh entropy).
        confidence: Level of the percentile confidence interval.
        threshold: Decision threshold for the binary threshold metrics.
        spec: The model's spec (its task and classes); ``None``: binary.

    Returns:
        The test; ``delta`` and its interval are oriented so that positive means "challenger better".
        Resamples where the metric is undefined (one class) are left out of the interval.

    Raises:
        ValueError: unknown metric, shapes differ, or no rows.
    """
    spec = task_of(spec)
    _check_metric(spec.task, metric)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    paired_delta: _PairedDelta | _TaskDelta
    if spec.task == "binary":
        y_arr = np.asarray(y).astype(np.int64).ravel()
        p_new = np.clip(np.asarray(p_challenger, dtype=float).ravel(), _CLIP, 1 - _CLIP)
        p_old = np.clip(np.asarray(p_champion, dtype=float).ravel(), _CLIP, 1 - _CLIP)
        if y_arr.size == 0:
            raise ValueError("paired bootstrap needs at least one row")
        if not (p_new.shape == p_old.shape == y_arr.shape):
            raise ValueError(
                f"labels and both models' probabilities must have the same rows: "
                f"{y_arr.shape}, {p_new.shape}, {p_old.shape}"
            )
        paired_delta = _PairedDelta(metric, y_arr, p_new, p_old, threshold)
    else:
        y_arr, (s_new, s_old) = _task_arrays(spec, y, (p_challenger, p_champion), "paired bootstrap")
        paired_delta = _TaskDelta(spec, metric, y_arr, s_new, s_old)
    rows = y_arr.size
    observed = float(paired_delta(np.arange(rows)[None, :])[0])

    deltas = np.concatenate([paired_delta(idx) for idx in _resamples(rows, n, seed)])
    valid = deltas[~np.isnan(deltas)]
    if valid.size == 0:
        nan = float("nan")
        return PairedTest(
            metric=metric,
            delta=observed,
            ci_low=nan,
            ci_high=nan,
            p_value=nan,
            n_boot=0,
            n_rows=rows,
            confidence=confidence,
            seed=seed,
        )
    alpha = (1 - confidence) / 2
    low, high = np.quantile(valid, [alpha, 1 - alpha])
    p_value = (1 + np.count_nonzero(valid <= 0)) / (1 + valid.size)
    return PairedTest(
        metric=metric,
        delta=observed,
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(p_value),
        n_boot=int(valid.size),
        n_rows=rows,
        confidence=confidence,
        seed=seed,
    )


def _correct(
    spec: ModelSpec, y: Any, p_challenger: Any, p_champion: Any, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each model gets each row right (binary: ``p >= threshold``; multiclass: the argmax)."""
    if spec.task == "regression":
        raise ValueError("McNemar's test compares accuracy, which a regression model does not have")
    if spec.task == "multiclass":
        y_arr, (s_new, s_old) = _task_arrays(spec, y, (p_challenger, p_champion), "McNemar's test")
        return np.argmax(s_new, axis=1) == y_arr, np.argmax(s_old, axis=1) == y_arr
    y_arr = np.asarray(y).astype(np.int64).ravel()
    new = np.asarray(p_challenger, dtype=float).ravel() >= threshold
    old = np.asarray(p_champion, dtype=float).ravel() >= threshold
    if y_arr.size == 0:
        raise ValueError("McNemar's test needs at least one row")
    if not (new.shape == old.shape == y_arr.shape):
        raise ValueError(
            f"labels and both models' probabilities must have the same rows: {y_arr.shape}, {new.shape}, "
            f"{old.shape}"
        )
    truth = y_arr.astype(bool)
    return new == truth, old == truth


def mcnemar_test(
    y: Any,
    p_challenger: Any,
    p_champion: Any,
    *,
    confidence: float = 0.95,
    threshold: float = 0.5,
    spec: ModelSpec | None = None,
) -> PairedTest:
    """McNemar's test of the challenger's accuracy gain over the champion on the same rows.

    Each row is right or wrong for each model (binary: ``probability >= threshold`` against the
    label; multiclass: the most probable class against the label). Only the discordant pairs carry
    information: ``b`` rows the challenger gets right and the champion wrong, ``c`` the reverse. The
    gain is ``(b - c) / n``; its interval is Bonett and Price's adjusted Wald interval for a paired
    difference of proportions (add one to each discordant count, two to ``n``), which behaves where
    the plain Wald interval does not (few discordant pairs); the one-sided p-value of "the
    challenger is not better" is the exact binomial test of ``b`` in ``b + c`` (scipy).

    Args:
        y: Encoded labels (binary 0/1, multiclass class indices).
        p_challenger: Challenger's scores per row (binary P(label == 1), multiclass ``(n, k)``).
        p_champion: Champion's, same rows and order.
        confidence: Level of the interval.
        threshold: Binary decision threshold.
        spec: The model's spec; ``None``: binary.

    Returns:
        The test (``method="mcnemar"``, ``metric="accuracy"``).

    Raises:
        ValueError: shapes differ, no rows, or a regression spec (no accuracy).
    """
    from scipy import stats

    right_new, right_old = _correct(task_of(spec), y, p_challenger, p_champion, threshold)
    b = int(np.count_nonzero(right_new & ~right_old))
    c = int(np.count_nonzero(~right_new & right_old))
    n = right_new.size
    p12, p21 = (b + 1) / (n + 2), (c + 1) / (n + 2)
    adjusted = p12 - p21
    se = math.sqrt(max(p12 + p21 - adjusted**2, 0.0) / (n + 2))
    z = float(stats.norm.ppf(1 - (1 - confidence) / 2))
    p_value = float(stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0
    return PairedTest(
        metric="accuracy",
        method="mcnemar",
        delta=(b - c) / n,
        ci_low=max(adjusted - z * se, -1.0),
        ci_high=min(adjusted + z * se, 1.0),
        p_value=p_value,
        n_boot=0,
        n_rows=n,
        confidence=confidence,
        discordant=(b, c),
    )


def paired_test(
    y: Any,
    p_challenger: Any,
    p_champion: Any,
    metric: str,
    *,
    n: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
    spec: ModelSpec | None = None,
) -> PairedTest:
    """The gate's paired test on ``metric``: McNemar's for accuracy (binary and multiclass), the paired
    bootstrap for every other metric (``spec``: the model's task and classes; ``None``: binary)."""
    if metric == "accuracy":
        return mcnemar_test(
            y, p_challenger, p_champion, confidence=confidence, threshold=threshold, spec=spec
        )
    return paired_bootstrap(
        y,
        p_challenger,
        p_champion,
        metric,
        n=n,
        seed=seed,
        confidence=confidence,
        threshold=threshold,
        spec=spec,
    )


def _edge(value: float) -> str:
    return f"{value:g}"


def slice_results(
    spec: ModelSpec, frame: Any, y: Any, p_challenger: Any, p_champion: Any | None = None
) -> list[SliceResult]:
    """Metrics of both models on each slice that ``spec.gate.slices`` names (pure; any model type).

    ``y`` are the encoded labels and ``p_*`` the models' scores (``conveyor.tasks.encode_target`` and
    ``scores_of``); each slice is scored with ``conveyor.tasks.metrics`` (every metric of the task; a
    metric undefined on a slice, such as ROC AUC of a one-class slice, is NaN and not judged).
    Categorical columns give one slice per value seen; numeric columns one per bucket of ``bins``
    (left-closed, the last one closed on both sides). Rows without a value, or outside the edges,
    belong to no slice. Slices come in column order, then category or bucket order.
    """
    import pandas as pd

    from conveyor import tasks

    sliced = spec.gate.slices
    y_arr = np.asarray(y)
    new = np.asarray(p_challenger, dtype=float)
    old = None if p_champion is None else np.asarray(p_champion, dtype=float)
    out: list[SliceResult] = []
    for column in sliced.columns:
        values = frame[column.column]
        if column.bins is not None:
            edges = list(column.bins)
            labels = [
                f"{column.column}∈[{_edge(lo)}, {_edge(hi)}{']' if i == len(edges) - 2 else ')'}"
                for i, (lo, hi) in enumerate(itertools.pairwise(edges))
            ]
            numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            codes = np.searchsorted(edges, numeric, side="right") - 1
            codes[numeric == edges[-1]] = len(edges) - 2  # the last bucket is closed on the right
            codes[np.isnan(numeric) | (numeric < edges[0]) | (numeric > edges[-1])] = -1
            groups = [(label, codes == i) for i, label in enumerate(labels)]
        else:
            present = values.dropna().astype(str)
            groups = [
                (
                    f"{column.column}={value}",
                    (values.astype(str) == value).to_numpy() & values.notna().to_numpy(),
                )
                for value in sorted(present.unique())
            ]
        for label, mask in groups:
            rows = int(mask.sum())
            if rows == 0:
                continue
            out.append(
                SliceResult(
                    column=column.column,
                    label=label,
                    rows=rows,
                    judged=rows >= sliced.min_rows,
                    challenger=tasks.metrics(spec, y_arr[mask], new[mask]),
                    champion=None if old is None else tasks.metrics(spec, y_arr[mask], old[mask]),
                )
            )
    return out
