"""Fingerprints and frozen train/eval snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conveyor.config import ModelSpec
from conveyor.data import storage
from conveyor.data.generate import generate_churn
from conveyor.data.snapshot import (
    SnapshotError,
    SnapshotInfo,
    fingerprint,
    freeze_snapshot,
    load_snapshot,
    split_is_eval,
)

from .conftest import END_DAY

pytestmark = pytest.mark.unit


@pytest.fixture
def frame(churn: ModelSpec) -> pd.DataFrame:
    return generate_churn(churn, 500, END_DAY, seed=0)


def test_fingerprint_ignores_row_and_column_order(frame: pd.DataFrame) -> None:
    shuffled = frame.sample(frac=1.0, random_state=3)
    reordered = shuffled[list(reversed(frame.columns))]
    assert fingerprint(reordered) == fingerprint(frame)
    assert fingerprint(frame).startswith("sha256:")


def test_fingerprint_sees_one_changed_value_name_or_dtype(frame: pd.DataFrame) -> None:
    base = fingerprint(frame)
    one_value = frame.copy()
    one_value.loc[123, "monthly_charges"] += 0.01
    renamed = frame.rename(columns={"age": "age_years"})
    retyped = frame.astype({"churned": "int32"})
    dropped_row = frame.drop(index=7)
    duplicated_row = pd.concat([frame, frame.iloc[[7]]])

    prints = {fingerprint(d) for d in (one_value, renamed, retyped, dropped_row, duplicated_row)}
    assert base not in prints and len(prints) == 5


def test_fingerprint_survives_parquet(frame: pd.DataFrame, data_root: Path) -> None:
    uri = storage.write_parquet(frame, storage.data_uri("x.parquet"))
    assert fingerprint(storage.read_parquet(uri)) == fingerprint(frame)


def test_split_is_stable_per_id_and_close_to_the_holdout(frame: pd.DataFrame) -> None:
    ids = frame["customer_id"].tolist()
    flags = split_is_eval(ids, 0.2)
    assert flags.tolist() == split_is_eval(list(reversed(ids)), 0.2).tolist()[::-1]
    # A customer's side does not depend on who else is in the window.
    assert split_is_eval(ids[:50], 0.2).tolist() == flags[:50].tolist()
    big = split_is_eval([f"id{i}" for i in range(20000)], 0.2)
    assert 0.18 < big.mean() < 0.22


def test_freeze_writes_split_and_manifest(churn: ModelSpec, frame: pd.DataFrame, data_root: Path) -> None:
    info = freeze_snapshot(churn, frame, "manual__2024-05-07")

    base = data_root / "snapshots" / "churn" / "manual__2024-05-07"
    assert info.train_uri == (base / "train.parquet").as_uri()
    assert info.eval_uri == (base / "eval.parquet").as_uri()
    assert info.manifest_uri == (base / "manifest.json").as_uri()
    assert info.rows == 500 and info.train_rows + info.eval_rows == 500
    assert 0.1 < info.eval_rows / info.rows < 0.3
    assert info.fingerprint == fingerprint(frame)
    assert str(info.window_start) == str(info.window_end) == "2024-05-07"

    train, evaluation = load_snapshot(info)
    assert not set(train["customer_id"]) & set(evaluation["customer_id"])
    assert fingerprint(pd.concat([train, evaluation])) == info.fingerprint
    expected_eval = set(frame.loc[split_is_eval(frame["customer_id"].tolist(), 0.2), "customer_id"])
    assert set(evaluation["customer_id"]) == expected_eval

    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["fingerprint"] == info.fingerprint and manifest["holdout_fraction"] == 0.2


def test_freeze_is_idempotent_and_refuses_silent_replacement(
    churn: ModelSpec, frame: pd.DataFrame, data_root: Path
) -> None:
    first = freeze_snapshot(churn, frame, "run-1")
    train_file = Path(first.train_uri.removeprefix("file://"))
    stamp = train_file.stat().st_mtime_ns

    again = freeze_snapshot(churn, frame.sample(frac=1.0, random_state=1), "run-1")
    assert again == first
    assert train_file.stat().st_mtime_ns == stamp

    changed = frame.copy()
    changed.loc[0, "age"] = 33.0
    with pytest.raises(SnapshotError, match="already holds different data"):
        freeze_snapshot(churn, changed, "run-1")
    replaced = freeze_snapshot(churn, changed, "run-1", overwrite=True)
    assert replaced.fingerprint == fingerprint(changed) != first.fingerprint


def test_same_customers_land_on_the_same_side_across_runs(churn: ModelSpec, data_root: Path) -> None:
    day_one = generate_churn(churn, 300, END_DAY, seed=0)
    bigger = pd.concat([day_one, generate_churn(churn, 300, END_DAY.replace(day=8), seed=0)])

    _, eval_one = load_snapshot(freeze_snapshot(churn, day_one, "run-a"))
    _, eval_two = load_snapshot(freeze_snapshot(churn, bigger, "run-b"))
    assert set(eval_one["customer_id"]) == set(eval_two["customer_id"]) & set(day_one["customer_id"])


def test_load_snapshot_accepts_xcom_dict_and_manifest_uri(
    churn: ModelSpec, frame: pd.DataFrame, data_root: Path
) -> None:
    info = freeze_snapshot(churn, frame, "run-x")
    from_dict = load_snapshot(json.loads(json.dumps(info.model_dump(mode="json"))))
    from_uri = load_snapshot(info.manifest_uri)
    direct = load_snapshot(info)
    for (a_train, a_eval), (b_train, b_eval) in ((from_dict, direct), (from_uri, direct)):
        pd.testing.assert_frame_equal(a_train, b_train)
        pd.testing.assert_frame_equal(a_eval, b_eval)
    assert SnapshotInfo.model_validate(info.model_dump(mode="json")) == info


def test_load_snapshot_detects_tampering_and_missing_files(
    churn: ModelSpec, frame: pd.DataFrame, data_root: Path
) -> None:
    info = freeze_snapshot(churn, frame, "run-t")
    train, _ = load_snapshot(info)
    train.loc[0, "age"] = 99.0
    storage.write_parquet(train, info.train_uri)
    with pytest.raises(SnapshotError, match="changed after freezing"):
        load_snapshot(info)
    load_snapshot(info, verify=False)

    Path(info.eval_uri.removeprefix("file://")).unlink()
    with pytest.raises(SnapshotError, match="is missing"):
        load_snapshot(info)
    with pytest.raises(SnapshotError, match="no snapshot manifest"):
        load_snapshot(storage.data_uri("snapshots", "churn", "nope", "manifest.json"))


def test_freeze_rejects_bad_input(churn: ModelSpec, frame: pd.DataFrame, data_root: Path) -> None:
    with pytest.raises(SnapshotError, match="id column 'customer_id' is missing"):
        freeze_snapshot(churn, frame.drop(columns=["customer_id"]), "run-1")
    with pytest.raises(SnapshotError, match="without '/'"):
        freeze_snapshot(churn, frame, "a/b")
    with pytest.raises(SnapshotError, match="land more data"):
        freeze_snapshot(churn, frame.head(1), "run-1")
