"""The data contract: a Great Expectations 1.x suite built from a model spec, run in-process.

:func:`build_suite` turns ``spec`` into expectations (columns present, numeric dtypes, null rates,
ranges, categories, target labels, row count, unique ids). :func:`validate_batch` runs it on a
DataFrame in an ephemeral GX context and returns a small, JSON-able :class:`ValidationReport` whose
failed checks name the offending rows by id. :func:`validate_or_raise` turns a failure into a
:class:`DataValidationError` that says what to fix and where.

Each check has a severity (``spec.data.severities``): ``block`` fails validation, ``warn`` is reported
and the run goes on, and ``quarantine`` (row-level checks only) sets the failing rows aside:
:func:`quarantine_rows` splits a validated frame into the clean rows and the quarantined ones (each
with the reasons it failed), :func:`write_quarantine` stores the latter under the data root. A batch
that would lose more than ``data.max_quarantine_share`` of its rows fails (check ``quarantine_share``).
:func:`label_mix_check` compares the window's label shares with a reference mix (the champion's
training window, see :func:`label_mix`).

An expectation GX cannot evaluate (its column is missing, or holds strings where numbers belong)
comes back from GX as an exception; it is reported here as a failed check with a readable detail, never
raised.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.config import QUARANTINABLE_CHECKS, ModelSpec
from conveyor.data import storage
from conveyor.data.landing import MISSING_COLUMNS_ATTR, PARTITIONS_ATTR, SOURCES_ATTR
from conveyor.errors import PermanentError

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

log = logging.getLogger(__name__)

#: dtypes a numeric feature may have (pandas names, and Python's for object columns holding numbers).
NUMERIC_TYPES: tuple[str, ...] = (
    "float64",
    "float32",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
    "Float64",
    "Float32",
    "Int64",
    "Int32",
    "Int16",
    "Int8",
    "float",
    "int",
)
#: Share of a numeric feature's values that must lie inside the spec's [min, max]. Spec bounds are
#: physical limits (age 18..100), so a single value outside them is an error.
RANGE_MOSTLY = 1.0
#: Failing rows (ids and full rows) kept per failed check.
SAMPLE_SIZE = 5
_PARTIAL_UNEXPECTED = 20
#: Checks that only warn unless the spec says otherwise (``data.severities``).
DEFAULT_SEVERITIES: dict[str, str] = {"empty_day": "warn", "extra_columns": "warn", "label_mix": "warn"}
#: The column of a quarantined frame that says why each row was set aside (``"; "`` between reasons).
QUARANTINE_REASON_COLUMN = "conveyor_quarantine_reason"
#: The classification check that every class holds at least ``data.min_class_share`` of a window.
CLASS_SHARE_CHECK = "class_share"


class FailedCheck(BaseModel):
    """One expectation that failed (or could not be evaluated)."""

    model_config = ConfigDict(frozen=True)

    expectation: str
    column: str | None = None
    detail: str
    unexpected_count: int | None = None
    sample_ids: list[str] = Field(default_factory=list)
    sample_rows: list[dict[str, Any]] = Field(default_factory=list)
    severity: str = "block"
    quarantined_rows: int | None = Field(
        default=None, description="rows set aside by this check (severity quarantine only)"
    )


class ValidationReport(BaseModel):
    """The outcome of running a spec's data contract on one batch or window."""

    model_config = ConfigDict(frozen=True)

    model: str
    success: bool
    evaluated: int
    rows: int
    failed: list[FailedCheck] = Field(default_factory=list)
    warnings: list[FailedCheck] = Field(
        default_factory=list, description="failed checks whose severity is warn: reported, not blocking"
    )
    quarantined: list[FailedCheck] = Field(
        default_factory=list,
        description="failed checks whose severity is quarantine: their rows are set aside, not blocking",
    )
    quarantined_rows: int = Field(
        default=0, description="distinct rows the quarantined checks set aside (a row may fail several)"
    )
    statistics: dict[str, Any] = Field(default_factory=dict)
    dates: list[str] = Field(default_factory=list, description="distinct event dates in the batch")
    sources: list[str] = Field(default_factory=list, description="landing files the batch was read from")
    missing_columns: dict[str, list[str]] = Field(
        default_factory=dict, description="required columns some landing files lack, with those files"
    )
    id_column: str | None = Field(default=None, description="the column naming rows in the samples")

    def markdown(self) -> str:
        """A readable summary: a heading with the verdict and a table of failed checks."""
        verdict = "passed" if self.success else "FAILED"
        span = f", dates {self.dates[0]}..{self.dates[-1]}" if self.dates else ""
        lines = [
            f"### Data contract for `{self.model}`: {verdict}",
            "",
            f"{self.evaluated - len(self.failed)} of {self.evaluated} checks passed "
            f"on {self.rows:,} rows{span}.",
        ]
        if self.failed:
            lines += [
                "",
                "| check | column | failing rows | detail | sample ids |",
                "|---|---|---:|---|---|",
            ]
            for check in self.failed:
                count = "" if check.unexpected_count is None else f"{check.unexpected_count:,}"
                lines.append(
                    f"| `{check.expectation}` | {_md(check.column or '(table)')} | {count} "
                    f"| {_md(check.detail)} | {_md(', '.join(check.sample_ids))} |"
                )
        if self.warnings:
            lines += ["", "Warnings (severity `warn`: reported, the run goes on):", ""]
            lines += [
                f"- `{w.expectation}` {_md(w.column or '(table)')}: {_md(w.detail)}" for w in self.warnings
            ]
        if self.quarantined:
            share = self.quarantined_rows / self.rows if self.rows else 0.0
            lines += [
                "",
                f"Quarantined (severity `quarantine`: {self.quarantined_rows:,} of {self.rows:,} rows "
                f"({share:.2%}) "
                + (
                    "set aside, the run goes on with the rest):"
                    if self.success
                    else "would be set aside, but the contract failed):"
                ),
                "",
                "| check | column | quarantined rows | detail | sample ids |",
                "|---|---|---:|---|---|",
            ]
            for check in self.quarantined:
                lines.append(
                    f"| `{check.expectation}` | {_md(check.column or '(table)')} "
                    f"| {check.quarantined_rows or 0:,} | {_md(check.detail)} "
                    f"| {_md(', '.join(check.sample_ids))} |"
                )
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """The report as indented JSON (the form attached to MLflow runs)."""
        return self.model_dump_json(indent=2)

    def failed_dates(self, event_time_column: str) -> list[str]:
        """Distinct event dates of the sampled failing rows."""
        found = {
            str(row[event_time_column])[:10]
            for check in self.failed
            for row in check.sample_rows
            if row.get(event_time_column) is not None
        }
        return sorted(found)


class DataValidationError(PermanentError):
    """A batch broke its model's data contract; ``report`` holds the details."""

    def __init__(self, report: ValidationReport, event_time_column: str = "event_date") -> None:
        self.report = report
        self.event_time_column = event_time_column
        super().__init__(_error_message(report, event_time_column))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.report, self.event_time_column))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def build_suite(spec: ModelSpec) -> gx.ExpectationSuite:
    """The GX expectation suite for ``spec`` (not bound to any context).

    Checks, in order: every column of ``spec.columns`` exists; the id is unique and present; the event
    time is present; row count within ``[min_rows, max_rows]``; per numeric feature its dtype is numeric,
    its null share at most ``max_null_fraction``, its values in ``[min, max]``; per categorical its null
    share and allowed categories; the target is present and, per task:

    * classification (binary, multiclass): a label of ``data.classes`` (:func:`label_value_set`: ``"3"``
      is the class ``3``, as ``conveyor.tasks.encode_target`` reads it). That every class holds at least
      ``data.min_class_share`` of the window is the table check ``class_share`` (:func:`class_share_check`),
      run next to the suite: GX has no per-value share expectation.
    * regression: a number (numeric dtype), within ``[data.target_min, data.target_max]`` when either is
      set.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    data = spec.data
    expectations: list[Any] = []
    add = expectations.append
    for column in spec.columns:
        add(gxe.ExpectColumnToExist(column=column))
    add(gxe.ExpectTableRowCountToBeBetween(min_value=data.min_rows, max_value=data.max_rows))
    add(gxe.ExpectColumnValuesToNotBeNull(column=data.id_column))
    add(gxe.ExpectColumnValuesToBeUnique(column=data.id_column))
    add(gxe.ExpectColumnValuesToNotBeNull(column=data.event_time_column))
    for numeric in spec.numeric_features:
        add(gxe.ExpectColumnValuesToBeInTypeList(column=numeric.name, type_list=list(NUMERIC_TYPES)))
        add(gxe.ExpectColumnValuesToNotBeNull(column=numeric.name, mostly=1.0 - numeric.max_null_fraction))
        if numeric.min is not None or numeric.max is not None:
            add(
                gxe.ExpectColumnValuesToBeBetween(
                    column=numeric.name, min_value=numeric.min, max_value=numeric.max, mostly=RANGE_MOSTLY
                )
            )
    for categorical in spec.categorical_features:
        add(
            gxe.ExpectColumnValuesToNotBeNull(
                column=categorical.name, mostly=1.0 - categorical.max_null_fraction
            )
        )
        add(gxe.ExpectColumnValuesToBeInSet(column=categorical.name, value_set=list(categorical.categories)))
    add(gxe.ExpectColumnValuesToNotBeNull(column=data.target))
    if spec.task == "regression":
        add(gxe.ExpectColumnValuesToBeInTypeList(column=data.target, type_list=list(NUMERIC_TYPES)))
        if data.target_min is not None or data.target_max is not None:
            add(
                gxe.ExpectColumnValuesToBeBetween(
                    column=data.target,
                    min_value=data.target_min,
                    max_value=data.target_max,
                    mostly=RANGE_MOSTLY,
                )
            )
    else:
        add(gxe.ExpectColumnValuesToBeInSet(column=data.target, value_set=label_value_set(spec)))
    # Passing the expectations to the constructor needs no active context (add_expectation does).
    return gx.ExpectationSuite(name=f"conveyor.{spec.name}", expectations=expectations)


def label_value_set(spec: ModelSpec) -> list[Any]:
    """The target values that are labels of ``data.classes``, compared the way
    ``conveyor.tasks.encode_target`` compares them: each label, its string (``"3"`` in a CSV is the class
    ``3``) and, for a label written as the string of an integer, that integer (``3`` is the class
    ``"3"``). A float equal to an integer label (``3.0``) matches it as pandas compares values."""
    found: list[Any] = []
    seen: set[tuple[type, Any]] = set()

    def add(value: Any) -> None:
        key = (type(value), value)
        if key not in seen:
            seen.add(key)
            found.append(value)

    for label in spec.classes:
        add(label)
        add(str(label))
        if isinstance(label, str) and _INTEGER.match(label):
            add(int(label))
    return found


#: A string holding an integer, as ``int()`` reads it back to the same text.
_INTEGER = re.compile(r"^-?(0|[1-9][0-9]*)$")


def conveyor_checks(spec: ModelSpec) -> tuple[str, ...]:
    """The checks Conveyor runs next to the GX suite on every batch of ``spec``: the landing checks and,
    for classification, ``class_share``. (``label_mix`` only runs against a reference, and
    ``quarantine_share`` only when rows are quarantined.)"""
    return (*LANDING_CHECKS, *(() if spec.task == "regression" else (CLASS_SHARE_CHECK,)))


def class_share_check(spec: ModelSpec, df: pd.DataFrame) -> FailedCheck | None:
    """Check ``class_share``: every class of ``data.classes`` holds at least ``data.min_class_share`` of
    the window's rows with a known label (labels compared as ``encode_target`` compares them), and has
    at least one row. A window missing a class, or nearly, cannot be trained or gated (a NaN AUC, a
    class the model never saw); the detail names each such class and every class's share.

    Returns:
        The failed check (severity not yet applied), or ``None`` when every class holds its share, the
        task is regression, or the target column or every row is missing (other checks say so).
    """
    from conveyor.tasks import class_indices

    target = spec.data.target
    if spec.task == "regression" or target not in df.columns or not len(df):
        return None
    classes = list(spec.classes)
    codes = class_indices(spec, df[target])
    known = codes[codes >= 0]
    counts = [int((known == i).sum()) for i in range(len(classes))]
    total = len(known)
    least = spec.data.min_class_share
    absent = [label for label, n in zip(classes, counts, strict=True) if n == 0]
    rare = [(label, n) for label, n in zip(classes, counts, strict=True) if n and n / total < least - 1e-12]
    if not absent and not rare:
        return None
    parts = []
    if absent:
        parts.append(f"class(es) {absent} have no rows in the window")
    if rare:
        listed = ", ".join(f"{label!r} ({n / total:.2%}, {n:,} rows)" for label, n in rare)
        parts.append(f"class(es) {listed} hold less than {least:.1%} of the rows")
    shares = ", ".join(
        f"{label}: {n / total if total else 0.0:.1%}" for label, n in zip(classes, counts, strict=True)
    )
    return FailedCheck(
        expectation=CLASS_SHARE_CHECK,
        column=target,
        detail=(
            f"{'; '.join(parts)}. Every class of data.classes {classes} needs at least {least:.1%} of the "
            f"{total:,} labelled rows (spec data.min_class_share) to be trained and gated: widen the window "
            f"or fix the labels. Shares: {shares}"
        ),
        unexpected_count=len(absent) + len(rare),
    )


def _quiet_context() -> Any:
    """An in-memory GX context without progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def validate_batch(
    spec: ModelSpec, df: pd.DataFrame, *, reference_label_mix: Mapping[str, float] | None = None
) -> ValidationReport:
    """Run ``spec``'s contract on ``df`` and summarise the result.

    Failing rows are named by ``spec.data.id_column`` (up to :data:`SAMPLE_SIZE` ids and full rows per
    check). Never raises for bad data: a missing or mistyped column shows up as failed checks.

    Checks whose severity is ``quarantine`` go to ``report.quarantined`` with the number of rows each
    sets aside (``quarantined_rows``), and do not fail the report; the rows are split off with
    :func:`quarantine_rows`. When rows are quarantined, the batch fails check ``quarantine_share`` if
    they are more than ``data.max_quarantine_share`` of it, and the contract runs again on the clean
    rows: a check that then fails (too few rows left, a class gone) fails the report, with a detail
    starting "after quarantining". A check of quarantine severity whose rows cannot be told apart (its
    column is missing, or of a non-numeric dtype as a whole) blocks.

    Args:
        spec: the model.
        df: the batch or window, as loaded (``df.attrs`` from :func:`~conveyor.data.landing.load_window`
            enable the landing checks).
        reference_label_mix: the label shares of a reference window (:func:`label_mix` of the
            champion's training window); adds the ``label_mix`` check. ``None``: no such check.
    """
    return _validate(spec, df, reference_label_mix, recheck_clean=True)


def _validate(
    spec: ModelSpec, df: pd.DataFrame, reference_label_mix: Mapping[str, float] | None, *, recheck_clean: bool
) -> ValidationReport:
    started = time.perf_counter()
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    id_column = spec.data.id_column
    has_ids = id_column in df.columns

    suite = build_suite(spec)
    context = _quiet_context()
    batch_definition = (
        context.data_sources.add_pandas(f"conveyor_{spec.name}")
        .add_dataframe_asset(f"{spec.name}_batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    # Pass/fail first: collecting failing-row ids costs more than the checks themselves (about
    # half of the time on 1M rows), so only the checks that failed run again with ids and samples.
    outcome = batch.validate(suite, result_format="BOOLEAN_ONLY")
    failing = {
        _key(r.expectation_config.type, r.expectation_config.kwargs.get("column"))
        for r in outcome.results
        if not r.success
    }
    detailed = []
    if failing:
        result_format: dict[str, Any] = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": _PARTIAL_UNEXPECTED,
            "include_unexpected_rows": False,
        }
        if has_ids:
            result_format["unexpected_index_column_names"] = [id_column]
        import great_expectations as gx

        recheck = gx.ExpectationSuite(
            name=f"{suite.name}_failed",
            expectations=[
                e
                for e in build_suite(spec).expectations
                if _key(e.expectation_type, getattr(e, "column", None)) in failing
            ],
        )
        detailed = batch.validate(recheck, result_format=result_format).results

    order = {
        _key(e.expectation_type, getattr(e, "column", None)): i for i, e in enumerate(suite.expectations)
    }
    failed = [
        _failed_check(spec, df, r.expectation_config.type, r.expectation_config.kwargs, r)
        for r in detailed
        if not r.success
    ]
    failed.sort(key=lambda c: order.get(_key(c.expectation, c.column), len(order)))
    shares = class_share_check(spec, df)
    if shares is not None:
        failed.append(shares)
    failed += landing_checks(spec, df)
    mix = label_mix_check(spec, df, reference_label_mix)
    if mix is not None:
        failed.append(mix)
    graded = [c.model_copy(update={"severity": severity_of(spec, c)}) for c in failed]
    failed = [c for c in graded if c.severity == "block"]
    warnings = [c for c in graded if c.severity == "warn"]
    to_quarantine = [c for c in graded if c.severity == "quarantine"]
    masks = _quarantine_masks(spec, df, to_quarantine)
    quarantined, unidentified = _count_quarantined(to_quarantine, masks)
    failed += unidentified
    quarantined_rows = 0
    if quarantined:
        union = _union(masks, len(df))
        quarantined_rows = int(union.sum())
        share = _quarantine_share_check(spec, quarantined, quarantined_rows, len(df))
        if share is not None:
            share = share.model_copy(update={"severity": severity_of(spec, share)})
            (failed if share.severity == "block" else warnings).append(share)
        if recheck_clean and quarantined_rows and not failed:
            clean = _split(spec, df, masks, union)[0]
            after = _validate(spec, clean, reference_label_mix, recheck_clean=False)
            # A quarantined check failing again on the clean rows would be a bug here: it blocks.
            failed += _after_quarantine(after.failed + after.quarantined, failed, quarantined_rows, "block")
            warnings += _after_quarantine(after.warnings, warnings, quarantined_rows, "warn")
    for warning in warnings:
        log.warning("data contract warning for %s: %s: %s", spec.name, warning.expectation, warning.detail)
    for check in quarantined:
        log.warning(
            "data contract for %s quarantines %d rows: %s: %s",
            spec.name,
            check.quarantined_rows or 0,
            check.expectation,
            check.detail,
        )

    dates: list[str] = []
    time_column = spec.data.event_time_column
    if time_column in df.columns and len(df):
        import pandas as pd

        stamps = pd.to_datetime(df[time_column], errors="coerce").dropna()
        dates = sorted({d.isoformat() for d in stamps.dt.date.unique()})
    report = ValidationReport(
        model=spec.name,
        id_column=id_column,
        success=not failed,
        evaluated=len(outcome.results)
        + len(conveyor_checks(spec))
        + bool(reference_label_mix)
        + bool(quarantined),
        rows=len(df),
        failed=failed,
        warnings=warnings,
        quarantined=quarantined,
        quarantined_rows=quarantined_rows,
        statistics=_jsonable(dict(outcome.statistics)),
        dates=dates,
        sources=list(df.attrs.get(SOURCES_ATTR, [])),
        missing_columns={
            str(c): list(files)
            for c, files in (df.attrs.get(MISSING_COLUMNS_ATTR) or {}).items()
            if c in spec.columns
        },
    )
    log.info(
        "data contract for %s on %d rows%s: %s (%d of %d checks failed, %d rows quarantined) in %.2fs",
        spec.name,
        len(df),
        "" if recheck_clean else " (after quarantine)",
        "passed" if report.success else "FAILED",
        len(failed),
        report.evaluated,
        quarantined_rows,
        time.perf_counter() - started,
    )
    return report


def _after_quarantine(
    found: list[FailedCheck], known: list[FailedCheck], quarantined_rows: int, severity: str
) -> list[FailedCheck]:
    """The checks of the clean rows' report not already in ``known``, their detail saying so."""
    seen = {_key(c.expectation, c.column) for c in known}
    return [
        c.model_copy(
            update={
                "detail": f"after quarantining {quarantined_rows:,} rows: {c.detail}",
                "severity": severity,
                "quarantined_rows": None,
            }
        )
        for c in found
        if _key(c.expectation, c.column) not in seen
    ]


#: The checks of how batches landed (beyond GX's per-column expectations).
LANDING_CHECKS = ("empty_day", "extra_columns", "event_time_in_partition")


def severity_of(spec: ModelSpec, check: FailedCheck) -> str:
    """``block``, ``warn`` or ``quarantine``: the spec's ``data.severities`` by ``type:column``, then
    type, then the default (:data:`DEFAULT_SEVERITIES`, else ``block``)."""
    severities = spec.data.severities
    if check.column is not None and f"{check.expectation}:{check.column}" in severities:
        return severities[f"{check.expectation}:{check.column}"]
    return severities.get(check.expectation, DEFAULT_SEVERITIES.get(check.expectation, "block"))


def landing_checks(spec: ModelSpec, df: pd.DataFrame) -> list[FailedCheck]:
    """How the window landed: empty daily files, columns the spec does not know, event times that
    fall outside the ``date=`` partition they landed in (they would move the snapshot's window)."""
    failed: list[FailedCheck] = []
    partitions = df.attrs.get(PARTITIONS_ATTR) or []
    empty = [f"{uri} (date={day})" for uri, day, rows in partitions if rows == 0]
    if empty:
        failed.append(
            FailedCheck(
                expectation="empty_day",
                detail=f"{len(empty)} landed file(s) have the right columns but no rows: {', '.join(empty)}",
                unexpected_count=len(empty),
            )
        )
    extra = [str(c) for c in df.columns if c not in spec.columns]
    if extra:
        failed.append(
            FailedCheck(
                expectation="extra_columns",
                detail=f"columns the spec does not declare: {extra}; they are not used for training",
            )
        )
    time_column = spec.data.event_time_column
    if partitions and time_column in df.columns and len(df):
        check = _partition_check(spec, df)
        if check is not None:
            failed.append(check)
    return failed


def _outside_partition(spec: ModelSpec, df: pd.DataFrame) -> tuple[Any, Any] | None:
    """``(outside, days)``: which rows' event date differs from their ``date=`` partition's, and each
    row's partition day; ``None`` when the frame carries no partitions that line up with its rows."""
    import numpy as np
    import pandas as pd

    partitions = df.attrs.get(PARTITIONS_ATTR) or []
    if not partitions or spec.data.event_time_column not in df.columns:
        return None
    days = np.repeat([day for _, day, _ in partitions], [rows for _, _, rows in partitions])
    if len(days) != len(df):  # the frame was filtered after loading: positions no longer line up
        return None
    event_days = pd.to_datetime(df[spec.data.event_time_column], errors="coerce").dt.strftime("%Y-%m-%d")
    outside = (event_days.notna() & (event_days.to_numpy() != days)).to_numpy()
    return outside, days


def _partition_check(spec: ModelSpec, df: pd.DataFrame) -> FailedCheck | None:
    found = _outside_partition(spec, df)
    if found is None:
        return None
    outside, days = found
    if not outside.any():
        return None
    rows = df[outside].head(SAMPLE_SIZE)
    id_column = spec.data.id_column
    ids = [str(v) for v in rows[id_column]] if id_column in df.columns else []
    where = sorted({str(d) for d in days[outside]})
    return FailedCheck(
        expectation="event_time_in_partition",
        column=spec.data.event_time_column,
        detail=(
            f"{int(outside.sum()):,} of {len(df):,} rows have a {spec.data.event_time_column} outside the "
            f"date= partition they landed in (partitions {', '.join(where[:5])}), e.g. "
            f"{', '.join(str(v)[:10] for v in rows[spec.data.event_time_column])}"
        ),
        unexpected_count=int(outside.sum()),
        sample_ids=ids,
        sample_rows=[_row(r) for r in rows.to_dict(orient="records")],
    )


# --- quarantine: set the failing rows of row-level checks aside ---------------------------------------

#: The reasons of each failing row of one check, computed only when asked (``quarantine_rows``).
_Reasons = Callable[[], list[str]]


@dataclass(frozen=True, eq=False)
class Quarantine:
    """A validated frame split by :func:`quarantine_rows`.

    Attributes:
        clean: the rows no quarantined check failed on, in their original order and with their index
            (``df.attrs`` kept, its partition row counts updated); what the run goes on with.
        quarantined: the rows set aside, in their original order and with their index, plus the column
            :data:`QUARANTINE_REASON_COLUMN` (``"<check>:<column>: why"``, ``"; "`` between the reasons of a
            row that failed several checks).
        counts: ``{"<check>:<column>": rows}`` per quarantined check (a row may count in several).
    """

    clean: pd.DataFrame
    quarantined: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Distinct rows set aside."""
        return len(self.quarantined)


def _check_name(check: FailedCheck) -> str:
    return check.expectation if check.column is None else f"{check.expectation}:{check.column}"


def _suite_kwargs(spec: ModelSpec) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {
        _key(e.expectation_type, getattr(e, "column", None)): dict(e.configuration.kwargs)
        for e in build_suite(spec).expectations
    }


def _scalar_types(type_list: list[str]) -> tuple[type, ...]:
    """The Python/numpy scalar types an ``object`` column's values may have for ``type_list`` (GX's
    ``column_values.in_type_list`` map metric: numpy scalar types and the builtin ``int``/``float``)."""
    import contextlib

    import numpy as np

    found: list[type] = []
    for name in type_list:
        with contextlib.suppress(TypeError):  # pandas extension names (Float64) have no numpy scalar
            found.append(np.dtype(name).type)
        found.extend({"int": (int,), "float": (float,)}.get(name.lower(), ()))
    return tuple(found)


def _bools(values: Any) -> Any:
    """A plain numpy bool array (nullable booleans' NA as False)."""
    import numpy as np

    if hasattr(values, "fillna"):
        values = values.fillna(False)
    return np.asarray(values, dtype=bool)


def _row_failures(
    spec: ModelSpec, df: pd.DataFrame, check: FailedCheck, kwargs: dict[str, Any]
) -> tuple[Any, _Reasons] | None:
    """``(mask, reasons)``: which rows of ``df`` fail ``check`` (computed here in pandas, the way GX
    counts them: nulls only fail the null check), and a function giving each failing row's reason.
    ``None`` when the failure is not one of rows (its column is missing, or its dtype is wrong as a
    whole) or the check is not a row-level one."""
    import numpy as np
    import pandas as pd

    name = _check_name(check)
    expectation, column = check.expectation, check.column
    if expectation == "event_time_in_partition":
        found = _outside_partition(spec, df)
        if found is None:
            return None
        outside, days = found
        times = df[spec.data.event_time_column]

        def partition_reasons() -> list[str]:
            return [
                f"{name}: {str(_jsonable(t))[:10]} lies outside its partition date={day}"
                for t, day in zip(times[outside], days[outside], strict=True)
            ]

        return outside, partition_reasons
    if expectation not in QUARANTINABLE_CHECKS or column is None or column not in df.columns:
        return None
    values = df[column]

    def why(mask: Any, text: Callable[[Any], str]) -> tuple[Any, _Reasons]:
        return mask, lambda: [f"{name}: {text(v)}" for v in values[mask]]

    if expectation == "expect_column_values_to_not_be_null":
        return why(_bools(values.isna()), lambda _: "value is null")
    if expectation == "expect_column_values_to_be_unique":
        mask = _bools(values.notna() & values.duplicated(keep=False))
        shared = values[mask].value_counts()
        return why(mask, lambda v: f"id {_jsonable(v)!r} is shared by {int(shared[v])} rows")
    if expectation in ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_between"):
        if values.dtype == object:
            allowed = _scalar_types(list(kwargs.get("type_list") or NUMERIC_TYPES))
            is_number = _bools(values.map(lambda v: isinstance(v, allowed)))
            not_number = _bools(values.notna()) & ~is_number
            numbers = pd.to_numeric(values.where(is_number), errors="coerce")
        elif pd.api.types.is_numeric_dtype(values.dtype):
            not_number = np.zeros(len(values), dtype=bool)
            numbers = values
        else:  # a whole column of strings, dates...: its dtype is the problem, not some rows
            return None
        if expectation == "expect_column_values_to_be_in_type_list":
            if not not_number.any():
                return None  # it failed on the dtype alone (a numeric dtype not in the list)
            return why(not_number, lambda v: f"{_jsonable(v)!r} ({type(v).__name__}) is not a number")
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        outside = np.zeros(len(values), dtype=bool)
        if low is not None:
            outside |= _bools(numbers < low)
        if high is not None:
            outside |= _bools(numbers > high)

        mask = outside | not_number

        def between_reasons() -> list[str]:
            return [
                f"{name}: {_jsonable(v)!r} "
                f"{'cannot be compared with' if wrong else 'is outside'} [{low}, {high}]"
                for v, wrong in zip(values[mask], not_number[mask], strict=True)
            ]

        return mask, between_reasons
    if expectation == "expect_column_values_to_be_in_set":
        allowed_values = list(kwargs.get("value_set") or [])
        mask = _bools(values.notna() & ~values.isin(allowed_values))
        if column == spec.data.target:
            classes = list(spec.classes)
            return why(mask, lambda v: f"{_jsonable(v)!r} is not one of data.classes {classes}")
        return why(mask, lambda v: f"{_jsonable(v)!r} is not in {allowed_values}")
    return None


def _quarantine_masks(
    spec: ModelSpec, df: pd.DataFrame, checks: list[FailedCheck]
) -> list[tuple[FailedCheck, Any, _Reasons]]:
    """The failing rows of each quarantined check that has identifiable ones."""
    kwargs = _suite_kwargs(spec) if checks else {}
    found = []
    for check in checks:
        rows = _row_failures(spec, df, check, kwargs.get(_key(check.expectation, check.column), {}))
        if rows is not None:
            found.append((check, *rows))
    return found


def _count_quarantined(
    checks: list[FailedCheck], masks: list[tuple[FailedCheck, Any, _Reasons]]
) -> tuple[list[FailedCheck], list[FailedCheck]]:
    """``(quarantined, blocking)``: the checks of quarantine severity with their ``quarantined_rows``,
    and those whose failing rows cannot be told apart (they block, saying why)."""
    found = {id(check): mask for check, mask, _ in masks}
    quarantined, blocking = [], []
    for check in checks:
        mask = found.get(id(check))
        if mask is None or not mask.any():
            blocking.append(
                check.model_copy(
                    update={
                        "severity": "block",
                        "detail": f"{check.detail} (severity quarantine, but the failure is not one of "
                        "rows that can be set aside: it blocks)",
                    }
                )
            )
        else:
            quarantined.append(check.model_copy(update={"quarantined_rows": int(mask.sum())}))
    return quarantined, blocking


def _union(masks: list[tuple[FailedCheck, Any, _Reasons]], rows: int) -> Any:
    import numpy as np

    union = np.zeros(rows, dtype=bool)
    for _, mask, _ in masks:
        union |= mask
    return union


def _quarantine_share_check(
    spec: ModelSpec, checks: list[FailedCheck], quarantined_rows: int, rows: int
) -> FailedCheck | None:
    limit = spec.data.max_quarantine_share
    share = quarantined_rows / rows if rows else 0.0
    if share <= limit:
        return None
    by_check = ", ".join(f"{_check_name(c)}: {c.quarantined_rows or 0:,}" for c in checks)
    return FailedCheck(
        expectation="quarantine_share",
        detail=(
            f"{quarantined_rows:,} of {rows:,} rows ({share:.2%}) would be quarantined ({by_check}); at most "
            f"{limit:.2%} may be (spec data.max_quarantine_share): that many bad rows means a broken "
            "batch, fix it at the source"
        ),
        unexpected_count=quarantined_rows,
    )


def _split(
    spec: ModelSpec, df: pd.DataFrame, masks: list[tuple[FailedCheck, Any, _Reasons]], union: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(clean, quarantined)`` by ``union``; the clean frame's attrs and numeric columns adjusted."""
    clean = df[~union]
    quarantined = df[union]
    # A numeric column that held strings is object-typed: once they are set aside it holds numbers only,
    # and gets their dtype (a Parquet round trip would give it anyway, and the fingerprint must match).
    numeric = {f.name for f in spec.numeric_features}
    if spec.task == "regression":
        numeric.add(spec.data.target)
    retyped = {
        str(check.column): clean[check.column].infer_objects()
        for check, mask, _ in masks
        if check.column in numeric and mask.any() and clean[check.column].dtype == object
    }
    if retyped:
        clean = clean.assign(**retyped)
    attrs = dict(df.attrs)
    partitions = attrs.get(PARTITIONS_ATTR) or []
    if partitions and sum(rows for _, _, rows in partitions) == len(df):
        updated, start = [], 0
        for uri, day, rows in partitions:
            left = int((~union[start : start + rows]).sum())
            start += rows
            if left or not rows:  # a partition that quarantine emptied is no empty landed file
                updated.append([uri, day, left])
        attrs[PARTITIONS_ATTR] = updated
    clean.attrs = attrs
    quarantined.attrs = {}
    return clean, quarantined


def quarantine_rows(spec: ModelSpec, df: pd.DataFrame, report: ValidationReport) -> Quarantine:
    """Split ``df`` into the rows its report's quarantined checks failed on and the rest.

    Pure: ``df`` is left alone. The failing rows of each check in ``report.quarantined`` are found again
    in pandas (every one of them, not GX's sample); a row failing several checks is set aside once, with
    all its reasons. Re-validating ``clean`` reports none of those checks again.

    Args:
        spec: the model the report is of.
        df: the frame :func:`validate_batch` ran on (same rows, same ``attrs``).
        report: its report.

    Returns:
        The :class:`Quarantine`; ``clean`` is ``df`` itself when nothing is quarantined.

    Raises:
        ValueError: ``report`` is not a report of ``df`` (another model, or another number of rows).
    """
    if report.model != spec.name or report.rows != len(df):
        raise ValueError(
            f"quarantine_rows: the report is of model {report.model!r} on {report.rows:,} rows, the frame "
            f"of {spec.name!r} has {len(df):,}; pass the frame that was validated"
        )
    masks = _quarantine_masks(spec, df, report.quarantined)
    union = _union(masks, len(df))
    if not union.any():
        empty = df.iloc[:0].assign(**{QUARANTINE_REASON_COLUMN: []})
        empty.attrs = {}
        return Quarantine(clean=df, quarantined=empty, counts={})
    import numpy as np

    reasons: dict[int, list[str]] = {}
    counts: dict[str, int] = {}
    for check, mask, why in masks:
        counts[_check_name(check)] = int(mask.sum())
        for position, reason in zip(np.flatnonzero(mask), why(), strict=True):
            reasons.setdefault(int(position), []).append(reason)
    clean, quarantined = _split(spec, df, masks, union)
    quarantined = quarantined.assign(
        **{QUARANTINE_REASON_COLUMN: ["; ".join(reasons[int(p)]) for p in np.flatnonzero(union)]}
    )
    quarantined.attrs = {}
    return Quarantine(clean=clean, quarantined=quarantined, counts=counts)


def quarantine_uri(spec: ModelSpec, run_key: str) -> str:
    """``<data root>/quarantine/<model>/<run_key>/rows.parquet``.

    Raises:
        ValueError: ``run_key`` is empty or not a plain name (it holds ``/``, or is ``.``/``..``).
    """
    if not run_key or "/" in run_key or run_key in (".", ".."):
        raise ValueError(f"run_key {run_key!r} must be a non-empty name without '/'")
    return storage.data_uri("quarantine", spec.name, run_key, "rows.parquet")


def write_quarantine(spec: ModelSpec, quarantined: pd.DataFrame, run_key: str) -> str | None:
    """Write the quarantined rows of a run to :func:`quarantine_uri` (Parquet, written atomically).

    Idempotent: re-running with the same ``run_key`` overwrites the file, and removes it when nothing is
    quarantined any more. An ``object`` column mixing strings with other values (a numeric column whose
    strings were quarantined) is stored as strings, which Parquet can hold.

    Returns:
        The URI written, or ``None`` when ``quarantined`` has no rows.
    """
    uri = quarantine_uri(spec, run_key)
    if quarantined.empty:
        if storage.exists(uri):
            fs, path = storage.filesystem(uri)
            fs.rm(path)
            log.info("removed the stale quarantine file %s: nothing is quarantined now", uri)
        return None
    mixed = {
        str(c): quarantined[c].map(lambda v: v if v is None or v != v else str(v))
        for c in quarantined.columns
        if quarantined[c].dtype == object and len({type(v) for v in quarantined[c].dropna()}) > 1
    }
    frame = quarantined.assign(**mixed) if mixed else quarantined
    frame.attrs = {}
    storage.write_parquet(frame, uri)
    log.info("wrote %d quarantined rows of %s to %s", len(frame), spec.name, uri)
    return uri


# --- label mix: the window's label shares against a reference (the champion's training window) -------

#: Regression: the target quantiles whose cumulative shares make a window's label mix.
TARGET_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
#: Regression: a label mix key, ``<=<value>``: the share of rows whose target is at most that value.
_AT_MOST = "<="


def _label_key(value: Any) -> str:
    value = _jsonable(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _cdf_edge(key: str) -> float | None:
    """The value of a regression label mix key ``<=<value>``; ``None`` for any other key."""
    if not key.startswith(_AT_MOST):
        return None
    try:
        edge = float(key[len(_AT_MOST) :])
    except ValueError:
        return None
    return edge if math.isfinite(edge) else None


def label_mix(spec: ModelSpec, df: pd.DataFrame) -> dict[str, float]:
    """The window's label mix: ``{key: share}`` of ``df``'s labelled rows; ``{}`` without the target or
    any label.

    Classification: the share of each target value, keyed by the label as a string and sorted by it
    (``1.0`` and ``1`` are the same label, ``"1"``). Regression (a target has too many values to share
    out): the window's distribution at its :data:`TARGET_QUANTILES`, ``{"<=<q>": share of rows with a
    target at most q}`` in ascending order of q (q rounded to 6 significant digits, the share counted
    with the rounded value, so ties are exact). :func:`label_mix_check` compares the same shares in a
    later window, whose distribution gives other shares at those values when it moved.
    """
    target = spec.data.target
    if target not in df.columns:
        return {}
    if spec.task == "regression":
        import numpy as np
        import pandas as pd

        values = pd.to_numeric(df[target], errors="coerce").dropna().to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            return {}
        mix: dict[str, float] = {}
        for edge in sorted({float(f"{q:.6g}") for q in np.quantile(values, TARGET_QUANTILES)}):
            mix[f"{_AT_MOST}{edge:.6g}"] = float((values <= edge).mean())
        return mix
    counts: dict[str, int] = {}
    for value, n in df[target].value_counts(dropna=True).items():
        counts[_label_key(value)] = counts.get(_label_key(value), 0) + int(n)
    total = sum(counts.values())
    return {label: counts[label] / total for label in sorted(counts)} if total else {}


def label_mix_check(
    spec: ModelSpec, df: pd.DataFrame, reference: Mapping[str, float] | None
) -> FailedCheck | None:
    """Check ``label_mix``: the window's label mix against ``reference`` (a :func:`label_mix`).

    Classification: fails when a class's share moved by more than ``data.max_label_shift`` (absolute
    difference), or a class of the reference has no row in the window; the detail gives every class's
    reference share and window share. Regression: fails when the share of rows with a target at most
    one of the reference's quantiles moved by more than ``data.max_label_shift`` (a Kolmogorov-Smirnov
    distance taken at those quantiles: a shifted or stretched target distribution). Severity ``warn``
    unless ``data.severities`` says otherwise.

    Returns:
        The failed check (severity not yet applied), or ``None`` when the mix is close enough, there is
        no reference (``None`` or empty), or the reference is of the other kind of target (the model's
        task changed since the champion was trained: a warning is logged).
    """
    if not reference:
        return None
    limit = spec.data.max_label_shift
    regression_reference = all(_cdf_edge(str(k)) is not None for k in reference)
    if regression_reference != (spec.task == "regression"):
        log.warning(
            "%s: the reference label mix %s is not one of a %s target; no label_mix check",
            spec.name,
            dict(reference),
            spec.task,
        )
        return None
    if spec.task == "regression":
        return _target_shift_check(spec, df, reference, limit)
    expected = {_label_key(k): float(v) for k, v in reference.items()}
    window = label_mix(spec, df)
    parts, broken = [], 0
    for label in sorted(set(expected) | set(window)):
        before, now = expected.get(label, 0.0), window.get(label, 0.0)
        if label not in window and before > 0:
            parts.append(f"{label}: {before:.3f} → absent from the window")
            broken += 1
            continue
        moved = now - before
        over = abs(moved) > limit + 1e-12
        broken += over
        parts.append(f"{label}: {before:.3f} → {now:.3f} ({moved:+.3f}{', too far' if over else ''})")
    if not broken:
        return None
    return FailedCheck(
        expectation="label_mix",
        column=spec.data.target,
        detail=(
            f"the label mix moved from the reference (the champion's training window): {'; '.join(parts)}. "
            f"A class's share may move by at most {limit:g} and every reference class must be present "
            "(spec data.max_label_shift)"
        ),
        unexpected_count=broken,
    )


def _target_shift_check(
    spec: ModelSpec, df: pd.DataFrame, reference: Mapping[str, float], limit: float
) -> FailedCheck | None:
    import numpy as np
    import pandas as pd

    target = spec.data.target
    if target not in df.columns:
        return None
    values = pd.to_numeric(df[target], errors="coerce").dropna().to_numpy(dtype=np.float64)
    if not len(values):
        return None
    points = sorted(((_cdf_edge(str(k)) or 0.0), float(v)) for k, v in reference.items())
    parts, broken = [], 0
    for edge, before in points:
        now = float((values <= edge).mean())
        moved = now - before
        over = abs(moved) > limit + 1e-12
        broken += over
        parts.append(
            f"{target} <= {edge:g}: {before:.3f} → {now:.3f} ({moved:+.3f}{', too far' if over else ''})"
        )
    if not broken:
        return None
    return FailedCheck(
        expectation="label_mix",
        column=target,
        detail=(
            "the target's distribution moved from the reference (the champion's training window), as the "
            f"share of rows at most each of the reference's quantiles: {'; '.join(parts)}. A share may move "
            f"by at most {limit:g} (spec data.max_label_shift)"
        ),
        unexpected_count=broken,
    )


def unreadable_report(spec: ModelSpec, files: dict[str, str]) -> ValidationReport:
    """The report of a window that could not even be read: one failed check per unreadable file.

    The check keeps its name ``readable_parquet`` for every file source (severities and dashboards key
    on it); its detail names the format the spec reads (Parquet, or CSV for a ``files`` source).
    """
    source = spec.data.source
    kind = "CSV" if source.kind == "files" and source.format == "csv" else "Parquet"
    failed = [
        FailedCheck(expectation="readable_parquet", detail=f"{uri} is not readable {kind} ({why})")
        for uri, why in files.items()
    ]
    return ValidationReport(
        model=spec.name, success=False, evaluated=len(failed), rows=0, failed=failed, sources=list(files)
    )


def validate_or_raise(
    spec: ModelSpec, df: pd.DataFrame, *, reference_label_mix: Mapping[str, float] | None = None
) -> ValidationReport:
    """:func:`validate_batch`, raising :class:`DataValidationError` when any check fails."""
    report = validate_batch(spec, df, reference_label_mix=reference_label_mix)
    if not report.success:
        raise DataValidationError(report, spec.data.event_time_column)
    return report


def _key(expectation: str, column: Any) -> tuple[str, str | None]:
    return expectation, None if column is None else str(column)


def _exception_messages(exception_info: Any) -> list[str]:
    """GX reports either one ``{raised_exception, exception_message}`` or a dict of them per metric."""
    if not isinstance(exception_info, dict):
        return []
    if "raised_exception" in exception_info:
        if exception_info.get("raised_exception"):
            return [str(exception_info.get("exception_message") or "unknown error")]
        return []
    messages: list[str] = []
    for value in exception_info.values():
        messages.extend(_exception_messages(value))
    return list(dict.fromkeys(messages))


def _failed_check(
    spec: ModelSpec, df: pd.DataFrame, expectation: str, kwargs: dict[str, Any], result: Any
) -> FailedCheck:
    column = kwargs.get("column")
    column = None if column is None else str(column)
    errors = _exception_messages(result.exception_info)
    summary = dict(result.result or {})

    if errors:
        if column is not None and column not in df.columns:
            detail = f"not evaluated: column {column!r} is missing from the batch"
        elif column is not None and expectation == "expect_column_values_to_be_between":
            detail = (
                f"not evaluated: column {column!r} (dtype {df[column].dtype}) holds values that cannot be "
                f"compared with the bounds; fix its type first (GX: {errors[0]})"
            )
        elif column is not None:
            detail = f"not evaluated on column {column!r} (dtype {df[column].dtype}): {errors[0]}"
        else:
            detail = f"not evaluated: {errors[0]}"
        return FailedCheck(expectation=expectation, column=column, detail=detail)

    count = summary.get("unexpected_count")
    count = None if count is None else int(count)
    sample_ids, sample_rows = _samples(spec, df, summary)
    examples = ", ".join(
        repr(_jsonable(v)) for v in (summary.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]
    )
    element_count = summary.get("element_count")
    of = f" of {element_count:,}" if element_count is not None else ""
    observed = summary.get("observed_value")

    if expectation == "expect_column_to_exist":
        lacking = (df.attrs.get(MISSING_COLUMNS_ATTR) or {}).get(column) or []
        detail = f"required column {column!r} is missing"
        detail += f" from {', '.join(lacking)}" if lacking else " from the batch"
    elif expectation == "expect_column_values_to_not_be_null":
        allowed = 1.0 - float(kwargs.get("mostly", 1.0))
        detail = (
            f"{count:,}{of} values are null ({summary.get('unexpected_percent', 0):.1f}%); "
            f"at most {allowed:.1%} allowed"
        )
    elif expectation == "expect_column_values_to_be_in_type_list":
        dtype = df[column].dtype if column in df.columns else "?"
        detail = (
            f"column dtype is {dtype}, expected a numeric dtype; {count or 0:,}{of} values are not numbers"
        )
        detail += f", e.g. {examples}" if examples else ""
    elif expectation == "expect_column_values_to_be_between":
        detail = (
            f"{count:,}{of} values outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}], "
            f"e.g. {examples}"
        )
    elif expectation == "expect_column_values_to_be_in_set" and column == spec.data.target:
        detail = f"{count:,}{of} labels are not one of data.classes {list(spec.classes)}, e.g. {examples}"
    elif expectation == "expect_column_values_to_be_in_set":
        detail = f"{count:,}{of} values not in {list(kwargs.get('value_set') or [])}, e.g. {examples}"
    elif expectation == "expect_column_values_to_be_unique":
        detail = f"{count:,}{of} rows share an id with another row, e.g. {examples}"
    elif expectation == "expect_table_row_count_to_be_between":
        upper = kwargs.get("max_value")
        detail = f"{observed} rows; expected at least {kwargs.get('min_value')}"
        detail += f" and at most {upper}" if upper is not None else ""
    elif count is not None:
        detail = f"{count:,}{of} unexpected values" + (f", e.g. {examples}" if examples else "")
    else:
        detail = f"observed {_jsonable(observed)!r}; expected {_jsonable(kwargs)!r}"
    return FailedCheck(
        expectation=expectation,
        column=column,
        detail=detail,
        unexpected_count=count,
        sample_ids=sample_ids,
        sample_rows=sample_rows,
    )


def _samples(
    spec: ModelSpec, df: pd.DataFrame, summary: dict[str, Any]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Up to SAMPLE_SIZE failing ids and their full rows, from GX's partial unexpected index list."""
    entries = summary.get("partial_unexpected_index_list") or []
    id_column = spec.data.id_column
    if id_column in df.columns:
        ids = list(
            dict.fromkeys(str(e[id_column]) for e in entries if isinstance(e, dict) and id_column in e)
        )
        ids = ids[:SAMPLE_SIZE]
        if not ids:
            return [], []
        rows = df[df[id_column].astype(str).isin(ids)]
        # Keep GX's order (the first failing rows); every row of each sampled id (a duplicated id has
        # several), at most SAMPLE_SIZE per id.
        rank = {value: i for i, value in enumerate(ids)}
        rows = rows.iloc[sorted(range(len(rows)), key=lambda i: rank[str(rows.iloc[i][id_column])])]
        rows = rows.groupby(rows[id_column].astype(str), sort=False).head(SAMPLE_SIZE)
        return ids, [_row(r) for r in rows.to_dict(orient="records")]
    positions = [e for e in entries if isinstance(e, int)][:SAMPLE_SIZE]
    rows = df.loc[[p for p in positions if p in df.index]]
    return [], [_row(r) for r in rows.to_dict(orient="records")]


def _row(record: dict[Any, Any]) -> dict[str, Any]:
    return {str(k): _jsonable(v) for k, v in record.items()}


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN to None, timestamps to ISO strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def _error_message(report: ValidationReport, event_time_column: str) -> str:
    lines = [
        f"data contract failed for model {report.model!r}: {len(report.failed)} of {report.evaluated} checks "
        f"failed on {report.rows:,} rows"
        + (f" (dates {report.dates[0]}..{report.dates[-1]})" if report.dates else "")
    ]
    for check in report.failed:
        where = f" on column {check.column!r}" if check.column else ""
        lines.append(f"  - {check.expectation}{where}: {check.detail}")
        if check.sample_ids:
            examples = []
            for row_id in check.sample_ids:
                # the rows of this id (several when the id is duplicated), not the n-th sampled row
                rows = [
                    r
                    for r in check.sample_rows
                    if report.id_column and str(r.get(report.id_column)) == row_id
                ]
                described = []
                for row in rows:
                    parts = []
                    if check.column and check.column in row and check.column != report.id_column:
                        parts.append(f"{check.column}={row[check.column]!r}")
                    if row.get(event_time_column) is not None:
                        parts.append(f"date={str(row[event_time_column])[:10]}")
                    if parts:
                        described.append(", ".join(parts))
                if len(rows) > 1:
                    examples.append(f"{row_id} ({len(rows)} rows: {' | '.join(described)})")
                else:
                    examples.append(f"{row_id} ({described[0]})" if described else row_id)
            lines.append(f"    failing ids: {'; '.join(examples)}")
    lacking = [uri for files in report.missing_columns.values() for uri in files]
    dates = report.failed_dates(event_time_column)
    if lacking:
        where = ", ".join(dict.fromkeys(lacking))
    elif dates:
        where = ", ".join(f"landing/{report.model}/date={d}/" for d in dates)
    elif report.dates:
        where = f"landing/{report.model}/date=YYYY-MM-DD/ for the dates {report.dates[0]}..{report.dates[-1]}"
    else:
        where = f"landing/{report.model}/date=YYYY-MM-DD/"
    lines.append(
        f"What to do: fix or remove the offending batch under {where}, then re-run validation "
        "(clear the task in Airflow). The full report is attached to the run."
    )
    return "\n".join(lines)
