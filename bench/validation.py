"""Data-contract validation: Conveyor's Great Expectations suite vs the same checks in plain pandas.

Conveyor side: :func:`conveyor.data.contracts.validate_batch`, what ``validate_data`` runs on every
window (suite built from the churn spec, ephemeral GX context, report with failing ids). Peer: one plain
pandas function per expectation of that very suite, derived from ``build_suite(spec)`` at run time (an
expectation type without a pandas equivalent raises, so the two cannot drift apart silently).

Both run on the same generated churn frame (1M rows; 20k with ``--quick``), after one untimed warm-up
call each. The comparison only counts if both agree: a corrupted batch must fail the same checks with
the same unexpected counts in both, otherwise the result is a FAIL whatever the timings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench import BenchResult

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

MODEL = "churn"
DAY = dt.date(2026, 11, 23)
ROWS, QUICK_ROWS = 1_000_000, 20_000
FIXED_ROWS = 1_000
PARITY_ROWS = 5_000
MAX_RATIO = 5.0
MAX_FIXED_SECONDS = 3.0
#: Every way :func:`conveyor.data.generate.corrupt` can break a batch except ``few_rows`` (which would
#: leave too few rows to show the others); the parity check runs that one on its own as well.
PARITY_CORRUPTIONS: tuple[tuple[str, ...], ...] = (
    ("duplicate_ids", "nulls", "out_of_range", "unknown_category", "wrong_types", "missing_column"),
    ("few_rows",),
)

Evaluate = Callable[["pd.DataFrame"], tuple[bool, int | None]]


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict, in the terms of Conveyor's validation report."""

    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None


@dataclass(frozen=True)
class PandasCheck:
    """One expectation of the suite, written in plain pandas."""

    expectation: str
    column: str | None
    evaluate: Evaluate

    def run(self, df: pd.DataFrame) -> CheckOutcome:
        """The verdict on ``df``; a check that cannot be evaluated (missing column, strings where numbers
        belong) fails without a count, as GX's does in Conveyor's report."""
        try:
            success, count = self.evaluate(df)
        except (KeyError, TypeError):
            return CheckOutcome(self.expectation, self.column, False, None)
        return CheckOutcome(self.expectation, self.column, success, count)


def _mostly(considered: int, unexpected: int, mostly: float) -> bool:
    """GX's ``mostly`` rule: the share of considered rows that are as expected is at least ``mostly``."""
    return considered == 0 or (considered - unexpected) / considered >= mostly


def _scalar_types(type_list: list[str]) -> tuple[type, ...]:
    """The Python/numpy scalar types an ``object`` column's values may have for ``type_list``."""
    import numpy as np

    found: list[type] = []
    for name in type_list:
        # pandas extension dtype names (Float64, Int64) have no numpy scalar type
        with contextlib.suppress(TypeError):
            found.append(np.dtype(name).type)
        found.extend({"int": (int,), "float": (float,)}.get(name.lower(), ()))
    return tuple(found)


def _column_exists(kw: dict[str, Any]) -> Evaluate:
    return lambda df: (kw["column"] in df.columns, None)


def _row_count_between(kw: dict[str, Any]) -> Evaluate:
    low, high = kw.get("min_value"), kw.get("max_value")

    def evaluate(df: pd.DataFrame) -> tuple[bool, int | None]:
        n = len(df)
        return (low is None or n >= low) and (high is None or n <= high), None

    return evaluate


def _not_null(kw: dict[str, Any]) -> Evaluate:
    column, mostly = kw["column"], float(kw.get("mostly", 1.0))

    def evaluate(df: pd.DataFrame) -> tuple[bool, int | None]:
        values = df[column]
        nulls = int(values.isna().sum())
        return _mostly(len(values), nulls, mostly), nulls

    return evaluate


def _unique(kw: dict[str, Any]) -> Evaluate:
    column, mostly = kw["column"], float(kw.get("mostly", 1.0))

    def evaluate(df: pd.DataFrame) -> tuple[bool, int | None]:
        values = df[column].dropna()
        shared = int(values.duplicated(keep=False).sum())
        return _mostly(len(values), shared, mostly), shared

    return evaluate


def _in_type_list(kw: dict[str, Any]) -> Evaluate:
    column, type_list, mostly = kw["column"], list(kw["type_list"]), float(kw.get("mostly", 1.0))
    allowed = _scalar_types(type_list)

    def evaluate(df: pd.DataFrame) -> tuple[bool, int | None]:
        values = df[column]
        if values.dtype != object:
            return str(values.dtype) in type_list, None
        present = values.dropna()
        wrong = int((~present.map(lambda v: isinstance(v, allowed)).astype(bool)).sum())
        return _mostly(len(present), wrong, mostly), wrong

    return evaluate


def _between(kw: dict[str, Any]) -> Evaluate:
    column, mostly = kw["column"], float(kw.get("mostly", 1.0))
    low, high = kw.get("min_value"), kw.get("max_value")

    def evaluate(df: pd.DataFrame) -> tuple[bool, int | None]:
        values = df[column].dropna()
        inside = values == values  # all True, same index
        if low is not None:
            inside &= values >= low
        if high is not None:
            inside &= values <= high
        outside = int((~inside).sum())
        return _mostly(len(values), outside, mostly), outside

    return evaluate


def _in_set(kw: dict[str, Any]) -> Evaluate:
    column, allowed, mostly = kw["column"], list(kw["value_set"]), float(kw.get("mostly", 1.0))

    def evaluate(df: pd.DataFrame) -> tuple[bool, int | None]:
        values = df[column].dropna()
        outside = int((~values.isin(allowed)).sum())
        return _mostly(len(values), outside, mostly), outside

    return evaluate


def _distinct_contain_set(kw: dict[str, Any]) -> Evaluate:
    column, wanted = kw["column"], list(kw["value_set"])

    def evaluate(df: pd.DataFrame) -> tuple[bool, int | None]:
        present = set(df[column].dropna().tolist())
        return all(v in present for v in wanted), None

    return evaluate


def _mean_between(kw: dict[str, Any]) -> Evaluate:
    column, low, high = kw["column"], kw.get("min_value"), kw.get("max_value")

    def evaluate(df: pd.DataFrame) -> tuple[bool, int | None]:
        mean = float(df[column].dropna().mean())
        return (low is None or mean >= low) and (high is None or mean <= high), None

    return evaluate


#: The pandas equivalent of each expectation type Conveyor's suites use.
PANDAS_EQUIVALENTS: dict[str, Callable[[dict[str, Any]], Evaluate]] = {
    "expect_column_to_exist": _column_exists,
    "expect_table_row_count_to_be_between": _row_count_between,
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_unique": _unique,
    "expect_column_values_to_be_in_type_list": _in_type_list,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_distinct_values_to_contain_set": _distinct_contain_set,
    "expect_column_mean_to_be_between": _mean_between,
}


def pandas_checks(spec: ModelSpec) -> list[PandasCheck]:
    """One pandas check per expectation of ``build_suite(spec)``, in the suite's order.

    Raises:
        NotImplementedError: the suite uses an expectation type this module has no pandas version of.
    """
    from conveyor.data.contracts import build_suite

    checks = []
    for expectation in build_suite(spec).expectations:
        kind = expectation.expectation_type
        kwargs = dict(expectation.configuration.kwargs)
        if kind not in PANDAS_EQUIVALENTS:
            raise NotImplementedError(
                f"the {spec.name} suite uses {kind}, which bench/validation.py has no pandas version of; "
                "add one to PANDAS_EQUIVALENTS"
            )
        column = kwargs.get("column")
        evaluate = PANDAS_EQUIVALENTS[kind](kwargs)
        checks.append(PandasCheck(kind, None if column is None else str(column), evaluate))
    return checks


def run_pandas(checks: list[PandasCheck], df: pd.DataFrame) -> list[CheckOutcome]:
    return [check.run(df) for check in checks]


def failing(outcomes: list[CheckOutcome]) -> dict[tuple[str, str | None], int | None]:
    """``{(expectation, column): unexpected_count}`` of the checks that failed."""
    return {(o.expectation, o.column): o.unexpected_count for o in outcomes if not o.success}


def report_failing(report: Any) -> dict[tuple[str, str | None], int | None]:
    """The same mapping from a Conveyor :class:`~conveyor.data.contracts.ValidationReport`."""
    return {(c.expectation, c.column): c.unexpected_count for c in report.failed}


def parity(spec: ModelSpec, clean: pd.DataFrame, checks: list[PandasCheck]) -> dict[str, Any]:
    """Run both sides on corrupted copies of ``clean``; they must fail the same checks with the same counts.

    Returns:
        ``{"agree": bool, "batches": [...]}`` with, per corrupted batch, the failing checks each side saw.
    """
    from conveyor.data.contracts import validate_batch
    from conveyor.data.generate import corrupt

    batches = []
    agree = True
    for kinds in PARITY_CORRUPTIONS:
        broken = corrupt(clean, spec, kinds, seed=1)
        gx_failed = report_failing(validate_batch(spec, broken))
        pandas_failed = failing(run_pandas(checks, broken))
        same = gx_failed == pandas_failed
        agree = agree and same and bool(gx_failed)
        batches.append(
            {
                "corruptions": list(kinds),
                "agree": same,
                "failed_checks": len(gx_failed),
                "gx_only": sorted(map(str, gx_failed.items() - pandas_failed.items())),
                "pandas_only": sorted(map(str, pandas_failed.items() - gx_failed.items())),
            }
        )
    return {"agree": agree, "batches": batches}


def _median_seconds(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick: bool) -> list[BenchResult]:
    import logging

    from conveyor.config import load_spec
    from conveyor.data.contracts import validate_batch
    from conveyor.data.generate import generate_churn

    # GX logs every validation at INFO through Conveyor's logger; the table is what matters here.
    logging.getLogger("conveyor.data.contracts").setLevel(logging.WARNING)
    rows = QUICK_ROWS if quick else ROWS
    reps, fixed_reps = (1, 2) if quick else (3, 5)
    spec = load_spec(MODEL)
    checks = pandas_checks(spec)
    df = generate_churn(spec, rows, DAY, seed=0)
    small = generate_churn(spec, FIXED_ROWS, DAY, seed=0)

    # First call: GX's lazy imports and metric registry (reported, not the fixed cost).
    t0 = time.perf_counter()
    validate_batch(spec, small)
    first_call_s = time.perf_counter() - t0
    fixed_s = _median_seconds(lambda: validate_batch(spec, small), fixed_reps)

    report = validate_batch(spec, df)  # warm-up at full size; also the verdict we compare
    outcomes = run_pandas(checks, df)
    conveyor_s = _median_seconds(lambda: validate_batch(spec, df), reps)
    peer_s = _median_seconds(lambda: run_pandas(checks, df), reps)
    peer_fixed_s = _median_seconds(lambda: run_pandas(checks, small), fixed_reps)
    clean_agree = report_failing(report) == failing(outcomes)

    agreement = parity(spec, df.head(PARITY_ROWS), checks)
    slope = (conveyor_s - fixed_s) / (rows - FIXED_ROWS)
    ratio = conveyor_s / peer_s if peer_s > 0 else float("nan")
    fair = clean_agree and agreement["agree"]
    details = {
        "rows": rows,
        "checks": len(checks),
        "repetitions": reps,
        "peer": "the same suite's checks in plain pandas (one function per expectation, derived from "
        "build_suite(spec)), same frame",
        "conveyor_call": "conveyor.data.contracts.validate_batch (suite, GX context, report)",
        "fixed_cost_s": fixed_s,
        "fixed_cost_definition": f"median GX validate_batch time on {FIXED_ROWS:,} rows after one warm-up "
        "call (imports and GX's first-call setup excluded)",
        "first_call_s": first_call_s,
        "fit_intercept_s": conveyor_s - slope * rows,
        "gx_seconds_per_million_rows": slope * 1e6,
        "peer_fixed_cost_s": peer_fixed_s,
        "clean_batch_verdicts_agree": clean_agree,
        "clean_batch_failed_checks": len(report.failed),
        "parity": agreement,
    }
    return [
        BenchResult(
            name="validation",
            conveyor=conveyor_s,
            peer=peer_s,
            unit="s",
            target=f"ratio <= {MAX_RATIO}, fixed cost <= {MAX_FIXED_SECONDS} s, same verdicts",
            passed=fair and ratio <= MAX_RATIO and fixed_s <= MAX_FIXED_SECONDS,
            details=details,
        ),
        BenchResult(
            name="validation[fixed cost]",
            conveyor=fixed_s,
            peer=peer_fixed_s,
            unit="s",
            target=f"<= {MAX_FIXED_SECONDS} s",
            passed=fixed_s <= MAX_FIXED_SECONDS,
            details={
                "rows": FIXED_ROWS,
                "repetitions": fixed_reps,
                "definition": details["fixed_cost_definition"],
                "peer": "the pandas checks on the same rows",
            },
        ),
    ]
