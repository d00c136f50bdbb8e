"""Conveyor's benchmark harness: each benchmark measures Conveyor against a peer in the same run.

A benchmark is a callable ``(quick: bool) -> list[BenchResult]`` registered in ``BENCHMARKS``; the
runner (``python -m bench``) prints the ratios and writes ``bench/results/latest.{json,md}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class BenchResult:
    """One measured comparison: ``ratio = conveyor / peer`` (lower is better for times)."""

    name: str
    conveyor: float
    peer: float
    unit: str
    target: str
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.peer <= 0 or not math.isfinite(self.peer):
            return math.nan
        return self.conveyor / self.peer

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out


Benchmark = Callable[[bool], list[BenchResult]]


def registry() -> dict[str, Benchmark]:
    """Benchmarks by name (imported lazily so ``--only`` does not pay for the others)."""
    from bench import (
        alias_latency,
        compression,
        drift,
        orchestration,
        parse_cost,
        register,
        scaling,
        serving,
        validation,
    )

    return {
        "parse_cost": parse_cost.run,
        "register": register.run,
        "orchestration": orchestration.run,
        "serving": serving.run,
        "compression": compression.run,
        "drift": drift.run,
        "validation": validation.run,
        "scaling": scaling.run,
        "alias_latency": alias_latency.run,
    }
