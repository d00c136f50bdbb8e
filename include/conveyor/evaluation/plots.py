"""The gate report's figures: ROC curves, confusion matrices, per-slice metrics, feature importance.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
registry, no GUI backend; ``fig.savefig`` or ``MlflowClient.log_figure`` renders it with Agg), so
figures are garbage-collected like any object and drawing is safe in worker processes and threads.
scikit-learn's display classes draw the ROC curves and the confusion matrices onto the given axes.

The figures are evidence for people: bad inputs (NaN probabilities, one-class labels, no models)
give a figure with a note rather than an exception, so a plot never fails the gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from conveyor.evaluation.metrics import LOWER_IS_BETTER

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from conveyor.evaluation.explain import FeatureImportance

DPI = 100
CHALLENGER_COLOR = "#1f77b4"
CHAMPION_COLOR = "#ff7f0e"
#: Colors of the models after the first two (importance and ROC with more labels).
OTHER_COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
NOT_JUDGED_FACE = "#d9d9d9"
NOT_JUDGED_EDGE = "#7f7f7f"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _color(i: int) -> str:
    return (CHALLENGER_COLOR, CHAMPION_COLOR, *OTHER_COLORS)[i % (2 + len(OTHER_COLORS))]


def _note(ax: Axes, text: str) -> None:
    """A centred message on an empty panel."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=11)


def _labels(y: Any) -> np.ndarray:
    return np.asarray(y, dtype=float).ravel()


def _finite(y: np.ndarray, p: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows where both the label and the probability are finite; the number dropped."""
    prob = np.asarray(p, dtype=float).ravel()
    if prob.shape != y.shape:
        raise ValueError(f"{prob.size} probabilities for {y.size} labels")
    keep = np.isfinite(y) & np.isfinite(prob)
    return y[keep].astype(np.int64), prob[keep], int(keep.size - keep.sum())


def roc_figure(y: Any, probabilities: Mapping[str, Any]) -> Figure:
    """ROC curves, one per model label, with the AUC in the legend.

    Args:
        y: 0/1 labels of the evaluation rows.
        probabilities: P(label == 1) per row, by model label (``challenger``, ``champion v3``).

    Returns:
        The figure; with labels of one class (ROC undefined) or no models, a figure with a note.
    """
    from sklearn.metrics import RocCurveDisplay

    labels = _labels(y)
    fig = _figure(6.4, 5.6)
    ax = fig.add_subplot()
    classes = np.unique(labels[np.isfinite(labels)])
    if classes.size < 2 or not probabilities:
        why = (
            "no model scored"
            if not probabilities
            else f"the labels hold {'no rows' if classes.size == 0 else f'one class only ({classes[0]:g})'}"
        )
        _note(ax, f"ROC curve undefined: {why}.")
        return fig
    skipped: list[str] = []
    drawn = 0
    for i, (label, p) in enumerate(probabilities.items()):
        y_ok, p_ok, dropped = _finite(labels, p)
        if np.unique(y_ok).size < 2:
            skipped.append(f"{label}: {dropped} rows without a finite probability")
            continue
        name = label if not dropped else f"{label}, {dropped} NaN rows left out"
        RocCurveDisplay.from_predictions(
            y_ok,
            p_ok,
            name=name,
            ax=ax,
            curve_kwargs={"color": _color(i)},
            plot_chance_level=drawn == 0,
        )
        drawn += 1
    if drawn == 0:
        ax.clear()
        _note(ax, "ROC curve undefined:\n" + "\n".join(skipped))
        return fig
    ax.set_title(f"ROC on the evaluation snapshot ({labels.size} rows)")
    if skipped:
        ax.text(
            0.98,
            0.02,
            "not drawn: " + "; ".join(skipped),
            ha="right",
            va="bottom",
            fontsize=8,
            transform=ax.transAxes,
        )
    ax.legend(loc="lower right", fontsize=9)
    return fig


def confusion_figure(y: Any, probabilities: Mapping[str, Any], threshold: float = 0.5) -> Figure:
    """Confusion matrices at ``threshold``, one panel per model label.

    Rows whose probability is not finite are left out (and counted in the panel's title).
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = _labels(y)
    if not probabilities or labels.size == 0:
        fig = _figure(5.0, 4.2)
        _note(
            fig.add_subplot(), "No confusion matrix: " + ("no model scored." if labels.size else "no rows.")
        )
        return fig
    fig = _figure(4.4 * len(probabilities), 4.4)
    axes = fig.subplots(1, len(probabilities), squeeze=False)[0]
    for ax, (label, p) in zip(axes, probabilities.items(), strict=True):
        y_ok, p_ok, dropped = _finite(labels, p)
        if y_ok.size == 0:
            _note(ax, f"{label}: no row with a finite probability")
            continue
        predicted = (p_ok >= threshold).astype(np.int64)
        ConfusionMatrixDisplay.from_predictions(
            y_ok, predicted, labels=[0, 1], ax=ax, colorbar=False, cmap="Blues", values_format="d"
        )
        accuracy = float(np.mean(predicted == y_ok))
        extra = f", {dropped} NaN rows left out" if dropped else ""
        ax.set_title(f"{label}\nthreshold {threshold:g}, accuracy {accuracy:.3f}{extra}", fontsize=10)
    return fig


def _metric_value(metrics: Mapping[str, float] | None, metric: str) -> float:
    if metrics is None:
        return math.nan
    value = metrics.get(metric)
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):  # "NaN" as report.json writes it is still a float
        return math.nan


def slice_figure(
    slices: Sequence[Any],
    metric: str,
    floor: float | None,
    *,
    champion_label: str = "champion",
) -> Figure | None:
    """``metric`` per slice: grouped bars (challenger, and the champion where there is one).

    Slices not judged (fewer rows than ``gate.slices.min_rows``) are drawn grey and hatched; every
    tick label carries the slice's row count. The floor (a ceiling for lower-is-better metrics) is a
    dashed line; a NaN metric is marked ``n/a``.

    Args:
        slices: ``SliceResult``-like objects (``column``, ``label``, ``rows``, ``judged``,
            ``challenger``, ``champion``).
        metric: The metric drawn (the gate's primary metric).
        floor: Its slice floor, or ``None``.
        champion_label: The champion's legend entry (``champion v3``).

    Returns:
        The figure, or ``None`` when there are no slices.
    """
    if not slices:
        return None
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(slices)
    challenger = [_metric_value(s.challenger, metric) for s in slices]
    has_champion = any(s.champion is not None for s in slices)
    champion = [_metric_value(s.champion, metric) for s in slices]
    judged = [bool(s.judged) for s in slices]

    fig = _figure(min(3.0 + 0.9 * n * (2 if has_champion else 1) ** 0.5, 24.0), 5.2)
    ax = fig.add_subplot()
    x = np.arange(n)
    series = [("challenger", challenger, CHALLENGER_COLOR)]
    if has_champion:
        series.append((champion_label, champion, CHAMPION_COLOR))
    width = 0.8 / len(series)
    lower = metric in LOWER_IS_BETTER
    for k, (_, values, color) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        heights = [0.0 if math.isnan(v) else v for v in values]
        bars = ax.bar(x + offset, heights, width * 0.95, color=color, edgecolor=color)
        for i, (patch, value) in enumerate(zip(bars.patches, values, strict=True)):
            if not judged[i]:
                patch.set_facecolor(NOT_JUDGED_FACE)
                patch.set_edgecolor(NOT_JUDGED_EDGE if k == 0 else color)
                patch.set_hatch("//" if k == 0 else "..")
            if math.isnan(value):
                missing = k == 1 and slices[i].champion is None
                ax.text(
                    x[i] + offset,
                    0.01,
                    "—" if missing else "n/a",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    rotation=90,
                    color="#555555",
                )
    if floor is not None and math.isfinite(floor):
        ax.axhline(floor, color="red", linestyle="--", linewidth=1.2)
    ticks = [f"{s.label}\nn={s.rows}" + ("" if judged[i] else ", not judged") for i, s in enumerate(slices)]
    ax.set_xticks(x, ticks, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=8)
    finite = [v for v in challenger + champion if math.isfinite(v)]
    if not lower:
        ax.set_ylim(0, 1.05)
    elif finite or (floor is not None and math.isfinite(floor)):
        top = max([*finite, floor if floor is not None and math.isfinite(floor) else 0.0])
        ax.set_ylim(0, top * 1.15 or 1.0)
    ax.set_ylabel(metric + (" (lower is better)" if lower else ""))
    ax.set_title(f"{metric} per slice of the evaluation snapshot")
    handles: list[Any] = [Patch(facecolor=color, label=label) for label, _, color in series]
    if not all(judged):
        handles.append(
            Patch(
                facecolor=NOT_JUDGED_FACE,
                edgecolor=NOT_JUDGED_EDGE,
                hatch="//",
                label="not judged (too few rows)",
            )
        )
    if floor is not None and math.isfinite(floor):
        bound = "ceiling" if lower else "floor"
        handles.append(Line2D([], [], color="red", linestyle="--", label=f"slice {bound} {floor:.3f}"))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.28 if n > 4 else -0.15),
        ncol=len(handles),
        frameon=False,
        fontsize=9,
    )
    return fig


def importance_figure(tables: Mapping[str, FeatureImportance], top: int = 15) -> Figure:
    """Permutation importance: horizontal grouped bars per feature, one colour per model label.

    The ``top`` features with the highest importance in any model are shown, most important at
    the top; error bars are the standard deviation over the shuffles.
    """
    by_label = {label: {f.feature: (f.mean, f.std) for f in t.features} for label, t in tables.items()}
    best: dict[str, float] = {}
    for scores in by_label.values():
        for feature, (mean, _) in scores.items():
            value = mean if math.isfinite(mean) else -math.inf
            best[feature] = max(best.get(feature, -math.inf), value)
    if not best or top < 1:
        fig = _figure(6.0, 3.0)
        _note(fig.add_subplot(), "No permutation importance was measured.")
        return fig
    features = sorted(best, key=lambda f: -best[f])[:top]
    groups = len(by_label)
    fig = _figure(8.0, min(1.6 + 0.28 * len(features) * max(1.0, groups * 0.7), 20.0))
    ax = fig.add_subplot()
    y = np.arange(len(features))
    height = 0.8 / groups
    for k, (label, scores) in enumerate(by_label.items()):
        means = np.array([scores.get(f, (math.nan, math.nan))[0] for f in features], dtype=float)
        stds = np.array([scores.get(f, (math.nan, math.nan))[1] for f in features], dtype=float)
        offset = (k - (groups - 1) / 2) * height
        ax.barh(
            y + offset,
            np.nan_to_num(means, nan=0.0),
            height * 0.95,
            xerr=np.nan_to_num(stds, nan=0.0),
            color=_color(k),
            ecolor="#333333",
            capsize=2,
            label=label,
        )
        for i in np.flatnonzero(np.isnan(means)):
            ax.text(0, y[i] + offset, " n/a", va="center", fontsize=7, color="#555555")
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_yticks(y, features, fontsize=9)
    ax.invert_yaxis()
    metrics = sorted({t.metric for t in tables.values()})
    first = next(iter(tables.values()))
    ax.set_xlabel(f"drop in {' / '.join(metrics)} when the feature is shuffled (higher = relied on more)")
    shown = f"top {len(features)} of {len(best)}" if len(best) > len(features) else f"{len(best)} features"
    ax.set_title(
        f"Permutation importance ({shown}; {first.n_repeats} shuffles of {first.n_rows} rows)", fontsize=11
    )
    if groups > 1:
        ax.legend(loc="lower right", fontsize=9)
    return fig
