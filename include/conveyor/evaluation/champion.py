"""Score challenger and champion on the same frozen evaluation snapshot, decide, and report.

:func:`evaluate` loads the challenger (a logged model) and the model that ``@champion`` names now
(pinned to its version number, so a concurrent alias move cannot switch models mid-evaluation),
scores both on the same rows, runs the paired test on the primary metric (McNemar's for accuracy,
a paired bootstrap otherwise), computes the metrics per slice, measures permutation feature
importance of both models, and applies the gate (:func:`conveyor.evaluation.gate.decide`). A
champion that cannot be loaded or scored is reported in the decision and fails the gate; it is
never silently treated as "no champion".

Every task type is scored the same way, through ``conveyor.tasks``: each model's pyfunc output frame
is held to the task's output contract (``check_outputs``) and read as scores (``scores_of``: binary
P(positive), multiclass the class probabilities, regression the predictions); the snapshot's target
is encoded by ``encode_target``; the metrics are the task's (``tasks.metrics``).

:func:`write_gate_report` attaches ``gate/report.json``, ``gate/report.md`` and the figures
(``gate/metrics.png`` and the task's figures, ``conveyor.evaluation.plots.TASK_FIGURES``) to the DAG
run's MLflow run and logs ``gate_passed``, ``challenger_<metric>`` and ``champion_<metric>``.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from conveyor.config import LOWER_IS_BETTER, TASK_METRICS, ModelSpec
from conveyor.errors import PermanentError
from conveyor.evaluation.explain import FeatureImportance
from conveyor.evaluation.gate import GateDecision, PairedTest, decide, paired_test, slice_results
from conveyor.names import CHAMPION

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

REPORT_JSON = "gate/report.json"
REPORT_MD = "gate/report.md"
REPORT_PNG = "gate/metrics.png"
#: The report's other figures of a binary model, by artifact path (any task: :func:`report_figures`).
REPORT_FIGURES = ("gate/roc.png", "gate/confusion.png", "gate/slices.png", "gate/importance.png")


def report_figures(task: str) -> tuple[str, ...]:
    """The report's figures of a ``task`` model besides ``gate/metrics.png``, by artifact path (a
    figure is left out when there is nothing to draw: slices when the spec slices none)."""
    from conveyor.evaluation.plots import TASK_FIGURES

    return tuple(f"gate/{name}" for name in TASK_FIGURES[task])


class EvaluationDataError(PermanentError, ValueError):
    """The evaluation frame cannot be scored (missing columns, no rows, missing labels)."""


class ModelScoringError(PermanentError):
    """A model could not be loaded or did not answer with the contract's output."""


class Scored(BaseModel):
    """One model's scores on the evaluation snapshot.

    Attributes:
        model_uri: The model scored.
        metrics: The task's metrics of its scores (``conveyor.tasks.metrics``).
        scores: Its scores per evaluation row, in the frame's order (``conveyor.tasks.scores_of``:
            binary P(positive) ``(n,)``, multiclass ``(n, k)`` probabilities, regression ``(n,)``).
        importance: Permutation feature importance on the snapshot, when asked for.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model_uri: str
    metrics: dict[str, float]
    scores: np.ndarray
    importance: FeatureImportance | None = None


class GateEvaluation(BaseModel):
    """The decision and the evidence behind it (labels and both models' scores), for the report.

    Only ``decision`` travels (XCom, ``report.json``); the arrays stay in the process that draws the
    report's plots.

    Attributes:
        decision: The gate's decision.
        y: The snapshot's encoded target (``conveyor.tasks.encode_target``).
        challenger: The challenger's scores.
        champion: The champion's, when one was scored.
        classes: The label set of a classification spec (``spec.classes``), for the figures.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    decision: GateDecision
    y: np.ndarray
    challenger: Scored
    champion: Scored | None = None
    classes: tuple[Any, ...] = (0, 1)

    @property
    def champion_label(self) -> str:
        version = self.decision.champion_version
        return f"champion v{version}" if version else "champion"

    def scores(self) -> dict[str, np.ndarray]:
        """Each scored model's scores, by its label in the figures (``challenger``, ``champion v3``)."""
        out = {"challenger": self.challenger.scores}
        if self.champion is not None:
            out[self.champion_label] = self.champion.scores
        return out

    def importances(self) -> dict[str, FeatureImportance]:
        out = {}
        if self.challenger.importance is not None:
            out["challenger"] = self.challenger.importance
        if self.champion is not None and self.champion.importance is not None:
            out[self.champion_label] = self.champion.importance
        return out


def _check_frame(spec: ModelSpec, eval_df: pd.DataFrame) -> np.ndarray:
    """The snapshot's encoded target, once its columns, rows and labels are checked.

    Raises:
        EvaluationDataError: columns or rows missing, unlabelled rows, or a target the task refuses
            (a label outside ``data.classes``, a non-numeric regression value).
    """
    from conveyor import tasks

    needed = [*spec.feature_names, spec.data.target]
    missing = [c for c in needed if c not in eval_df.columns]
    if missing:
        raise EvaluationDataError(
            f"evaluation frame for {spec.name} lacks columns {missing}; it must hold the spec's features "
            f"and target {spec.data.target!r} (the frozen eval snapshot does)"
        )
    if len(eval_df) == 0:
        raise EvaluationDataError(
            f"evaluation frame for {spec.name} has no rows; freeze a non-empty snapshot"
        )
    unlabeled = int(eval_df[spec.data.target].isna().sum())
    if unlabeled:
        raise EvaluationDataError(
            f"evaluation frame for {spec.name} has {unlabeled} rows without a {spec.data.target!r} label; "
            "the gate needs labelled rows"
        )
    try:
        return tasks.encode_target(spec, eval_df[spec.data.target])
    except tasks.TargetError as exc:
        raise EvaluationDataError(f"evaluation frame for {spec.name}: {exc}") from exc


@contextmanager
def _loaded_pyfunc(
    model_uri: str, client: MlflowClient | None, expected_sha256: str | None = None
) -> Iterator[Any]:
    """The pyfunc model; its files stay available until the block ends (some flavors read lazily).

    With ``expected_sha256`` the downloaded files are verified before loading (``client`` needed).
    """
    import mlflow.pyfunc

    if client is None:
        with tempfile.TemporaryDirectory(prefix="conveyor-score-") as workdir:
            yield mlflow.pyfunc.load_model(model_uri, dst_path=workdir)
        return
    from conveyor.registry.versions import local_model_dir, verify_artifact

    with local_model_dir(client, model_uri) as path:
        if expected_sha256 is not None:
            verify_artifact(path, expected_sha256, what=model_uri)
        yield mlflow.pyfunc.load_model(str(path))


def score_on_snapshot(
    model_uri: str,
    spec: ModelSpec,
    eval_df: pd.DataFrame,
    *,
    client: MlflowClient | None = None,
    expected_sha256: str | None = None,
    importance_metric: str | None = None,
    seed: int = 0,
) -> Scored:
    """Load the pyfunc ``model_uri`` and score it on ``eval_df``.

    Args:
        model_uri: ``models:/m-...``, ``models:/<name>/<version>``, ``runs:/...`` or a local path.
        spec: The model spec (features and target).
        eval_df: The frozen evaluation snapshot (features + target; other columns are ignored).
        client: Read the model through this client's tracking/registry URIs; ``None`` uses MLflow's
            process-wide URIs.
        expected_sha256: The version's recorded ``conveyor.artifact_sha256``: the files are
            verified before loading (a mismatch is a ``ModelScoringError`` naming the version).
        importance_metric: Also measure permutation feature importance on this metric (the model
            stays loaded for it); ``None`` skips it.
        seed: Seed of the permutations.

    Returns:
        The task's metrics and per-row scores (and the importance table when asked for).

    Raises:
        EvaluationDataError: the frame lacks columns, rows or labels, or holds a target the task
            refuses.
        ModelScoringError: the model does not load, fails to predict, or breaks its task's output
            contract (``conveyor.tasks.check_outputs``: columns, dtypes, one row per input, finite
            values, probabilities in [0, 1]).
    """
    from conveyor import tasks

    y = _check_frame(spec, eval_df)
    features = eval_df[spec.feature_names]
    with ExitStack() as stack:
        try:
            model = stack.enter_context(_loaded_pyfunc(model_uri, client, expected_sha256))
        except Exception as exc:
            raise ModelScoringError(
                f"cannot load model {model_uri!r} for {spec.name}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            output = model.predict(features)
        except Exception as exc:
            raise ModelScoringError(
                f"model {model_uri!r} failed to predict on {len(features)} evaluation rows of {spec.name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        try:
            tasks.check_outputs(spec, output, len(eval_df), where=f"model {model_uri!r}")
        except tasks.OutputContractError as exc:
            raise ModelScoringError(f"{exc} (the {spec.task} output contract: docs/CONTRACTS.md)") from exc
        scores = tasks.scores_of(spec, output)
        importance = None
        if importance_metric is not None:
            importance = _importance(spec, model, features, y, importance_metric, seed)
    return Scored(
        model_uri=model_uri, metrics=tasks.metrics(spec, y, scores), scores=scores, importance=importance
    )


def _importance(
    spec: ModelSpec, model: Any, features: pd.DataFrame, y: np.ndarray, metric: str, seed: int
) -> FeatureImportance | None:
    """Permutation importance of a loaded model; a failure is logged and leaves the report without it."""
    from conveyor import tasks
    from conveyor.evaluation.explain import permutation_importance_table

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return tasks.scores_of(spec, model.predict(frame))

    try:
        return permutation_importance_table(predict, features, y, metric, spec=spec, seed=seed)
    except Exception as exc:  # explanation is evidence for people; it never decides or fails the gate
        log.warning("permutation importance failed: %s: %s", type(exc).__name__, exc)
        return None


def evaluate(
    client: MlflowClient,
    spec: ModelSpec,
    challenger_model_uri: str,
    eval_df: pd.DataFrame,
    *,
    mode_override: str | None = None,
    n_boot: int | None = None,
    seed: int | None = None,
    explain: bool = True,
) -> GateEvaluation:
    """Score the challenger and the current ``@champion`` on the same rows and apply the gate.

    Args:
        client: MLflow client (models are read through its URIs).
        spec: The model spec.
        challenger_model_uri: The challenger (``models:/m-...`` from ``log_model``).
        eval_df: The frozen evaluation snapshot.
        mode_override: Gate mode instead of ``spec.gate.mode``.
        n_boot: Bootstrap resamples (default ``spec.gate.n_boot``).
        seed: Seed of the bootstrap and the permutations (default ``spec.trainer.seed``: the same
            inputs give the same decision).
        explain: Measure permutation feature importance of both models for the report.

    Returns:
        The decision, with the scores behind it.

    Raises:
        EvaluationDataError: the frame cannot be scored.
        ModelScoringError: the *challenger* cannot be scored (a champion failure is in the decision).
    """
    from conveyor.registry.aliases import get_alias_version
    from conveyor.registry.versions import recorded_sha256

    gate = spec.gate
    seed = spec.trainer.seed if seed is None else seed
    metric = gate.primary_metric if explain else None
    challenger = score_on_snapshot(
        challenger_model_uri, spec, eval_df, client=client, importance_metric=metric, seed=seed
    )
    version = get_alias_version(client, spec.registered_model_name, CHAMPION)
    champion: Scored | None = None
    champion_error: str | None = None
    if version is not None:
        champion_uri = f"models:/{spec.registered_model_name}/{version}"
        try:
            champion = score_on_snapshot(
                champion_uri,
                spec,
                eval_df,
                client=client,
                expected_sha256=recorded_sha256(client, spec.registered_model_name, version) or None,
                importance_metric=metric,
                seed=seed,
            )
        except Exception as exc:  # any load/score failure of the champion is reported in the decision
            champion_error = str(exc)
            log.error("champion %s could not be scored: %s", champion_uri, exc)
    y = _check_frame(spec, eval_df)
    paired: PairedTest | None = None
    if champion is not None:
        paired = paired_test(
            y,
            challenger.scores,
            champion.scores,
            gate.primary_metric,
            n=gate.n_boot if n_boot is None else n_boot,
            seed=seed,
            confidence=gate.confidence,
            spec=spec,
        )
    slices = slice_results(
        spec, eval_df, y, challenger.scores, champion.scores if champion is not None else None
    )
    decision = decide(
        spec,
        challenger.metrics,
        champion.metrics if champion is not None else None,
        paired=paired,
        mode_override=mode_override,
        champion_version=version,
        champion_error=champion_error,
        slices=slices,
    )
    return GateEvaluation(
        decision=decision, y=y, challenger=challenger, champion=champion, classes=tuple(spec.classes)
    )


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return "NaN" if math.isnan(value) else f"{value:.4f}"


def metric_order(decision: GateDecision, metrics: dict[str, Any] | None = None) -> list[str]:
    """The metrics of ``metrics`` (default: the challenger's) in the task's order, then any others."""
    present = decision.challenger_metrics if metrics is None else metrics
    known = [m for m in TASK_METRICS[decision.task] if m in present]
    return known + [m for m in present if m not in known]


def report_markdown(decision: GateDecision, importances: dict[str, FeatureImportance] | None = None) -> str:
    """The gate decision as a readable Markdown page (checks, the task's metrics, slices, importance,
    reasons)."""
    champ = decision.champion_metrics or {}
    champion_label = f"v{decision.champion_version}" if decision.champion_version else "none (cold start)"
    lines = [
        f"# Gate report: {'PASSED' if decision.passed else 'FAILED'} → `{decision.action}`",
        "",
        f"- mode: `{decision.mode}`",
        f"- task: `{decision.task}`",
        f"- primary metric: `{decision.primary_metric}`",
        f"- champion: {champion_label}",
    ]
    if decision.champion_error:
        lines.append(f"- champion error: {decision.champion_error}")
    lines += ["", "## Checks", "", "| check | value | threshold | result |", "|---|---:|---:|---|"]
    for check in decision.checks:
        result = ("pass" if check.passed else "FAIL") + (" (info)" if check.informational else "")
        lines.append(f"| `{check.name}` | {_fmt(check.value)} | {_fmt(check.threshold)} | {result} |")
    lines += [
        "",
        "## Metrics on the evaluation snapshot",
        "",
        "| metric | challenger | champion | Δ (challenger - champion) |",
        "|---|---:|---:|---:|",
    ]
    for name in metric_order(decision):
        new = decision.challenger_metrics[name]
        old = champ.get(name)
        delta = "—" if old is None else _fmt(new - old)
        better = " (lower is better)" if name in LOWER_IS_BETTER else ""
        lines.append(f"| {name}{better} | {_fmt(new)} | {_fmt(old)} | {delta} |")
    if decision.paired is not None:
        p = decision.paired
        if p.method == "mcnemar":
            b, c = p.discordant or (0, 0)
            how = (
                f"McNemar's test on {p.n_rows} rows: {b} only the challenger gets right, "
                f"{c} only the champion"
            )
            title = "Paired test (McNemar)"
        else:
            how = f"{p.n_boot} resamples of {p.n_rows} rows, seed {p.seed}"
            title = "Paired test (bootstrap)"
        decides = (
            f"The lower bound must reach min_improvement {decision_margin(decision)}; it decides."
            if decision.decide_on == "ci_lower_bound"
            else "Reported only: decide_on is point_estimate."
        )
        lines += [
            "",
            f"## {title}",
            "",
            f"{p.metric}: improvement {_fmt(p.delta)}, "
            f"{p.confidence:.0%} CI [{_fmt(p.ci_low)}, {_fmt(p.ci_high)}], p = {_fmt(p.p_value)} ({how}). "
            + decides,
        ]
    if decision.slices:
        metrics = metric_order(decision, decision.slices[0].challenger)
        lines += [
            "",
            "## Slices",
            "",
            "| slice | rows | judged | " + " | ".join(metrics) + " |",
            "|---|---:|---|" + "---:|" * len(metrics),
        ]
        for item in decision.slices:
            cells = []
            for m in metrics:
                old = (item.champion or {}).get(m)
                cells.append(_fmt(item.challenger.get(m)) + ("" if old is None else f" ({_fmt(old)})"))
            judged = "yes" if item.judged else "no (too few rows)"
            lines.append(f"| {item.label} | {item.rows} | {judged} | " + " | ".join(cells) + " |")
        lines += ["", "Challenger values, the champion's in brackets."]
    if importances:
        from conveyor.evaluation.explain import importance_markdown

        lines += ["", "## Permutation feature importance", "", importance_markdown(importances)]
    lines += ["", "## Reasons", "", *(f"- {reason}" for reason in decision.reasons), ""]
    return "\n".join(lines)


def decision_margin(decision: GateDecision) -> str:
    """``min_improvement`` as the decision's checks recorded it (sign shown)."""
    for check in decision.checks:
        if check.kind == "paired_test" and check.threshold is not None:
            return f"{check.threshold:+.4f}"
    return "?"


def _metrics_figure(decision: GateDecision) -> Any | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # matplotlib comes with mlflow; a slim install simply gets no plot
        return None
    names = metric_order(decision)
    if decision.task == "regression":
        return _metric_panels(decision, names)
    x = np.arange(len(names))
    fig = Figure(figsize=(max(8.0, 1.1 * len(names)), 4.5), dpi=100)
    ax = fig.add_subplot()
    width = 0.38
    new = [decision.challenger_metrics[m] for m in names]
    ax.bar(x - width / 2, new, width, label="challenger")
    if decision.champion_metrics is not None:
        old = [decision.champion_metrics.get(m, float("nan")) for m in names]
        label = f"champion v{decision.champion_version}" if decision.champion_version else "champion"
        ax.bar(x + width / 2, old, width, label=label)
    for i, name in enumerate(names):
        for check in decision.checks:
            if check.name == f"floor:{name}" and check.threshold is not None:
                ax.hlines(check.threshold, i - 0.45, i + 0.45, colors="red", linestyles="dashed")
    ax.set_xticks(x, [f"{m}\n(lower is better)" if m in LOWER_IS_BETTER else m for m in names])
    ax.set_title(f"Gate: {'PASSED' if decision.passed else 'FAILED'} ({decision.action}); dashed = floor")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def _metric_panels(decision: GateDecision, names: list[str]) -> Any:
    """Regression metrics live on different scales (RMSE in target units, R² at most 1): one panel each."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.6 * max(len(names), 1), 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    label = f"champion v{decision.champion_version}" if decision.champion_version else "champion"
    for ax, name in zip(axes, names, strict=False):
        bars = [("challenger", decision.challenger_metrics[name])]
        if decision.champion_metrics is not None:
            bars.append((label, decision.champion_metrics.get(name, float("nan"))))
        values = [v if math.isfinite(v) else 0.0 for _, v in bars]
        ax.bar(range(len(bars)), values, color=["#1f77b4", "#ff7f0e"][: len(bars)])
        ax.set_xticks(range(len(bars)), [b for b, _ in bars], fontsize=8)
        for check in decision.checks:
            if check.name == f"floor:{name}" and check.threshold is not None:
                ax.axhline(check.threshold, color="red", linestyle="--")
        ax.axhline(0, color="#333333", linewidth=0.8)
        ax.set_title(f"{name}\n(lower is better)" if name in LOWER_IS_BETTER else name, fontsize=10)
    fig.suptitle(f"Gate: {'PASSED' if decision.passed else 'FAILED'} ({decision.action}); dashed = floor")
    return fig


def _report_figures(evaluation: GateEvaluation) -> dict[str, Any]:
    """The report's figures by artifact path (a figure that cannot be drawn is left out)."""
    from conveyor.evaluation import plots

    decision = evaluation.decision
    floors = [
        c.threshold
        for c in decision.checks
        if c.kind == "slice" and c.name.endswith(f":{decision.primary_metric}")
    ]
    outcome = plots.task_figures(decision.task, evaluation.y, evaluation.scores(), evaluation.classes)
    drawers = {
        **{f"gate/{name}": draw for name, draw in outcome.items()},
        "gate/slices.png": lambda: plots.slice_figure(
            decision.slices,
            decision.primary_metric,
            floors[0] if floors else None,
            champion_label=evaluation.champion_label,
        ),
        "gate/importance.png": lambda: (
            plots.importance_figure(evaluation.importances()) if evaluation.importances() else None
        ),
    }
    figures: dict[str, Any] = {}
    for path, draw in drawers.items():
        try:
            fig = draw()
        except Exception as exc:  # a plot is evidence for people; it never fails the gate
            log.warning("gate report: %s not drawn: %s: %s", path, type(exc).__name__, exc)
            continue
        if fig is not None:
            figures[path] = fig
    return figures


def write_gate_report(client: MlflowClient, run_id: str, evaluation: GateEvaluation) -> list[str]:
    """Attach the gate report to the MLflow run and log its headline metrics.

    Writes ``gate/report.json`` (the full decision and the importance tables), ``gate/report.md``
    and the figures ``gate/metrics.png`` and the task's (:func:`report_figures`; binary and
    multiclass ``gate/roc.png`` and ``gate/confusion.png``, regression ``gate/predicted_vs_actual.png``
    and ``gate/residuals.png``; then ``gate/slices.png`` when the spec slices, and
    ``gate/importance.png``); logs ``gate_passed``
    (1/0), ``challenger_<metric>`` and ``champion_<metric>`` (finite values only). Re-running
    overwrites the same files.

    Args:
        client: MLflow client.
        run_id: The DAG run's MLflow run.
        evaluation: What :func:`evaluate` returned.

    Returns:
        The artifact paths written.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.utils.time import get_current_time_millis

    from conveyor.registry.tracking import log_json_artifact, log_text_artifact

    decision = evaluation.decision
    importances = evaluation.importances()
    report = {
        **decision.model_dump(mode="json"),
        "importance": {label: table.model_dump(mode="json") for label, table in importances.items()},
    }
    paths = [
        log_json_artifact(client, run_id, report, REPORT_JSON),
        log_text_artifact(client, run_id, report_markdown(decision, importances), REPORT_MD),
    ]
    figures = {REPORT_PNG: _metrics_figure(decision), **_report_figures(evaluation)}
    for path, fig in figures.items():
        if fig is not None:
            client.log_figure(run_id, fig, path)
            paths.append(path)
    now = get_current_time_millis()
    values: dict[str, float] = {"gate_passed": 1.0 if decision.passed else 0.0}
    values.update({f"challenger_{k}": v for k, v in decision.challenger_metrics.items()})
    values.update({f"champion_{k}": v for k, v in (decision.champion_metrics or {}).items()})
    if decision.paired is not None:
        values.update(
            {"gate_paired_delta": decision.paired.delta, "gate_paired_ci_low": decision.paired.ci_low}
        )
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if math.isfinite(v)]
    tags = [
        RunTag("conveyor.gate", decision.action),
        RunTag("conveyor.gate_passed", str(decision.passed).lower()),
    ]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    return paths
