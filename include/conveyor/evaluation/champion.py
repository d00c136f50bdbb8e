"""Score challenger and champion on the same frozen evaluation snapshot, decide, and report.

:func:`evaluate` loads the challenger (a logged model) and the model that ``@champion`` names now
(pinned to its version number, so a concurrent alias move cannot switch models mid-evaluation),
scores both on the same rows, runs the paired test on the primary metric (McNemar's for accuracy,
a paired bootstrap otherwise), computes the metrics per slice, measures permutation feature
importance of both models, and applies the gate (:func:`conveyor.evaluation.gate.decide`). A
champion that cannot be loaded or scored is reported in the decision and fails the gate; it is
never silently treated as "no champion".

:func:`write_gate_report` attaches ``gate/report.json``, ``gate/report.md`` and the figures
(metrics, ROC, confusion matrices, slices, importance) to the DAG run's MLflow run and logs
``gate_passed``, ``challenger_<metric>`` and ``champion_<metric>``.
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

from conveyor.config import ModelSpec
from conveyor.errors import PermanentError
from conveyor.evaluation.explain import FeatureImportance
from conveyor.evaluation.gate import GateDecision, PairedTest, decide, paired_test, slice_results
from conveyor.evaluation.metrics import LOWER_IS_BETTER, METRIC_NAMES, binary_metrics

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
REPORT_JSON = "gate/report.json"
REPORT_MD = "gate/report.md"
REPORT_PNG = "gate/metrics.png"
#: The report's other figures, by artifact path.
REPORT_FIGURES = ("gate/roc.png", "gate/confusion.png", "gate/slices.png", "gate/importance.png")


class EvaluationDataError(PermanentError, ValueError):
    """The evaluation frame cannot be scored (missing columns, no rows, missing labels)."""


class ModelScoringError(PermanentError):
    """A model could not be loaded or did not answer with the contract's output."""


class Scored(BaseModel):
    """One model's scores on the evaluation snapshot.

    Attributes:
        model_uri: The model scored.
        metrics: ``binary_metrics`` of its probabilities.
        probability: P(label == 1) per evaluation row, in the frame's order.
        importance: Permutation feature importance on the snapshot, when asked for.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model_uri: str
    metrics: dict[str, float]
    probability: np.ndarray
    importance: FeatureImportance | None = None


class GateEvaluation(BaseModel):
    """The decision and the evidence behind it (labels and both models' scores), for the report.

    Only ``decision`` travels (XCom, ``report.json``); the arrays stay in the process that draws the
    report's plots.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    decision: GateDecision
    y: np.ndarray
    challenger: Scored
    champion: Scored | None = None

    @property
    def champion_label(self) -> str:
        version = self.decision.champion_version
        return f"champion v{version}" if version else "champion"

    def probabilities(self) -> dict[str, np.ndarray]:
        out = {"challenger": self.challenger.probability}
        if self.champion is not None:
            out[self.champion_label] = self.champion.probability
        return out

    def importances(self) -> dict[str, FeatureImportance]:
        out = {}
        if self.challenger.importance is not None:
            out["challenger"] = self.challenger.importance
        if self.champion is not None and self.champion.importance is not None:
            out[self.champion_label] = self.champion.importance
        return out


def _check_frame(spec: ModelSpec, eval_df: pd.DataFrame) -> None:
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
        The metrics and per-row probabilities (and the importance table when asked for).

    Raises:
        EvaluationDataError: the frame lacks columns, rows or labels.
        ModelScoringError: the model does not load or does not return ``probability`` per row.
    """
    _check_frame(spec, eval_df)
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
        probability = _probability(model_uri, output, len(eval_df))
        importance = None
        if importance_metric is not None:
            importance = _importance(
                model, features, eval_df[spec.data.target].to_numpy(), importance_metric, seed
            )
    metrics = binary_metrics(eval_df[spec.data.target].to_numpy(), probability)
    return Scored(model_uri=model_uri, metrics=metrics, probability=probability, importance=importance)


def _importance(
    model: Any, features: pd.DataFrame, y: np.ndarray, metric: str, seed: int
) -> FeatureImportance | None:
    """Permutation importance of a loaded model; a failure is logged and leaves the report without it."""
    from conveyor.evaluation.explain import permutation_importance_table

    def predict_proba(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict(frame)["probability"], dtype=float)

    try:
        return permutation_importance_table(predict_proba, features, y, metric, seed=seed)
    except Exception as exc:  # explanation is evidence for people; it never decides or fails the gate
        log.warning("permutation importance failed: %s: %s", type(exc).__name__, exc)
        return None


def _probability(model_uri: str, output: Any, rows: int) -> np.ndarray:
    """The contract's ``probability`` column of a model's answer, checked."""
    columns = list(getattr(output, "columns", []))
    if "probability" not in columns:
        raise ModelScoringError(
            f"model {model_uri!r} returned {type(output).__name__} with columns {columns}; the model "
            "contract requires a DataFrame with 'probability' and 'prediction' (docs/CONTRACTS.md)"
        )
    probability = np.asarray(output["probability"], dtype=float)
    if probability.shape != (rows,):
        raise ModelScoringError(
            f"model {model_uri!r} returned {probability.shape[0]} probabilities for {rows} rows"
        )
    bad = int(np.count_nonzero(~np.isfinite(probability) | (probability < 0) | (probability > 1)))
    if bad:
        raise ModelScoringError(
            f"model {model_uri!r} returned {bad} probabilities that are NaN or outside [0, 1]"
        )
    return probability


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
    version = get_alias_version(client, spec.registered_model_name, CHAMPION_ALIAS)
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
    y = eval_df[spec.data.target].to_numpy()
    paired: PairedTest | None = None
    if champion is not None:
        paired = paired_test(
            y,
            challenger.probability,
            champion.probability,
            gate.primary_metric,
            n=gate.n_boot if n_boot is None else n_boot,
            seed=seed,
            confidence=gate.confidence,
        )
    slices = slice_results(
        spec, eval_df, y, challenger.probability, champion.probability if champion is not None else None
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
    return GateEvaluation(decision=decision, y=y, challenger=challenger, champion=champion)


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return "NaN" if math.isnan(value) else f"{value:.4f}"


def report_markdown(decision: GateDecision, importances: dict[str, FeatureImportance] | None = None) -> str:
    """The gate decision as a readable Markdown page (checks, metrics, slices, importance, reasons)."""
    champ = decision.champion_metrics or {}
    champion_label = f"v{decision.champion_version}" if decision.champion_version else "none (cold start)"
    lines = [
        f"# Gate report: {'PASSED' if decision.passed else 'FAILED'} → `{decision.action}`",
        "",
        f"- mode: `{decision.mode}`",
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
    for name in METRIC_NAMES:
        if name not in decision.challenger_metrics:
            continue
        new = decision.challenger_metrics[name]
        old = champ.get(name)
        delta = "—" if old is None else _fmt(new - old)
        lines.append(f"| {name} | {_fmt(new)} | {_fmt(old)} | {delta} |")
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
        metrics = [m for m in METRIC_NAMES if m in decision.slices[0].challenger]
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
    names = [m for m in METRIC_NAMES if m in decision.challenger_metrics]
    x = np.arange(len(names))
    fig = Figure(figsize=(8, 4.5), dpi=100)
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


def _report_figures(evaluation: GateEvaluation) -> dict[str, Any]:
    """The report's figures by artifact path (a figure that cannot be drawn is left out)."""
    from conveyor.evaluation import plots

    decision = evaluation.decision
    probabilities = evaluation.probabilities()
    floors = [
        c.threshold
        for c in decision.checks
        if c.kind == "slice" and c.name.endswith(f":{decision.primary_metric}")
    ]
    drawers = {
        "gate/roc.png": lambda: plots.roc_figure(evaluation.y, probabilities),
        "gate/confusion.png": lambda: plots.confusion_figure(evaluation.y, probabilities),
        "gate/slices.png": lambda: plots.slice_figure(
            decision.slices, decision.primary_metric, floors[0] if floors else None
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
    and the figures ``gate/metrics.png``, ``gate/roc.png``, ``gate/confusion.png``,
    ``gate/slices.png`` (when the spec slices) and ``gate/importance.png``; logs ``gate_passed``
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
