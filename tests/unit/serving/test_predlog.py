"""The prediction-log writer: off the request path, bounded, never raising into a request."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conveyor.serving.predlog import PredictionChunk, PredictionLogWriter

pytestmark = pytest.mark.unit


def _chunk(n: int, model: str = "tiny", ts: datetime | None = None) -> PredictionChunk:
    return PredictionChunk(
        model=model,
        version="3",
        request_id="r",
        route="invocations",
        ts=ts or datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
        latency_ms=1.5,
        frame=pd.DataFrame({"x1": np.arange(n, dtype=float), "color": ["red"] * n}),
        outputs=pd.DataFrame({"probability": np.full(n, 0.25), "prediction": np.zeros(n, dtype="int64")}),
        ids=list(range(100, 100 + n)),
    )


def test_chunks_are_written_per_model_and_day(tmp_path: Path) -> None:
    written: Counter[str] = Counter()
    writer = PredictionLogWriter(
        tmp_path.as_uri(), writer="host-1", on_write=lambda m, n: written.update({m: n})
    )
    writer.start()
    assert writer.submit(_chunk(3))
    assert writer.submit(_chunk(2, ts=datetime(2026, 3, 5, 0, 0, 1, tzinfo=UTC)))
    assert writer.submit(_chunk(1, model="other"))
    assert writer.flush(10)
    day1 = tmp_path / "predictions" / "tiny" / "date=2026-03-04" / "host-1.jsonl"
    day2 = tmp_path / "predictions" / "tiny" / "date=2026-03-05" / "host-1.jsonl"
    rows = [json.loads(line) for line in day1.read_text().splitlines()]
    assert [r["id"] for r in rows] == [100, 101, 102]
    assert rows[1]["features"] == {"x1": 1.0, "color": "red"}
    assert rows[0]["probability"] == 0.25 and rows[0]["prediction"] == 0 and rows[0]["version"] == "3"
    assert len(day2.read_text().splitlines()) == 2
    assert written == {"tiny": 5, "other": 1}
    writer.submit(_chunk(1))
    writer.close()
    assert len(day1.read_text().splitlines()) == 4, "close() writes what is still queued"


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    drops: Counter[tuple[str, str]] = Counter()
    writer = PredictionLogWriter(
        tmp_path.as_uri(), max_rows=5, on_drop=lambda m, reason, n: drops.update({(m, reason): n})
    )
    # The thread is not started: nothing drains, so the bound is what decides.
    started = time.perf_counter()
    assert writer.submit(_chunk(4))
    assert not writer.submit(_chunk(2))
    assert writer.submit(_chunk(1))
    assert time.perf_counter() - started < 0.5
    assert drops == {("tiny", "queue_full"): 2}


def test_write_errors_are_counted_and_the_thread_survives(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    drops: Counter[str] = Counter()
    writer = PredictionLogWriter(
        (blocker / "root").as_uri(), on_drop=lambda m, reason, n: drops.update({reason: n})
    )
    writer.start()
    writer.submit(_chunk(3))
    assert writer.flush(10)
    assert drops == {"write_error": 3}
    writer.data_root = tmp_path.as_uri()  # the disk comes back
    writer.submit(_chunk(2))
    assert writer.flush(10)
    assert len(list((tmp_path / "predictions").rglob("*.jsonl"))) == 1
    writer.close()


def test_nan_features_are_logged_as_null(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path.as_uri(), writer="w")
    chunk = _chunk(1)
    chunk.frame.loc[0, "x1"] = np.nan
    line = chunk.lines()[0]
    assert json.loads(line)["features"]["x1"] is None
    assert "NaN" not in line
    writer.close()
