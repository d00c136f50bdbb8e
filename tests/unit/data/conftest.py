"""Fixtures for the data tests: the shipped specs and a private data root per test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.config import ModelSpec, load_spec

END_DAY = dt.date(2024, 5, 7)


@pytest.fixture
def churn() -> ModelSpec:
    return load_spec("churn")


@pytest.fixture
def breast_cancer() -> ModelSpec:
    return load_spec("breast_cancer")


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh ``file://`` data root for this test (the settings cache is cleared around it)."""
    from conveyor.settings import get_settings

    root = tmp_path / "data-root"
    monkeypatch.setenv("CONVEYOR_DATA_ROOT", root.as_uri())
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()
