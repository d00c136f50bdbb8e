"""The landing zone: batches land where the contract says and come back as they landed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from conveyor.config import ModelSpec
from conveyor.data.generate import generate_churn, land_batch, land_demo_data
from conveyor.data.landing import (
    MISSING_COLUMNS_ATTR,
    SOURCES_ATTR,
    NoDataError,
    landed_days,
    load_window,
)

from .conftest import END_DAY

pytestmark = pytest.mark.unit


def test_land_and_load_round_trip(churn: ModelSpec, data_root: Path) -> None:
    uris = land_demo_data(churn, days=3, end_day=END_DAY, rows_per_day=50, seed=2)

    assert [Path(u.removeprefix("file://")).relative_to(data_root).as_posix() for u in uris] == [
        f"landing/churn/date={day}/batch.parquet" for day in ("2024-05-05", "2024-05-06", "2024-05-07")
    ]
    window = load_window(churn, END_DAY, days=3)
    expected = pd.concat(
        [generate_churn(churn, 50, END_DAY - dt.timedelta(days=k), seed=2) for k in (2, 1, 0)],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(window, expected)
    assert window.attrs[SOURCES_ATTR] == uris
    assert window.attrs[MISSING_COLUMNS_ATTR] == {}
    assert landed_days(churn) == [END_DAY - dt.timedelta(days=k) for k in (2, 1, 0)]


def test_window_is_end_day_and_the_days_before(churn: ModelSpec, data_root: Path) -> None:
    land_demo_data(churn, days=5, end_day=END_DAY, rows_per_day=10, seed=0)

    window = load_window(churn, END_DAY - dt.timedelta(days=1), days=2)
    assert sorted(window["event_date"].dt.date.unique()) == [dt.date(2024, 5, 5), dt.date(2024, 5, 6)]
    assert len(window) == 20
    # days defaults to the spec's window (7): all five landed days.
    assert len(load_window(churn, END_DAY)) == 50


def test_empty_window_names_model_window_and_root(churn: ModelSpec, data_root: Path) -> None:
    with pytest.raises(NoDataError) as nothing:
        load_window(churn, END_DAY)
    message = str(nothing.value)
    assert "'churn'" in message and "2024-05-01..2024-05-07" in message
    assert data_root.as_uri() in message and "nothing has landed" in message

    land_demo_data(churn, days=1, end_day=END_DAY, rows_per_day=10)
    with pytest.raises(NoDataError, match="latest landed day is 2024-05-07"):
        load_window(churn, END_DAY + dt.timedelta(days=10), days=3)


def test_landing_is_idempotent(churn: ModelSpec, data_root: Path) -> None:
    df = generate_churn(churn, 40, END_DAY, seed=0)
    first = land_batch(churn, df, END_DAY)
    content = Path(first.removeprefix("file://")).read_bytes()
    second = land_batch(churn, df, END_DAY)

    assert first == second
    assert Path(second.removeprefix("file://")).read_bytes() == content
    assert len(load_window(churn, END_DAY, days=1)) == 40
    with pytest.raises(ValueError, match="plain file name"):
        land_batch(churn, df, END_DAY, batch_name="../escape")


def test_several_batches_a_day_are_all_read(churn: ModelSpec, data_root: Path) -> None:
    land_batch(churn, generate_churn(churn, 10, END_DAY, seed=0), END_DAY, batch_name="morning")
    land_batch(churn, generate_churn(churn, 15, END_DAY, seed=1), END_DAY, batch_name="evening")
    assert len(load_window(churn, END_DAY, days=1)) == 25
    assert landed_days(churn) == [END_DAY]


def test_schema_differences_survive_for_validation(churn: ModelSpec, data_root: Path) -> None:
    good_day = END_DAY - dt.timedelta(days=1)
    land_batch(churn, generate_churn(churn, 20, good_day, seed=0), good_day)
    bad = generate_churn(churn, 20, END_DAY, seed=0).drop(columns=["age"])
    bad["monthly_charges"] = bad["monthly_charges"].map(lambda v: f"{v:.2f}")
    bad_uri = land_batch(churn, bad, END_DAY)

    window = load_window(churn, END_DAY, days=2)

    assert "age" not in window.columns
    assert window.attrs[MISSING_COLUMNS_ATTR] == {"age": [bad_uri]}
    # Not coerced: the good day's floats and the bad day's strings side by side.
    assert window["monthly_charges"].dtype == object
    assert isinstance(window["monthly_charges"].iloc[0], float)
    assert isinstance(window["monthly_charges"].iloc[-1], str)
