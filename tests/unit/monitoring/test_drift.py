"""Feature drift with Evidently on identical, same-distribution and shifted frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.monitoring.drift import DriftError, feature_drift

pytestmark = pytest.mark.unit


def test_identical_frames_do_not_drift(spec: Any, train: Any) -> None:
    report = feature_drift(spec, train, train.copy())
    assert [f.name for f in report.features] == ["x1", "x2", "color"]
    assert report.n_drifted == 0 and report.dataset_drift is False
    assert all(f.score is not None for f in report.features)
    assert report.n_reference == report.n_current == len(train)


def test_a_fresh_sample_of_the_same_distribution_is_not_dataset_drift(
    spec: Any, train: Any, support_module: Any
) -> None:
    report = feature_drift(spec, train, support_module.make_frame(300, seed=11))
    assert report.dataset_drift is False, report.summary()
    assert report.drift_share < spec.monitor.drift_share_alert


def test_shifted_frames_drift_and_the_html_report_is_saved(
    spec: Any, train: Any, support_module: Any, tmp_path: Path
) -> None:
    shifted = support_module.make_frame(300, seed=3, shift=1.0)
    html = tmp_path / "reports" / "drift.html"
    report = feature_drift(spec, train, shifted, html_path=html)
    assert report.dataset_drift is True
    assert report.drifted_features == ["x1", "x2", "color"]
    by_name = {f.name: f for f in report.features}
    # Small samples: Evidently picks p-value tests, judged against the spec's threshold.
    assert "K-S" in by_name["x1"].method and by_name["x1"].kind == "numeric"
    assert "chi-square" in by_name["color"].method and by_name["color"].kind == "categorical"
    assert by_name["x1"].score < spec.monitor.drift_threshold == by_name["x1"].threshold
    assert report.html_uri == str(html)
    text = html.read_text()
    assert "<html" in text.lower() and len(text) > 10_000
    assert "dataset drift: 3 of 3 features drifted" in report.summary()


def test_large_samples_use_distances(spec: Any, support_module: Any) -> None:
    reference = support_module.make_frame(3000, seed=1)
    current = support_module.make_frame(2000, seed=2, shift=1.0)
    report = feature_drift(spec, reference, current)
    by_name = {f.name: f for f in report.features}
    assert "Wasserstein" in by_name["x1"].method
    assert by_name["x1"].drifted and by_name["x1"].score >= by_name["x1"].threshold


def test_a_feature_without_values_is_reported_not_crashed(spec: Any, train: Any) -> None:
    current = train.copy()
    current["x2"] = np.nan
    report = feature_drift(spec, train, current)
    x2 = {f.name: f for f in report.features}["x2"]
    assert x2.method == "unavailable" and x2.drifted is False and x2.note


def test_missing_columns_or_rows_are_a_clear_error(spec: Any, train: Any) -> None:
    with pytest.raises(DriftError, match=r"current frame lacks feature columns \['color'\]"):
        feature_drift(spec, train, train.drop(columns=["color"]))
    with pytest.raises(DriftError, match="reference frame has no rows"):
        feature_drift(spec, train.iloc[0:0], train)
