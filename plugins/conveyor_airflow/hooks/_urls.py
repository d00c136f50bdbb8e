"""Base URLs from Airflow ``http`` connections, shared by Conveyor's hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from airflow.sdk import Connection


def url_from_connection(conn: Connection, *, with_credentials: bool = False) -> str:
    """Build a base URL (an MLflow tracking URI, a model server URL) from an Airflow ``http`` connection.

    Args:
        conn: The connection: host (a name or a full URL), port, schema (``http``/``https``, or
            a base path when the connection came from a URI), login/password for basic auth.
        with_credentials: Embed the percent-encoded login and password as URI userinfo.

    Returns:
        A URI such as ``http://mlflow.internal:5000`` (no trailing slash).

    Raises:
        ValueError: The connection has no host.
    """
    host = (conn.host or "").strip()
    if not host:
        raise ValueError(f"Airflow connection {conn.conn_id!r} has no host; set the server's name or URL")
    if "://" in host:
        parts = urlsplit(host)
        scheme, netloc, path = parts.scheme, parts.netloc, parts.path
        netloc = netloc.rpartition("@")[2]  # never trust userinfo typed into the host field
    else:
        # Airflow's http connections keep the URL scheme in ``schema`` (as HttpHook reads it); a
        # connection written as a URI (``AIRFLOW_CONN_X=https://host:5000/prefix``) instead puts the
        # scheme in ``conn_type`` and the path in ``schema``. Accept both spellings.
        schema = (conn.schema or "").strip().strip("/")
        netloc, _, path = host.partition("/")
        if schema.lower() in ("http", "https"):
            scheme = schema.lower()
        else:
            scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
            path = "/".join(p for p in (path, schema) if p)
        path = f"/{path}" if path else ""
    if conn.port and ":" not in netloc.rsplit("]", 1)[-1]:
        netloc = f"{netloc}:{conn.port}"
    if with_credentials and conn.login:
        userinfo = quote(conn.login, safe="")
        if conn.password:
            userinfo += ":" + quote(conn.password, safe="")
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, path.rstrip("/"), "", ""))
