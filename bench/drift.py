"""Drift: Conveyor's ``feature_drift`` vs a plain Evidently ``Report`` with default settings.

Conveyor's drift check is Evidently underneath (``DataDriftPreset`` with the spec's threshold and
per-column tests), plus what makes it usable in a pipeline: feature columns typed from the spec, empty
columns reported instead of crashing, a parsed per-feature verdict. The fair peer for its cost is
therefore what a user would otherwise run: ``Report([DataDriftPreset()]).run(current, reference)``
on the same two frames with Evidently's defaults (column types inferred). The ratio is Conveyor's
overhead on top of the engine it uses; target ≤ 1.25.

For context (not the ratio) the details also time a hand-written scipy loop (KS test per numeric
feature, chi-square per categorical one, p < 0.05), and compare which features each of the three
flags, with the test and threshold each Evidently run picked: churn reference rows vs a day
generated with ``drift=0.5``. On frames over 1,000 rows Evidently switches to distances
(Wasserstein, Jensen-Shannon); Conveyor applies the spec's ``drift_threshold`` (0.05) to those too,
where Evidently's default is 0.1, so it can flag more features than the plain report.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import BenchResult
from bench.support import child_main, clean_env, run_child

MODEL = "churn"
TARGET = 1.25


def _evidently_default(reference: Any, current: Any) -> dict[str, Any]:
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    return (
        Report([DataDriftPreset()]).run(Dataset.from_pandas(current), Dataset.from_pandas(reference)).dict()
    )


def _evidently_columns(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per column of a plain Evidently report: the test it picked, its threshold, and the verdict."""
    out = {}
    for metric in snapshot.get("metrics", []):
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        method, threshold, score = str(config.get("method") or ""), config.get("threshold"), metric["value"]
        drifted = threshold is not None and (score < threshold if "p_value" in method else score >= threshold)
        out[config["column"]] = {"method": method, "threshold": threshold, "drifted": drifted}
    return out


def _scipy_loop(reference: Any, current: Any, numeric: list[str], categorical: list[str]) -> list[str]:
    import pandas as pd
    from scipy import stats

    drifted = []
    for column in numeric:
        if stats.ks_2samp(reference[column].dropna(), current[column].dropna()).pvalue < 0.05:
            drifted.append(column)
    for column in categorical:
        table = pd.crosstab(
            pd.concat([reference[column], current[column]], ignore_index=True).fillna("__missing__"),
            ["reference"] * len(reference) + ["current"] * len(current),
        )
        if stats.chi2_contingency(table.to_numpy()).pvalue < 0.05:
            drifted.append(column)
    return sorted(drifted)


def _measure(args: list[str]) -> dict[str, Any]:
    """Child: build the frames, warm every path up once, then time them in alternating order."""
    import datetime as dt

    import pandas as pd

    from conveyor.config import load_spec
    from conveyor.data.generate import generate_churn
    from conveyor.monitoring.drift import feature_drift

    quick = args[0] == "quick"
    spec = load_spec(MODEL)
    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    features = numeric + categorical
    day = dt.date(2026, 11, 20)
    n_reference, n_current = (1000, 400) if quick else (5000, 2000)
    reference = pd.concat(
        [
            generate_churn(spec, 1000, day - dt.timedelta(days=k + 1), seed=0)
            for k in range(n_reference // 1000)
        ],
        ignore_index=True,
    )
    current = generate_churn(spec, n_current, day, seed=1, drift=0.5)
    ref_features, cur_features = reference[features], current[features]

    runs = {
        "conveyor": lambda: feature_drift(spec, reference, current),
        "peer": lambda: _evidently_default(ref_features, cur_features),
        "scipy": lambda: _scipy_loop(ref_features, cur_features, numeric, categorical),
    }
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up (imports, first-call caches)
    reps = 2 if quick else 7
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for r in range(reps):
        for name in order if r % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - started)
    conveyor_report = outputs["conveyor"]
    peer_columns = _evidently_columns(outputs["peer"])
    return {
        "seconds": {name: statistics.median(values) for name, values in seconds.items()},
        "repetitions": reps,
        "n_reference": len(reference),
        "n_current": len(current),
        "drifted": {
            "conveyor": sorted(conveyor_report.drifted_features),
            "peer": sorted(c for c, v in peer_columns.items() if v["drifted"]),
            "scipy": outputs["scipy"],
        },
        "conveyor_tests": {f.name: f"{f.method} @ {f.threshold}" for f in conveyor_report.features},
        "peer_tests": {c: f"{v['method']} @ {v['threshold']}" for c, v in peer_columns.items()},
        "conveyor_summary": conveyor_report.summary(),
    }


def run(quick: bool) -> list[BenchResult]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        root = Path(tmp)
        env = clean_env(
            CONVEYOR_HOME=str(root / "home"), CONVEYOR_DATA_ROOT=(root / "home" / "data").as_uri()
        )
        m = run_child("bench.drift", ["quick" if quick else "full"], env, cwd=root, timeout=600)
    seconds = m["seconds"]
    details = {
        **m,
        "peer": "evidently Report([DataDriftPreset()]) with default settings on the same frames",
        "context": "scipy loop (KS / chi-square, p < 0.05) timed for reference only",
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return [
        BenchResult(
            name="drift",
            conveyor=seconds["conveyor"],
            peer=seconds["peer"],
            unit="s",
            target=f"ratio <= {TARGET}",
            passed=seconds["conveyor"] / seconds["peer"] <= TARGET,
            details=details,
        )
    ]


if __name__ == "__main__":
    child_main(_measure)
