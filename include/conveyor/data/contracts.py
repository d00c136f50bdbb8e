"""The data contract: a Great Expectations 1.x suite built from a model spec, run in-process.

:func:`build_suite` turns ``spec`` into expectations (columns present, numeric dtypes, null rates,
ranges, categories, target labels, row count, unique ids). :func:`validate_batch` runs it on a
DataFrame in an ephemeral GX context and returns a small, JSON-able :class:`ValidationReport` whose
failed checks name the offending rows by id. :func:`validate_or_raise` turns a failure into a
:class:`DataValidationError` that says what to fix and where.

An expectation GX cannot evaluate (its column is missing, or holds strings where numbers belong)
comes back from GX as an exception; it is reported here as a failed check with a readable detail, never
raised.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.config import ModelSpec
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
DEFAULT_SEVERITIES: dict[str, str] = {"empty_day": "warn", "extra_columns": "warn"}


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
    share and allowed categories; the target is present and in ``{0, 1}``, both classes are present
    and each holds at least ``min_class_share`` of the rows.
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
    add(gxe.ExpectColumnValuesToBeInSet(column=data.target, value_set=[0, 1]))
    # Every class present, each with at least min_class_share of the rows (mean of a 0/1 label is the
    # share of 1s): a one-class window cannot be trained or gated, and says so here, not as a NaN AUC.
    add(gxe.ExpectColumnDistinctValuesToContainSet(column=data.target, value_set=[0, 1]))
    add(
        gxe.ExpectColumnMeanToBeBetween(
            column=data.target, min_value=data.min_class_share, max_value=1.0 - data.min_class_share
        )
    )
    # Passing the expectations to the constructor needs no active context (add_expectation does).
    return gx.ExpectationSuite(name=f"conveyor.{spec.name}", expectations=expectations)


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


def validate_batch(spec: ModelSpec, df: pd.DataFrame) -> ValidationReport:
    """Run ``spec``'s contract on ``df`` and summarise the result.

    Failing rows are named by ``spec.data.id_column`` (up to :data:`SAMPLE_SIZE` ids and full rows per
    check). Never raises for bad data: a missing or mistyped column shows up as failed checks.
    """
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
    failed += landing_checks(spec, df)
    graded = [c.model_copy(update={"severity": severity_of(spec, c)}) for c in failed]
    failed = [c for c in graded if c.severity == "block"]
    warnings = [c for c in graded if c.severity == "warn"]
    for warning in warnings:
        log.warning("data contract warning for %s: %s: %s", spec.name, warning.expectation, warning.detail)

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
        evaluated=len(outcome.results) + len(LANDING_CHECKS),
        rows=len(df),
        failed=failed,
        warnings=warnings,
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
        "data contract for %s on %d rows: %s (%d of %d checks failed) in %.2fs",
        spec.name,
        len(df),
        "passed" if report.success else "FAILED",
        len(failed),
        report.evaluated,
        time.perf_counter() - started,
    )
    return report


#: The checks of how batches landed (beyond GX's per-column expectations).
LANDING_CHECKS = ("empty_day", "extra_columns", "event_time_in_partition")


def severity_of(spec: ModelSpec, check: FailedCheck) -> str:
    """``block`` or ``warn``: the spec's ``data.severities`` by ``type:column``, then type, then default."""
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
        check = _partition_check(spec, df, partitions)
        if check is not None:
            failed.append(check)
    return failed


def _partition_check(spec: ModelSpec, df: pd.DataFrame, partitions: list[Any]) -> FailedCheck | None:
    import numpy as np
    import pandas as pd

    days = np.repeat([day for _, day, _ in partitions], [rows for _, _, rows in partitions])
    if len(days) != len(df):  # the frame was filtered after loading: positions no longer line up
        return None
    event_days = pd.to_datetime(df[spec.data.event_time_column], errors="coerce").dt.strftime("%Y-%m-%d")
    outside = (event_days.notna() & (event_days.to_numpy() != days)).to_numpy()
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


def unreadable_report(spec: ModelSpec, files: dict[str, str]) -> ValidationReport:
    """The report of a window that could not even be read: one failed check per unreadable file."""
    failed = [
        FailedCheck(expectation="readable_parquet", detail=f"{uri} is not readable Parquet ({why})")
        for uri, why in files.items()
    ]
    return ValidationReport(
        model=spec.name, success=False, evaluated=len(failed), rows=0, failed=failed, sources=list(files)
    )


def validate_or_raise(spec: ModelSpec, df: pd.DataFrame) -> ValidationReport:
    """:func:`validate_batch`, raising :class:`DataValidationError` when any check fails."""
    report = validate_batch(spec, df)
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
    elif expectation == "expect_column_values_to_be_in_set":
        detail = f"{count:,}{of} values not in {list(kwargs.get('value_set') or [])}, e.g. {examples}"
    elif expectation == "expect_column_values_to_be_unique":
        detail = f"{count:,}{of} rows share an id with another row, e.g. {examples}"
    elif expectation == "expect_column_distinct_values_to_contain_set":
        wanted = list(kwargs.get("value_set") or [])
        present = sorted(_jsonable(df[column].dropna().unique().tolist()), key=str)
        absent = [v for v in wanted if v not in present]
        detail = (
            f"labels present: {present}; class(es) {absent} have no rows in the window. A model needs "
            f"every class of {wanted} to train and be gated: widen the window or fix the labels"
        )
    elif expectation == "expect_column_mean_to_be_between":
        import pandas as pd

        share = float(kwargs.get("min_value") or 0.0)
        ones = float(pd.to_numeric(df[column], errors="coerce").mean()) if len(df) else float("nan")
        detail = (
            f"the share of label 1 is {ones:.4g}; each class needs at least {share:.1%} of the rows "
            "(spec data.min_class_share)"
        )
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
