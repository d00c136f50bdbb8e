"""Fixtures shared by several unit-test folders: a real MLflow SQLite store per test (registry and
evaluation tests), built from ``unit/registry/support.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unit.registry import support


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return support.make_template_db(tmp_path_factory.mktemp("mlflow-template"))


@pytest.fixture
def client(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An ``MlflowClient`` on a fresh store; cwd is the temp folder so MLflow's defaults land there."""
    from conveyor.registry.tracking import client_for

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield client_for(support.fresh_store(template_db, tmp_path))
