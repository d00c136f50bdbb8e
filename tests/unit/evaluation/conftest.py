"""Fixtures of the evaluation tests; the MLflow store and tiny models come from ../registry/support.py."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_support() -> ModuleType:
    path = Path(__file__).parents[1] / "registry" / "support.py"
    spec = importlib.util.spec_from_file_location("conveyor_evaluation_test_support", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


support = _load_support()


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
