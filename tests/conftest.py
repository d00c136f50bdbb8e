"""Suite-wide fixtures: every test gets its own Conveyor home and data root, never the developer's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Quiet, deterministic, CPU-only TensorFlow everywhere in the suite.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(autouse=True)
def conveyor_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point settings at a fresh temporary home and data root for each test."""
    from conveyor.settings import get_settings

    home = tmp_path_factory.mktemp("conveyor-home")
    monkeypatch.setenv("CONVEYOR_HOME", str(home))
    monkeypatch.setenv("CONVEYOR_DATA_ROOT", (home / "data").as_uri())
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


_E2E_PATHS = (
    "tests/integration/stack/",
    "tests/integration/test_pipeline_e2e.py",
    "tests/integration/test_distributed_e2e.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that boot a whole stack as ``e2e`` (``make test-e2e`` runs only those)."""
    for item in items:
        path = str(item.path).replace("\\", "/")
        if any(part in path for part in _E2E_PATHS):
            item.add_marker(pytest.mark.e2e)
