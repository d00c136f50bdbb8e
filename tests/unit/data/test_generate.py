"""Demo data: deterministic, realistic, drifting on request, and breakable in named ways."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from conveyor.config import ModelSpec, list_spec_names, load_spec
from conveyor.data.generate import (
    CORRUPTION_KINDS,
    DEMO_SOURCES,
    DemoDataError,
    breast_cancer_batches,
    corrupt,
    diabetes_batches,
    digits_batches,
    generate_churn,
    land_demo_data,
)
from conveyor.data.landing import landed_days, load_window

from .conftest import END_DAY

pytestmark = pytest.mark.unit


def test_churn_is_seeded(churn: ModelSpec) -> None:
    first = generate_churn(churn, 300, END_DAY, seed=3)
    again = generate_churn(churn, 300, END_DAY, seed=3)
    other_seed = generate_churn(churn, 300, END_DAY, seed=4)
    other_day = generate_churn(churn, 300, END_DAY + dt.timedelta(days=1), seed=3)

    pd.testing.assert_frame_equal(first, again)
    assert not first["monthly_charges"].equals(other_seed["monthly_charges"])
    assert not first["monthly_charges"].equals(other_day["monthly_charges"])


def test_churn_rows_look_like_the_spec_says(churn: ModelSpec) -> None:
    df = generate_churn(churn, 3000, END_DAY, seed=0)

    assert list(df.columns) == churn.columns
    assert df["customer_id"].is_unique
    assert df["customer_id"].iloc[0] == "C2024050700001"
    assert df["event_date"].dtype == "datetime64[ns]"
    assert (df["event_date"].dt.date == END_DAY).all()
    for feature in churn.numeric_features:
        column = df[feature.name]
        assert column.dtype == "float64", feature.name
        assert column.dropna().between(feature.min, feature.max).all(), feature.name
        assert column.isna().mean() <= feature.max_null_fraction, feature.name
    for categorical in churn.categorical_features:
        assert set(df[categorical.name]) == set(categorical.categories), categorical.name
    assert 0 < df["total_charges"].isna().mean() < 0.05
    assert df["churned"].dtype == "int64"
    assert set(df["churned"]) == {0, 1}
    assert 0.10 <= df["churned"].mean() <= 0.40


def test_churn_label_follows_the_features(churn: ModelSpec) -> None:
    df = generate_churn(churn, 5000, END_DAY, seed=1)
    by_contract = df.groupby("contract")["churned"].mean()
    assert by_contract["month-to-month"] > by_contract["one-year"] > by_contract["two-year"]
    many_calls = df["support_calls"] >= 3
    assert df.loc[many_calls, "churned"].mean() > df.loc[~many_calls, "churned"].mean()
    short = df["tenure_months"] < 6
    assert df.loc[short, "churned"].mean() > df.loc[~short, "churned"].mean()


def test_drift_shifts_the_distributions(churn: ModelSpec) -> None:
    reference = generate_churn(churn, 4000, END_DAY, seed=0)
    drifted = generate_churn(churn, 4000, END_DAY, seed=0, drift=1.0)

    assert drifted["monthly_charges"].mean() > reference["monthly_charges"].mean() + 15
    assert drifted["support_calls"].mean() > reference["support_calls"].mean() + 1
    share = lambda d: (d["contract"] == "month-to-month").mean()  # noqa: E731
    assert share(drifted) > share(reference) + 0.2
    with pytest.raises(DemoDataError, match="drift"):
        generate_churn(churn, 10, END_DAY, seed=0, drift=1.5)


def test_breast_cancer_batches_cover_every_sample_once(breast_cancer: ModelSpec) -> None:
    batches = breast_cancer_batches(breast_cancer, days=30, end_day=END_DAY, seed=0)

    assert [day for day, _ in batches] == [END_DAY - dt.timedelta(days=29 - k) for k in range(30)]
    everything = pd.concat([frame for _, frame in batches], ignore_index=True)
    assert len(everything) == 569
    assert everything["sample_id"].is_unique
    assert set(everything["sample_id"]) == {f"S{i:05d}" for i in range(1, 570)}
    assert list(everything.columns) == breast_cancer.columns
    # scikit-learn's 0 is malignant: 212 malignant, 357 benign.
    assert int(everything["malignant"].sum()) == 212
    for day, frame in batches:
        assert (frame["event_date"].dt.date == day).all()


def test_breast_cancer_maps_sklearn_columns_and_shuffles_by_seed(breast_cancer: ModelSpec) -> None:
    from sklearn.datasets import load_breast_cancer

    source = load_breast_cancer(as_frame=True).frame
    batches = breast_cancer_batches(breast_cancer, days=5, end_day=END_DAY, seed=0)
    frame = pd.concat([f for _, f in batches]).set_index("sample_id").sort_index()
    assert np.allclose(frame["mean_concave_points"].to_numpy(), source["mean concave points"].to_numpy())
    assert np.array_equal(frame["malignant"].to_numpy(), 1 - source["target"].to_numpy())

    again = breast_cancer_batches(breast_cancer, days=5, end_day=END_DAY, seed=0)
    other = breast_cancer_batches(breast_cancer, days=5, end_day=END_DAY, seed=1)
    assert list(again[0][1]["sample_id"]) == list(batches[0][1]["sample_id"])
    assert list(other[0][1]["sample_id"]) != list(batches[0][1]["sample_id"])


def test_corrupt_breaks_each_kind_on_a_copy(churn: ModelSpec) -> None:
    good = generate_churn(churn, 600, END_DAY, seed=0)
    before = good.copy()
    numeric = {f.name: f for f in churn.numeric_features}

    missing = corrupt(good, churn, ["missing_column"], seed=1)
    assert len(set(churn.columns) - set(missing.columns)) == 1

    nulls = corrupt(good, churn, ["nulls"], seed=1)
    worst = max(nulls[c].isna().mean() - numeric[c].max_null_fraction for c in numeric)
    assert worst > 0.15

    wrong = corrupt(good, churn, ["wrong_types"], seed=1)
    (changed,) = [c for c in numeric if wrong[c].dtype == object]
    assert isinstance(wrong[changed].iloc[0], str)

    out_of_range = corrupt(good, churn, ["out_of_range"], seed=1)
    outside = [c for c, f in numeric.items() if (out_of_range[c] > f.max).any()]
    assert len(outside) == 1

    unknown = corrupt(good, churn, ["unknown_category"], seed=1)
    strays = [c.name for c in churn.categorical_features if not unknown[c.name].isin(c.categories).all()]
    assert len(strays) == 1

    duplicated = corrupt(good, churn, ["duplicate_ids"], seed=1)
    assert duplicated["customer_id"].duplicated().sum() >= 3

    few = corrupt(good, churn, ["few_rows"], seed=1)
    assert len(few) < churn.data.min_rows

    pd.testing.assert_frame_equal(good, before)
    assert set(CORRUPTION_KINDS) == {
        "missing_column",
        "nulls",
        "wrong_types",
        "out_of_range",
        "unknown_category",
        "duplicate_ids",
        "few_rows",
    }


def test_corrupt_combines_kinds_on_different_columns(churn: ModelSpec) -> None:
    good = generate_churn(churn, 600, END_DAY, seed=0)
    bad = corrupt(good, churn, ["missing_column", "nulls", "wrong_types"], seed=5)
    (dropped,) = set(churn.columns) - set(bad.columns)
    typed = [f.name for f in churn.numeric_features if f.name in bad and bad[f.name].dtype == object]
    nulled = [f.name for f in churn.numeric_features if f.name in bad and bad[f.name].isna().mean() > 0.2]
    assert len({dropped, *typed, *nulled}) == 3


def test_corrupt_rejects_unknown_kinds(churn: ModelSpec) -> None:
    with pytest.raises(DemoDataError, match="unknown corruption kinds"):
        corrupt(generate_churn(churn, 10, END_DAY, seed=0), churn, ["gremlins"])


def test_unknown_category_falls_back_to_the_target_without_categoricals(breast_cancer: ModelSpec) -> None:
    _, frame = breast_cancer_batches(breast_cancer, days=1, end_day=END_DAY, seed=0)[0]
    bad = corrupt(frame, breast_cancer, ["unknown_category"], seed=0)
    assert (bad["malignant"] == 2).sum() >= 3


def test_land_demo_data_needs_a_known_source(churn: ModelSpec, data_root: object) -> None:
    other = churn.model_copy(update={"name": "fraud"})
    with pytest.raises(DemoDataError, match="no demo data source for model 'fraud'"):
        land_demo_data(other, days=1, end_day=END_DAY)


def test_digits_batches_cover_every_image_once() -> None:
    from sklearn.datasets import load_digits

    spec = load_spec("digits")
    batches = digits_batches(spec, days=14, end_day=END_DAY, seed=0)
    assert [day for day, _ in batches] == [END_DAY - dt.timedelta(days=13 - k) for k in range(14)]
    everything = pd.concat([frame for _, frame in batches], ignore_index=True)
    assert len(everything) == 1797 and list(everything.columns) == spec.columns
    assert set(everything["image_id"]) == {f"D{i:05d}" for i in range(1, 1798)}
    assert everything["digit"].dtype == "int64" and sorted(set(everything["digit"])) == list(range(10))
    pixels = everything[spec.feature_names]
    assert (pixels.dtypes == "float64").all() and pixels.min().min() == 0 and pixels.max().max() == 16
    source = load_digits(as_frame=True).frame
    ordered = everything.set_index("image_id").sort_index()
    assert np.array_equal(ordered["digit"].to_numpy(), source["target"].to_numpy())
    assert np.allclose(ordered["pixel_3_4"].to_numpy(), source["pixel_3_4"].to_numpy())
    for day, frame in batches:
        assert (frame["event_date"].dt.date == day).all() and 120 <= len(frame) <= 130

    darker = pd.concat([f for _, f in digits_batches(spec, 14, END_DAY, seed=0, drift=1.0)])
    assert darker[spec.feature_names].mean().mean() > pixels.mean().mean() * 1.15
    assert darker[spec.feature_names].max().max() == 16


def test_diabetes_batches_cover_every_patient_once_in_original_units() -> None:
    spec = load_spec("diabetes")
    batches = diabetes_batches(spec, days=14, end_day=END_DAY, seed=0)
    everything = pd.concat([frame for _, frame in batches], ignore_index=True)
    assert len(everything) == 442 and list(everything.columns) == spec.columns
    assert set(everything["patient_id"]) == {f"P{i:05d}" for i in range(1, 443)}
    assert everything["progression"].dtype == "float64"
    assert (everything["progression"].min(), everything["progression"].max()) == (25.0, 346.0)
    assert set(everything["sex"]) == {1.0, 2.0} and everything["age"].between(19, 79).all()
    other = diabetes_batches(spec, days=14, end_day=END_DAY, seed=1)
    assert list(other[0][1]["patient_id"]) != list(batches[0][1]["patient_id"])
    drifted = pd.concat([f for _, f in diabetes_batches(spec, 14, END_DAY, seed=0, drift=1.0)])
    assert drifted["bmi"].mean() == pytest.approx(everything["bmi"].mean() * 1.15)
    with pytest.raises(DemoDataError, match="1 <= days <= 442"):
        diabetes_batches(spec, days=500, end_day=END_DAY, seed=0)


@pytest.mark.parametrize("name", ["digits", "diabetes", "breast_cancer"])
def test_land_demo_data_lands_a_window_that_passes_its_contract(name: str, data_root: object) -> None:
    from conveyor.data.contracts import validate_or_raise

    spec = load_spec(name)
    uris = land_demo_data(spec, days=spec.data.window_days, end_day=END_DAY)
    assert len(uris) == spec.data.window_days == len(landed_days(spec))
    window = load_window(spec, END_DAY)
    report = validate_or_raise(spec, window)
    assert report.rows >= spec.data.min_rows and report.warnings == []


def test_every_shipped_spec_has_demo_data() -> None:
    assert set(list_spec_names()) <= set(DEMO_SOURCES)


@pytest.mark.parametrize(("name", "bad"), [("digits", 10), ("breast_cancer", 2), ("diabetes", 801.0)])
def test_a_target_corrupted_for_each_task_fails_its_contract(name: str, bad: object) -> None:
    from conveyor.data.contracts import validate_batch

    spec = load_spec(name)
    window = pd.concat([f for _, f in land_free_batches(spec)], ignore_index=True)
    broken = corrupt(window, spec, ["unknown_category"], seed=0)
    hit = broken[spec.data.target] == bad
    assert hit.sum() >= 3
    report = validate_batch(spec, broken)
    check = (
        "expect_column_values_to_be_between"
        if spec.task == "regression"
        else "expect_column_values_to_be_in_set"
    )
    (failed,) = [c for c in report.failed if c.column == spec.data.target]
    assert failed.expectation == check and failed.unexpected_count == hit.sum()
    assert set(failed.sample_ids) <= set(broken.loc[hit, spec.data.id_column])


def land_free_batches(spec: ModelSpec) -> list[tuple[dt.date, pd.DataFrame]]:
    source = {"digits": digits_batches, "diabetes": diabetes_batches, "breast_cancer": breast_cancer_batches}
    return source[spec.name](spec, spec.data.window_days, END_DAY, 0)
