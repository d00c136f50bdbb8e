"""The SQLAlchemy URL of a spec's ``data.source: {kind: sql}`` connection, resolved from Airflow."""

from __future__ import annotations

import os

import pytest
from airflow.sdk import Connection

from conveyor_airflow.hooks.sql import sqlalchemy_url, url_of

pytestmark = pytest.mark.unit


def test_a_postgres_connection_becomes_a_psycopg2_url_with_libpq_options_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE",
        "postgresql://ops%40corp:p%3Aw%2F%40@db.internal:6432/events?sslmode=require&cursor=dictcursor",
    )
    environ_before = dict(os.environ)

    url = sqlalchemy_url("warehouse")

    assert url == "postgresql+psycopg2://ops%40corp:p%3Aw%2F%40@db.internal:6432/events?sslmode=require"
    assert dict(os.environ) == environ_before


def test_connection_fields_without_credentials_or_port() -> None:
    conn = Connection(conn_id="pg", conn_type="postgres", host="127.0.0.1", schema="events")
    assert url_of(conn) == "postgresql+psycopg2://127.0.0.1/events"
