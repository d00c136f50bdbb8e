from __future__ import annotations

import time

import numpy as np
import pytest

from conveyor.evaluation.gate import paired_bootstrap, weighted_metric
from conveyor.evaluation.metrics import METRIC_NAMES, binary_metrics

pytestmark = pytest.mark.unit


def _data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a good model's and a weak model's probabilities (rounded: many ties, as real models have)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-2 * signal))).astype(int)
    good = np.round(1 / (1 + np.exp(-2 * signal)), 2)
    weak = np.round(1 / (1 + np.exp(-(0.3 * signal + rng.normal(size=rows)))), 2)
    return y, good, weak


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_weighted_metric_with_unit_weights_is_binary_metrics(metric: str) -> None:
    y, good, _ = _data(300)
    got = weighted_metric(metric, y, good, np.ones((1, y.size)))[0]
    assert got == pytest.approx(binary_metrics(y, good)[metric], abs=1e-12)


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_count_weights_equal_repeating_rows(metric: str) -> None:
    y, good, _ = _data(120, seed=1)
    counts = np.random.default_rng(5).integers(0, 4, size=y.size)
    repeated = binary_metrics(np.repeat(y, counts), np.repeat(good, counts))[metric]
    assert weighted_metric(metric, y, good, counts[None, :])[0] == pytest.approx(repeated, abs=1e-12)


def test_detects_a_clearly_better_model() -> None:
    y, good, weak = _data(2000)
    test = paired_bootstrap(y, good, weak, "roc_auc", n=500, seed=1)
    expected = binary_metrics(y, good)["roc_auc"] - binary_metrics(y, weak)["roc_auc"]
    assert test.delta == pytest.approx(expected, abs=1e-12)
    assert test.ci_low > 0 and test.ci_low <= test.delta <= test.ci_high
    assert test.p_value < 0.01
    assert (test.n_boot, test.n_rows, test.seed) == (500, 2000, 1)
    reverse = paired_bootstrap(y, weak, good, "roc_auc", n=500, seed=1)
    assert reverse.ci_high < 0 and reverse.p_value > 0.99


def test_an_identical_model_is_not_better() -> None:
    y, good, _ = _data(1000)
    test = paired_bootstrap(y, good, good.copy(), "roc_auc", n=300, seed=0)
    assert (test.delta, test.ci_low, test.ci_high, test.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not test.ci_low > 0


def test_log_loss_is_oriented_so_positive_means_better() -> None:
    y, good, weak = _data(1000)
    test = paired_bootstrap(y, good, weak, "log_loss", n=300, seed=0)
    assert test.delta == pytest.approx(
        binary_metrics(y, weak)["log_loss"] - binary_metrics(y, good)["log_loss"]
    )
    assert test.delta > 0 and test.ci_low > 0


@pytest.mark.parametrize("metric", ["accuracy", "precision", "recall", "f1"])
def test_threshold_metrics_detect_the_better_model(metric: str) -> None:
    y, good, weak = _data(3000)
    assert paired_bootstrap(y, good, weak, metric, n=300, seed=0).ci_low > 0


def test_same_seed_same_result_and_seed_matters() -> None:
    y, good, weak = _data(500)
    a = paired_bootstrap(y, good, weak, "roc_auc", n=200, seed=7)
    assert a == paired_bootstrap(y, good, weak, "roc_auc", n=200, seed=7)
    assert a.ci_low != paired_bootstrap(y, good, weak, "roc_auc", n=200, seed=8).ci_low


def test_ten_thousand_rows_in_under_a_second() -> None:
    y, good, weak = _data(10_000)
    paired_bootstrap(y, good, weak, "roc_auc", n=20, seed=0)  # warm-up (imports, allocator)
    start = time.perf_counter()
    test = paired_bootstrap(y, good, weak, "roc_auc", n=1000, seed=0)
    elapsed = time.perf_counter() - start
    assert test.n_boot == 1000
    assert elapsed < 1.0, f"paired bootstrap took {elapsed:.2f} s for 10k rows x 1000 resamples"


def test_one_class_gives_no_auc_and_no_interval() -> None:
    y = np.ones(50, dtype=int)
    test = paired_bootstrap(y, np.full(50, 0.7), np.full(50, 0.6), "roc_auc", n=50, seed=0)
    assert test.n_boot == 0 and np.isnan(test.ci_low) and np.isnan(test.p_value)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap([0, 1], [0.1, 0.9], [0.2, 0.8], "auc")
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap([0, 1], [0.1, 0.9], [0.2], "roc_auc")
    with pytest.raises(ValueError, match="at least one row"):
        paired_bootstrap([], [], [], "roc_auc")
