"""Alias moves are a real compare-and-set: of 100 concurrent attempts from the same expected version,
exactly one moves the alias, and every other fails with a conflict; the ledger has one entry.

Run against both lock backends: the embedded profile's file lock and the distributed profile's
PostgreSQL advisory lock (the PostgreSQL server on 127.0.0.1:5432).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conveyor.registry.aliases import AliasConflictError, get_alias_version, ledger, set_alias
from conveyor.registry.locks import AliasLockTimeout, alias_lock
from conveyor.settings import Settings

pytestmark = pytest.mark.unit

NAME = "conveyor-cas"
ATTEMPTS = 100
# PostgreSQL allows 100 connections by default: waiters each hold one, so at most this many at once.
WORKERS = 32


def _lock_url(kind: str, tmp_path: Path) -> str:
    if kind == "file":
        return (tmp_path / "locks").as_uri()
    return Settings(profile="distributed", mlflow_database="postgres").registry_lock_url


@pytest.fixture(params=["file", "postgres"])
def lock_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from conveyor.settings import get_settings

    url = _lock_url(request.param, tmp_path)
    monkeypatch.setenv("CONVEYOR_REGISTRY_LOCK_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_the_default_lock_follows_the_profile(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).registry_lock_url == (tmp_path / "locks").as_uri()
    distributed = Settings(profile="distributed", postgres_url="postgresql://pg:5432/")
    assert distributed.registry_lock_url == "postgresql://pg:5432/conveyor_mlflow"


def test_of_100_concurrent_moves_exactly_one_wins(client: Any, tmp_path: Path, lock_url: str) -> None:
    client.create_registered_model(NAME)
    source = (tmp_path / "model").as_uri()
    versions = [str(client.create_model_version(NAME, source=source).version) for _ in range(ATTEMPTS + 1)]
    client.set_registered_model_alias(NAME, "champion", versions[0])
    start = threading.Barrier(WORKERS)

    def attempt(target: str) -> str:
        if int(target) <= WORKERS + 1:
            start.wait(timeout=60)  # the first wave leaves together
        try:
            set_alias(
                client,
                NAME,
                "champion",
                target,
                expected_version=versions[0],
                actor=f"writer-{target}",
                reason="race",
            )
        except AliasConflictError as exc:
            assert f"expected {NAME}@champion to name v{versions[0]}" in str(exc)
            assert "nothing was changed" in str(exc)
            return "conflict"
        return "moved"

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        outcomes = list(pool.map(attempt, versions[1:]))

    assert outcomes.count("moved") == 1, outcomes
    assert outcomes.count("conflict") == ATTEMPTS - 1
    winner = versions[1 + outcomes.index("moved")]
    assert get_alias_version(client, NAME, "champion") == winner
    entries = ledger(client, NAME, alias="champion", limit=ATTEMPTS)
    assert [(e.from_version, e.to_version) for e in entries] == [(versions[0], winner)]


def test_a_held_lock_makes_the_next_writer_wait_then_time_out(lock_url: str) -> None:
    release = threading.Event()
    held = threading.Event()

    def holder() -> None:
        with alias_lock(NAME, "champion", url=lock_url):
            held.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(timeout=30)
        with (
            pytest.raises(AliasLockTimeout, match=f"{NAME}@champion"),
            alias_lock(NAME, "champion", url=lock_url, timeout_s=1),
        ):
            pass
        with alias_lock(NAME, "challenger", url=lock_url, timeout_s=1):
            pass  # another alias has its own lock
    finally:
        release.set()
        thread.join()
    with alias_lock(NAME, "champion", url=lock_url, timeout_s=5):
        pass  # released


def test_an_unknown_lock_url_is_a_clear_error() -> None:
    with (
        pytest.raises(ValueError, match="CONVEYOR_REGISTRY_LOCK_URL"),
        alias_lock(NAME, "champion", url="redis://127.0.0.1:6379/0"),
    ):
        pass
