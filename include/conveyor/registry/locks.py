"""The lock that makes an alias move a real compare-and-set.

MLflow has no conditional alias update, so :mod:`conveyor.registry.aliases` reads the alias,
compares it with what the caller expected and writes, all while holding an exclusive lock named
after ``<registered model>@<alias>``. Every writer that goes through Conveyor takes the same lock,
so between one writer's read and its write nobody else can move that alias: of many concurrent
attempts from the same expected version exactly one moves it and the others see the new version
and fail with :class:`~conveyor.registry.aliases.AliasConflictError`.

Where the lock lives is one setting, ``CONVEYOR_REGISTRY_LOCK_URL``
(:attr:`conveyor.settings.Settings.registry_lock_url`), which the stack sets for every component:

``file:///<home>/locks`` (embedded profile)
    An exclusive ``flock`` on ``<folder>/<key>.lock`` (via `filelock`), shared by every process on
    the one machine the embedded stack runs on.
``postgresql://host:port/database`` (distributed profile, production)
    A session-level PostgreSQL advisory lock (``pg_advisory_lock``) on the database of MLflow's
    tracking store, which every Airflow worker, on any machine, already reaches. The lock is
    released when the session ends, so a worker that dies while holding it never wedges the alias.

Moves made outside Conveyor (a person in the MLflow UI) do not take the lock; the re-read after the
write still reports them (see :mod:`conveyor.registry.aliases`).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from conveyor.errors import ConveyorError

#: How long a writer waits for another writer of the same alias before giving up.
DEFAULT_TIMEOUT_S = 60.0


class AliasLockTimeout(ConveyorError):
    """Another writer held the alias lock for longer than the timeout (transient: a retry may pass)."""


def lock_key(registered_name: str, alias: str) -> str:
    """The lock's name for ``registered_name@alias``."""
    return f"{registered_name}@{alias}"


def _file_name(key: str) -> str:
    """A safe, unique file name for ``key`` (readable prefix plus a hash of the exact key)."""
    readable = re.sub(r"[^A-Za-z0-9_.@-]+", "_", key)[:80]
    return f"{readable}.{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"


def _advisory_key(key: str) -> int:
    """A signed 64-bit advisory-lock key for ``key`` (stable across processes and machines)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _postgres_conninfo(url: str) -> str:
    """A libpq URL from a SQLAlchemy-style one (``postgresql+psycopg2://`` -> ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


@contextlib.contextmanager
def alias_lock(
    registered_name: str, alias: str, *, url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Iterator[None]:
    """Hold the exclusive lock of ``registered_name@alias`` for the ``with`` block.

    Args:
        registered_name: Registered model.
        alias: The alias.
        url: Where the lock lives (``file:///folder`` or ``postgresql://...``); the process's
            ``registry_lock_url`` setting by default.
        timeout_s: Give up after waiting this long.

    Raises:
        AliasLockTimeout: another writer held it for longer than ``timeout_s``.
        ValueError: ``url`` is neither a ``file:`` nor a ``postgresql:`` URL.
    """
    if url is None:
        from conveyor.settings import get_settings

        url = get_settings().registry_lock_url
    key = lock_key(registered_name, alias)
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme == "file":
        with _file_lock(Path(unquote(urlsplit(url).path)), key, timeout_s):
            yield
    elif scheme in ("postgresql", "postgres"):
        with _advisory_lock(_postgres_conninfo(url), key, timeout_s):
            yield
    else:
        raise ValueError(
            f"registry lock URL {url!r} is neither file:///<folder> nor postgresql://host/database; "
            "set CONVEYOR_REGISTRY_LOCK_URL"
        )


@contextlib.contextmanager
def _file_lock(folder: Path, key: str, timeout_s: float) -> Iterator[None]:
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    # thread_local=False: the lock object is ours alone; a fresh FileLock per call means threads of
    # one process exclude each other too (each holds its own open file description).
    lock = FileLock(folder / _file_name(key), timeout=timeout_s, thread_local=False, is_singleton=False)
    try:
        lock.acquire()
    except Timeout as exc:
        raise AliasLockTimeout(
            f"waited {timeout_s:.0f} s for the lock of {key} ({lock.lock_file}); another alias move "
            "held it all that time"
        ) from exc
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _advisory_lock(conninfo: str, key: str, timeout_s: float) -> Iterator[None]:
    import psycopg
    from psycopg import errors

    with psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, int(timeout_s))) as conn:
        conn.execute(f"SET lock_timeout = {max(1, int(timeout_s * 1000))}")
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (_advisory_key(key),))
        except errors.LockNotAvailable as exc:
            raise AliasLockTimeout(
                f"waited {timeout_s:.0f} s for the advisory lock of {key}; another alias move held "
                "it all that time"
            ) from exc
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_advisory_key(key),))
