"""Fixtures of the pipeline tests: a real MLflow SQLite store in the test's Conveyor home."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tracking_uri(conveyor_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # MLflow resolves artifact roots relative to the working directory for SQLite stores.
    monkeypatch.chdir(conveyor_home)
    return f"sqlite:///{conveyor_home}/mlflow.db"
