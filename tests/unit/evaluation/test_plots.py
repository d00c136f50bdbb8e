"""The gate report's figures: what they draw, and that bad inputs give a note, never an exception."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from conveyor.evaluation import plots
from conveyor.evaluation.explain import FeatureImportance, FeatureScore
from conveyor.evaluation.gate import SliceResult

pytestmark = pytest.mark.unit


def _png(fig: Figure | None) -> bytes:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    return data


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _legend(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a good model's probabilities and a coin's."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.clip(0.6 * y + rng.normal(0.2, 0.15, 200), 0, 1)
    return y, good, rng.random(200)


# ROC


def test_roc_one_curve_per_model_with_auc(scored: tuple[np.ndarray, ...]) -> None:
    y, good, coin = scored
    fig = plots.roc_figure(y, {"challenger": good, "champion v3": coin})
    _png(fig)
    (ax,) = fig.axes
    assert ax.get_title() == "ROC on the evaluation snapshot (200 rows)"
    legend = _legend(ax)
    assert len(legend) == 3  # two models and one chance line
    assert legend[0].startswith("challenger (AUC = 0.9")
    assert legend[1].startswith("Chance level")
    assert legend[2].startswith("champion v3 (AUC = 0.")
    colors = [line.get_color() for line in ax.get_lines()]
    assert plots.CHALLENGER_COLOR in colors and plots.CHAMPION_COLOR in colors


def test_roc_leaves_out_nan_probabilities(scored: tuple[np.ndarray, ...]) -> None:
    y, good, _ = scored
    p = good.copy()
    p[:7] = np.nan
    p[7] = np.inf
    fig = plots.roc_figure(list(y), {"challenger": p})
    _png(fig)
    assert _legend(fig.axes[0])[0].startswith("challenger, 8 NaN rows left out (AUC = ")


def test_roc_skips_a_model_left_with_one_class(scored: tuple[np.ndarray, ...]) -> None:
    y, good, _ = scored
    only_positives = np.where(y == 1, 0.9, np.nan)
    fig = plots.roc_figure(y, {"challenger": good, "champion": only_positives})
    _png(fig)
    (ax,) = fig.axes
    assert [t for t in _legend(ax) if t.startswith("champion")] == []
    negatives = int((y == 0).sum())
    assert _texts(fig) == [f"not drawn: champion: {negatives} rows without a finite probability"]


@pytest.mark.parametrize(
    ("y", "probabilities", "why"),
    [
        (np.ones(6), {"challenger": np.full(6, 0.7)}, "the labels hold one class only (1)"),
        ([0, 0, 0], {"challenger": [0.1, 0.2, 0.3]}, "the labels hold one class only (0)"),
        ([], {"challenger": []}, "the labels hold no rows"),
        ([np.nan, 1.0], {"challenger": [0.5, 0.5]}, "the labels hold one class only (1)"),
        ([0, 1, 0, 1], {}, "no model scored"),
    ],
)
def test_roc_undefined_gives_a_note(y: Any, probabilities: dict[str, Any], why: str) -> None:
    fig = plots.roc_figure(y, probabilities)
    _png(fig)
    assert _texts(fig) == [f"ROC curve undefined: {why}."]
    assert not fig.axes[0].axison


def test_roc_all_probabilities_nan_gives_a_note() -> None:
    fig = plots.roc_figure([0, 1, 0, 1], {"challenger": [math.nan] * 4})
    _png(fig)
    assert _texts(fig) == ["ROC curve undefined:\nchallenger: 4 rows without a finite probability"]
    assert fig.axes[0].get_legend() is None and not fig.axes[0].get_lines()


def test_roc_refuses_probabilities_of_another_length() -> None:
    with pytest.raises(ValueError, match="3 probabilities for 4 labels"):
        plots.roc_figure([0, 1, 0, 1], {"challenger": [0.1, 0.2, 0.3]})


# Confusion matrices


def _cells(ax: Any) -> list[int]:
    return [int(t.get_text()) for t in ax.texts]


def test_confusion_one_panel_per_model() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8, 0.5])  # 0.5 counts as positive
    fig = plots.confusion_figure(y, {"challenger": p, "champion v2": 1 - p})
    _png(fig)
    first, second = fig.axes
    assert first.get_title() == "challenger\nthreshold 0.5, accuracy 0.714"
    assert _cells(first) == [2, 1, 1, 3]  # tn, fp / fn, tp
    assert second.get_title().startswith("champion v2\nthreshold 0.5, accuracy 0.")
    assert sum(_cells(second)) == 7


def test_confusion_threshold_nan_rows_and_one_class() -> None:
    p = np.array([0.2, np.nan, 0.9, 0.7])
    fig = plots.confusion_figure([1, 1, 1, 1], {"challenger": p}, threshold=0.75)
    _png(fig)
    (ax,) = fig.axes
    assert ax.get_title() == "challenger\nthreshold 0.75, accuracy 0.333, 1 NaN rows left out"
    assert _cells(ax) == [0, 0, 2, 1]  # both classes shown even when y holds one


def test_confusion_notes() -> None:
    no_models = plots.confusion_figure([0, 1], {})
    no_rows = plots.confusion_figure([], {"challenger": []})
    all_nan = plots.confusion_figure([0, 1], {"challenger": [math.nan, math.nan], "champion": [0.2, 0.8]})
    for fig in (no_models, no_rows, all_nan):
        _png(fig)
    assert _texts(no_models) == ["No confusion matrix: no model scored."]
    assert _texts(no_rows) == ["No confusion matrix: no rows."]
    assert [t.get_text() for t in all_nan.axes[0].texts] == ["challenger: no row with a finite probability"]
    assert _cells(all_nan.axes[1]) == [1, 0, 0, 1]


# Slices


def _slice(label: str, rows: int, judged: bool, challenger: float, champion: float | None = None) -> Any:
    return SliceResult(
        column=label.split("=")[0],
        label=label,
        rows=rows,
        judged=judged,
        challenger={"roc_auc": challenger, "log_loss": 1 - challenger},
        champion=None if champion is None else {"roc_auc": champion, "log_loss": 1 - champion},
    )


def _bar_containers(ax: Any) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _bars(ax: Any) -> list[Any]:
    return [patch for container in _bar_containers(ax) for patch in container.patches]


def _floor_lines(ax: Any) -> list[Line2D]:
    return [line for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_slices_grouped_bars_floor_and_unjudged() -> None:
    slices = [
        _slice("contract=monthly", 120, True, 0.81, 0.78),
        _slice("contract=one-year", 90, True, 0.74, 0.77),
        _slice("contract=two-year", 8, False, 0.5, 0.9),
    ]
    fig = plots.slice_figure(slices, "roc_auc", 0.7, champion_label="champion v3")
    _png(fig)
    assert fig is not None
    (ax,) = fig.axes
    assert ax.get_title() == "roc_auc per slice of the evaluation snapshot"
    assert ax.get_ylabel() == "roc_auc"
    bars = _bars(ax)
    assert len(bars) == 6  # challenger and champion per slice
    assert [round(b.get_height(), 2) for b in bars] == [0.81, 0.74, 0.5, 0.78, 0.77, 0.9]
    # the unjudged slice is grey and hatched, the others keep the model colors
    assert [b.get_hatch() for b in bars] == [None, None, "//", None, None, ".."]
    assert bars[0].get_facecolor() != bars[2].get_facecolor()
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "contract=monthly\nn=120",
        "contract=one-year\nn=90",
        "contract=two-year\nn=8, not judged",
    ]
    assert _legend(ax) == ["challenger", "champion v3", "not judged (too few rows)", "slice floor 0.700"]
    (floor,) = _floor_lines(ax)
    assert np.asarray(floor.get_ydata()).tolist() == [0.7, 0.7]
    assert ax.get_ylim() == (0.0, 1.05)


def test_slices_without_champion_or_floor() -> None:
    slices = [_slice("plan=basic", 50, True, 0.7), _slice("plan=pro", 60, True, 0.8)]
    fig = plots.slice_figure(slices, "roc_auc", None)
    _png(fig)
    assert fig is not None
    (ax,) = fig.axes
    assert len(_bars(ax)) == 2
    assert _legend(ax) == ["challenger"]
    assert _floor_lines(ax) == [] and list(ax.texts) == []


def test_slices_lower_is_better_draws_a_ceiling() -> None:
    slices = [_slice("plan=basic", 50, True, 0.7, 0.6), _slice("plan=pro", 60, True, 0.8, None)]
    fig = plots.slice_figure(slices, "log_loss", 0.45)
    _png(fig)
    assert fig is not None
    (ax,) = fig.axes
    assert ax.get_ylabel() == "log_loss (lower is better)"
    assert _legend(ax)[-1] == "slice ceiling 0.450"
    assert ax.get_ylim() == pytest.approx((0.0, 0.45 * 1.15))  # room above the highest (the ceiling)
    # the champion has no metrics on the second slice: an empty bar marked "—"
    assert [t.get_text() for t in ax.texts] == ["—"]


def test_slices_nan_metric_is_marked_na() -> None:
    slices = [
        _slice("plan=basic", 50, True, math.nan, 0.6),
        SliceResult(column="plan", label="plan=pro", rows=3, judged=False, challenger={}),
    ]
    fig = plots.slice_figure(slices, "roc_auc", math.nan)
    _png(fig)
    assert fig is not None
    (ax,) = fig.axes
    assert [b.get_height() for b in _bars(ax)] == [0.0, 0.0, 0.6, 0.0]
    assert [t.get_text() for t in ax.texts] == ["n/a", "n/a", "—"]
    assert _floor_lines(ax) == []  # a NaN floor draws nothing


def test_slices_many_rotated_labels() -> None:
    slices = [_slice(f"bucket={i}", 10 * i, i % 2 == 0, 0.5 + i / 40) for i in range(1, 9)]
    fig = plots.slice_figure(slices, "roc_auc", 0.55)
    _png(fig)
    assert fig is not None
    ticks = fig.axes[0].get_xticklabels()
    assert len(ticks) == 8 and ticks[0].get_rotation() == 30


def test_slices_none_when_empty() -> None:
    assert plots.slice_figure([], "roc_auc", 0.7) is None


# Importance


def _importance(scores: dict[str, float], metric: str = "roc_auc") -> FeatureImportance:
    return FeatureImportance(
        metric=metric,
        n_repeats=5,
        n_rows=300,
        features=[FeatureScore(feature=f, mean=m, std=0.01) for f, m in scores.items()],
    )


def test_importance_grouped_bars_most_important_on_top() -> None:
    tables = {
        "challenger": _importance({"signal": 0.3, "noise": 0.0, "tenure": 0.1}),
        "champion v3": _importance({"signal": 0.2, "tenure": math.nan, "plan": 0.05}),
    }
    fig = plots.importance_figure(tables)
    _png(fig)
    (ax,) = fig.axes
    features = ["signal", "tenure", "plan", "noise"]
    assert [t.get_text() for t in ax.get_yticklabels()] == features
    assert ax.yaxis_inverted()
    challenger, champion = _bar_containers(ax)
    assert len(challenger.patches) == len(champion.patches) == len(features)
    # challenger has no "plan", the champion no "noise" and a NaN "tenure": empty bars
    assert [round(b.get_width(), 3) for b in challenger.patches] == [0.3, 0.1, 0.0, 0.0]
    assert [round(b.get_width(), 3) for b in champion.patches] == [0.2, 0.0, 0.05, 0.0]
    assert [t.get_text() for t in ax.texts] == [" n/a"] * 3  # plan, tenure (NaN) and noise
    assert _legend(ax) == ["challenger", "champion v3"]
    assert ax.get_title() == "Permutation importance (4 features; 5 shuffles of 300 rows)"
    assert ax.get_xlabel().startswith("drop in roc_auc when the feature is shuffled")


def test_importance_top_and_single_model() -> None:
    fig = plots.importance_figure({"challenger": _importance({f"f{i}": i / 10 for i in range(6)})}, top=3)
    _png(fig)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["f5", "f4", "f3"]
    assert len(_bars(ax)) == 3
    assert ax.get_legend() is None
    assert ax.get_title().startswith("Permutation importance (top 3 of 6;")


def test_importance_all_nan_and_notes() -> None:
    nan_fig = plots.importance_figure({"challenger": _importance({"a": math.nan, "b": math.nan})})
    _png(nan_fig)
    assert len(_bars(nan_fig.axes[0])) == 2
    for fig in (
        plots.importance_figure({}),
        plots.importance_figure({"challenger": _importance({})}),
        plots.importance_figure({"challenger": _importance({"a": 0.1})}, top=0),
    ):
        _png(fig)
        assert _texts(fig) == ["No permutation importance was measured."]
