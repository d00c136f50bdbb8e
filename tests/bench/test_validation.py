"""The validation benchmark's peer: plain-pandas checks that must say what Conveyor's GX suite says."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from conveyor.config import load_spec
from conveyor.data.contracts import build_suite, validate_batch
from conveyor.data.generate import CORRUPTION_KINDS, corrupt, generate_churn

from .real_bench import load

pytestmark = pytest.mark.unit

validation = load("validation")
DAY = dt.date(2026, 11, 23)


@pytest.fixture(scope="module")
def churn() -> Any:
    return load_spec("churn")


@pytest.fixture(scope="module")
def clean(churn: Any) -> Any:
    return generate_churn(churn, 2_000, DAY, seed=3)


@pytest.mark.parametrize("model", ["churn", "breast_cancer"])
def test_one_pandas_check_per_expectation_in_suite_order(model: str) -> None:
    spec = load_spec(model)
    expectations = build_suite(spec).expectations
    suite = [(e.expectation_type, e.configuration.kwargs.get("column")) for e in expectations]
    checks = [(c.expectation, c.column) for c in validation.pandas_checks(spec)]
    assert checks == suite


def test_an_expectation_without_a_pandas_version_is_refused(
    churn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import great_expectations.expectations as gxe

    from conveyor.data import contracts

    real_build_suite = contracts.build_suite

    def with_regex(spec: Any) -> Any:
        suite = real_build_suite(spec)
        suite.expectations.append(gxe.ExpectColumnValuesToMatchRegex(column="contract", regex="^[a-z-]+$"))
        return suite

    monkeypatch.setattr(contracts, "build_suite", with_regex)
    with pytest.raises(NotImplementedError, match="expect_column_values_to_match_regex"):
        validation.pandas_checks(churn)


def test_a_clean_batch_passes_both(churn: Any, clean: Any) -> None:
    assert validate_batch(churn, clean).success
    assert all(o.success for o in validation.run_pandas(validation.pandas_checks(churn), clean))


@pytest.mark.parametrize("kinds", [(k,) for k in CORRUPTION_KINDS] + [validation.PARITY_CORRUPTIONS[0]])
def test_a_corrupted_batch_fails_the_same_checks_with_the_same_counts(
    churn: Any, clean: Any, kinds: tuple[str, ...]
) -> None:
    broken = corrupt(clean, churn, kinds, seed=5)
    gx_failed = validation.report_failing(validate_batch(churn, broken))
    pandas_failed = validation.failing(validation.run_pandas(validation.pandas_checks(churn), broken))
    assert gx_failed, f"{kinds} broke no check"
    assert pandas_failed == gx_failed


def test_parity_reports_agreement(churn: Any, clean: Any) -> None:
    result = validation.parity(churn, clean, validation.pandas_checks(churn))
    assert result["agree"] is True
    assert [b["corruptions"] for b in result["batches"]] == [list(k) for k in validation.PARITY_CORRUPTIONS]
