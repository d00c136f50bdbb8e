"""Wire models shared by the model server and its client (pydantic only: safe to import anywhere)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


def _version_to_str(value: Any) -> Any:
    # JSON clients send versions as numbers as often as strings; the registry's versions are strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


class StageRequest(BaseModel):
    """Body of ``POST /admin/models/{name}/stage``: a registry version or any MLflow model URI."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, min_length=1)
    model_uri: str | None = Field(default=None, min_length=1)

    _coerce_version = field_validator("version", mode="before")(_version_to_str)

    @model_validator(mode="after")
    def _exactly_one(self) -> StageRequest:
        if (self.version is None) == (self.model_uri is None):
            raise ValueError('give exactly one of "version" (e.g. "3") or "model_uri" (e.g. "models:/m-…")')
        return self


class PromoteRequest(BaseModel):
    """Body of ``POST /admin/models/{name}/promote``; without ``version`` whatever is staged is promoted."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, min_length=1)

    _coerce_version = field_validator("version", mode="before")(_version_to_str)


class StageReport(_Frozen):
    """What staging a candidate found: loaded, golden rows reproduced, latency against the budget."""

    model: str
    registered_model_name: str
    version: str
    model_uri: str
    loaded: bool
    golden_passed: bool
    n_golden: int = 0
    max_abs_diff: float | None = None
    prediction_mismatches: int = 0
    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    latency_budget_ms: float
    within_budget: bool = False
    error: str | None = None
    checked_at: datetime

    @property
    def passed(self) -> bool:
        """Loaded, golden rows answered within tolerance and p95 latency within the budget."""
        return self.loaded and self.golden_passed and self.within_budget


class PromoteResult(_Frozen):
    """Outcome of a promote or reload: which version serves now and which served before."""

    model: str
    version: str
    previous_version: str | None
    changed: bool
    at: datetime


class ReloadResult(_Frozen):
    """Outcome of ``POST /admin/models/{name}/reload``."""

    model: str
    version: str | None
    previous_version: str | None
    changed: bool
    report: StageReport | None = None
    message: str


class ModelStatus(_Frozen):
    """One served model as ``GET /models`` lists it."""

    name: str
    registered_model_name: str
    state: str = Field(description="loading | loaded | no_champion | error")
    ready: bool
    version: str | None = None
    alias: str | None = None
    model_uri: str | None = None
    loaded_at: datetime | None = None
    golden_passed: bool | None = None
    p95_latency_ms: float | None = None
    staged_version: str | None = None
    error: str | None = None
    spec_removed: bool = Field(
        default=False,
        description="its spec left the specs folder (removed, renamed or invalid) while it was "
        "served: it serves what it loaded until the server restarts",
    )


class ErrorBody(_Frozen):
    """Every error the server returns: a sentence plus structured detail (column, row, message)."""

    error: str
    detail: list[dict[str, Any]] = Field(default_factory=list)
