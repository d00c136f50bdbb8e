"""``pipeline.validate_data`` sets quarantined rows aside and checks the label mix against the champion's.

Breast-cancer data (569 rows over 30 days) on a real MLflow store; the spec is a copy of the shipped one
with other ``data`` settings, in a specs folder of the test's own (``CONVEYOR_SPECS_DIR``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from unit.pipeline.support import END, run_context, run_stages

pytestmark = pytest.mark.unit

MODEL = "breast_cancer"
BETWEEN = "expect_column_values_to_be_between"
QUARANTINE_BETWEEN = {"severities": {BETWEEN: "quarantine"}}


@pytest.fixture
def use_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``use_spec(**data)``: from now on ``breast_cancer`` is the shipped spec with ``data`` updated."""
    from conveyor.config import DEFAULT_SPECS_DIR, load_spec
    from conveyor.settings import get_settings

    def use(**data: Any) -> Any:
        raw = yaml.safe_load((DEFAULT_SPECS_DIR / f"{MODEL}.yaml").read_text())
        raw["data"].update(data)
        # a folder per variant: the spec cache is keyed by path and mtime
        specs = tmp_path / f"specs-{len(list(tmp_path.glob('specs-*')))}"
        specs.mkdir()
        (specs / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        monkeypatch.setenv("CONVEYOR_SPECS_DIR", str(specs))
        get_settings.cache_clear()
        return load_spec(MODEL)

    return use


def _land(spec: Any, edit: Callable[[pd.DataFrame], pd.DataFrame] = lambda df: df) -> pd.DataFrame:
    """Land the 30 daily batches, each changed by ``edit``; returns the landed rows."""
    from conveyor.data.generate import breast_cancer_batches, land_batch

    landed = []
    for day, batch in breast_cancer_batches(spec, spec.data.window_days, END, seed=0):
        frame = edit(batch).reset_index(drop=True)
        land_batch(spec, frame, day)
        landed.append(frame)
    return pd.concat(landed, ignore_index=True)


def _out_of_range(ids: set[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Rows with these ids get ``mean_radius`` 99 (the spec allows 0..50)."""

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[df["sample_id"].isin(ids), "mean_radius"] = 99.0
        return df

    return edit


def _validate(tracking_uri: str, dag_run_id: str) -> Any:
    from conveyor import pipeline

    return pipeline.validate_data(run_context(MODEL, dag_run_id), tracking_uri=tracking_uri)


def _run_of(tracking_uri: str, dag_run_id: str) -> Any:
    from conveyor.registry.tracking import client_for, find_runs_by_dag_run

    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(f"conveyor/{MODEL}").experiment_id
    (run,) = find_runs_by_dag_run(client, experiment, dag_run_id)
    return run


def _report(tracking_uri: str, run: Any) -> dict[str, Any]:
    from conveyor.registry.tracking import client_for

    local = client_for(tracking_uri).download_artifacts(run.info.run_id, "validation/report.json")
    return dict(json.loads(Path(local).read_text()))


def test_quarantined_rows_are_set_aside_written_and_left_out_of_the_snapshot(
    tracking_uri: str, use_spec: Callable[..., Any]
) -> None:
    from conveyor.data.contracts import QUARANTINE_REASON_COLUMN
    from conveyor.data.snapshot import SnapshotError, load_snapshot
    from conveyor.data.storage import exists, read_parquet
    from conveyor.registry.tracking import client_for

    spec = use_spec(**QUARANTINE_BETWEEN)
    bad = {"S00001", "S00100", "S00400"}
    landed = _land(spec, _out_of_range(bad))

    stages = run_stages(MODEL, "manual__q", tracking_uri)  # validate_data, then on to register
    out = stages["validated"]

    assert out.unchanged is False and out.rows == len(landed) == 569
    assert out.quarantined_rows == 3
    rows = read_parquet(out.quarantine_uri)
    assert set(rows["sample_id"]) == bad and len(rows) == 3
    assert set(rows[QUARANTINE_REASON_COLUMN]) == {f"{BETWEEN}:mean_radius: 99.0 is outside [0.0, 50.0]"}
    train, evaluation = load_snapshot(out.snapshot)
    frozen = pd.concat([train, evaluation])
    assert len(frozen) == out.snapshot.rows == 569 - 3
    assert not frozen["sample_id"].isin(bad).any() and frozen["mean_radius"].max() <= 50
    tags = _run_of(tracking_uri, "manual__q").data.tags
    assert tags["conveyor.quarantined_rows"] == "3"
    assert tags["conveyor.quarantine_uri"] == out.quarantine_uri
    assert tags["conveyor.data_fingerprint"] == out.fingerprint == out.snapshot.fingerprint
    assert json.loads(tags["conveyor.label_mix"]) == out.label_mix
    clean = landed[~landed["sample_id"].isin(bad)]
    assert out.label_mix == pytest.approx(
        clean["malignant"].value_counts(normalize=True).rename(str).to_dict()
    )
    report = _report(tracking_uri, _run_of(tracking_uri, "manual__q"))
    assert report["success"] is True and report["quarantined_rows"] == 3
    assert [(c["expectation"], c["column"]) for c in report["quarantined"]] == [(BETWEEN, "mean_radius")]
    assert len(json.dumps(out.xcom())) < 2_000  # XCom: no rows
    registered = (
        client_for(tracking_uri)
        .get_model_version(spec.registered_model_name, stages["registered"].version)
        .tags
    )
    assert registered["conveyor.validation"] == (
        f"passed ({out.checks} checks on 569 rows; 3 quarantined, not trained on)"
    )
    assert json.loads(registered["conveyor.label_mix"]) == out.label_mix

    again = _validate(tracking_uri, "manual__q")  # a retry of the same DAG run
    assert again == out
    pd.testing.assert_frame_equal(read_parquet(again.quarantine_uri), rows)

    # The batch is fixed and the task cleared: the quarantine file and its tag go (the frozen snapshot of
    # this DAG run holds other rows, so freezing refuses, as for any re-run on changed data).
    _land(spec)
    with pytest.raises(SnapshotError, match="already holds different data"):
        _validate(tracking_uri, "manual__q")
    assert not exists(out.quarantine_uri)
    tags = _run_of(tracking_uri, "manual__q").data.tags
    assert tags["conveyor.quarantined_rows"] == "0" and "conveyor.quarantine_uri" not in tags


def test_more_quarantined_rows_than_allowed_fail_validation_and_freeze_nothing(
    tracking_uri: str, use_spec: Callable[..., Any]
) -> None:
    from conveyor.data.contracts import DataValidationError
    from conveyor.data.storage import data_uri, exists

    spec = use_spec(**QUARANTINE_BETWEEN, max_quarantine_share=0.02)
    bad = {f"S{i:05d}" for i in range(1, 21)}  # 20 of 569 rows: 3.5%
    _land(spec, _out_of_range(bad))

    with pytest.raises(DataValidationError, match="quarantine_share") as err:
        _validate(tracking_uri, "manual__many")

    assert "20 of 569 rows (3.51%) would be quarantined" in str(err.value)
    assert not exists(data_uri("snapshots", MODEL)) and not exists(data_uri("quarantine", MODEL))
    run = _run_of(tracking_uri, "manual__many")
    assert run.data.tags["conveyor.validation"] == "failed"
    assert "conveyor.quarantined_rows" not in run.data.tags
    report = _report(tracking_uri, run)
    assert report["success"] is False and report["quarantined_rows"] == 20
    assert [c["expectation"] for c in report["failed"]] == ["quarantine_share"]


def test_the_label_mix_is_checked_against_the_one_the_champion_was_trained_on(
    tracking_uri: str, use_spec: Callable[..., Any]
) -> None:
    from conveyor.data.contracts import DataValidationError
    from conveyor.registry.aliases import ANY, set_alias
    from conveyor.registry.tracking import client_for

    spec = use_spec()
    _land(spec)
    first = run_stages(MODEL, "manual__1", tracking_uri)
    reference = first["validated"].label_mix
    assert reference == pytest.approx({"0": 357 / 569, "1": 212 / 569}, abs=1e-6)
    client = client_for(tracking_uri)
    version = first["registered"].version
    mv = client.get_model_version(spec.registered_model_name, version)
    assert json.loads(mv.tags["conveyor.label_mix"]) == reference
    set_alias(
        client, spec.registered_model_name, "champion", version, expected_version=ANY, actor="t", reason="t"
    )

    # Most malignant samples stop arriving: 1 in 10 is left.
    shifted = _land(spec, lambda df: df[(df["malignant"] == 0) | (df.index % 10 == 0)])
    window = shifted["malignant"].value_counts(normalize=True).to_dict()
    assert window[1] < reference["1"] - 0.2

    warned = _validate(tracking_uri, "manual__shift")  # label_mix warns by default: the run goes on
    assert warned.unchanged is False and warned.snapshot.rows == len(shifted)
    assert warned.label_mix == pytest.approx({"0": window[0], "1": window[1]}, abs=1e-6)
    report = _report(tracking_uri, _run_of(tracking_uri, "manual__shift"))
    assert report["success"] is True
    assert [c["expectation"] for c in report["warnings"]] == ["label_mix"]

    use_spec(severities={"label_mix": "block"})
    with pytest.raises(DataValidationError, match="label_mix") as err:
        _validate(tracking_uri, "manual__shift_blocked")
    assert f"1: {reference['1']:.3f} → {window[1]:.3f}" in str(err.value)
    assert f"0: {reference['0']:.3f} → {window[0]:.3f}" in str(err.value)
