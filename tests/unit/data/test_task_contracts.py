"""The data contract per task type: class labels (ints or strings, "3" is the class 3) and their shares,
regression targets (numbers within data.target_min/target_max), and the label mix of each."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from conveyor.config import ModelSpec
from conveyor.data.contracts import (
    LANDING_CHECKS,
    build_suite,
    conveyor_checks,
    label_mix,
    label_mix_check,
    label_value_set,
    quarantine_rows,
    validate_batch,
)
from conveyor.data.sources import conform
from conveyor.spec_tools import contract_checks

pytestmark = pytest.mark.unit

IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"
TYPES = "expect_column_values_to_be_in_type_list"


def make_spec(task: str, **data: Any) -> ModelSpec:
    raw: dict[str, Any] = {
        "name": "toy",
        "task": task,
        "registered_model_name": "conveyor-toy",
        "data": {"id_column": "row_id", "event_time_column": "day", "target": "y", "min_rows": 10, **data},
        "numeric_features": [{"name": "x", "min": 0, "max": 100}],
        "trainer": {"kind": "sklearn_pipeline"},
    }
    return ModelSpec.model_validate(raw)


def frame(labels: list[Any]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "row_id": [f"r{i:03d}" for i in range(n)],
            "day": pd.Timestamp("2024-05-07"),
            "x": np.linspace(0, 100, n),
            "y": pd.Series(labels, dtype=object if any(isinstance(v, str) for v in labels) else None),
        }
    )


def failed(spec: ModelSpec, df: pd.DataFrame) -> dict[tuple[str, str | None], Any]:
    report = validate_batch(spec, df)
    return {(c.expectation, c.column): c for c in report.failed}


MULTI = {"classes": [0, 1, 2]}


def test_a_multiclass_window_with_every_class_passes() -> None:
    spec = make_spec("multiclass", **MULTI)
    report = validate_batch(spec, frame([0, 1, 2] * 10))
    assert report.success, report.markdown()
    assert report.evaluated == len(build_suite(spec).expectations) + len(conveyor_checks(spec))
    assert conveyor_checks(spec) == (*LANDING_CHECKS, "class_share")


def test_an_unknown_label_is_named_with_its_rows() -> None:
    spec = make_spec("multiclass", **MULTI)
    labels = [0, 1, 2] * 10
    labels[4] = 7
    checks = failed(spec, frame(labels))
    check = checks[(IN_SET, "y")]
    assert check.unexpected_count == 1 and check.sample_ids == ["r004"]
    assert "labels are not one of data.classes [0, 1, 2], e.g. 7" in check.detail


def test_a_missing_class_and_a_rare_one_are_named() -> None:
    spec = make_spec("multiclass", classes=[0, 1, 2, 3], min_class_share=0.1)
    labels = [0] * 20 + [1] * 20 + [2] * 2  # 3 absent, 2 at 4.8%
    check = failed(spec, frame(labels))[("class_share", "y")]
    assert "class(es) [3] have no rows in the window" in check.detail
    assert "class(es) 2 (4.76%, 2 rows) hold less than 10.0% of the rows" in check.detail
    assert "0: 47.6%, 1: 47.6%, 2: 4.8%, 3: 0.0%" in check.detail
    assert check.unexpected_count == 2


def test_string_labels_and_labels_written_as_strings() -> None:
    animals = make_spec("multiclass", classes=["cat", "dog", "bird"])
    assert validate_batch(animals, frame(["cat", "dog", "bird"] * 5)).success
    checks = failed(animals, frame(["cat", "dog", "bird"] * 5 + ["fish"]))
    assert "e.g. 'fish'" in checks[(IN_SET, "y")].detail
    assert set(checks) == {(IN_SET, "y")}

    # "3" in a CSV is the class 3, as conveyor.tasks.encode_target reads it; 3.0 too
    numbered = make_spec("multiclass", classes=[1, 2, 3])
    assert validate_batch(numbered, frame(["1", "2", "3"] * 5)).success
    assert validate_batch(numbered, frame([1.0, 2.0, 3.0] * 5)).success
    # and the other way round: 3 is the class "3"
    coded = make_spec("multiclass", classes=["1", "2", "3"])
    assert validate_batch(coded, frame([1, 2, 3] * 5)).success
    assert label_value_set(coded) == ["1", 1, "2", 2, "3", 3]
    assert ("class_share", "y") in failed(coded, frame([1, 2] * 8))


def test_a_binary_target_with_string_labels() -> None:
    spec = make_spec("binary", classes=["no", "yes"], positive_label="yes")
    assert validate_batch(spec, frame(["no", "yes"] * 8)).success
    check = failed(spec, frame(["no"] * 16))[("class_share", "y")]
    assert "class(es) ['yes'] have no rows" in check.detail


def test_an_unknown_label_can_be_quarantined() -> None:
    spec = make_spec(
        "multiclass", severities={f"{IN_SET}:y": "quarantine"}, max_quarantine_share=0.2, **MULTI
    )
    labels = [0, 1, 2] * 10
    labels[5] = "n/a"
    df = frame(labels)
    report = validate_batch(spec, df)
    assert report.success and report.quarantined_rows == 1, report.markdown()
    split = quarantine_rows(spec, df, report)
    assert list(split.quarantined["row_id"]) == ["r005"]
    assert "is not one of data.classes [0, 1, 2]" in split.quarantined.iloc[0, -1]


def _regression(**data: Any) -> ModelSpec:
    return make_spec("regression", **data)


def test_a_regression_target_is_a_number_within_its_range() -> None:
    spec = _regression(target_min=0, target_max=400)
    kinds = [(e.expectation_type, getattr(e, "column", None)) for e in build_suite(spec).expectations]
    assert kinds[-3:] == [("expect_column_values_to_not_be_null", "y"), (TYPES, "y"), (BETWEEN, "y")]
    assert contract_checks(spec) == kinds
    assert conveyor_checks(spec) == LANDING_CHECKS  # no class shares
    assert validate_batch(spec, frame(list(np.linspace(25, 346, 30)))).success

    values: list[Any] = list(np.linspace(25, 346, 30))
    values[3], values[17] = 512.0, -4.0
    check = failed(spec, frame(values))[(BETWEEN, "y")]
    assert check.unexpected_count == 2 and set(check.sample_ids) == {"r003", "r017"}
    assert "2 of 30 values outside [0.0, 400.0]" in check.detail

    unbounded = _regression()
    assert [k for k in contract_checks(unbounded) if k[1] == "y"][-1] == (TYPES, "y")
    assert validate_batch(unbounded, frame(values)).success


def test_a_regression_target_that_is_not_a_number_is_named() -> None:
    values: list[Any] = list(np.linspace(25, 346, 30))
    values[8] = "high"
    check = failed(_regression(), frame(values))[(TYPES, "y")]
    assert check.unexpected_count == 1 and check.sample_ids == ["r008"]


def test_regression_range_failures_quarantine_like_other_row_checks() -> None:
    spec = _regression(
        target_min=0, target_max=400, severities={BETWEEN: "quarantine"}, max_quarantine_share=0.1
    )
    values: list[Any] = list(np.linspace(25, 346, 30))
    values[3] = 512.0
    df = frame(values)
    report = validate_batch(spec, df)
    assert report.success and report.quarantined_rows == 1, report.markdown()
    split = quarantine_rows(spec, df, report)
    assert list(split.quarantined["row_id"]) == ["r003"]
    assert "512.0 is outside [0.0, 400.0]" in split.quarantined.iloc[0, -1]
    assert validate_batch(spec, split.clean).success


def test_a_quarantined_non_number_leaves_a_numeric_target() -> None:
    spec = _regression(severities={TYPES: "quarantine"}, max_quarantine_share=0.1)
    values: list[Any] = list(np.linspace(25, 346, 30))
    values[8] = "high"
    df = frame(values)
    split = quarantine_rows(spec, df, validate_batch(spec, df))
    assert list(split.quarantined["row_id"]) == ["r008"]
    assert split.clean["y"].dtype == "float64"


def test_regression_label_mix_is_the_share_under_each_quantile() -> None:
    spec = _regression()
    df = frame(list(range(1, 101)))
    mix = label_mix(spec, df)
    assert mix == {"<=10.9": 0.1, "<=25.75": 0.25, "<=50.5": 0.5, "<=75.25": 0.75, "<=90.1": 0.9}
    assert label_mix_check(spec, df, mix) is None
    assert label_mix_check(spec, frame(list(range(5, 105))), mix) is None  # a small shift

    shifted = frame(list(range(41, 141)))  # the whole distribution 40 higher
    check = label_mix_check(spec, shifted, mix)
    assert check is not None and check.expectation == "label_mix" and check.column == "y"
    assert "y <= 50.5: 0.500 → 0.100 (-0.400, too far)" in check.detail
    assert "max_label_shift" in check.detail
    report = validate_batch(spec, shifted, reference_label_mix=mix)
    assert report.success and [w.expectation for w in report.warnings] == ["label_mix"]


def test_a_reference_of_the_other_kind_of_target_is_skipped() -> None:
    regression, classifier = _regression(), make_spec("multiclass", **MULTI)
    assert label_mix_check(regression, frame([1.0, 2.0, 3.0] * 5), {"0": 0.5, "1": 0.5}) is None
    assert label_mix_check(classifier, frame([0, 1, 2] * 5), {"<=1": 0.4, "<=2": 0.7}) is None
    assert label_mix(classifier, frame([0, 1, 2, 2])) == {"0": 0.25, "1": 0.25, "2": 0.5}


def test_conform_keeps_string_labels_and_reads_numbers_for_numeric_targets() -> None:
    text = frame(["01", "02", "10"] * 4).astype({"y": object})
    coded = make_spec("multiclass", classes=["01", "02", "10"])
    assert list(conform(coded, text)["y"][:3]) == ["01", "02", "10"]
    numbered = make_spec("multiclass", classes=[1, 2, 10])
    assert list(conform(numbered, text)["y"][:3]) == [1, 2, 10]
    regression = conform(_regression(), frame(["1.5", "2", "3"] * 4).astype({"y": object}))
    assert regression["y"].dtype == "float64"
