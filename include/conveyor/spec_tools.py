"""Writing and explaining model specs: ``conveyor spec draft`` and ``conveyor spec check``.

:func:`read_sample` reads a data sample (a Parquet or CSV file, a folder of them with or without
``date=YYYY-MM-DD`` partitions, a glob, any fsspec URI) and :func:`draft_spec` turns it into a starting
spec: the id, event-time and target columns, the task's target contract (binary 0/1; multiclass the
observed label set as ``data.classes``; regression the observed range, widened, as ``data.target_min``/
``target_max``), numeric features with their observed range widened by a margin, categorical features
with their observed categories, null shares as ``max_null_fraction``, and the other sections (trainer,
gate, compression, deploy, monitor) at the shipped specs' defaults for the task, every guess marked
``TODO`` in a YAML comment. The draft is validated with :class:`ModelSpec` before it is
returned, so what is written always loads.

:func:`load_spec_file` validates a spec file and collects what is wrong as :class:`SpecProblem` rows
(field → message); :func:`spec_plan` says what each stage will do with a valid spec.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import ValidationError

from conveyor.config import LOWER_IS_BETTER, TASK_METRICS, TASK_TYPES, ModelSpec

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

#: What ``--task`` accepts: the spec's task types.
SUPPORTED_TASKS: tuple[str, ...] = TASK_TYPES
#: A multiclass target with more distinct labels than this is refused (an id, or a regression target).
DEFAULT_MAX_CLASSES = 50
#: File names read from a folder or glob (anything else in it is skipped).
DATA_SUFFIXES: tuple[str, ...] = (".parquet", ".pq", ".csv", ".csv.gz")
DEFAULT_MARGIN = 0.1
DEFAULT_MAX_CATEGORIES = 20
DEFAULT_MAX_ROWS = 1_000_000
#: ``data.min_rows`` of a draft, unless the sample holds fewer rows.
DRAFT_MIN_ROWS = 100

_PARTITION = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_ID_WORDS = frozenset({"id", "uuid", "guid"})
_TIME_WORDS = ("event_time", "event_date", "timestamp", "date", "time")

Role = Literal["id", "event_time", "target", "numeric", "categorical", "left_out"]


class SpecDraftError(ValueError):
    """The arguments or the sample cannot make a spec; the message says what to change."""


# -- reading a sample ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Rows read for drafting, and where they came from."""

    frame: pd.DataFrame
    source: str
    files: list[str]
    total_files: int
    partitions: list[str] = field(default_factory=list)
    truncated: bool = False


def _data_files(source: str) -> tuple[Any, list[str]]:
    from conveyor.data import storage

    fs, path = storage.filesystem(source)
    if any(ch in path for ch in "*?["):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        root = path.rstrip("/")
        found = [
            p
            for p in fs.find(root)
            if not any(part.startswith((".", "_")) for part in p[len(root) :].strip("/").split("/"))
        ]
    elif fs.isfile(path):
        return fs, [path]
    else:
        raise SpecDraftError(f"--data {source!r}: no such file or folder")
    files = sorted(p for p in found if p.lower().endswith(DATA_SUFFIXES))
    if not files:
        raise SpecDraftError(
            f"--data {source!r}: no {', '.join(DATA_SUFFIXES)} files in it "
            "(hidden and _-prefixed ones are skipped)"
        )
    return fs, files


def _read_file(fs: Any, path: str) -> pd.DataFrame:
    import pandas as pd

    try:
        with fs.open(path, "rb") as fh:
            if path.lower().endswith((".parquet", ".pq")):
                return pd.read_parquet(fh)
            return pd.read_csv(fh, compression="gzip" if path.endswith(".gz") else None, low_memory=False)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid and pandas' ParserError are ValueErrors
        raise SpecDraftError(f"cannot read {path}: {type(exc).__name__}: {str(exc)[:300]}") from exc


def read_sample(source: str, max_rows: int = DEFAULT_MAX_ROWS) -> Sample:
    """Read ``source``: a Parquet/CSV file, a folder of them (any depth, ``date=`` partitions allowed),
    a glob, or any fsspec URI. Files are read in path order until ``max_rows`` rows are in.

    Partition folders are not turned into columns: landed batches are read the same way, so a spec may
    only name columns the files themselves carry.

    Raises:
        SpecDraftError: nothing to read, an unreadable file, or no rows.
    """
    import pandas as pd

    if max_rows < 1:
        raise SpecDraftError(f"--max-rows must be at least 1, got {max_rows}")
    fs, files = _data_files(source)
    frames: list[pd.DataFrame] = []
    rows = 0
    for path in files:
        frames.append(_read_file(fs, path))
        rows += len(frames[-1])
        if rows >= max_rows:
            break
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        raise SpecDraftError(f"--data {source!r}: {len(frames)} file(s) read, no rows in them")
    read = files[: len(frames)]
    partitions = sorted({m.group(1) for p in read if (m := _PARTITION.search(p))})
    return Sample(
        frame=frame.head(max_rows) if rows > max_rows else frame,
        source=source,
        files=read,
        total_files=len(files),
        partitions=partitions,
        truncated=rows > max_rows or len(read) < len(files),
    )


# -- drafting ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDraft:
    """What the draft made of one column of the sample."""

    name: str
    role: Role
    dtype: str
    detail: str


@dataclass(frozen=True)
class Draft:
    """A drafted spec: the validated model, the YAML text to write, and what was decided per column."""

    spec: ModelSpec
    text: str
    columns: list[ColumnDraft]
    notes: list[str]


def _words(name: str) -> set[str]:
    return {w.lower() for w in _WORDS.findall(name)}


def _all_strings(values: Any) -> bool:
    return bool(all(isinstance(v, str) for v in values))


def _is_time(series: pd.Series) -> bool:
    """A datetime column, or one of dates (Parquet ``date32`` reads as ``datetime.date`` objects), or of
    ISO date strings (CSV)."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series):
        return True
    if series.dtype != object:
        return False
    values = series.dropna().head(1000)
    if values.empty:
        return False
    if all(isinstance(v, dt.date) for v in values):
        return True
    if not _all_strings(values) or not all(_ISO_DATE.match(v) for v in values):
        return False
    return bool(_datetimes(values).notna().all())


def _datetimes(series: pd.Series) -> pd.Series:
    import pandas as pd

    if series.dtype == object and _all_strings(series.dropna()):
        return pd.to_datetime(series, format="ISO8601", errors="coerce")
    return pd.to_datetime(series, errors="coerce")


def _pick_id(df: pd.DataFrame, wanted: str | None) -> str:
    import pandas as pd

    if wanted is not None:
        if wanted not in df.columns:
            raise SpecDraftError(f"--id {wanted!r} is not a column of the sample; it has {list(df.columns)}")
        return wanted
    doubts = []
    for column in df.columns:
        name = str(column)
        if not _words(name) & _ID_WORDS:
            continue
        series = df[column]
        kind_ok = pd.api.types.is_integer_dtype(series) or (
            series.dtype == object and _all_strings(series.dropna())
        )
        if not kind_ok:
            doubts.append(f"{name!r} is {series.dtype}, not integers or strings")
        elif series.isna().any():
            doubts.append(f"{name!r} has {int(series.isna().sum())} empty values")
        elif not series.is_unique:
            doubts.append(f"{name!r} repeats {int(series.duplicated().sum())} values")
        else:
            return name
    why = f" ({'; '.join(doubts)})" if doubts else ""
    raise SpecDraftError(
        "the spec needs data.id_column, a column that names each row uniquely (the data contract checks "
        f"it is unique and reports failing rows by it), and no column looks like one{why}. "
        "Add one to the data (a record or customer id) or name it with --id."
    )


def _pick_time(df: pd.DataFrame, wanted: str | None, taken: set[str]) -> str:
    if wanted is not None:
        if wanted not in df.columns:
            raise SpecDraftError(
                f"--time {wanted!r} is not a column of the sample; it has {list(df.columns)}"
            )
        if wanted in taken:
            raise SpecDraftError(f"--time {wanted!r} is already the id or target column")
        if not _is_time(df[wanted]):
            raise SpecDraftError(
                f"--time {wanted!r} holds {df[wanted].dtype} values, not dates: the event time must be a "
                "date/datetime column (or ISO date strings, 2024-05-07)"
            )
        return wanted
    found = [str(c) for c in df.columns if str(c) not in taken and _is_time(df[c])]
    if not found:
        raise SpecDraftError(
            "the spec needs data.event_time_column (the date or time of each row: windows, the "
            "partition check and monitoring go by it), and the sample has no date/datetime column (nor "
            "strings like 2024-05-07). Add one to the data or name it with --time."
        )
    for word in _TIME_WORDS:
        for name in found:
            if word in name.lower():
                return name
    return found[0]


@dataclass(frozen=True)
class _Target:
    """What the sample says about the target, per task."""

    unlabelled: int
    #: binary: the share of 1s.
    positive_share: float = 0.0
    #: multiclass: the label set (sorted) and each label's share of the labelled rows.
    classes: tuple[Any, ...] = ()
    shares: tuple[float, ...] = ()
    #: regression: the observed range, its mean and standard deviation.
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    std: float = 0.0
    integer: bool = False

    @property
    def rarest(self) -> float:
        """The rarest class's share (classification)."""
        if self.shares:
            return min(self.shares)
        return min(self.positive_share, 1 - self.positive_share)


def _check_target(df: pd.DataFrame, target: str, task: str) -> _Target:
    """What the target column holds, checked for ``task``.

    Raises:
        SpecDraftError: an unknown task, a missing or empty target, or values the task cannot take
            (binary: not 0/1 or one class only; multiclass: fewer than two labels, too many, or
            fractional numbers; regression: not numbers, or a constant).
    """
    import pandas as pd

    if task not in SUPPORTED_TASKS:
        raise SpecDraftError(f"--task {task!r} is not a task type; use one of {', '.join(SUPPORTED_TASKS)}")
    if target not in df.columns:
        raise SpecDraftError(f"--target {target!r} is not a column of the sample; it has {list(df.columns)}")
    series = df[target]
    labels = series.dropna()
    if labels.empty:
        raise SpecDraftError(f"--target {target!r} has no values in the sample")
    unlabelled = int(series.isna().sum())
    distinct = list(pd.unique(labels))
    shown = sorted(map(str, distinct))[:10]
    boolean = pd.api.types.is_bool_dtype(labels)
    numeric = not boolean and pd.api.types.is_numeric_dtype(labels)
    if task == "regression":
        if not numeric:
            raise SpecDraftError(
                f"--target {target!r} holds {labels.dtype} values (e.g. {shown[:5]}), not numbers: a "
                "regression target is a number. Land it as numbers, or draft a classifier "
                "(--task binary or multiclass)."
            )
        values = labels.astype(float)
        if values.isin([math.inf, -math.inf]).any():
            raise SpecDraftError(f"--target {target!r} holds infinite values; land them as empty values")
        low, high = float(values.min()), float(values.max())
        if low == high:
            raise SpecDraftError(
                f"--target {target!r} is {_short(low)} in every row of the sample: nothing to learn. "
                "Draft from a sample where it varies."
            )
        return _Target(
            unlabelled=unlabelled,
            low=low,
            high=high,
            mean=float(values.mean()),
            std=float(values.std(ddof=0)),
            integer=bool((values % 1 == 0).all()),
        )
    if task == "multiclass":
        if numeric and not bool((labels.astype(float) % 1 == 0).all()):
            raise SpecDraftError(
                f"--target {target!r} holds fractional numbers (e.g. {shown[:5]}): class labels are "
                "integers or strings. A measured quantity is a regression target: --task regression."
            )
        if numeric:
            classes: list[Any] = sorted({int(v) for v in distinct})
            keys = labels.astype(float).astype(int)
        elif not boolean and _all_strings(labels):
            classes = sorted({str(v) for v in distinct})
            keys = labels.astype(str)
        else:
            raise SpecDraftError(
                f"--target {target!r} holds {labels.dtype} values (e.g. {shown[:5]}): class labels are "
                "integers or strings. Land the labels as one or the other, then draft again."
            )
        if len(classes) < 2:
            raise SpecDraftError(
                f"--target {target!r} holds only {shown} in the sample: a classifier needs two labels or "
                "more. Draft from a sample with every class."
            )
        if len(classes) > DEFAULT_MAX_CLASSES:
            raise SpecDraftError(
                f"--target {target!r} has {len(classes)} distinct labels (e.g. {shown}): more than "
                f"{DEFAULT_MAX_CLASSES} classes is more likely an id or a quantity (--task regression) "
                "than a label set."
            )
        counts = keys.value_counts()
        shares = tuple(float(counts.get(c, 0)) / len(labels) for c in classes)
        return _Target(unlabelled=unlabelled, classes=tuple(classes), shares=shares)
    if (numeric or boolean) and {float(v) for v in distinct} <= {0.0, 1.0}:
        if len(distinct) < 2:
            raise SpecDraftError(
                f"--target {target!r} holds only {shown} in the sample: a binary model needs both 0 and 1. "
                "Draft from a sample with both classes."
            )
        return _Target(unlabelled=unlabelled, positive_share=float(labels.astype(float).mean()))
    if len(distinct) > 2:
        raise SpecDraftError(
            f"--target {target!r} has {len(distinct)} distinct labels (e.g. {shown}): not a binary 0/1 "
            "target. Draft a multiclass model (--task multiclass: the labels become data.classes) or a "
            "regression model (--task regression: a number to predict)."
        )
    raise SpecDraftError(
        f"--target {target!r} holds {shown}: the binary draft wants 0/1 integers (1 = the positive class). "
        "Map the labels to 0/1 when the data lands, then draft again (or --task multiclass keeps them "
        "as labels)."
    )


def _nice(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 1e15 else value


def _bounds(lo: float, hi: float, margin: float, integer: bool) -> tuple[float | int, float | int]:
    """``[lo, hi]`` widened by ``margin`` of its span on each side, rounded outwards to three significant
    digits of the span (whole numbers for an integer column); a side that was non-negative (or
    non-positive) does not cross zero."""
    span = hi - lo
    pad = margin * span if span > 0 else margin * max(abs(hi), 1.0)
    low, high = lo - pad, hi + pad
    if lo >= 0:
        low = max(0.0, low)
    if hi <= 0:
        high = min(0.0, high)
    width = high - low
    step = 10.0 ** (math.floor(math.log10(width)) - 2) if width > 0 else 1.0
    if integer:
        step = max(step, 1.0)
    digits = max(0, -math.floor(math.log10(step)))
    low = min(round(math.floor(low / step) * step, digits), lo)
    high = max(round(math.ceil(high / step) * step, digits), hi)
    return _nice(low), _nice(high)


def _short(value: float) -> str:
    return f"{value:.6g}"


def _null_limit(share: float) -> float:
    """``max_null_fraction`` for a column with ``share`` nulls in the sample: room for 1.5 times as many
    plus one point, in whole points (0 when the sample has none)."""
    if share <= 0:
        return 0.0
    return min(1.0, math.ceil(100 * (share * 1.5 + 0.01)) / 100)


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _yaml_flow(value: Any) -> str:
    """``value`` as one line of YAML (a flow mapping/sequence or a scalar)."""
    text = yaml.safe_dump(
        value, default_flow_style=True, sort_keys=False, width=1_000_000, allow_unicode=True
    )
    return text.removesuffix("\n...\n").rstrip("\n")


def _line(indent: int, text: str, comment: str = "") -> str:
    out = " " * indent + text
    return f"{out}  # {comment}" if comment else out


@dataclass
class _Columns:
    numeric: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    categorical: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    rows: list[ColumnDraft] = field(default_factory=list)


def _features(df: pd.DataFrame, reserved: set[str], margin: float, max_categories: int) -> _Columns:
    import pandas as pd

    out = _Columns()
    n = len(df)
    for column in df.columns:
        name = str(column)
        if name in reserved:
            continue
        series = df[column]
        dtype = str(series.dtype)
        values = series.dropna()
        share = 1.0 - len(values) / n
        nulls = f", {_pct(share)} null" if share else ""
        limit = _null_limit(share)
        why = ""
        if values.empty:
            why = "no values in the sample"
        elif pd.api.types.is_bool_dtype(series):
            why = "true/false: the contract has no boolean type; land it as 0/1 integers or as strings"
        elif pd.api.types.is_numeric_dtype(series) and not values.isin([math.inf, -math.inf]).any():
            integer = pd.api.types.is_integer_dtype(values) or bool((values % 1 == 0).all())
            lo, hi = float(values.min()), float(values.max())
            low, high = _bounds(lo, hi, margin, integer)
            entry: dict[str, Any] = {"name": name, "min": low, "max": high}
            if limit:
                entry["max_null_fraction"] = limit
            observed = f"observed {_short(lo)}..{_short(hi)}{nulls}"
            if lo == hi:
                observed += "; constant in the sample: no signal"
            out.numeric.append((entry, observed))
            out.rows.append(ColumnDraft(name, "numeric", dtype, f"[{low}, {high}] ({observed})"))
            continue
        elif pd.api.types.is_numeric_dtype(series):
            why = "holds infinite values: no range can be drawn; land them as empty values"
        elif _is_time(series):
            why = "a date/time is not a feature; derive numbers from it (a day of week, an age) if useful"
        elif not _all_strings(values):
            why = f"mixed value types ({', '.join(sorted({type(v).__name__ for v in values}))})"
        else:
            categories = sorted({str(v) for v in values})
            if len(categories) > max_categories or len(categories) >= len(values):
                why = (
                    f"{len(categories)} distinct values in {len(values)} rows: too many for a categorical "
                    f"(--max-categories {max_categories}); add it with its categories if it is one"
                )
            else:
                entry = {"name": name, "categories": categories}
                if limit:
                    entry["max_null_fraction"] = limit
                out.categorical.append((entry, nulls.removeprefix(", ")))
                shown = ", ".join(categories[:6]) + (", …" if len(categories) > 6 else "")
                out.rows.append(ColumnDraft(name, "categorical", dtype, f"{shown}{nulls}"))
                continue
        out.left_out.append((name, why))
        out.rows.append(ColumnDraft(name, "left_out", dtype, why))
    return out


def draft_spec(
    df: pd.DataFrame,
    *,
    name: str,
    target: str,
    source: str = "a data sample",
    task: str = "binary",
    id_column: str | None = None,
    time_column: str | None = None,
    margin: float = DEFAULT_MARGIN,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    today: dt.date | None = None,
) -> Draft:
    """A starting spec for the model ``name`` from the rows of ``df``.

    Args:
        df: the sample, as read by :func:`read_sample`.
        name: the spec's name (lower case, digits and ``_``).
        target: the target column: binary 0/1 (1 the positive class), multiclass labels (integers or
            strings), regression numbers.
        source: where the sample came from (said in the file's header comment).
        task: ``binary`` (default), ``multiclass`` (the labels seen become ``data.classes``) or
            ``regression`` (the range seen, widened by ``margin``, becomes ``data.target_min``/``max``).
        id_column: the row id column; guessed (a unique integer/string column named like ``*_id``) if
            ``None``.
        time_column: the event time column; guessed (a date/datetime column) if ``None``.
        margin: how far numeric ranges are widened past what the sample holds, as a share of the
            observed range on each side.
        max_categories: string columns with more distinct values are left out.
        today: the date in the header comment (default: today, UTC).

    Raises:
        SpecDraftError: a bad argument, or a sample that cannot make a valid spec (no id, no event
            time, a target the task cannot take, no usable features); the message says what to change.
    """
    if not _NAME.match(name):
        raise SpecDraftError(
            f"--name {name!r}: a spec name is lower case letters, digits and '_', starting with a letter"
        )
    if not 0 <= margin <= 10:
        raise SpecDraftError(
            f"--margin must be between 0 and 10 (a share of the observed range), got {margin}"
        )
    if max_categories < 1:
        raise SpecDraftError(f"--max-categories must be at least 1, got {max_categories}")
    if df.empty:
        raise SpecDraftError("the sample has no rows")
    found = _check_target(df, target, task)
    if id_column == target:
        raise SpecDraftError(f"--id {id_column!r} is also the target")
    ident = _pick_id(df.drop(columns=[target]), id_column)
    when = _pick_time(df, time_column, {ident, target})
    columns = _features(df, {ident, when, target}, margin, max_categories)
    if not columns.numeric and not columns.categorical:
        left = "; ".join(f"{c}: {why}" for c, why in columns.left_out) or "no other columns"
        raise SpecDraftError(f"no column of the sample can be a feature ({left})")

    notes: list[str] = []
    n = len(df)
    stamps = _datetimes(df[when])
    days = sorted({d.isoformat() for d in stamps.dropna().dt.date.unique()})
    if stamps.isna().any():
        notes.append(
            f"{int(stamps.isna().sum())} rows have no {when}: the contract blocks a window with any of them"
        )
    if found.unlabelled:
        notes.append(
            f"{found.unlabelled} rows have no {target}: the contract blocks unlabelled rows; drop them first"
        )
    class_share = None
    if task != "regression" and found.rarest < 0.01:
        class_share = math.floor(found.rarest / 2 * 1000) / 1000
        notes.append(
            f"the rarest class is {_pct(found.rarest)} of the sample: data.min_class_share set to "
            f"{class_share} (default 0.01) so such a window passes"
        )
    min_rows = min(DRAFT_MIN_ROWS, n)
    per_day = f", about {n / len(days):,.0f} rows a day" if days else ""
    span = f"{days[0]}..{days[-1]}: {len(days)} days{per_day}" if days else "no dates"
    target_lines, target_detail, describe = _target_draft(target, task, found, margin)

    lines = [
        f"# Drafted by `conveyor spec draft` on {(today or dt.datetime.now(dt.UTC).date()).isoformat()} "
        f"from {source}:",
        f"# {n:,} rows, {len(df.columns)} columns, dates {span}.",
        f"# A starting point, not a decision: read every TODO, then run `conveyor spec check {name}`.",
        f"name: {name}",
        _line(0, f"description: {_yaml_flow(f'TODO: {describe}')}"),
        _line(0, f"task: {task}", _TASK_COMMENTS[task]),
        f"registered_model_name: conveyor-{name.replace('_', '-')}",
        _line(0, 'schedule: "0 2 * * *"', "cron, UTC; null: only when triggered"),
        "data:",
        _line(2, f"id_column: {_yaml_flow(ident)}", "unique per row; failing rows are reported by it"),
        _line(2, f"event_time_column: {_yaml_flow(when)}"),
        *target_lines,
        _line(2, "window_days: 7", f"TODO: days of data per training run; sample: {span}"),
        _line(2, f"min_rows: {min_rows}", f"TODO: the fewest rows a normal window holds (sample: {n:,})"),
    ]
    if class_share is not None:
        lines.append(_line(2, f"min_class_share: {class_share}", "TODO: the rarest class is rare here"))
    lines += [
        _line(2, "holdout_fraction: 0.2", "share of the window held out for evaluation and the gate"),
        "  # severities: {expect_column_values_to_be_between: quarantine}  # set failing rows aside instead",
    ]
    if columns.numeric:
        lines += [
            "numeric_features:",
            f"  # min/max: the observed range widened by {margin * 100:g}% of it on each side (non-negative",
            "  # columns stay >= 0). Widen them to what is possible: one value outside fails the contract.",
        ]
        lines += [_line(2, f"- {_yaml_flow(entry)}", why) for entry, why in columns.numeric]
    if columns.categorical:
        lines += [
            "categorical_features:",
            "  # the categories seen in the sample; a value outside them fails the contract",
        ]
        lines += [_line(2, f"- {_yaml_flow(entry)}", why) for entry, why in columns.categorical]
    if columns.left_out:
        lines.append("# Left out (warned of as extra columns; add any that should be a feature):")
        lines += [f"#   {column}: {why}" for column, why in columns.left_out]
    lines += _defaults(task, found, columns)
    text = "\n".join(lines) + "\n"
    try:
        spec = ModelSpec.model_validate(yaml.safe_load(text))
    except (ValidationError, yaml.YAMLError) as exc:  # a bug here, not in the data
        raise AssertionError(f"the drafted spec does not validate:\n{exc}\n---\n{text}") from exc
    rows = [
        ColumnDraft(ident, "id", str(df[ident].dtype), "unique in the sample"),
        ColumnDraft(when, "event_time", str(df[when].dtype), span),
        ColumnDraft(target, "target", str(df[target].dtype), target_detail),
        *columns.rows,
    ]
    return Draft(spec=spec, text=text, columns=rows, notes=notes)


_TASK_COMMENTS = {
    "binary": "a 0/1 target: probability (of 1) and prediction",
    "multiclass": "one label of data.classes: prediction and probability_<label> per class",
    "regression": "a number: prediction",
}


def _target_draft(target: str, task: str, found: _Target, margin: float) -> tuple[list[str], str, str]:
    """The spec's target lines (under ``data:``), the target's row in the column table, and the
    description's question."""
    if task == "multiclass":
        pairs = list(zip(found.classes, found.shares, strict=True))
        shares = ", ".join(f"{c} {_pct(share)}" for c, share in pairs[:10])
        shares += ", …" if len(pairs) > 10 else ""
        lines = [
            _line(
                2, f"target: {_yaml_flow(target)}", f"{len(found.classes)} labels; in the sample: {shares}"
            ),
            _line(
                2,
                f"classes: {_yaml_flow(list(found.classes))}",
                "TODO: every label the target may hold (the order of the probability columns)",
            ),
        ]
        listed = ", ".join(map(str, found.classes[:6])) + (", …" if len(found.classes) > 6 else "")
        return lines, f"{len(found.classes)} labels: {listed}", f"which {target} is a row ({listed})?"
    if task == "regression":
        low, high = _bounds(found.low, found.high, margin, found.integer)
        observed = f"observed {_short(found.low)}..{_short(found.high)}, mean {_short(found.mean)}"
        lines = [
            _line(2, f"target: {_yaml_flow(target)}", f"a number; {observed}"),
            _line(2, f"target_min: {low}", f"TODO: the least value possible (observed range + {margin:.0%})"),
            _line(2, f"target_max: {high}", "TODO: the largest value possible"),
        ]
        return lines, f"[{low}, {high}] ({observed})", f"what {target} will a row have?"
    share = f"1 (positive) is {_pct(found.positive_share)} of the sample"
    return (
        [_line(2, f"target: {_yaml_flow(target)}", f"0/1; {share}")],
        f"1 in {_pct(found.positive_share)} of the rows",
        f"what does the model predict (1 = {target})?",
    )


def _round_up(value: float, step: float = 0.05) -> float:
    return round(math.ceil(value / step - 1e-9) * step, 4)


def _sig(value: float, digits: int = 3) -> float | int:
    """``value`` rounded up to ``digits`` significant digits (a positive ceiling)."""
    if value <= 0:
        return _nice(value)
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return _nice(round(math.ceil(value / step) * step, max(0, -math.floor(math.log10(step)))))


_KERAS_COMMENT = (
    "  # keras_mlp: a Keras MLP with its preprocessing inside the model (params hidden_units,",
    "  # dropout, epochs, batch_size, learning_rate, validation_fraction, patience); it can be",
    "  # compressed to TFLite.",
)


def _defaults(task: str, found: _Target, columns: _Columns) -> list[str]:
    """The trainer, gate, compression, deploy and monitor sections for ``task``."""
    metrics = TASK_METRICS[task]
    primary = metrics[0]
    named = ", ".join(metrics)
    errors = ", ".join(m for m in metrics if m in LOWER_IS_BETTER)
    if task == "regression":
        ceiling = _sig(found.std)
        floors = {primary: ceiling}
        floors_comment = (
            f"TODO: the most {primary} you would ship (a ceiling: lower is better); {ceiling} is the "
            "target's standard deviation in the sample, what predicting its mean scores"
        )
        slice_floors = {primary: ceiling}
        improvement = ("min_improvement: 0", f"in {primary} units; negative: a non-inferiority margin")
        trainer = [
            "  # sklearn_pipeline: impute, scale, one-hot encode, Ridge regression (param alpha).",
            *_KERAS_COMMENT,
            "  kind: sklearn_pipeline",
            "  seed: 42",
            "  params: {alpha: 1.0}",
        ]
        live = [
            _line(
                2,
                f"max_live_rmse: {ceiling}",
                "TODO: alert when the RMSE on labelled predictions rises above this",
            )
        ]
    else:
        if task == "multiclass":
            majority = max(found.shares)
            floor = min(0.99, _round_up(majority + 0.05))
            floors = {primary: floor}
            floors_comment = (
                f"TODO: the least you would ship, per metric ({errors}: ceilings); always predicting the "
                f"commonest label scores {majority:.2f} accuracy"
            )
            slice_floors = {primary: floor}
        else:
            floors = {primary: 0.7}
            floors_comment = f"TODO: the least you would ship, per metric ({errors}: a ceiling)"
            slice_floors = {primary: 0.6}
        improvement = (
            "min_improvement: -0.005",
            "negative: a non-inferiority margin (the challenger may be this much worse)",
        )
        trainer = [
            "  # sklearn_pipeline: impute, scale, one-hot encode, logistic regression (params C, max_iter).",
            *_KERAS_COMMENT,
            "  kind: sklearn_pipeline",
            "  seed: 42",
            "  params: {C: 1.0, max_iter: 1000}",
        ]
        live = [
            _line(
                2,
                "min_live_accuracy: null",
                "TODO: alert when accuracy on labelled predictions falls below this",
            )
        ]
    sliced = (
        f"{{column: {_yaml_flow(columns.categorical[0][0]['name'])}}}"
        if columns.categorical
        else "{column: <numeric feature>, bins: [0, 10, 100]}"
    )
    return [
        "trainer:",
        *trainer,
        "gate:",
        _line(2, f"primary_metric: {primary}", f"{task} metrics: {named}"),
        _line(2, f"floors: {_yaml_flow(floors)}", floors_comment),
        _line(2, *improvement),
        _line(
            2,
            "decide_on: ci_lower_bound",
            "judged on the paired test's lower bound; point_estimate: on the difference",
        ),
        _line(
            2,
            "cold_start: floors_only",
            "the first model needs only the floors; reject: promote the first by hand",
        ),
        _line(
            2,
            "mode: enforce",
            "dry_run: judge, never register; require_approval: a person approves each promotion",
        ),
        f"  # slices: {{columns: [{sliced}], floors: {_yaml_flow(slice_floors)}}}",
        "compression:",
        _line(2, "methods: [none]", "keras_mlp models can try [tflite_dynamic_range]"),
        "  max_metric_drop: 0.01",
        "deploy:",
        _line(
            2,
            "golden_rows: 8",
            "rows replayed against the deployed model; answers must match within the tolerance",
        ),
        "  latency_budget_ms: 250",
        "  golden_tolerance: 0.0001",
        "monitor:",
        _line(
            2,
            "drift_threshold: 0.05",
            "per feature: a drift test's p-value below it (or a distance above it) drifts",
        ),
        _line(2, "drift_share_alert: 0.5", "alert when this share of the features drifted"),
        *live,
        "  lookback_days: 7",
    ]


def draft_table(draft: Draft) -> Table:
    """A rich table of what the draft made of each column."""
    from rich.table import Table
    from rich.text import Text

    styles = {"left_out": "yellow", "id": "cyan", "event_time": "cyan", "target": "magenta"}
    table = Table(title=f"spec {draft.spec.name}: columns", title_justify="left")
    for column in ("column", "role", "dtype", "drafted"):
        table.add_column(column, overflow="fold")
    for row in draft.columns:
        role = row.role.replace("_", " ")
        table.add_row(Text(row.name), Text(role, style=styles.get(row.role, "")), row.dtype, Text(row.detail))
    return table


# -- checking ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecProblem:
    """One reason a spec file does not load: the field (``data.min_rows``, ``(file)``) and why."""

    field: str
    message: str


class SpecInvalidError(ValueError):
    """A spec file that does not load; :attr:`problems` lists what is wrong, field by field."""

    def __init__(self, path: Path, problems: list[SpecProblem]) -> None:
        self.path = path
        self.problems = problems
        listed = "; ".join(f"{p.field}: {p.message}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s): {listed}")


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(spec)"


def validation_problems(exc: ValidationError) -> list[SpecProblem]:
    """One row per pydantic error: the field's dotted path and the message (without pydantic's
    ``Value error,`` prefix)."""
    return [
        SpecProblem(_field(tuple(error["loc"])), str(error["msg"]).removeprefix("Value error, "))
        for error in exc.errors()
    ]


def resolve_spec_path(spec: str, specs_dir: Path) -> Path:
    """``spec`` as a path if it names a file or ends in ``.yaml``/``.yml``, else ``<specs_dir>/<spec>.yaml``.

    Raises:
        FileNotFoundError: no such file (the message lists the known specs).
    """
    path = Path(spec)
    if path.suffix not in (".yaml", ".yml") and "/" not in spec:
        path = specs_dir / f"{spec}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in specs_dir.glob("*.yaml"))
        raise FileNotFoundError(f"no spec file {path}; specs in {specs_dir}: {known}")
    return path


def load_spec_file(path: Path) -> ModelSpec:
    """Parse and validate one spec file.

    Raises:
        SpecInvalidError: unreadable YAML, not a mapping, or a spec :class:`ModelSpec` rejects.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecInvalidError(path, [SpecProblem("(file)", f"cannot read it: {exc}")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        why = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise SpecInvalidError(path, [SpecProblem("(file)", f"not valid YAML{where}: {why}")]) from exc
    if not isinstance(raw, dict):
        problem = SpecProblem("(file)", f"a spec is a YAML mapping, this file holds {type(raw).__name__}")
        raise SpecInvalidError(path, [problem])
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecInvalidError(path, validation_problems(exc)) from exc


def contract_checks(spec: ModelSpec) -> list[tuple[str, str | None]]:
    """``(check, column)`` of every expectation :func:`conveyor.data.contracts.build_suite` builds for
    ``spec``, in its order, without importing Great Expectations (a test keeps the two in step for every
    shipped spec, so for each task type). The checks Conveyor runs next to the suite are
    :func:`conveyor.data.contracts.conveyor_checks`."""
    data = spec.data
    checks: list[tuple[str, str | None]] = [("expect_column_to_exist", c) for c in spec.columns]
    checks += [
        ("expect_table_row_count_to_be_between", None),
        ("expect_column_values_to_not_be_null", data.id_column),
        ("expect_column_values_to_be_unique", data.id_column),
        ("expect_column_values_to_not_be_null", data.event_time_column),
    ]
    for numeric in spec.numeric_features:
        checks += [
            ("expect_column_values_to_be_in_type_list", numeric.name),
            ("expect_column_values_to_not_be_null", numeric.name),
        ]
        if numeric.min is not None or numeric.max is not None:
            checks.append(("expect_column_values_to_be_between", numeric.name))
    for categorical in spec.categorical_features:
        checks += [
            ("expect_column_values_to_not_be_null", categorical.name),
            ("expect_column_values_to_be_in_set", categorical.name),
        ]
    checks.append(("expect_column_values_to_not_be_null", data.target))
    if spec.task == "regression":
        checks.append(("expect_column_values_to_be_in_type_list", data.target))
        if data.target_min is not None or data.target_max is not None:
            checks.append(("expect_column_values_to_be_between", data.target))
    else:
        checks.append(("expect_column_values_to_be_in_set", data.target))
    return checks


def _fmt(value: Any) -> str:
    return _yaml_flow(value) if isinstance(value, dict | list | tuple) else str(value)


#: Short names of the contract's checks, for people.
_CHECK_NAMES = {
    "expect_column_to_exist": "column present",
    "expect_table_row_count_to_be_between": "row count",
    "expect_column_values_to_not_be_null": "not null",
    "expect_column_values_to_be_unique": "unique id",
    "expect_column_values_to_be_in_type_list": "numeric type",
    "expect_column_values_to_be_between": "in range",
    "expect_column_values_to_be_in_set": "in set",
    "class_share": "class shares",
}


def _contract_lines(spec: ModelSpec) -> tuple[list[str], list[str]]:
    from conveyor.data.contracts import CLASS_SHARE_CHECK, FailedCheck, conveyor_checks, severity_of

    data = spec.data
    table = [(c, data.target if c == CLASS_SHARE_CHECK else None) for c in conveyor_checks(spec)]
    checks = contract_checks(spec) + table + [("label_mix", None)]
    severities = dict(data.severities)
    if "quarantine" in severities.values():
        checks.append(("quarantine_share", None))
    graded = [
        (c, col, severity_of(spec, FailedCheck(expectation=c, column=col, detail=""))) for c, col in checks
    ]
    kinds = Counter(_CHECK_NAMES.get(c, c) for c, _, _ in graded)
    by_severity: dict[str, list[str]] = {}
    for check, column, severity in graded:
        by_severity.setdefault(severity, []).append(f"{check}:{column}" if column else check)
    counts = []
    for severity in ("block", "warn", "quarantine"):
        named = by_severity.get(severity, [])
        if named:
            listed = f" ({', '.join(named)})" if severity != "block" and len(named) <= 8 else ""
            counts.append(f"{len(named)} {severity}{listed}")
    lines = [
        f"{len(graded)} checks: " + "; ".join(counts),
        "by kind: " + ", ".join(f"{kind} {n}" for kind, n in kinds.items()),
        f"rows per window: at least {data.min_rows:,}"
        + ("" if data.max_rows is None else f", at most {data.max_rows:,}"),
        _target_contract(spec),
        _label_mix_line(spec),
    ]
    if "quarantine" in severities.values():
        lines.append(
            f"quarantined rows are set aside; more than {data.max_quarantine_share:g} of a batch fails it"
        )
    if severities:
        lines.append("severities set by the spec: " + _fmt(severities))
    warnings = []
    known = {c for c, _, _ in graded} | {f"{c}:{col}" for c, col, _ in graded if col is not None}
    for key in severities:
        if key not in known:
            warnings.append(f"data.severities key {key!r} matches no check of this spec: a typo?")
    return lines, warnings


def _target_contract(spec: ModelSpec) -> str:
    """The target's part of the data contract, in words."""
    data = spec.data
    if spec.task == "regression":
        low = "-inf" if data.target_min is None else f"{data.target_min:g}"
        high = "inf" if data.target_max is None else f"{data.target_max:g}"
        bounds = (
            f", within [{low}, {high}]"
            if data.target_min is not None or data.target_max is not None
            else " (unbounded: data.target_min/target_max unset)"
        )
        return f"target {data.target}: a number, not null{bounds}"
    labels = _labels(spec.classes)
    positive = f" (positive label {data.positive_label!r})" if spec.task == "binary" else ""
    return (
        f'target {data.target}: one of {labels}{positive} ("3" is the label 3), not null; each class at '
        f"least {data.min_class_share:g} of the rows (class_share)"
    )


def _labels(classes: tuple[Any, ...], shown: int = 12) -> str:
    listed = ", ".join(repr(c) for c in classes[:shown])
    return f"[{listed}{', …' if len(classes) > shown else ''}]"


def _label_mix_line(spec: ModelSpec) -> str:
    limit = spec.data.max_label_shift
    if spec.task == "regression":
        return (
            f"label_mix (when a champion exists): the share of rows at most each of the champion window's "
            f"target quantiles (10/25/50/75/90%) moving more than {limit:g}"
        )
    return (
        f"label_mix (when a champion exists): a class share moving more than {limit:g} from the champion's "
        "training window"
    )


def _source_line(spec: ModelSpec, data_root: str) -> str:
    """Where the window comes from, in words (no credentials: a SQL source names its connection)."""
    source = spec.data.source
    if source.kind == "files":
        return f"reads {source.format} files under {source.uri}/{source.partition}=YYYY-MM-DD/"
    if source.kind == "sql":
        return f"runs its SQL query through the Airflow connection {source.conn_id!r} for each window"
    return f"reads {data_root.rstrip('/')}/landing/{spec.name}/date=YYYY-MM-DD/*.parquet"


def spec_plan(
    spec: ModelSpec, *, data_root: str = "<data root>"
) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """What each stage does with ``spec``: ``[(stage, lines)]``, and warnings about likely mistakes
    (settings that validate but do nothing, or not what they seem to say)."""
    from conveyor.pyfunc_outputs import output_columns

    data, gate = spec.data, spec.gate
    metric_names = spec.metric_names
    columns = output_columns(spec.task, spec.classes)
    warnings: list[str] = []
    schedule = f"on cron {spec.schedule!r} (UTC)" if spec.schedule else "only when triggered"
    sections: list[tuple[str, list[str]]] = [
        (
            "model",
            [
                f"{spec.name}: {spec.description or '(no description)'}",
                f"registered as {spec.registered_model_name}; DAG conveyor_train_{spec.name} runs {schedule}",
                f"task {spec.task}: {_task_line(spec)}",
                f"scored on {', '.join(metric_names)}",
            ],
        ),
        (
            "data",
            [
                _source_line(spec, data_root),
                f"window: the {data.window_days} day(s) ending at the run's window end",
                f"rows named by {data.id_column}, dated by {data.event_time_column}, "
                f"{'valued' if spec.task == 'regression' else 'labelled'} by {data.target}",
                f"{len(spec.numeric_features)} numeric and {len(spec.categorical_features)} categorical "
                f"features; {data.holdout_fraction:g} of the window held out for evaluation",
            ],
        ),
    ]
    contract, contract_warnings = _contract_lines(spec)
    warnings += contract_warnings
    sections.append(("validate (data contract)", contract))

    trainer = spec.trainer
    train = [f"{trainer.kind}, seed {trainer.seed}, params {_fmt(dict(trainer.params)) or '{}'}"]
    entrypoint = getattr(trainer, "entrypoint", None)
    if entrypoint:
        train.append(f"calls {entrypoint} with the params")
    defaults = _trainer_defaults(trainer.kind, spec.task)
    if defaults is not None:
        unset = {k: v for k, v in defaults.items() if k not in trainer.params}
        if unset:
            train.append(f"defaults for the rest: {_fmt(unset)}")
        unknown = sorted(set(trainer.params) - set(defaults))
        if unknown:
            warnings.append(
                f"trainer.params {unknown} are not parameters of {trainer.kind}: they are ignored"
            )
    if spec.tuning is not None:
        tuning = spec.tuning
        budget = " and ".join(
            part
            for part in (
                f"{tuning.n_trials} trials" if tuning.n_trials else "",
                f"{tuning.timeout_minutes:g} min" if tuning.timeout_minutes else "",
            )
            if part
        )
        train.append(
            f"tunes {sorted(tuning.space)} first (Optuna, seeded TPE) on "
            f"{tuning.metric or spec.gate.primary_metric} within {budget}, then refits on the best"
        )
    sections.append(("train", train))

    primary = gate.primary_metric
    direction = "lower is better" if primary in LOWER_IS_BETTER else "higher is better"
    floors = (
        ", ".join(f"{m} {'<=' if m in LOWER_IS_BETTER else '>='} {v:g}" for m, v in gate.floors.items())
        or "none"
    )
    judged = (
        f"the lower bound of the paired {gate.confidence:.0%} interval "
        f"({'McNemar' if primary == 'accuracy' else f'bootstrap, {gate.n_boot} resamples'}"
        f"{f' of the decrease in {primary}' if primary in LOWER_IS_BETTER else ''})"
        if gate.decide_on == "ci_lower_bound"
        else "the observed difference (point estimate; the interval is only reported)"
    )
    units = f" {primary} {'lower' if primary in LOWER_IS_BETTER else 'higher'}"
    if gate.min_improvement > 0:
        rule = f"the challenger must beat the champion by at least {gate.min_improvement:g} ({units.strip()})"
    elif gate.min_improvement == 0:
        rule = "the challenger must be at least as good as the champion"
    else:
        rule = (
            f"non-inferiority margin: the challenger may be at most {-gate.min_improvement:g} worse than "
            f"the champion ({primary} {'higher' if primary in LOWER_IS_BETTER else 'lower'})"
        )
    gate_lines = [
        f"primary metric {primary} ({direction}); floors: {floors}",
        f"vs the champion: {rule}, judged on {judged}",
        "cold start (no champion): "
        + ("the floors alone decide" if gate.cold_start == "floors_only" else "rejected; promote by hand"),
        "mode "
        + {
            "enforce": "enforce: a pass registers the challenger, a fail rejects it",
            "dry_run": "dry_run: judged and reported, nothing registered",
            "require_approval": "require_approval: a pass waits for a person's approval",
        }[gate.mode],
    ]
    if gate.slices.columns:
        sliced = ", ".join(
            c.column + (f" bins {list(c.bins)}" if c.bins else " (by category)") for c in gate.slices.columns
        )
        gate_lines.append(
            f"slices: {sliced}; floors {_fmt(dict(gate.slices.floors)) if gate.slices.floors else 'none'} "
            f"on slices of at least {gate.slices.min_rows} rows"
        )
        if not gate.slices.floors:
            warnings.append("gate.slices lists columns but no floors: slices are reported, never judged")
    else:
        gate_lines.append("slices: none")
    for where, metrics in (("gate.floors", gate.floors), ("gate.slices.floors", gate.slices.floors)):
        for metric in metrics:
            if metric not in metric_names:
                known = ", ".join(metric_names)
                warnings.append(f"{where} names {metric!r}, not a {spec.task} metric ({known}): it fails")
    sections.append(("gate", gate_lines))

    methods = [m for m in spec.compression.methods if m != "none"]
    if not methods:
        compress = ["none: the trained model is registered as it is"]
    elif trainer.kind != "keras_mlp":
        compress = [f"{methods} need a Keras model: this {trainer.kind} model ships uncompressed"]
        warnings.append(f"compression.methods {methods} do nothing for a {trainer.kind} trainer")
    else:
        worse = "rises" if primary in LOWER_IS_BETTER else "drops"
        compress = [
            f"tries {', '.join(methods)}; a variant is kept if {primary} {worse} by at most "
            f"{spec.compression.max_metric_drop:g}, else the uncompressed model"
        ]
    sections.append(("compress", compress))

    deploy = spec.deploy
    sections.append(
        (
            "deploy",
            [
                f"serves the {spec.task} output contract: columns {', '.join(columns)}",
                f"{deploy.golden_rows} golden rows replayed; predictions must match within "
                f"{deploy.golden_tolerance:g}",
                f"p95 latency budget {deploy.latency_budget_ms:g} ms",
            ],
        )
    )
    monitor = spec.monitor
    if spec.task == "regression":
        live = (
            f"alert when the RMSE on labelled predictions rises above {monitor.max_live_rmse:g}"
            if monitor.max_live_rmse is not None
            else "live RMSE: no ceiling (monitor.max_live_rmse unset)"
        )
    else:
        live = (
            f"alert when accuracy on labelled predictions falls below {monitor.min_live_accuracy:g}"
            if monitor.min_live_accuracy is not None
            else "live accuracy: no floor (monitor.min_live_accuracy unset)"
        )
    live += f"; labelled predictions are scored on {', '.join(metric_names)}"
    sections.append(
        (
            "monitor",
            [
                f"the last {monitor.lookback_days} day(s) of predictions against the training data",
                f"a feature drifts at threshold {monitor.drift_threshold:g}; alert when "
                f"{monitor.drift_share_alert:g} of the features drift",
                live,
            ],
        )
    )
    return sections, warnings


def _task_line(spec: ModelSpec) -> str:
    """What the model predicts, in words."""
    if spec.task == "regression":
        return f"predicts the number {spec.data.target}"
    if spec.task == "binary":
        return (
            f"predicts whether {spec.data.target} is {spec.data.positive_label!r} "
            f"(of {_labels(spec.classes)})"
        )
    return f"predicts one of {len(spec.classes)} labels of {spec.data.target}: {_labels(spec.classes)}"


def _trainer_defaults(kind: str, task: str = "binary") -> dict[str, Any] | None:
    """The built-in trainer's default params for ``task``; ``None`` for a trainer whose params are
    its own."""
    if kind == "keras_mlp":
        from conveyor.training.keras_mlp import DEFAULT_PARAMS as keras_defaults

        return dict(keras_defaults)
    if kind == "sklearn_pipeline":
        from conveyor.training import sklearn_pipeline

        by_task = getattr(sklearn_pipeline, "default_params", None)
        return dict(by_task(task)) if callable(by_task) else dict(sklearn_pipeline.DEFAULT_PARAMS)
    return None
