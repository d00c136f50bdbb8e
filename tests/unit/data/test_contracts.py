"""The Great Expectations data contract: good batches pass, each kind of bad batch fails by name and row."""

from __future__ import annotations

import datetime as dt
import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from conveyor.config import ModelSpec
from conveyor.data.contracts import (
    LANDING_CHECKS,
    DataValidationError,
    FailedCheck,
    ValidationReport,
    build_suite,
    conveyor_checks,
    validate_batch,
    validate_or_raise,
)
from conveyor.data.generate import breast_cancer_batches, corrupt, generate_churn, land_batch, land_demo_data
from conveyor.data.landing import load_window

from .conftest import END_DAY

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def churn_window() -> pd.DataFrame:
    """Two days of churn rows (the spec wants at least 500 rows)."""
    from conveyor.config import load_spec

    spec = load_spec("churn")
    days = [END_DAY - dt.timedelta(days=1), END_DAY]
    return pd.concat([generate_churn(spec, 400, day, seed=0) for day in days], ignore_index=True)


def _only(report: ValidationReport, expectation: str, column: str | None) -> FailedCheck:
    matches = [c for c in report.failed if c.expectation == expectation and c.column == column]
    assert len(matches) == 1, report.markdown()
    return matches[0]


def test_suite_covers_the_spec(churn: ModelSpec) -> None:
    suite = build_suite(churn)
    kinds = [(e.expectation_type, getattr(e, "column", None)) for e in suite.expectations]

    assert suite.name == "conveyor.churn"
    assert {c for t, c in kinds if t == "expect_column_to_exist"} == set(churn.columns)
    assert ("expect_column_values_to_be_unique", "customer_id") in kinds
    assert ("expect_table_row_count_to_be_between", None) in kinds
    for feature in churn.numeric_features:
        for expectation in (
            "expect_column_values_to_be_in_type_list",
            "expect_column_values_to_not_be_null",
            "expect_column_values_to_be_between",
        ):
            assert (expectation, feature.name) in kinds
    for categorical in churn.categorical_features:
        assert ("expect_column_values_to_be_in_set", categorical.name) in kinds
    assert ("expect_column_values_to_be_in_set", "churned") in kinds
    nulls = {e.column: e.mostly for e in suite.expectations if e.expectation_type.endswith("not_be_null")}
    assert nulls["total_charges"] == pytest.approx(0.95) and nulls["age"] == 1.0


def test_good_churn_window_passes(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    report = validate_or_raise(churn, churn_window)

    assert report.success and report.failed == []
    assert report.evaluated == len(build_suite(churn).expectations) + len(conveyor_checks(churn))
    assert conveyor_checks(churn) == (*LANDING_CHECKS, "class_share")
    assert report.rows == 800 and report.dates == ["2024-05-06", "2024-05-07"]
    assert "passed" in report.markdown()


def test_good_breast_cancer_window_passes(breast_cancer: ModelSpec, data_root: Path) -> None:
    land_demo_data(breast_cancer, days=30, end_day=END_DAY)
    window = load_window(breast_cancer, END_DAY)

    report = validate_or_raise(breast_cancer, window)
    assert report.success and report.rows == 569
    assert len(report.sources) == 30


def test_missing_column_fails_cleanly(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    bad = corrupt(churn_window, churn, ["missing_column"], seed=2)
    (dropped,) = set(churn.columns) - set(bad.columns)

    report = validate_batch(churn, bad)

    assert not report.success
    assert "is missing" in _only(report, "expect_column_to_exist", dropped).detail
    # The per-column checks that could not run are failed checks with a readable detail, not a crash.
    dependent = [
        c for c in report.failed if c.column == dropped and c.expectation != "expect_column_to_exist"
    ]
    assert dependent and all(c.detail.startswith("not evaluated: column") for c in dependent)
    assert {c.column for c in report.failed} == {dropped}


def test_nulls_fail_with_the_null_rows(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    bad = corrupt(churn_window, churn, ["nulls"], seed=2)
    column = max(churn.feature_names, key=lambda c: bad[c].isna().mean())

    check = _only(validate_batch(churn, bad), "expect_column_values_to_not_be_null", column)

    null_ids = set(bad.loc[bad[column].isna(), "customer_id"])
    assert check.unexpected_count == len(null_ids)
    assert 1 <= len(check.sample_ids) <= 5 and set(check.sample_ids) <= null_ids
    assert [row["customer_id"] for row in check.sample_rows] == check.sample_ids
    assert all(row[column] is None for row in check.sample_rows)
    assert "null" in check.detail and "allowed" in check.detail


def test_wrong_types_fail_the_type_check(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    bad = corrupt(churn_window, churn, ["wrong_types"], seed=2)
    (column,) = [f.name for f in churn.numeric_features if bad[f.name].dtype == object]

    report = validate_batch(churn, bad)

    check = _only(report, "expect_column_values_to_be_in_type_list", column)
    assert check.unexpected_count == len(bad)
    assert set(check.sample_ids) <= set(bad["customer_id"]) and check.sample_ids
    assert "dtype is object" in check.detail
    ranged = _only(report, "expect_column_values_to_be_between", column)
    assert ranged.detail.startswith("not evaluated") and "fix its type" in ranged.detail


def test_mixed_types_name_only_the_string_rows(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    bad = churn_window.copy()
    bad["age"] = bad["age"].astype(object)
    bad.loc[[3, 10], "age"] = "forty"

    check = _only(validate_batch(churn, bad), "expect_column_values_to_be_in_type_list", "age")
    assert check.unexpected_count == 2
    assert check.sample_ids == bad.loc[[3, 10], "customer_id"].tolist()


@pytest.mark.parametrize(
    ("kind", "expectation"),
    [
        ("out_of_range", "expect_column_values_to_be_between"),
        ("unknown_category", "expect_column_values_to_be_in_set"),
        ("duplicate_ids", "expect_column_values_to_be_unique"),
    ],
)
def test_row_level_corruptions_name_the_rows(
    churn: ModelSpec, churn_window: pd.DataFrame, kind: str, expectation: str
) -> None:
    bad = corrupt(churn_window, churn, [kind], seed=4)
    changed = (bad != churn_window) & ~(bad.isna() & churn_window.isna())
    bad_rows = changed.any(axis=1)
    (column,) = changed.columns[changed.any()]

    report = validate_batch(churn, bad)

    check = _only(report, expectation, column)
    assert len(report.failed) == 1
    if kind == "duplicate_ids":
        duplicated = set(bad.loc[bad["customer_id"].duplicated(keep=False), "customer_id"])
        assert check.unexpected_count == bad["customer_id"].duplicated(keep=False).sum()
        assert set(check.sample_ids) <= duplicated
    else:
        assert check.unexpected_count == bad_rows.sum()
        assert set(check.sample_ids) <= set(bad.loc[bad_rows, "customer_id"])
    assert check.sample_ids and check.sample_rows


def test_few_rows_fails_the_row_count(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    bad = corrupt(churn_window, churn, ["few_rows"])
    check = _only(validate_batch(churn, bad), "expect_table_row_count_to_be_between", None)
    assert f"{len(bad)} rows; expected at least 500" == check.detail


def test_breast_cancer_corruptions_fail(breast_cancer: ModelSpec) -> None:
    window = pd.concat([f for _, f in breast_cancer_batches(breast_cancer, 10, END_DAY, seed=0)])
    bad = corrupt(window, breast_cancer, ["unknown_category", "out_of_range"], seed=0)

    report = validate_batch(breast_cancer, bad)

    target = _only(report, "expect_column_values_to_be_in_set", "malignant")
    assert set(target.sample_ids) <= set(bad.loc[bad["malignant"] == 2, "sample_id"])
    assert any(c.expectation == "expect_column_values_to_be_between" for c in report.failed)


def test_error_names_checks_rows_and_what_to_do(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    bad = corrupt(churn_window, churn, ["missing_column", "nulls", "wrong_types"], seed=5)
    (dropped,) = set(churn.columns) - set(bad.columns)

    with pytest.raises(DataValidationError) as failure:
        validate_or_raise(churn, bad)

    message = str(failure.value)
    report = failure.value.report
    assert not report.success
    for check in report.failed:
        assert check.expectation in message
    assert f"expect_column_to_exist on column {dropped!r}" in message
    null_check = next(c for c in report.failed if c.expectation == "expect_column_values_to_not_be_null")
    assert all(row_id in message for row_id in null_check.sample_ids)
    assert "landing/churn/date=2024-05-06/" in message and "fix or remove" in message
    assert pickle.loads(pickle.dumps(failure.value)).report == report


def test_missing_column_in_one_landed_file_names_the_file(churn: ModelSpec, data_root: Path) -> None:
    land_demo_data(churn, days=2, end_day=END_DAY, rows_per_day=300)
    bad = generate_churn(churn, 300, END_DAY, seed=0).drop(columns=["contract"])
    bad_uri = land_batch(churn, bad, END_DAY)
    window = load_window(churn, END_DAY, days=2)

    with pytest.raises(DataValidationError) as failure:
        validate_or_raise(churn, window)

    check = _only(failure.value.report, "expect_column_to_exist", "contract")
    assert bad_uri in check.detail
    assert bad_uri in str(failure.value)
    assert failure.value.report.missing_columns == {"contract": [bad_uri]}


def test_report_renders_markdown_and_json(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    bad = corrupt(churn_window, churn, ["out_of_range"], seed=1)
    report = validate_batch(churn, bad)

    markdown = report.markdown()
    check = report.failed[0]
    assert "FAILED" in markdown and "| check | column |" in markdown
    assert f"`{check.expectation}`" in markdown and check.sample_ids[0] in markdown

    payload = json.loads(report.to_json())
    assert payload["success"] is False
    assert payload["failed"][0]["sample_ids"] == check.sample_ids
    assert ValidationReport.model_validate(payload) == report


def test_a_window_with_one_class_fails_with_a_sentence(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    one_class = churn_window.assign(churned=0)
    report = validate_batch(churn, one_class)
    assert not report.success
    check = _only(report, "class_share", "churned")
    assert "class(es) [1] have no rows in the window" in check.detail, check.detail
    assert "min_class_share" in check.detail and "0: 100.0%, 1: 0.0%" in check.detail
    with pytest.raises(DataValidationError, match="have no rows in the window"):
        validate_or_raise(churn, one_class)


def test_a_rare_class_below_its_share_fails(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    rare = churn_window.assign(churned=0)
    rare.loc[rare.index[:2], "churned"] = 1  # 2 of 800 rows: 0.25% < 1%
    report = validate_batch(churn, rare)
    assert [c.expectation for c in report.failed] == ["class_share"], report.markdown()
    assert "class(es) 1 (0.25%, 2 rows) hold less than 1.0% of the rows" in report.failed[0].detail


def test_duplicate_ids_show_the_rows_that_share_each_id(churn: ModelSpec, churn_window: pd.DataFrame) -> None:
    bad = corrupt(churn_window, churn, ["duplicate_ids"], seed=1)
    report = validate_batch(churn, bad)
    check = _only(report, "expect_column_values_to_be_unique", "customer_id")
    for row_id in check.sample_ids:
        sharing = [r for r in check.sample_rows if str(r["customer_id"]) == row_id]
        assert len(sharing) == int((bad["customer_id"].astype(str) == row_id).sum()) >= 2, row_id
    assert all(str(r["customer_id"]) in check.sample_ids for r in check.sample_rows)
    with pytest.raises(DataValidationError) as err:
        validate_or_raise(churn, bad)
    first = check.sample_ids[0]
    assert f"{first} (2 rows: date=" in str(err.value), str(err.value)


def test_an_empty_day_and_extra_columns_are_reported_as_warnings(churn: ModelSpec, data_root: Path) -> None:
    land_demo_data(churn, days=3, end_day=END_DAY, rows_per_day=300)
    empty = generate_churn(churn, 300, END_DAY, seed=5).iloc[:0]
    empty_uri = land_batch(churn, empty, END_DAY + dt.timedelta(days=1))
    window = load_window(churn, END_DAY + dt.timedelta(days=1), days=4)
    report = validate_or_raise(churn, window)  # warnings do not block
    (warning,) = report.warnings
    assert warning.expectation == "empty_day" and empty_uri in warning.detail and warning.severity == "warn"
    assert "Warnings" in report.markdown() and empty_uri in report.markdown()

    wider = load_window(churn, END_DAY, days=3).assign(coupon_code="X1")
    extra = validate_batch(churn, wider)
    assert extra.success and [w.expectation for w in extra.warnings] == ["extra_columns"]
    assert "coupon_code" in extra.warnings[0].detail
    strict = churn.model_copy(
        update={"data": churn.data.model_copy(update={"severities": {"extra_columns": "block"}})}
    )
    blocked = validate_batch(strict, wider)
    assert not blocked.success and [c.expectation for c in blocked.failed] == ["extra_columns"]


def test_an_event_time_outside_its_partition_fails_naming_the_rows(churn: ModelSpec, data_root: Path) -> None:
    land_demo_data(churn, days=2, end_day=END_DAY - dt.timedelta(days=1), rows_per_day=300)
    late = generate_churn(churn, 300, END_DAY, seed=7)
    late.loc[late.index[:3], "event_date"] = dt.date(2031, 6, 15)
    land_batch(churn, late, END_DAY)
    window = load_window(churn, END_DAY, days=3)
    with pytest.raises(DataValidationError) as failure:
        validate_or_raise(churn, window)
    check = _only(failure.value.report, "event_time_in_partition", "event_date")
    assert check.unexpected_count == 3 and check.severity == "block"
    assert set(check.sample_ids) == {str(v) for v in late["customer_id"].iloc[:3]}
    assert END_DAY.isoformat() in check.detail and "2031-06-15" in check.detail
