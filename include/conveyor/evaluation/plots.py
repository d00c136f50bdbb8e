"""The gate report's figures, per task type: ROC curves, confusion matrices, predicted vs actual,
residuals, per-slice metrics, feature importance.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
registry, no GUI backend; ``fig.savefig`` or ``MlflowClient.log_figure`` renders it with Agg), so
figures are garbage-collected like any object and drawing is safe in worker processes and threads.
scikit-learn's display classes draw the ROC curves and the confusion matrices onto the given axes.

The files a gate report carries (``gate/<file>``, :data:`TASK_FIGURES`; ``metrics.png``, the metric
bars, comes with every task and is drawn by ``conveyor.evaluation.champion``):

==============  ====================================================================================
task            figures
==============  ====================================================================================
``binary``      ``roc.png`` (:func:`roc_figure`), ``confusion.png`` (:func:`confusion_figure`, at 0.5),
                ``slices.png`` (:func:`slice_figure`, when the spec slices), ``importance.png``
``multiclass``  ``roc.png`` (:func:`multiclass_roc_figure`: one-vs-rest curves per class, one panel
                per model; a note instead above :data:`MAX_ROC_CLASSES` classes), ``confusion.png``
                (:func:`multiclass_confusion_figure`: k x k, labelled with ``data.classes``),
                ``slices.png``, ``importance.png``
``regression``  ``predicted_vs_actual.png`` (:func:`predicted_actual_figure`), ``residuals.png``
                (:func:`residual_figure`), ``slices.png``, ``importance.png``
==============  ====================================================================================

:func:`task_figures` gives the drawers of a task's outcome figures. Labels and scores are what
``conveyor.tasks`` calls ``y`` and ``scores`` (binary 0/1 and P(1), multiclass class indices and
``(n, k)`` probabilities, regression values and predictions).

The figures are evidence for people: bad inputs (NaN scores, one-class labels, no models) give a
figure with a note rather than an exception, so a plot never fails the gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from conveyor.config import LOWER_IS_BETTER

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
#: A multiclass ROC figure draws one-vs-rest curves for at most this many classes (a note above it).
MAX_ROC_CLASSES = 10
#: Above this many classes a confusion matrix leaves out the counts (colour only).
MAX_ANNOTATED_CLASSES = 15
#: The figures of a gate report by task, file names under ``gate/`` (besides ``metrics.png``).
TASK_FIGURES: dict[str, tuple[str, ...]] = {
    "binary": ("roc.png", "confusion.png", "slices.png", "importance.png"),
    "multiclass": ("roc.png", "confusion.png", "slices.png", "importance.png"),
    "regression": ("predicted_vs_actual.png", "residuals.png", "slices.png", "importance.png"),
}


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _color(i: int) -> str:
    return (CHALLENGER_COLOR, CHAMPION_COLOR, *OTHER_COLORS)[i % (2 + len(OTHER_COLORS))]


def _note(ax: Axes, text: str) -> None:
    """A centred message on an empty panel."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=11)


def _not_drawn(ax: Axes, notes: list[str], *, top: bool = False) -> None:
    """A small note in the right corner naming what a panel left out (nothing when ``notes`` is empty)."""
    if notes:
        text = "not drawn: " + "; ".join(notes)
        y, va = (0.98, "top") if top else (0.02, "bottom")
        ax.text(0.98, y, text, ha="right", va=va, fontsize=8, transform=ax.transAxes)


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
    _not_drawn(ax, skipped)
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
        # scores live in [0, 1]; R² can fall below 0 (worse than predicting the mean)
        bottom = min([0.0, *finite, *([floor] if floor is not None and math.isfinite(floor) else [])])
        ax.set_ylim(bottom * 1.1 if bottom < 0 else 0, 1.05)
        if bottom < 0:
            ax.axhline(0, color="#333333", linewidth=0.8)
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


# --- multiclass --------------------------------------------------------------------------------------


def _class_rows(y: Any, scores: Any, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Class-index labels and ``(n, k)`` scores on the rows where both are finite; the number dropped."""
    labels = np.asarray(y, dtype=float).ravel()
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim != 2 or matrix.shape != (labels.size, k):
        raise ValueError(f"scores of shape {matrix.shape} for {labels.size} labels and {k} classes")
    keep = np.isfinite(labels) & np.isfinite(matrix).all(axis=1)
    return labels[keep].astype(np.int64), matrix[keep], int(keep.size - keep.sum())


def _no_models(width: float, height: float, text: str) -> Figure:
    fig = _figure(width, height)
    _note(fig.add_subplot(), text)
    return fig


def multiclass_roc_figure(
    y: Any, scores: Mapping[str, Any], classes: Sequence[Any], *, max_classes: int = MAX_ROC_CLASSES
) -> Figure:
    """One-vs-rest ROC curves, one per class, in one panel per model label.

    Args:
        y: Class indices (``conveyor.tasks.encode_target``) of the evaluation rows.
        scores: ``(n, k)`` class probabilities per row, by model label.
        classes: The label set (``data.classes``), in the probability columns' order.
        max_classes: Above this many classes the curves would be unreadable: a note instead (the
            report's ``roc_auc_ovr`` sums them up).

    Returns:
        The figure; a note when there is no model, too many classes, or fewer than two classes in
        the labels. A class absent from the labels has no curve (listed under the panel).
    """
    from sklearn.metrics import RocCurveDisplay

    k = len(classes)
    if not scores:
        return _no_models(6.4, 5.6, "ROC curves undefined: no model scored.")
    if k > max_classes:
        return _no_models(
            6.4,
            3.0,
            f"One-vs-rest ROC curves not drawn: {k} classes, more than {max_classes} would be unreadable. "
            "roc_auc_ovr in the metrics sums them up.",
        )
    fig = _figure(5.6 * len(scores), 5.6)
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    for ax, (label, s) in zip(axes, scores.items(), strict=True):
        y_ok, s_ok, dropped = _class_rows(y, s, k)
        present = np.unique(y_ok)
        if present.size < 2:
            why = "no rows" if present.size == 0 else f"one class only ({classes[int(present[0])]})"
            _note(ax, f"{label}: ROC curves undefined, the labels hold {why}.")
            continue
        aucs: list[float] = []
        missing: list[str] = []
        for c, name in enumerate(classes):
            truth = y_ok == c
            if not truth.any():
                missing.append(str(name))
                continue
            display = RocCurveDisplay.from_predictions(
                truth,
                s_ok[:, c],
                name=str(name),
                ax=ax,
                curve_kwargs={"color": _class_color(c, k)},
                plot_chance_level=not aucs,
            )
            aucs.append(float(display.roc_auc))
        extra = f", {dropped} NaN rows left out" if dropped else ""
        ax.set_title(
            f"{label}: one-vs-rest ROC\nmean AUC {np.mean(aucs):.3f} over {len(aucs)} classes{extra}",
            fontsize=10,
        )
        if missing:
            ax.text(
                0.98,
                0.02,
                "no curve (absent from the labels): " + ", ".join(missing),
                ha="right",
                va="bottom",
                fontsize=8,
                transform=ax.transAxes,
            )
        ax.legend(loc="lower right", fontsize=8)
    return fig


def _class_color(c: int, k: int) -> Any:
    from matplotlib import colormaps

    return colormaps["tab10" if k <= 10 else "tab20"](c % 20)


def multiclass_confusion_figure(y: Any, scores: Mapping[str, Any], classes: Sequence[Any]) -> Figure:
    """k x k confusion matrices (rows: true class, columns: the most probable class), one panel per model.

    Axes carry the class labels; above :data:`MAX_ANNOTATED_CLASSES` classes the counts are left out
    (colour only). Rows with a non-finite probability are left out and counted in the title.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    k = len(classes)
    labels = np.asarray(y, dtype=float).ravel()
    if not scores or labels.size == 0:
        return _no_models(
            5.0, 4.2, "No confusion matrix: " + ("no model scored." if labels.size else "no rows.")
        )
    side = max(4.4, 1.6 + 0.42 * k)
    fig = _figure(side * len(scores), side)
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    annotate = k <= MAX_ANNOTATED_CLASSES
    for ax, (label, s) in zip(axes, scores.items(), strict=True):
        y_ok, s_ok, dropped = _class_rows(labels, s, k)
        if y_ok.size == 0:
            _note(ax, f"{label}: no row with finite probabilities")
            continue
        predicted = np.argmax(s_ok, axis=1)
        ConfusionMatrixDisplay.from_predictions(
            y_ok,
            predicted,
            labels=list(range(k)),
            display_labels=[str(c) for c in classes],
            ax=ax,
            colorbar=False,
            cmap="Blues",
            include_values=annotate,
            values_format="d",
            xticks_rotation=45 if k > 6 else "horizontal",
        )
        accuracy = float(np.mean(predicted == y_ok))
        extra = f", {dropped} NaN rows left out" if dropped else ""
        ax.set_title(f"{label}\nmost probable class, accuracy {accuracy:.3f}{extra}", fontsize=10)
    return fig


# --- regression --------------------------------------------------------------------------------------


def _value_rows(y: np.ndarray, predictions: Any) -> tuple[np.ndarray, np.ndarray, int]:
    yhat = np.asarray(predictions, dtype=float).ravel()
    if yhat.shape != y.shape:
        raise ValueError(f"{yhat.size} predictions for {y.size} targets")
    keep = np.isfinite(y) & np.isfinite(yhat)
    return y[keep], yhat[keep], int(keep.size - keep.sum())


def predicted_actual_figure(y: Any, predictions: Mapping[str, Any]) -> Figure:
    """Predicted against actual values, one colour per model label, with the identity line.

    The legend carries each model's RMSE and R² (``conveyor.tasks``' definitions: ``sklearn.metrics``);
    rows with a non-finite value are left out and counted.
    """
    from sklearn.metrics import r2_score, root_mean_squared_error

    actual = np.asarray(y, dtype=float).ravel()
    if not predictions or actual.size == 0:
        return _no_models(
            6.0, 5.6, "No predicted-vs-actual plot: " + ("no model scored." if actual.size else "no rows.")
        )
    fig = _figure(6.4, 6.0)
    ax = fig.add_subplot()
    drawn: list[np.ndarray] = []
    notes: list[str] = []
    for i, (label, p) in enumerate(predictions.items()):
        y_ok, p_ok, dropped = _value_rows(actual, p)
        if y_ok.size == 0:
            notes.append(f"{label}: no finite prediction")
            continue
        rmse = float(root_mean_squared_error(y_ok, p_ok))
        r2 = float(r2_score(y_ok, p_ok)) if y_ok.size > 1 else math.nan
        name = f"{label} (RMSE {rmse:.4g}, R² {r2:.3f})" + (
            f", {dropped} NaN rows left out" if dropped else ""
        )
        ax.scatter(y_ok, p_ok, s=10, alpha=0.5, color=_color(i), label=name, edgecolors="none")
        drawn += [y_ok, p_ok]
    if not drawn:
        ax.clear()
        _note(ax, "No predicted-vs-actual plot:\n" + "\n".join(notes))
        return fig
    values = np.concatenate(drawn)
    low, high = float(values.min()), float(values.max())
    pad = (high - low) * 0.03 or 1.0
    ax.plot(
        [low - pad, high + pad], [low - pad, high + pad], "--", color="#555555", linewidth=1, label="y = x"
    )
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(f"Predicted vs actual on the evaluation snapshot ({actual.size} rows)")
    _not_drawn(ax, notes)
    ax.legend(loc="upper left", fontsize=9)
    return fig


def residual_figure(y: Any, predictions: Mapping[str, Any], *, bins: int = 40) -> Figure:
    """Histograms of the residuals (prediction - actual), one outline per model label, on shared bins.

    A line marks 0; the legend carries each model's mean residual (its bias) and standard deviation.
    """
    actual = np.asarray(y, dtype=float).ravel()
    if not predictions or actual.size == 0:
        return _no_models(
            6.4, 4.8, "No residual histogram: " + ("no model scored." if actual.size else "no rows.")
        )
    residuals: dict[str, tuple[np.ndarray, int]] = {}
    notes: list[str] = []
    for label, p in predictions.items():
        y_ok, p_ok, dropped = _value_rows(actual, p)
        if y_ok.size == 0:
            notes.append(f"{label}: no finite prediction")
        else:
            residuals[label] = (p_ok - y_ok, dropped)
    fig = _figure(7.2, 4.8)
    ax = fig.add_subplot()
    if not residuals:
        _note(ax, "No residual histogram:\n" + "\n".join(notes))
        return fig
    edges = np.histogram_bin_edges(np.concatenate([r for r, _ in residuals.values()]), bins=bins)
    for i, (label, (r, dropped)) in enumerate(residuals.items()):
        name = f"{label} (mean {r.mean():+.4g}, sd {r.std():.4g})" + (
            f", {dropped} NaN rows left out" if dropped else ""
        )
        ax.hist(
            r,
            bins=edges.tolist(),
            histtype="stepfilled",
            alpha=0.35,
            color=_color(i),
            edgecolor=_color(i),
            linewidth=1.2,
            label=name,
        )
    ax.axvline(0, color="#333333", linewidth=1, linestyle="--")
    ax.set_xlabel("residual (prediction - actual)")
    ax.set_ylabel("rows")
    ax.set_title(f"Residuals on the evaluation snapshot ({actual.size} rows)")
    _not_drawn(ax, notes, top=True)
    ax.legend(loc="best", fontsize=9)
    return fig


def task_figures(
    task: str, y: Any, scores: Mapping[str, Any], classes: Sequence[Any] = ()
) -> dict[str, Callable[[], Figure]]:
    """The drawers of a task's outcome figures, by file name (see :data:`TASK_FIGURES`).

    Slices and importance are drawn from the decision (:func:`slice_figure`,
    :func:`importance_figure`), the same for every task, and are not included.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        y: Encoded labels (``conveyor.tasks.encode_target``).
        scores: Each model's scores (``conveyor.tasks.scores_of``), by model label.
        classes: The multiclass label set (``data.classes``).
    """
    if task == "binary":
        return {
            "roc.png": lambda: roc_figure(y, scores),
            "confusion.png": lambda: confusion_figure(y, scores),
        }
    if task == "multiclass":
        return {
            "roc.png": lambda: multiclass_roc_figure(y, scores, classes),
            "confusion.png": lambda: multiclass_confusion_figure(y, scores, classes),
        }
    if task == "regression":
        return {
            "predicted_vs_actual.png": lambda: predicted_actual_figure(y, scores),
            "residuals.png": lambda: residual_figure(y, scores),
        }
    raise ValueError(f"unknown task type {task!r}; use binary, multiclass or regression")
