"""``pipeline.validate_data`` reads the spec's ``data.source``: breast-cancer data (569 rows over 30
days) as CSV files under a ``file://`` URI validates and freezes the same snapshot as when it landed as
Parquet; a SQL source without its connection's URL fails at once, naming the connection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from unit.pipeline.support import END, run_context

pytestmark = pytest.mark.unit

MODEL = "breast_cancer"


@pytest.fixture
def use_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``use_source(**source)``: from now on ``breast_cancer`` is the shipped spec with ``data.source``
    (one specs folder per source kind: the spec cache is keyed by path and mtime)."""
    from conveyor.config import load_spec
    from conveyor.settings import get_settings

    shipped = load_spec(MODEL).model_dump(mode="json")

    def use(**source: Any) -> Any:
        folder = tmp_path / f"specs-{source['kind']}"
        folder.mkdir()
        spec = {**shipped, "data": {**shipped["data"], "source": source}}
        (folder / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec))
        monkeypatch.setenv("CONVEYOR_SPECS_DIR", str(folder))
        get_settings.cache_clear()
        return load_spec(MODEL)

    return use


def test_a_csv_files_source_validates_and_freezes_like_the_landing_folder(
    tracking_uri: str, tmp_path: Path, use_source: Callable[..., Any]
) -> None:
    from conveyor import pipeline
    from conveyor.data.generate import breast_cancer_batches, land_batch

    landing = use_source(kind="landing")
    batches = breast_cancer_batches(landing, landing.data.window_days, END, seed=0)
    for day, batch in batches:
        land_batch(landing, batch, day)
        folder = tmp_path / "export" / f"day={day.isoformat()}"
        folder.mkdir(parents=True)
        batch.to_csv(folder / "part-0.csv", index=False)
    landed = pipeline.validate_data(run_context(MODEL, "manual__landing"), tracking_uri=tracking_uri)

    use_source(kind="files", uri=(tmp_path / "export").as_uri(), format="csv", partition="day")
    out = pipeline.validate_data(run_context(MODEL, "manual__csv"), tracking_uri=tracking_uri)

    assert out.unchanged is False and out.rows == 569 and out.snapshot is not None
    # CSV typed by the spec: the very rows, values and dtypes of the Parquet landing.
    assert out.fingerprint == landed.fingerprint == out.snapshot.fingerprint
    assert out.label_mix == landed.label_mix


def test_a_sql_source_needs_its_connections_url(tracking_uri: str, use_source: Callable[..., Any]) -> None:
    from conveyor import pipeline
    from conveyor.errors import PermanentError

    use_source(kind="sql", conn_id="warehouse", query="SELECT * FROM t WHERE d BETWEEN :start AND :end")
    with pytest.raises(PermanentError, match=r"Airflow connection 'warehouse'.*no source_url"):
        pipeline.validate_data(run_context(MODEL, "manual__sql"), tracking_uri=tracking_uri)
