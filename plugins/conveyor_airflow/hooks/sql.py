"""SQLAlchemy URLs from Airflow connections, for a spec's ``data.source: {kind: sql, conn_id: ...}``.

The domain code (``conveyor.data.sources``) is handed the URL, never the connection. The URL carries
the password: it is registered with Airflow's secrets masker here, and it must never be logged,
returned through XCom or put in ``os.environ``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from airflow.sdk import Connection

#: SQLAlchemy drivers for the connection types whose Airflow URI scheme is no SQLAlchemy dialect.
DRIVERS = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2"}
#: The libpq options a PostgreSQL connection's extras may carry into the URL (Airflow's own extras,
#: such as ``cursor`` or ``iam``, are not connection parameters and would make psycopg2 fail).
POSTGRES_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
)


def sqlalchemy_url(conn_id: str) -> str:
    """The SQLAlchemy URL of the Airflow connection ``conn_id``, credentials included.

    PostgreSQL connections become ``postgresql+psycopg2://login:password@host:port/schema`` with only
    the libpq options of their extras (:data:`POSTGRES_OPTIONS`); any other connection type is
    Airflow's ``Connection.get_uri()``. The password is masked in task logs.
    """
    conn = BaseHook.get_connection(conn_id)
    if conn.password:
        from urllib.parse import quote

        from airflow.sdk.log import mask_secret

        mask_secret(conn.password)
        mask_secret(quote(conn.password, safe=""))
    return url_of(conn)


def url_of(conn: Connection) -> str:
    """:func:`sqlalchemy_url` for a connection at hand (no lookup, no masking)."""
    conn_type = (conn.conn_type or "").lower()
    if conn_type in DRIVERS:
        from sqlalchemy.engine import URL

        extras = conn.extra_dejson
        return URL.create(
            drivername=DRIVERS[conn_type],
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
            query={k: str(extras[k]) for k in POSTGRES_OPTIONS if extras.get(k) not in (None, "")},
        ).render_as_string(hide_password=False)
    return conn.get_uri()
