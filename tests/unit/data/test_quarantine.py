"""Quarantine severity (row-level checks set their failing rows aside) and the label-mix check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from conveyor.config import QUARANTINABLE_CHECKS, ModelSpec
from conveyor.data.contracts import (
    QUARANTINE_REASON_COLUMN,
    DataValidationError,
    build_suite,
    conveyor_checks,
    label_mix,
    label_mix_check,
    quarantine_rows,
    quarantine_uri,
    validate_batch,
    validate_or_raise,
    write_quarantine,
)
from conveyor.data.generate import corrupt, generate_churn, land_batch, land_demo_data
from conveyor.data.landing import PARTITIONS_ATTR, load_window

from .conftest import END_DAY

pytestmark = pytest.mark.unit

BETWEEN = "expect_column_values_to_be_between"
UNIQUE = "expect_column_values_to_be_unique"


@pytest.fixture(scope="module")
def churn_window() -> pd.DataFrame:
    """Two days of churn rows (the spec wants at least 500 rows)."""
    from conveyor.config import load_spec

    spec = load_spec("churn")
    days = [END_DAY - dt.timedelta(days=1), END_DAY]
    return pd.concat([generate_churn(spec, 400, day, seed=0) for day in days], ignore_index=True)


def _with(spec: ModelSpec, **data: Any) -> ModelSpec:
    """``spec`` with ``data`` fields replaced, validated again (as loading a YAML file would)."""
    raw = spec.model_dump()
    raw["data"].update(data)
    return ModelSpec.model_validate(raw)


def _quarantining(spec: ModelSpec, *keys: str, **data: Any) -> ModelSpec:
    return _with(spec, severities=dict.fromkeys(keys, "quarantine"), **data)


def test_out_of_range_rows_are_quarantined_with_their_reason(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    spec = _quarantining(churn, BETWEEN)
    bad = corrupt(churn_window, churn, ["out_of_range"], seed=4)
    changed = (bad != churn_window) & ~(bad.isna() & churn_window.isna())
    (column,) = changed.columns[changed.any()]
    bad_rows = changed.any(axis=1)

    report = validate_batch(spec, bad)

    assert report.success and report.failed == [], report.markdown()
    (check,) = report.quarantined
    assert (check.expectation, check.column, check.severity) == (BETWEEN, column, "quarantine")
    assert check.quarantined_rows == report.quarantined_rows == int(bad_rows.sum()) == 20
    assert "Quarantined" in report.markdown() and "20 of 800 rows (2.50%) set aside" in report.markdown()

    split = quarantine_rows(spec, bad, report)
    assert split.total == 20 and split.counts == {f"{BETWEEN}:{column}": 20}
    assert list(split.quarantined.index) == list(bad.index[bad_rows])
    assert list(split.clean.index) == list(bad.index[~bad_rows])
    pd.testing.assert_frame_equal(split.clean, bad[~bad_rows])
    pd.testing.assert_frame_equal(split.quarantined.drop(columns=[QUARANTINE_REASON_COLUMN]), bad[bad_rows])
    value = float(bad.loc[bad_rows, column].iloc[0])
    feature = next(f for f in churn.numeric_features if f.name == column)
    assert set(split.quarantined[QUARANTINE_REASON_COLUMN]) == {
        f"{BETWEEN}:{column}: {value!r} is outside [{feature.min}, {feature.max}]"
    }
    again = validate_batch(spec, split.clean)
    assert again.success and again.failed == again.warnings == again.quarantined == []
    assert again.quarantined_rows == 0


def test_every_row_of_a_duplicated_id_is_quarantined_with_all_its_reasons(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    spec = _quarantining(churn, UNIQUE, f"{BETWEEN}:age")
    bad = churn_window.copy()
    ids = bad["customer_id"]
    bad.loc[[5, 9], "customer_id"] = [ids[4], ids[8]]  # rows 5 and 9 re-send the ids of rows 4 and 8
    bad.loc[[5, 300], "age"] = 150.0

    report = validate_batch(spec, bad)

    assert report.success, report.markdown()
    counts = {(c.expectation, c.column): c.quarantined_rows for c in report.quarantined}
    assert counts == {(UNIQUE, "customer_id"): 4, (BETWEEN, "age"): 2}
    assert report.quarantined_rows == 5  # row 5 fails both checks and is set aside once
    split = quarantine_rows(spec, bad, report)
    assert split.total == 5 and len(split.clean) == len(bad) - 5
    reasons = split.quarantined[QUARANTINE_REASON_COLUMN]
    assert list(reasons.index) == [4, 5, 8, 9, 300]
    assert reasons[4] == f"{UNIQUE}:customer_id: id {ids[4]!r} is shared by 2 rows"
    assert reasons[5] == (
        f"{UNIQUE}:customer_id: id {ids[4]!r} is shared by 2 rows; "
        f"{BETWEEN}:age: 150.0 is outside [18.0, 100.0]"
    )
    assert reasons[300] == f"{BETWEEN}:age: 150.0 is outside [18.0, 100.0]"
    assert not split.clean["customer_id"].isin([ids[4], ids[8]]).any()
    assert validate_batch(spec, split.clean).quarantined == []
    # the same batch without quarantine severities fails both checks
    assert {c.expectation for c in validate_batch(churn, bad).failed} == {UNIQUE, BETWEEN}


def test_strings_in_a_numeric_column_are_quarantined_and_the_rest_gets_a_numeric_dtype(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    spec = _quarantining(churn, "expect_column_values_to_be_in_type_list", BETWEEN)
    bad = churn_window.copy()
    bad["age"] = bad["age"].astype(object)
    bad.loc[[3, 10], "age"] = "forty"

    report = validate_batch(spec, bad)
    split = quarantine_rows(spec, bad, report)

    assert report.success and report.quarantined_rows == 2, report.markdown()
    assert list(split.quarantined.index) == [3, 10]
    assert "'forty' (str) is not a number" in split.quarantined[QUARANTINE_REASON_COLUMN][3]
    assert split.clean["age"].dtype == churn_window["age"].dtype
    assert validate_batch(spec, split.clean).success


def test_more_quarantined_rows_than_the_share_allows_fail_naming_quarantine_share(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    bad = corrupt(churn_window, churn, ["out_of_range", "duplicate_ids"], seed=4)  # 60 of 800 rows

    report = validate_batch(_quarantining(churn, BETWEEN, UNIQUE), bad)

    assert not report.success
    (check,) = report.failed
    assert check.expectation == "quarantine_share" and check.severity == "block"
    assert "60 of 800 rows (7.50%)" in check.detail and "at most 5.00%" in check.detail
    assert "max_quarantine_share" in check.detail and check.unexpected_count == 60
    assert "would be set aside, but the contract failed" in report.markdown()
    with pytest.raises(DataValidationError, match="quarantine_share"):
        validate_or_raise(_quarantining(churn, BETWEEN, UNIQUE), bad)
    assert validate_batch(_quarantining(churn, BETWEEN, UNIQUE, max_quarantine_share=0.1), bad).success


def test_a_window_left_too_small_by_quarantine_fails(churn: ModelSpec) -> None:
    days = [END_DAY - dt.timedelta(days=1), END_DAY]
    window = pd.concat([generate_churn(churn, 251, day, seed=0) for day in days], ignore_index=True)
    window.loc[[1, 2, 3], "age"] = 500.0  # 502 rows, 3 quarantined: 499 < min_rows 500

    report = validate_batch(_quarantining(churn, BETWEEN), window)

    assert not report.success and report.quarantined_rows == 3
    (check,) = report.failed
    assert check.expectation == "expect_table_row_count_to_be_between"
    assert check.detail == "after quarantining 3 rows: 499 rows; expected at least 500"


def test_a_quarantine_severity_whose_rows_cannot_be_told_apart_blocks(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    spec = _quarantining(churn, "expect_column_values_to_not_be_null")
    report = validate_batch(spec, churn_window.drop(columns=["age"]))
    blocked = [c for c in report.failed if c.expectation == "expect_column_values_to_not_be_null"]
    assert not report.success and report.quarantined == []
    assert blocked and all(c.severity == "block" for c in blocked)
    assert all("severity quarantine, but the failure is not one of rows" in c.detail for c in blocked)


def test_event_times_outside_their_partition_are_quarantined(churn: ModelSpec, data_root: Path) -> None:
    land_demo_data(churn, days=2, end_day=END_DAY - dt.timedelta(days=1), rows_per_day=300)
    late = generate_churn(churn, 300, END_DAY, seed=7)
    late["event_date"] = late["event_date"].astype(object)
    late.loc[late.index[:3], "event_date"] = dt.date(2031, 6, 15)
    land_batch(churn, late, END_DAY)
    window = load_window(churn, END_DAY, days=3)
    spec = _quarantining(churn, "event_time_in_partition")

    report = validate_batch(spec, window)
    split = quarantine_rows(spec, window, report)

    assert report.success and report.quarantined_rows == 3
    assert set(split.quarantined["customer_id"]) == set(late["customer_id"].iloc[:3])
    assert set(split.quarantined[QUARANTINE_REASON_COLUMN]) == {
        "event_time_in_partition:event_date: 2031-06-15 lies outside its partition date=2024-05-07"
    }
    assert [rows for _, _, rows in split.clean.attrs[PARTITIONS_ATTR]] == [300, 300, 297]
    assert validate_batch(spec, split.clean).quarantined == []


def test_quarantine_rows_refuses_a_report_of_another_frame(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    report = validate_batch(churn, churn_window)
    with pytest.raises(ValueError, match="pass the frame that was validated"):
        quarantine_rows(churn, churn_window.head(10), report)
    nothing = quarantine_rows(churn, churn_window, report)
    assert nothing.total == 0 and nothing.clean is churn_window
    assert QUARANTINE_REASON_COLUMN in nothing.quarantined.columns


def test_write_quarantine_writes_under_the_data_root_idempotently(
    churn: ModelSpec, churn_window: pd.DataFrame, data_root: Path
) -> None:
    spec = _quarantining(churn, BETWEEN, "expect_column_values_to_be_in_type_list")
    bad = churn_window.copy()
    bad["age"] = bad["age"].astype(object)
    bad.loc[[3, 10], "age"] = "forty"
    bad.loc[20, "age"] = 150  # the quarantined rows mix strings and numbers in one column
    split = quarantine_rows(spec, bad, validate_batch(spec, bad))
    path = data_root / "quarantine" / "churn" / "run-1" / "rows.parquet"

    uri = write_quarantine(spec, split.quarantined, "run-1")

    assert uri == quarantine_uri(spec, "run-1") == path.as_uri()
    written = pd.read_parquet(path)
    assert written["customer_id"].tolist() == split.quarantined["customer_id"].tolist()
    assert written["age"].tolist() == ["forty", "forty", "150"]
    assert written[QUARANTINE_REASON_COLUMN].tolist() == split.quarantined[QUARANTINE_REASON_COLUMN].tolist()
    assert write_quarantine(spec, split.quarantined, "run-1") == uri  # a re-run overwrites
    pd.testing.assert_frame_equal(pd.read_parquet(path), written)
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.parquet"]
    assert write_quarantine(spec, split.quarantined.iloc[:0], "run-1") is None
    assert not path.exists()  # nothing quarantined any more: no stale file
    with pytest.raises(ValueError, match="run_key"):
        write_quarantine(spec, split.quarantined, "../elsewhere")


@pytest.mark.parametrize(
    "key",
    [
        "empty_day",
        "extra_columns",
        "label_mix",
        "quarantine_share",
        "expect_table_row_count_to_be_between",
        "expect_column_mean_to_be_between:churned",
        "expect_column_distinct_values_to_contain_set",
    ],
)
def test_quarantine_on_a_check_that_is_not_row_level_is_refused_at_load(churn: ModelSpec, key: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _quarantining(churn, key)
    message = str(refused.value)
    assert f"data.severities[{key!r}] is 'quarantine'" in message and "not a row-level check" in message
    assert all(check in message for check in QUARANTINABLE_CHECKS)


def test_quarantine_on_row_level_checks_is_accepted(churn: ModelSpec) -> None:
    keys = [*QUARANTINABLE_CHECKS, f"{BETWEEN}:age"]
    assert set(_quarantining(churn, *keys).data.severities.values()) == {"quarantine"}
    with pytest.raises(ValidationError):
        _with(churn, max_quarantine_share=1.0)


def test_label_mix_is_the_share_of_each_label(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    mix = label_mix(churn, churn_window)
    ones = float(churn_window["churned"].mean())
    assert list(mix) == ["0", "1"] and mix == pytest.approx({"0": 1 - ones, "1": ones})
    assert label_mix(churn, churn_window.assign(churned=churn_window["churned"].astype(float))) == mix
    assert (
        label_mix(churn, churn_window.iloc[:0])
        == {}
        == label_mix(churn, churn_window.drop(columns="churned"))
    )


def test_label_mix_check_passes_on_a_similar_mix_and_is_skipped_without_reference(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    mix = label_mix(churn, churn_window)
    similar = {"0": mix["0"] - 0.1, "1": mix["1"] + 0.1}
    assert label_mix_check(churn, churn_window, similar) is None
    assert label_mix_check(churn, churn_window, None) is None

    plain = validate_batch(churn, churn_window)
    compared = validate_batch(churn, churn_window, reference_label_mix=similar)
    assert plain.evaluated == len(build_suite(churn).expectations) + len(conveyor_checks(churn))
    assert compared.evaluated == plain.evaluated + 1
    assert compared.success and compared.warnings == []


def test_a_shifted_label_mix_warns_by_default_and_blocks_when_set(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    mix = label_mix(churn, churn_window)
    shifted = {"0": 0.4, "1": 0.6}

    report = validate_or_raise(churn, churn_window, reference_label_mix=shifted)  # warn: does not raise

    (warning,) = report.warnings
    assert (warning.expectation, warning.column, warning.severity) == ("label_mix", "churned", "warn")
    assert f"0: 0.400 → {mix['0']:.3f}" in warning.detail and f"1: 0.600 → {mix['1']:.3f}" in warning.detail
    assert "max_label_shift" in warning.detail
    strict = _with(churn, severities={"label_mix": "block"})
    blocked = validate_batch(strict, churn_window, reference_label_mix=shifted)
    assert not blocked.success and [c.expectation for c in blocked.failed] == ["label_mix"]
    assert (
        validate_batch(_with(churn, max_label_shift=0.5), churn_window, reference_label_mix=shifted).warnings
        == []
    )


def test_a_reference_class_missing_from_the_window_fails_the_label_mix(
    churn: ModelSpec, churn_window: pd.DataFrame
) -> None:
    mix = label_mix(churn, churn_window)
    reference = {"0": mix["0"], "1": mix["1"] - 0.05, "2": 0.05}

    check = label_mix_check(churn, churn_window, reference)

    assert check is not None and check.expectation == "label_mix"
    assert "2: 0.050 → absent from the window" in check.detail
    assert f"0: {mix['0']:.3f} → {mix['0']:.3f} (+0.000)" in check.detail
