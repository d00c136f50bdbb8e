"""Reading the prediction log, joining landed labels, live quality per served version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.evaluation.metrics import binary_metrics
from conveyor.monitoring.live import join_labels, live_quality, load_labels, read_prediction_log

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # the write_log fixture's default timestamp


def _land(root: str, frame: Any, day: str, name: str = "batch") -> None:
    from conveyor.data.storage import join_uri, write_parquet

    write_parquet(frame, join_uri(root, "landing", "tiny", f"date={day}", f"{name}.parquet"))


def test_read_prediction_log_keeps_the_window_and_flattens_features(
    spec: Any, write_log: Any, support_module: Any, tmp_path: Path
) -> None:
    inside = support_module.make_frame(20, seed=1)
    root = write_log(inside, ts=NOW - timedelta(days=1))
    write_log(support_module.make_frame(5, seed=2, start_id=500), ts=NOW - timedelta(days=9))  # too old
    write_log(support_module.make_frame(5, seed=3, start_id=900), ts=NOW)  # end is exclusive
    log_file = next((tmp_path / "data" / "predictions" / "tiny").glob("date=2026-03-09/*.jsonl"))
    with log_file.open("a") as fh:
        fh.write('{"event": "prediction", "ts": "2026-03-09T1')  # a line cut by a crash

    frame = read_prediction_log(spec, NOW - timedelta(days=7), NOW, data_root=root)
    assert len(frame) == 20
    assert frame["id"].tolist() == inside["row_id"].tolist()
    np.testing.assert_allclose(frame["x1"], inside["x1"])
    assert frame["color"].tolist() == inside["color"].tolist()
    assert str(frame["ts"].dt.tz) == "UTC"
    assert set(frame["version"]) == {"1"}


def test_an_empty_window_is_an_empty_frame_with_the_columns(spec: Any, tmp_path: Path) -> None:
    frame = read_prediction_log(spec, NOW - timedelta(days=7), NOW, data_root=tmp_path.as_uri())
    assert frame.empty
    assert {"ts", "version", "probability", "x1", "color"} <= set(frame.columns)


def test_join_labels_matches_ids_across_types(spec: Any, write_log: Any, support_module: Any) -> None:
    frame = support_module.make_frame(10, seed=4)
    root = write_log(frame, ts=NOW - timedelta(hours=3))
    landed = frame[["row_id", "label"]].iloc[:6].copy()
    landed["row_id"] = landed["row_id"].astype(str)  # landed as strings, predicted as ints
    predictions = read_prediction_log(spec, NOW - timedelta(days=1), NOW, data_root=root)
    joined = join_labels(spec, predictions, landed.rename(columns={"label": spec.data.target}))
    assert len(joined) == 6
    assert joined["label"].tolist() == frame["label"].iloc[:6].tolist()


def test_live_quality_from_log_and_landed_labels(spec: Any, write_log: Any, support_module: Any) -> None:
    v1 = support_module.make_frame(60, seed=5)
    v2 = support_module.make_frame(40, seed=6, start_id=1000)
    rng = np.random.default_rng(0)
    p1, p2 = rng.random(60), rng.random(40)
    root = write_log(v1, version="1", ts=NOW - timedelta(days=2), probability=p1)
    write_log(
        v2,
        version="2",
        ts=NOW - timedelta(days=1),
        probability=p2,
        errors=[{"status": 422, "request_id": "bad-1"}, {"status": 500, "request_id": "boom"}],
        request_size=10,
    )
    # Labels land the day after, in the regular landing layout; one batch outside the window.
    _land(root, v1, "2026-03-09")
    _land(root, v2.iloc[:30], "2026-03-10")
    _land(root, support_module.make_frame(5, seed=9, start_id=5000), "2026-02-01", name="old")

    labels = load_labels(spec, NOW - timedelta(days=7), data_root=root)
    assert len(labels) == 90 and list(labels.columns) == ["row_id", "label"]
    log = read_prediction_log(
        spec, NOW - timedelta(days=7), NOW, data_root=root, events=("prediction", "error")
    )
    quality = live_quality(spec, log, labels)

    assert quality["n_predictions"] == 100 and quality["n_labelled"] == 90
    expected = binary_metrics(np.r_[v1["label"], v2["label"].iloc[:30]], np.r_[p1, p2[:30]])
    assert quality["metrics"] == pytest.approx(expected)
    v2_stats = quality["per_version"]["2"]
    assert v2_stats["n_predictions"] == 40 and v2_stats["n_labelled"] == 30
    assert v2_stats["n_requests"] == 4 + 2
    assert (v2_stats["n_client_errors"], v2_stats["n_server_errors"]) == (1, 1)
    assert v2_stats["server_error_rate"] == pytest.approx(1 / 6)
    assert v2_stats["metrics"] == pytest.approx(binary_metrics(v2["label"].iloc[:30], p2[:30]))
    v1_stats = quality["per_version"]["1"]
    assert v1_stats["n_errors"] == 0 and v1_stats["n_requests"] == 2
    assert v1_stats["p50_latency_ms"] == pytest.approx(2.5)


def test_live_quality_without_labels(spec: Any, write_log: Any, support_module: Any) -> None:
    root = write_log(support_module.make_frame(10, seed=7), ts=NOW - timedelta(hours=1))
    log = read_prediction_log(spec, NOW - timedelta(days=1), NOW, data_root=root)
    quality = live_quality(spec, log)
    assert quality["metrics"] is None and quality["n_labelled"] == 0
    assert quality["per_version"]["1"]["n_predictions"] == 10


def test_rows_served_outside_the_contract_are_counted_per_column(
    spec: Any, write_log: Any, support_module: Any
) -> None:
    frame = support_module.make_frame(10, seed=5)
    frame.loc[2, "x1"] = 99.0  # the spec's range is [-10, 10]
    frame.loc[[3, 4], "color"] = "ultraviolet"
    root = write_log(frame, ts=NOW - timedelta(days=1), spec=spec)
    log = read_prediction_log(spec, NOW - timedelta(days=7), NOW, data_root=root)
    quality = live_quality(spec, log)
    assert quality["n_out_of_contract"] == 3
    assert quality["out_of_contract_columns"] == {"x1": 1, "color": 2}
    assert quality["per_version"]["1"]["n_out_of_contract"] == 3
