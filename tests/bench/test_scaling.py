"""The scaling benchmark's pieces that need no pipeline run: the slope, the spec override, the plots."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conveyor.config import load_spec

from .real_bench import load

pytestmark = pytest.mark.unit

scaling = load("scaling")


def test_log_log_slope() -> None:
    assert scaling._slope(1e5, 10.0, 1e6, 100.0) == pytest.approx(1.0)
    assert scaling._slope(1e5, 10.0, 1e6, 10.0) == pytest.approx(0.0)
    assert scaling._slope(1e5, 10.0, 1e6, 1000.0) == pytest.approx(2.0)


def test_spec_override_changes_only_the_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = load_spec("churn")
    scaling._write_spec(tmp_path, epochs=1)
    monkeypatch.setenv("CONVEYOR_SPECS_DIR", str(tmp_path))
    overridden = load_spec("churn")
    assert overridden.trainer.params["epochs"] == 1 != shipped.trainer.params["epochs"]
    params = {**shipped.trainer.params, "epochs": 1}
    assert overridden == shipped.model_copy(
        update={"trainer": shipped.trainer.model_copy(update={"params": params})}
    )


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    points = [
        {
            "rows": rows,
            "stage_seconds": 2.0 + rows / 1e4,
            "stages": {"validate_data": 0.5 + rows / 1e5, "train": 1.5 + rows / 2e4},
            "peak_rss_bytes": 9e8 + 30 * rows,
            "added_rss_bytes": 1e8 + 30 * rows,
            "window_bytes": 320 * rows,
        }
        for rows in (1_000, 10_000, 100_000)
    ]
    written = scaling.plot(points, tmp_path / "plots")
    assert [p.name for p in written] == ["scaling_time.png", "scaling_memory.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
    assert not math.isnan(scaling._slope(1_000, 2.1, 100_000, 12.0))
