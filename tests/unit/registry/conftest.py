"""Fixtures of the registry tests; the MLflow store (``client``, ``template_db``) is in ../conftest.py."""

from __future__ import annotations

from typing import Any

import pytest

from unit.registry import support


@pytest.fixture
def spec() -> Any:
    return support.make_spec()
