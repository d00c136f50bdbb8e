"""The gate report's figures for multiclass and regression models (and the per-task file lists)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from conveyor.evaluation import plots
from conveyor.evaluation.gate import SliceResult

pytestmark = pytest.mark.unit

CLASSES = ["cat", "dog", "eel"]


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
def multiclass() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class indices, a good model's probabilities and a uniform guess."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    logits = 2.5 * np.eye(3)[y] + rng.normal(size=(150, 3))
    good = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, good, np.full((150, 3), 1 / 3)


@pytest.fixture(scope="module")
def regression() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 200)
    return y, y + rng.normal(0, 0.5, 200), y + rng.normal(1.0, 2.0, 200)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_task_draws_its_figures(
    task: str, multiclass: tuple[np.ndarray, ...], regression: tuple[np.ndarray, ...]
) -> None:
    if task == "binary":
        rng = np.random.default_rng(2)
        y = rng.integers(0, 2, 100)
        scores = {
            "challenger": np.clip(0.6 * y + rng.normal(0.2, 0.15, 100), 0, 1),
            "champion v3": rng.random(100),
        }
        classes: list[Any] = [0, 1]
    elif task == "multiclass":
        y, good, guess = multiclass
        scores, classes = {"challenger": good, "champion v3": guess}, CLASSES
    else:
        y, good, biased = regression
        scores, classes = {"challenger": good, "champion v3": biased}, []
    drawers = plots.task_figures(task, y, scores, classes)
    files = [*drawers, "slices.png", "importance.png"]
    assert tuple(files) == plots.TASK_FIGURES[task]
    for draw in drawers.values():
        _png(draw())


def test_multiclass_confusion_is_k_by_k_with_the_class_labels(multiclass: tuple[np.ndarray, ...]) -> None:
    y, good, guess = multiclass
    fig = plots.multiclass_confusion_figure(y, {"challenger": good, "champion v3": guess}, CLASSES)
    _png(fig)
    first, second = fig.axes
    assert [t.get_text() for t in first.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in first.get_yticklabels()] == CLASSES
    cells = [int(t.get_text()) for t in first.texts]
    assert len(cells) == 9 and sum(cells) == 150
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (y, np.argmax(good, axis=1)), 1)
    assert cells == expected.ravel().tolist()  # rows: true class, columns: the most probable class
    accuracy = float(np.mean(np.argmax(good, axis=1) == y))
    assert first.get_title() == f"challenger\nmost probable class, accuracy {accuracy:.3f}"
    assert second.get_title().startswith("champion v3\n")


def test_multiclass_roc_one_curve_per_class_and_a_note_for_many_classes(
    multiclass: tuple[np.ndarray, ...],
) -> None:
    y, good, guess = multiclass
    fig = plots.multiclass_roc_figure(y, {"challenger": good, "champion v3": guess}, CLASSES)
    _png(fig)
    first, second = fig.axes
    legend = _legend(first)
    assert [t.split(" (AUC")[0] for t in legend] == ["cat", "Chance level", "dog", "eel"]
    assert first.get_title().startswith("challenger: one-vs-rest ROC\nmean AUC 0.9")
    assert second.get_title() == "champion v3: one-vs-rest ROC\nmean AUC 0.500 over 3 classes"
    many = [f"c{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    note = plots.multiclass_roc_figure(
        rng.integers(0, 12, 50), {"challenger": rng.dirichlet(np.ones(12), 50)}, many
    )
    _png(note)
    assert _texts(note) == [
        "One-vs-rest ROC curves not drawn: 12 classes, more than 10 would be unreadable. roc_auc_ovr "
        "in the metrics sums them up."
    ]


def test_multiclass_roc_with_a_class_absent_and_one_class_only() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    scores = np.array([[0.7, 0.2, 0.1]] * 3 + [[0.2, 0.7, 0.1]] * 3)
    fig = plots.multiclass_roc_figure(y, {"challenger": scores}, CLASSES)
    _png(fig)
    assert _texts(fig) == ["no curve (absent from the labels): eel"]
    one = plots.multiclass_roc_figure(np.zeros(4, dtype=int), {"challenger": scores[:4]}, CLASSES)
    _png(one)
    assert _texts(one) == ["challenger: ROC curves undefined, the labels hold one class only (cat)."]


def test_regression_predicted_vs_actual_and_residuals(regression: tuple[np.ndarray, ...]) -> None:
    y, good, biased = regression
    fig = plots.predicted_actual_figure(y, {"challenger": good, "champion v2": biased})
    _png(fig)
    (ax,) = fig.axes
    legend = _legend(ax)
    assert legend[0].startswith("challenger (RMSE 0.") and "R² 0.9" in legend[0]
    assert legend[1].startswith("champion v2 (RMSE ")
    assert legend[2] == "y = x"
    assert ax.get_xlabel() == "actual" and ax.get_ylabel() == "predicted"
    residuals = plots.residual_figure(y, {"challenger": good, "champion v2": biased})
    _png(residuals)
    (rax,) = residuals.axes
    bias = float(np.mean(biased - y))
    assert _legend(rax)[1].startswith(f"champion v2 (mean {bias:+.4g}, sd ")
    assert rax.get_xlabel() == "residual (prediction - actual)"
    assert len(rax.patches) == 2  # one filled outline per model
    assert [line.get_xdata()[0] for line in rax.get_lines()] == [0]  # the zero line


def test_regression_figures_leave_out_nan_rows_and_note_empty_input(
    regression: tuple[np.ndarray, ...],
) -> None:
    y, good, _ = regression
    p = good.copy()
    p[:5] = np.nan
    fig = plots.predicted_actual_figure(y, {"challenger": p})
    _png(fig)
    assert _legend(fig.axes[0])[0].endswith(", 5 NaN rows left out")
    for empty in (plots.predicted_actual_figure(y, {}), plots.residual_figure([], {"challenger": []})):
        _png(empty)
    assert _texts(plots.residual_figure(y, {})) == ["No residual histogram: no model scored."]
    with pytest.raises(ValueError, match="3 predictions for 200 targets"):
        plots.predicted_actual_figure(y, {"challenger": [1.0, 2.0, 3.0]})


def test_slices_of_a_negative_r2_go_below_zero() -> None:
    slices = [
        SliceResult(column="plan", label="plan=basic", rows=50, judged=True, challenger={"r2": 0.6}),
        SliceResult(column="plan", label="plan=pro", rows=50, judged=True, challenger={"r2": -0.4}),
    ]
    fig = plots.slice_figure(slices, "r2", 0.2)
    _png(fig)
    assert fig is not None
    low, high = fig.axes[0].get_ylim()
    assert low == pytest.approx(-0.44) and high == 1.05


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown task type 'ranking'"):
        plots.task_figures("ranking", [], {})
