"""One MLflow session per stage: the client, and MLflow's fluent API, on one URI, outside ``os.environ``.

A stage is handed a tracking URI that may carry the MLflow connection's credentials
(``http://user:password@host``). ``mlflow.set_tracking_uri`` would also copy it into
``MLFLOW_TRACKING_URI``, where every subprocess, crash report and ``env`` dump of the task could read
it. :class:`MlflowSession` is the one object stages pass on instead: :meth:`client` for registry and
tracking calls, and :meth:`fluent` for the code that only MLflow's fluent API serves (``log_model``,
``start_run``), which points MLflow at the URI for the block only and keeps the environment as it
was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from mlflow import MlflowClient

_ENV = "MLFLOW_TRACKING_URI"


def redact(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (for logs and messages)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class MlflowSession:
    """MLflow for one stage: a client and a fluent-API scope on the same tracking URI.

    Args:
        tracking_uri: The tracking (and registry) URI, credentials included if the server needs them.
    """

    def __init__(self, tracking_uri: str) -> None:
        self._uri = tracking_uri

    def __repr__(self) -> str:
        return f"MlflowSession({redact(self._uri)!r})"

    @property
    def tracking_uri(self) -> str:
        return self._uri

    @cached_property
    def _client(self) -> MlflowClient:
        from conveyor.registry.tracking import client_for

        return client_for(self._uri)

    def client(self) -> MlflowClient:
        """The session's client (one per session)."""
        return self._client

    @contextmanager
    def fluent(self) -> Iterator[MlflowClient]:
        """Point MLflow's fluent API at this session for the block; ``os.environ`` stays untouched.

        The previous process-wide URI (or "not set") and ``MLFLOW_TRACKING_URI`` are restored on exit.
        """
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils

        saved_uri = tracking_utils._tracking_uri
        saved_env = os.environ.get(_ENV)
        mlflow.set_tracking_uri(self._uri)
        _restore_env(saved_env)  # set_tracking_uri copied the URI into the environment
        try:
            yield self._client
        finally:
            mlflow.set_tracking_uri(saved_uri)  # type: ignore[arg-type]  # None restores "not set"
            _restore_env(saved_env)


def _restore_env(value: str | None) -> None:
    if value is None:
        os.environ.pop(_ENV, None)
    else:
        os.environ[_ENV] = value
