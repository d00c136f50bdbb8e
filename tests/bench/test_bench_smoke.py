"""Smoke test of the benchmark harness: ``python -m bench --quick`` runs and reports ratios.

Performance targets live in the benchmarks, not here: this only checks that every benchmark ran.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_reports_a_finite_ratio_for_every_benchmark(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    env = dict(os.environ)
    env["CONVEYOR_HOME"] = str(tmp_path / "home")
    env["CONVEYOR_DATA_ROOT"] = (tmp_path / "home" / "data").as_uri()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(results_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        # A hang guard, not a speed check: ~1 min alone, but several minutes on a busy 2-core machine
        # (300 s was too little there); pytest-timeout's 1200 s still bounds the whole test.
        timeout=1100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    payload = json.loads((results_dir / "latest.json").read_text())
    markdown = (results_dir / "latest.md").read_text()
    names = {r["name"] for r in payload["results"]}
    assert "register" in names
    assert any(n.startswith("parse_cost[") for n in names)
    assert {
        "serving[p50 single row]",
        "compression[size]",
        "drift",
        "validation",
        "scaling[time slope]",
    } <= names, names
    # Starting Airflow does not fit a smoke run: orchestration and alias_latency report nothing in quick mode.
    assert not any(n.startswith(("orchestration", "alias_latency")) for n in names)
    for result in payload["results"]:
        ratio = result["ratio"]
        assert isinstance(ratio, float) and math.isfinite(ratio), result
        # Times, sizes and memory are positive; a log-log slope over the tiny quick sizes is mostly
        # fixed cost and noise, and may come out at or below zero.
        if result["unit"] != "log-log slope":
            assert ratio > 0, result
        assert result["name"] in markdown
