"""``data.source``: day-partitioned Parquet/CSV files under a URI, and a SQL query against the real
PostgreSQL (127.0.0.1:5432, or ``CONVEYOR_TEST_POSTGRES_URL``), read into the same window the data
contract judges the same way."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from conveyor.config import ModelSpec
from conveyor.data.contracts import validate_batch
from conveyor.data.generate import generate_churn
from conveyor.data.landing import (
    MISSING_COLUMNS_ATTR,
    PARTITIONS_ATTR,
    SOURCES_ATTR,
    NoDataError,
    UnreadableBatchError,
    load_window,
)
from conveyor.data.sources import DataSourceError
from conveyor.errors import PermanentError

from .conftest import END_DAY

pytestmark = pytest.mark.unit

POSTGRES = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DAYS = [END_DAY - dt.timedelta(days=k) for k in (4, 3, 2, 1, 0)]
ROWS = 200
QUERY = "SELECT * FROM events WHERE event_date >= :start AND event_date < CAST(:end AS date) + 1"


def with_source(spec: ModelSpec, **source: Any) -> ModelSpec:
    """``spec`` with ``data.source`` set (validated, as a spec file would be)."""
    raw = spec.model_dump()
    raw["data"]["source"] = source
    return ModelSpec.model_validate(raw)


def churn_day(spec: ModelSpec, day: dt.date) -> pd.DataFrame:
    """A day of churn rows with ids unique across days."""
    df = generate_churn(spec, ROWS, day, seed=day.toordinal())
    df[spec.data.id_column] = [f"{day:%m%d}-{i}" for i in range(len(df))]
    return df


def write_days(spec: ModelSpec, root: Path, fmt: str, key: str = "date", **csv: Any) -> dict[dt.date, Path]:
    paths = {}
    for day in DAYS:
        folder = root / f"{key}={day.isoformat()}"
        folder.mkdir(parents=True)
        df = churn_day(spec, day)
        path = folder / f"part-0.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False, **csv)
        else:
            df.to_parquet(path, index=False)
        paths[day] = path
    return paths


def expected_window(spec: ModelSpec, days: list[dt.date]) -> pd.DataFrame:
    return pd.concat([churn_day(spec, day) for day in days], ignore_index=True)


# --- files -----------------------------------------------------------------------------------------


def test_parquet_partitions_load_the_window_only_and_pass_the_contract(
    churn: ModelSpec, tmp_path: Path
) -> None:
    paths = write_days(churn, tmp_path / "events", "parquet", key="dt")
    spec = with_source(
        churn, kind="files", uri=(tmp_path / "events").as_uri(), format="parquet", partition="dt"
    )

    window = load_window(spec, END_DAY, days=3)

    pd.testing.assert_frame_equal(window, expected_window(churn, DAYS[2:]))
    uris = [f"file://{paths[day]}" for day in DAYS[2:]]
    assert window.attrs[SOURCES_ATTR] == uris
    assert window.attrs[PARTITIONS_ATTR] == [
        [u, d.isoformat(), ROWS] for u, d in zip(uris, DAYS[2:], strict=True)
    ]
    assert window.attrs[MISSING_COLUMNS_ATTR] == {}
    report = validate_batch(spec, window)
    assert report.success, report.failed
    assert report.sources == uris


@pytest.mark.parametrize("options", [{}, {"sep": ";"}], ids=["comma", "semicolon"])
def test_csv_partitions_are_typed_by_the_spec_and_pass_the_contract(
    churn: ModelSpec, tmp_path: Path, options: dict[str, str]
) -> None:
    write_days(churn, tmp_path / "csv", "csv", **options)
    spec = with_source(churn, kind="files", uri=(tmp_path / "csv").as_uri(), format="csv", options=options)

    window = load_window(spec, END_DAY - dt.timedelta(days=1), days=2)

    # Same values and dtypes as the frames written: the spec's types, not pandas' guesses per file.
    pd.testing.assert_frame_equal(window, expected_window(churn, DAYS[2:4]))
    assert [day for _, day, _ in window.attrs[PARTITIONS_ATTR]] == ["2024-05-05", "2024-05-06"]
    report = validate_batch(spec, load_window(spec, END_DAY, days=3))  # churn needs 500 rows
    assert report.success, report.failed


def test_a_non_number_in_a_csv_numeric_column_fails_the_contract_on_its_rows(
    churn: ModelSpec, tmp_path: Path
) -> None:
    paths = write_days(churn, tmp_path / "csv", "csv")
    text = paths[END_DAY].read_text().splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    row[header.index("monthly_charges")] = "n/a-ish"
    paths[END_DAY].write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    spec = with_source(churn, kind="files", uri=(tmp_path / "csv").as_uri(), format="csv")

    window = load_window(spec, END_DAY, days=3)

    charges = window["monthly_charges"]
    assert charges.dtype == object
    assert (charges == "n/a-ish").sum() == 1
    assert charges.map(lambda v: isinstance(v, float)).sum() == len(window) - 1
    assert window["age"].dtype == "float64"  # the other columns are typed as usual
    report = validate_batch(spec, window)
    assert not report.success
    failed = {(c.expectation, c.column) for c in report.failed}
    assert ("expect_column_values_to_be_in_type_list", "monthly_charges") in failed


def test_an_unparseable_csv_file_is_named(churn: ModelSpec, tmp_path: Path) -> None:
    paths = write_days(churn, tmp_path / "csv", "csv")
    broken = paths[END_DAY]
    broken.write_text(broken.read_text() + "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n")
    spec = with_source(churn, kind="files", uri=(tmp_path / "csv").as_uri(), format="csv")

    with pytest.raises(UnreadableBatchError) as err:
        load_window(spec, END_DAY, days=3)

    assert list(err.value.files) == [f"file://{broken}"]
    assert "not readable CSV" in str(err.value) and f"file://{broken}" in str(err.value)
    assert "ParserError" in err.value.files[f"file://{broken}"]
    from conveyor.data.contracts import unreadable_report

    (check,) = unreadable_report(spec, err.value.files).failed  # the report the task writes says CSV
    assert check.detail.startswith(f"file://{broken} is not readable CSV (ParserError")
    # Days without the broken file still load.
    assert len(load_window(spec, END_DAY - dt.timedelta(days=1), days=2)) == 2 * ROWS


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_row_outside_its_partition_is_caught(churn: ModelSpec, tmp_path: Path, fmt: str) -> None:
    root = tmp_path / fmt
    paths = write_days(churn, root, fmt)
    late = churn_day(churn, END_DAY)
    late.loc[late.index[:2], "event_date"] = pd.Timestamp("2031-06-15")
    if fmt == "csv":
        late.to_csv(paths[END_DAY], index=False)
    else:
        late.to_parquet(paths[END_DAY], index=False)
    spec = with_source(churn, kind="files", uri=root.as_uri(), format=fmt)

    report = validate_batch(spec, load_window(spec, END_DAY, days=3))

    assert not report.success
    (check,) = [c for c in report.failed if c.expectation == "event_time_in_partition"]
    assert check.unexpected_count == 2
    assert "partitions 2024-05-07" in check.detail


def test_a_window_without_files_names_the_layout(churn: ModelSpec, tmp_path: Path) -> None:
    write_days(churn, tmp_path / "events", "parquet")
    spec = with_source(churn, kind="files", uri=(tmp_path / "events").as_uri())

    with pytest.raises(NoDataError) as nothing:
        load_window(spec, END_DAY + dt.timedelta(days=30), days=3)
    message = str(nothing.value)
    assert f"{(tmp_path / 'events').as_uri()}/date=YYYY-MM-DD/*.parquet" in message
    assert "latest day there is 2024-05-07" in message

    missing = with_source(churn, kind="files", uri=(tmp_path / "nowhere").as_uri(), format="csv")
    with pytest.raises(NoDataError, match="there are none yet"):
        load_window(missing, END_DAY)


def test_source_specs_are_validated(churn: ModelSpec) -> None:
    assert churn.data.source.kind == "landing"  # shipped specs: unchanged behaviour
    with pytest.raises(ValidationError, match=r"lacks :end"):
        with_source(churn, kind="sql", conn_id="pg", query="SELECT * FROM t WHERE d >= :start")
    with pytest.raises(ValidationError, match=r"lacks :start, :end"):
        with_source(churn, kind="sql", conn_id="pg", query="SELECT * FROM t")
    with pytest.raises(ValidationError, match=r"does not set: :region"):
        with_source(
            churn,
            kind="sql",
            conn_id="pg",
            query="SELECT * FROM t WHERE d BETWEEN :start AND :end AND r = :region",
        )
    # casts (::date) and escaped colons are no bind parameters
    ok = with_source(
        churn, kind="sql", conn_id="pg", query=r"SELECT '\:x', d::date FROM t WHERE d BETWEEN :start AND :end"
    )
    assert ok.data.source.kind == "sql"
    with pytest.raises(ValidationError, match="is not a URI"):
        with_source(churn, kind="files", uri="relative/folder")
    with pytest.raises(ValidationError, match="only apply with format: csv"):
        with_source(churn, kind="files", uri="s3://bucket/x", options={"sep": ";"})
    with pytest.raises(ValidationError):
        with_source(churn, kind="ftp", uri="ftp://x")


# --- SQL -------------------------------------------------------------------------------------------


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); its URL, with a password (trust auth ignores it)."""
    import sqlalchemy as sa

    name = f"conveyor_test_sql_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(
        f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    parts = sa.engine.make_url(f"{POSTGRES}/{name}").set(password="s3cr3t-pw")
    try:
        yield parts.render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def _load_table(spec: ModelSpec, url: str) -> pd.DataFrame:
    import sqlalchemy as sa

    rows = pd.concat([churn_day(spec, day) for day in DAYS], ignore_index=True)
    # event_date as a timestamp with a time of day, so the query's day bounds matter
    rows["event_date"] = rows["event_date"] + pd.to_timedelta(rows.index % 24, unit="h")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        rows.to_sql("events", engine, index=False)
    finally:
        engine.dispose()
    return rows


def test_sql_window_is_exactly_the_windows_rows_and_passes_the_contract(
    churn: ModelSpec, database: str
) -> None:
    rows = _load_table(churn, database)
    spec = with_source(churn, kind="sql", conn_id="warehouse", query=QUERY)

    window = load_window(spec, END_DAY, days=3, source_url=database)

    wanted = rows[rows["event_date"].dt.date >= DAYS[2]]
    assert len(window) == 3 * ROWS
    assert sorted(window["customer_id"]) == sorted(wanted["customer_id"])
    assert window["event_date"].dtype == "datetime64[ns]"
    assert PARTITIONS_ATTR not in window.attrs
    (described,) = window.attrs[SOURCES_ATTR]
    assert "s3cr3t-pw" not in described and "***" in described and "warehouse" in described
    report = validate_batch(spec, window)
    assert report.success, report.failed

    with pytest.raises(NoDataError, match="returned no rows"):
        load_window(spec, END_DAY + dt.timedelta(days=30), days=3, source_url=database)


def test_sql_without_a_url_names_the_connection(churn: ModelSpec) -> None:
    spec = with_source(churn, kind="sql", conn_id="warehouse", query=QUERY)
    with pytest.raises(DataSourceError, match="'warehouse'"):
        load_window(spec, END_DAY)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://postgres:p%40ss-word-1@127.0.0.1:1/nowhere",  # nothing listens
        "postgresql+psycopg2://no_such_role_x:p%40ss-word-1@127.0.0.1:5432/postgres",  # refused role
    ],
    ids=["unreachable", "bad-credentials"],
)
def test_sql_connection_failures_are_permanent_and_redacted(churn: ModelSpec, url: str) -> None:
    host, port = (POSTGRES.rsplit("@", 1)[1]).split(":")
    url = url.replace("127.0.0.1:5432", f"{host}:{port}")
    spec = with_source(churn, kind="sql", conn_id="warehouse", query=QUERY)

    with pytest.raises(PermanentError) as err:
        load_window(spec, END_DAY, source_url=url)

    message = str(err.value)
    assert isinstance(err.value, DataSourceError)
    assert "p%40ss-word-1" not in message and "p@ss-word-1" not in message
    assert ":***@" in message and "'warehouse'" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_failing_query_is_permanent(churn: ModelSpec, database: str) -> None:
    spec = with_source(
        churn, kind="sql", conn_id="warehouse", query="SELECT * FROM missing WHERE d BETWEEN :start AND :end"
    )
    with pytest.raises(DataSourceError, match="missing"):
        load_window(spec, END_DAY, source_url=database)
