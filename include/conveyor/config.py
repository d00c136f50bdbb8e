"""Typed model specs, one YAML file per model under ``include/specs/``.

A spec says everything the pipeline needs to know about one model: its data contract, trainer,
gate, compression budget, deployment checks and monitoring thresholds. DAGs, the model server and
the CLI all read specs through :func:`load_spec`, so one file drives every stage.

DAG files list the specs at parse time, which the DAG processor repeats every few seconds, so this
module stays light: no pydantic-settings import (see :func:`specs_dir`) and libyaml's C loader.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: ``Settings.specs_dir``'s environment variable and default (``include/specs`` of this checkout).
SPECS_DIR_ENV = "CONVEYOR_SPECS_DIR"
DEFAULT_SPECS_DIR = Path(__file__).resolve().parents[2] / "include" / "specs"
#: libyaml's loader when PyYAML was built with it (several times faster than the pure-Python one).
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: The contract checks whose failing rows can be told apart, so ``data.severities`` may set them to
#: ``quarantine`` (set those rows aside, go on with the rest). Every other check is about the batch as a
#: whole (row count, ``class_share``: each class present and frequent enough, empty days, extra columns,
#: the label mix).
QUARANTINABLE_CHECKS: tuple[str, ...] = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_unique",
    "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "event_time_in_partition",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericFeature(_Frozen):
    name: str
    min: float | None = None
    max: float | None = None
    max_null_fraction: float = 0.0


class CategoricalFeature(_Frozen):
    name: str
    categories: tuple[str, ...]
    max_null_fraction: float = 0.0


#: A SQL source's bind parameters (SQLAlchemy ``text()``'s syntax; ``\:name`` is a literal colon).
SQL_BIND_PARAM = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
#: The bind parameters a SQL source's query must use: the window's first and last day (dates).
SQL_WINDOW_PARAMS: tuple[str, ...] = ("start", "end")


class LandingSource(_Frozen):
    """The landing folder: ``<data root>/landing/<model>/date=YYYY-MM-DD/*.parquet`` (the default)."""

    kind: Literal["landing"] = "landing"


class FilesSource(_Frozen):
    """Parquet or CSV files under any fsspec URI, in hive-style day partitions:
    ``<uri>/<partition>=YYYY-MM-DD/*.parquet`` (or ``*.csv``).

    ``options`` go to ``pandas.read_csv`` (``sep``, ``decimal``, ``encoding``...; CSV only).
    """

    kind: Literal["files"]
    uri: str
    format: Literal["parquet", "csv"] = "parquet"
    partition: str = Field(default="date", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _uri_and_options(self) -> FilesSource:
        if "://" not in self.uri:
            raise ValueError(
                f"data.source.uri {self.uri!r} is not a URI: give its scheme, e.g. s3://bucket/path or "
                "file:///abs/path"
            )
        if self.options and self.format != "csv":
            raise ValueError(
                "data.source.options are pandas.read_csv options and only apply with format: csv; "
                f"drop them for format: {self.format}"
            )
        return self


class SqlSource(_Frozen):
    """A SQL query run through an Airflow connection for each data window.

    The query binds the window's first and last day (dates, both included) as ``:start`` and ``:end``,
    e.g. ``SELECT * FROM events WHERE event_date BETWEEN :start AND :end``.
    """

    kind: Literal["sql"]
    conn_id: str = Field(min_length=1)
    query: str = Field(min_length=1)

    @field_validator("query")
    @classmethod
    def _binds_the_window(cls, query: str) -> str:
        used = set(SQL_BIND_PARAM.findall(query))
        missing = [p for p in SQL_WINDOW_PARAMS if p not in used]
        if missing:
            raise ValueError(
                f"data.source.query must select the data window with the bind parameters :start and :end "
                f"(the window's first and last day, dates); it lacks {', '.join(':' + p for p in missing)}. "
                "E.g. WHERE event_date >= :start AND event_date <= :end"
            )
        unknown = sorted(used - set(SQL_WINDOW_PARAMS))
        if unknown:
            raise ValueError(
                f"data.source.query uses bind parameters Conveyor does not set: "
                f"{', '.join(':' + p for p in unknown)}; only :start and :end are bound (write a literal "
                "colon as \\:)"
            )
        return query


#: ``data.source``: where a model's data comes from, told apart by ``kind``.
DataSource = Annotated[LandingSource | FilesSource | SqlSource, Field(discriminator="kind")]


#: What a model predicts (``task:`` in a spec): one output contract each (``docs/CONTRACTS.md``).
TaskType = Literal["binary", "multiclass", "regression"]
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "regression")
#: A class label of a classification target: an integer or a string, as the data holds it.
Label = int | str


class DataSpec(_Frozen):
    """Where the model's data lands and what every batch must satisfy."""

    id_column: str
    event_time_column: str
    target: str
    window_days: int = Field(default=7, ge=1)
    min_rows: int = Field(default=100, ge=1)
    max_rows: int | None = None
    #: binary: the target value that means "positive" (the model's ``probability`` is P(target == it)).
    positive_label: Label = 1
    #: Classification: the target's label set, in the order of the model's probability columns
    #: (multiclass: required; binary: default ``[0, 1]``, must hold ``positive_label``). A label outside
    #: it fails the contract. Not for regression.
    classes: tuple[Label, ...] | None = None
    #: Regression: the target's allowed range (inclusive; ``None``: unbounded on that side).
    target_min: float | None = None
    target_max: float | None = None
    #: Classification: each class must hold at least this share of a window's rows (a window missing a
    #: class fails validation).
    min_class_share: float = Field(default=0.01, ge=0, lt=0.5)
    #: Severity of a contract check when it fails: ``block`` fails validation (the default for every
    #: check but ``empty_day``, ``extra_columns`` and ``label_mix``, which ``warn``: reported, the run
    #: goes on); ``quarantine`` sets the failing rows aside and goes on with the rest, for the row-level
    #: checks of :data:`QUARANTINABLE_CHECKS` only.
    #: Keys: ``empty_day``, ``extra_columns``, ``event_time_in_partition``, ``label_mix``,
    #: ``quarantine_share``, a GX expectation type (``expect_column_values_to_be_between``) or
    #: ``<expectation type>:<column>``.
    severities: dict[str, Literal["block", "warn", "quarantine"]] = Field(default_factory=dict)
    #: A batch that would lose more than this share of its rows to quarantine fails validation
    #: (check ``quarantine_share``): that many bad rows is a broken feed, not a few bad records.
    max_quarantine_share: float = Field(default=0.05, ge=0, lt=1)
    #: The ``label_mix`` check fails when a class's share of the window moved by more than this
    #: (absolute difference) from the reference mix (the champion's training window); for regression
    #: when the share of targets below one of the reference's 10/25/50/75/90% quantiles moved that much.
    max_label_shift: float = Field(default=0.2, gt=0, le=1)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    #: Where the data comes from: the landing folder (default), files under a URI, or a SQL query.
    source: DataSource = LandingSource()

    @field_validator("severities")
    @classmethod
    def _only_row_checks_quarantine(cls, severities: dict[str, str]) -> dict[str, str]:
        for key, severity in severities.items():
            check = key.split(":", 1)[0]
            if severity == "quarantine" and check not in QUARANTINABLE_CHECKS:
                raise ValueError(
                    f"data.severities[{key!r}] is 'quarantine', but {check!r} is not a row-level check: "
                    "its failing rows cannot be set aside. Only these checks (optionally as "
                    f"'<check>:<column>') can be quarantined: {', '.join(QUARANTINABLE_CHECKS)}; "
                    "use 'block' or 'warn' for it"
                )
        return severities


#: ``trainer.entrypoint``: ``package.module:function``, importable from ``include/`` or an installed package.
ENTRYPOINT_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class TrainerSpec(_Frozen):
    """How the model is trained: a built-in trainer, or ``python``: the user's function ``entrypoint``.

    ``params`` go to the trainer (``kind: python``: to the function as its ``params``); ``seed`` makes
    a run reproducible. See ``docs/TRAINERS.md``.
    """

    kind: Literal["keras_mlp", "sklearn_pipeline", "python"]
    seed: int = 42
    params: dict[str, Any] = Field(default_factory=dict)
    #: ``package.module:function`` of a ``kind: python`` trainer (required there, refused elsewhere).
    entrypoint: str | None = None

    @model_validator(mode="after")
    def _entrypoint_iff_python(self) -> TrainerSpec:
        if self.kind == "python":
            if not self.entrypoint:
                raise ValueError(
                    "trainer.kind 'python' needs trainer.entrypoint: the function that fits the model, "
                    "as 'package.module:function' importable from include/ or an installed package "
                    "(e.g. entrypoint: conveyor_examples.sklearn_gbm:train)"
                )
            if not ENTRYPOINT_PATTERN.match(self.entrypoint):
                raise ValueError(
                    f"trainer.entrypoint {self.entrypoint!r} is not 'package.module:function' "
                    "(dotted module path, one colon, then the function's name; e.g. "
                    "conveyor_examples.sklearn_gbm:train)"
                )
        elif self.entrypoint is not None:
            raise ValueError(
                f"trainer.entrypoint is only read with trainer.kind 'python', not {self.kind!r}; "
                "drop it, or set kind: python to train with that function"
            )
        return self


#: The metrics each task type is scored on, all computed with ``sklearn.metrics``
#: (``conveyor.tasks``); kept import-free here. The first is the gate's default primary metric.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss"),
    "multiclass": (
        "accuracy",
        "f1_macro",
        "f1_weighted",
        "precision_macro",
        "precision_weighted",
        "recall_macro",
        "recall_weighted",
        "log_loss",
        "roc_auc_ovr",
    ),
    "regression": ("rmse", "mae", "r2", "mape"),
}
#: Error metrics: lower is better, so a gate "floor" on one is a ceiling and improvement is a decrease.
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "rmse", "mae", "mape"})
#: Any task's metric name.
MetricName = Literal[
    "roc_auc",
    "accuracy",
    "f1",
    "precision",
    "recall",
    "log_loss",
    "f1_macro",
    "f1_weighted",
    "precision_macro",
    "precision_weighted",
    "recall_macro",
    "recall_weighted",
    "roc_auc_ovr",
    "rmse",
    "mae",
    "r2",
    "mape",
]
#: A tuned parameter's name: a trainer param (an identifier; ``seed`` is ``trainer.seed``, not tuned).
TUNING_PARAM_PATTERN = re.compile(r"^[A-Za-z_]\w*$")


class SearchParam(_Frozen):
    """One tuned parameter's range: ``float`` or ``int`` between ``low`` and ``high`` (``log``: sampled
    log-uniformly; ``step``: on a grid), or ``categorical`` over ``choices``."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: tuple[str | int | float | bool | None, ...] | None = None

    def check(self, name: str) -> None:
        """Raises ``ValueError`` naming ``tuning.space.<name>`` when the range is not a usable one."""
        where = f"tuning.space.{name}"
        if self.type == "categorical":
            if not self.choices:
                raise ValueError(f"{where}: a categorical parameter needs a non-empty list of choices")
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError(f"{where}: choices {list(self.choices)} repeat a value")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError(
                    f"{where}: a categorical parameter takes choices only, not low/high/log/step"
                )
            return
        if self.choices is not None:
            raise ValueError(f"{where}: a {self.type} parameter takes low and high, not choices")
        if self.low is None or self.high is None:
            raise ValueError(f"{where}: a {self.type} parameter needs both low and high")
        if not self.low < self.high:
            raise ValueError(f"{where}: low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"{where}: a log-scale range needs low > 0, not {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError(f"{where}: log and step cannot be combined (a log range has no fixed grid)")
        if self.type == "int":
            bounds = [self.low, self.high] + ([self.step] if self.step is not None else [])
            if any(not float(v).is_integer() for v in bounds):
                raise ValueError(f"{where}: an int parameter needs whole-number low, high and step")
        if self.step is not None and self.step > self.high - self.low:
            raise ValueError(
                f"{where}: step ({self.step:g}) is wider than the range {self.low:g}..{self.high:g}"
            )


class TuningSpec(_Frozen):
    """A hyperparameter search run before the final fit (Optuna, TPE sampler seeded with ``trainer.seed``).

    Each trial fits the spec's trainer with ``{**trainer.params, **<sampled space>}`` and is scored on
    the evaluation rows by ``metric`` (default: ``gate.primary_metric``); the budget is ``n_trials``
    and/or ``timeout_minutes`` (at least one). The final model is fitted once more on the best
    parameters. See ``docs/TUNING.md``.
    """

    #: Default: ``gate.primary_metric``. Must be one of the spec's task metrics.
    metric: MetricName | None = None
    n_trials: int | None = Field(default=None, ge=1)
    timeout_minutes: float | None = Field(default=None, gt=0)
    space: dict[str, SearchParam]

    @model_validator(mode="after")
    def _budget_and_space(self) -> TuningSpec:
        if self.n_trials is None and self.timeout_minutes is None:
            raise ValueError(
                "tuning needs a budget: n_trials (how many trials), timeout_minutes (wall time), or both"
            )
        if not self.space:
            raise ValueError("tuning.space is empty: name at least one trainer param to search")
        for name, param in self.space.items():
            if not TUNING_PARAM_PATTERN.match(name):
                raise ValueError(f"tuning.space key {name!r} is not a parameter name (letters, digits, _)")
            if name == "seed":
                raise ValueError(
                    "tuning.space cannot search 'seed': every trial and the final fit use trainer.seed"
                )
            param.check(name)
        return self


class SliceColumn(_Frozen):
    """One column to slice the evaluation snapshot by: each category, or numeric buckets.

    ``bins`` are bucket edges for a numeric feature (``[0, 12, 24, 120]`` gives ``[0, 12)``,
    ``[12, 24)`` and ``[24, 120]``); a categorical feature is sliced by its values and takes no bins.
    """

    column: str
    bins: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _bins_ascend(self) -> SliceColumn:
        if self.bins is not None and (
            len(self.bins) < 2 or any(b <= a for a, b in zip(self.bins, self.bins[1:], strict=False))
        ):
            raise ValueError(f"slice {self.column!r}: bins must be at least two strictly ascending edges")
        return self


class SliceSpec(_Frozen):
    """Per-slice floors: every slice with at least ``min_rows`` rows must meet each floor.

    Slices with fewer rows are reported, not judged (too few rows to tell noise from a regression).
    """

    columns: tuple[SliceColumn, ...] = ()
    floors: dict[str, float] = Field(default_factory=dict)
    min_rows: int = Field(default=30, ge=1)


class GateSpec(_Frozen):
    """Champion/challenger rule: absolute floors, per-slice floors, then the paired test.

    ``min_improvement`` is what the challenger must gain over the champion on ``primary_metric``,
    judged on the lower bound of the paired confidence interval (``decide_on: ci_lower_bound``, the
    default: a challenger better by noise is not promoted) or on the point estimate
    (``decide_on: point_estimate``). A negative value is a non-inferiority margin: the challenger may
    be at most that much worse, at ``confidence``.
    """

    #: Default: the task's first metric (binary ``roc_auc``, multiclass ``accuracy``, regression ``rmse``).
    primary_metric: MetricName = "roc_auc"
    #: Per metric, the least the challenger may score; for an error metric (``log_loss``, ``rmse``,
    #: ``mae``, ``mape``) the most: a ceiling.
    floors: dict[str, float] = Field(default_factory=dict)
    min_improvement: float = 0.0
    decide_on: Literal["ci_lower_bound", "point_estimate"] = "ci_lower_bound"
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    n_boot: int = Field(default=1000, ge=100)
    slices: SliceSpec = SliceSpec()
    cold_start: Literal["floors_only", "reject"] = "floors_only"
    mode: Literal["enforce", "dry_run", "require_approval"] = "enforce"


class CompressionSpec(_Frozen):
    methods: tuple[Literal["tflite_dynamic_range", "none"], ...] = ("none",)
    max_metric_drop: float = Field(default=0.01, ge=0)


class DeploySpec(_Frozen):
    golden_rows: int = Field(default=8, ge=1)
    latency_budget_ms: float = Field(default=250.0, gt=0)
    golden_tolerance: float = Field(default=1e-4, ge=0)
    #: A served row with values outside the data contract (a numeric feature beyond its min/max, an
    #: unknown category): ``flag`` answers it and marks it ``out_of_contract`` in the prediction log
    #: for monitoring; ``reject`` refuses the request (422 naming column, row and range).
    out_of_contract: Literal["flag", "reject"] = "flag"


class MonitorSpec(_Frozen):
    drift_threshold: float = Field(default=0.1, gt=0, description="p-value / distance threshold per feature")
    drift_share_alert: float = Field(default=0.5, gt=0, le=1)
    #: Classification: alert when accuracy on labelled live predictions falls below this.
    min_live_accuracy: float | None = None
    #: Regression: alert when the RMSE on labelled live predictions rises above this.
    max_live_rmse: float | None = Field(default=None, gt=0)
    lookback_days: int = Field(default=7, ge=1)
    #: Hysteresis: retrain when drift or live quality breached in this many of the last
    #: ``retrain_windows`` windows, the latest included (conveyor.monitoring.decisions).
    retrain_breaches: int = Field(default=2, ge=1)
    retrain_windows: int = Field(default=3, ge=1)
    #: An open incident closes after this many clean windows in a row (one alert per incident).
    incident_clear_windows: int = Field(default=3, ge=1)
    #: Hours after a deploy during which a quality or service breach rolls the new champion back.
    bake_hours: float = Field(default=24.0, ge=0)

    @model_validator(mode="after")
    def _breaches_fit_the_windows(self) -> MonitorSpec:
        if self.retrain_breaches > self.retrain_windows:
            raise ValueError(
                f"monitor.retrain_breaches ({self.retrain_breaches}) cannot exceed monitor.retrain_windows "
                f"({self.retrain_windows}): N breaches are counted in the last M windows"
            )
        return self


class ModelSpec(_Frozen):
    """One model, as declared in ``include/specs/<name>.yaml``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    #: What the model predicts: ``binary`` (default), ``multiclass`` or ``regression``.
    task: TaskType = "binary"
    registered_model_name: str
    schedule: str | None = "0 2 * * *"
    data: DataSpec
    numeric_features: tuple[NumericFeature, ...] = ()
    categorical_features: tuple[CategoricalFeature, ...] = ()
    trainer: TrainerSpec
    #: An optional hyperparameter search before the final fit (``None``: fit ``trainer.params`` as given).
    tuning: TuningSpec | None = None
    gate: GateSpec = GateSpec()
    compression: CompressionSpec = CompressionSpec()
    deploy: DeploySpec = DeploySpec()
    monitor: MonitorSpec = MonitorSpec()

    @model_validator(mode="before")
    @classmethod
    def _task_default_primary_metric(cls, raw: Any) -> Any:
        """A spec that names no ``gate.primary_metric`` gets its task's default one."""
        if not isinstance(raw, dict):
            return raw
        task = raw.get("task", "binary")
        gate = raw.get("gate")
        if task in TASK_METRICS and task != "binary" and (gate is None or isinstance(gate, dict)):
            gate = dict(gate or {})
            gate.setdefault("primary_metric", TASK_METRICS[task][0])
            raw = {**raw, "gate": gate}
        return raw

    @model_validator(mode="after")
    def _target_fits_the_task(self) -> ModelSpec:
        data, task = self.data, self.task
        if task == "regression":
            if data.classes is not None:
                raise ValueError(
                    f"spec {self.name!r}: data.classes is a classification label set; a regression "
                    "target takes data.target_min/target_max instead"
                )
            if (
                data.target_min is not None
                and data.target_max is not None
                and not data.target_min < data.target_max
            ):
                raise ValueError(f"spec {self.name!r}: data.target_min must be below data.target_max")
        else:
            if data.target_min is not None or data.target_max is not None:
                raise ValueError(
                    f"spec {self.name!r}: data.target_min/target_max bound a regression target; a "
                    f"{task} target takes data.classes (its label set)"
                )
            classes = self.classes
            if len(set(classes)) != len(classes):
                raise ValueError(f"spec {self.name!r}: data.classes {list(classes)} repeats a label")
            if task == "binary":
                if len(classes) != 2:
                    raise ValueError(
                        f"spec {self.name!r}: a binary target has two classes, data.classes has "
                        f"{len(classes)}; use task: multiclass for more"
                    )
                if data.positive_label not in classes:
                    raise ValueError(
                        f"spec {self.name!r}: data.positive_label {data.positive_label!r} is not one of "
                        f"data.classes {list(classes)}"
                    )
            elif len(classes) < 2:
                raise ValueError(
                    f"spec {self.name!r}: task multiclass needs data.classes, the target's label set "
                    "(two labels or more, integers or strings), e.g. classes: [setosa, versicolor, virginica]"
                )
        allowed = TASK_METRICS[task]
        used: list[tuple[str, str]] = [("gate.primary_metric", self.gate.primary_metric)]
        used += [("gate.floors", m) for m in self.gate.floors]
        used += [("gate.slices.floors", m) for m in self.gate.slices.floors]
        if self.tuning is not None and self.tuning.metric is not None:
            used.append(("tuning.metric", self.tuning.metric))
        for where, metric in used:
            if metric not in allowed:
                raise ValueError(
                    f"spec {self.name!r}: {where} names {metric!r}, which is not a {task} metric; "
                    f"use one of {', '.join(allowed)}"
                )
        if task == "regression" and self.monitor.min_live_accuracy is not None:
            raise ValueError(
                f"spec {self.name!r}: monitor.min_live_accuracy is for classification; a regression "
                "model takes monitor.max_live_rmse"
            )
        if task != "regression" and self.monitor.max_live_rmse is not None:
            raise ValueError(
                f"spec {self.name!r}: monitor.max_live_rmse is for regression; a {task} model takes "
                "monitor.min_live_accuracy"
            )
        return self

    @property
    def classes(self) -> tuple[Label, ...]:
        """The classification label set (binary default ``(0, 1)``); empty for regression."""
        if self.task == "regression":
            return ()
        if self.data.classes is not None:
            return self.data.classes
        return (0, 1) if self.task == "binary" else ()

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics this spec's models are scored on (its task's)."""
        return TASK_METRICS[self.task]

    @model_validator(mode="after")
    def _features_are_distinct(self) -> ModelSpec:
        names = self.feature_names
        if not names:
            raise ValueError(f"spec {self.name!r} declares no features")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"spec {self.name!r} declares features twice: {duplicated}")
        reserved = {self.data.id_column, self.data.event_time_column, self.data.target}
        if reserved & set(names):
            raise ValueError(f"spec {self.name!r}: id/time/target columns cannot be features")
        numeric = {f.name for f in self.numeric_features}
        for sliced in self.gate.slices.columns:
            if sliced.column not in names:
                raise ValueError(
                    f"spec {self.name!r}: gate.slices column {sliced.column!r} is not a feature; "
                    f"slice by one of {names}"
                )
            if sliced.column in numeric and sliced.bins is None:
                raise ValueError(
                    f"spec {self.name!r}: numeric slice column {sliced.column!r} needs bins (bucket edges)"
                )
            if sliced.column not in numeric and sliced.bins is not None:
                raise ValueError(
                    f"spec {self.name!r}: categorical slice column {sliced.column!r} is sliced by its "
                    "categories and takes no bins"
                )
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.numeric_features] + [f.name for f in self.categorical_features]

    @property
    def columns(self) -> list[str]:
        """Every column a landed batch carries, in order."""
        return [self.data.id_column, self.data.event_time_column, *self.feature_names, self.data.target]


def specs_dir() -> Path:
    """The folder of spec files: the same value as ``conveyor.settings.get_settings().specs_dir``.

    Resolved from the environment the way the settings resolve it (``CONVEYOR_SPECS_DIR``, any case,
    else :data:`DEFAULT_SPECS_DIR`) rather than through them: importing pydantic-settings and building
    the settings was about a fifth of the training DAG file's parse time.
    ``tests/bench/test_parse_cost.py`` holds the two together.
    """
    wanted = SPECS_DIR_ENV.lower()
    for key, value in os.environ.items():
        if key.lower() == wanted:
            return Path(value)
    return DEFAULT_SPECS_DIR


@lru_cache(maxsize=64)
def _load(path: Path, mtime: float) -> ModelSpec:
    with path.open() as fh:
        raw = yaml.load(fh, Loader=_YAML_LOADER)  # a safe loader: CSafeLoader or SafeLoader
    return ModelSpec.model_validate(raw)


def load_spec(name: str) -> ModelSpec:
    """Load and validate ``include/specs/<name>.yaml``.

    Raises:
        FileNotFoundError: no spec of that name; the message lists the known ones.
    """
    path = specs_dir() / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no model spec {name!r} in {specs_dir()}; known: {list_spec_names()}")
    return _load(path, path.stat().st_mtime)


def list_spec_names() -> list[str]:
    return sorted(p.stem for p in specs_dir().glob("*.yaml"))


def load_all_specs() -> list[ModelSpec]:
    """Every spec in the specs folder.

    Raises:
        ValueError or pydantic.ValidationError: a spec file does not validate (see
            :func:`scan_specs` to load the others anyway).
    """
    return [load_spec(n) for n in list_spec_names()]


def scan_specs(folder: Path | None = None) -> tuple[list[ModelSpec], dict[str, str]]:
    """Every spec in ``folder`` (default: the specs folder) that validates, and each bad file's error.

    One bad file never hides the others: its error is returned under its file name (as is a second
    file declaring a model name another file already declares), for the caller to report. The DAG
    file and the model server use it, so a spec added, broken or removed on a running stack never
    takes the other models down.
    """
    folder = specs_dir() if folder is None else Path(folder)
    specs: list[ModelSpec] = []
    errors: dict[str, str] = {}
    declared: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            spec = _load(path, path.stat().st_mtime)
        except Exception as exc:  # any unreadable or invalid file is reported, never raised
            errors[path.name] = f"{type(exc).__name__}: {exc}"[:2000]
            continue
        if spec.name in declared:
            errors[path.name] = (
                f"declares model {spec.name!r}, which {declared[spec.name]} already declares; ignored"
            )
            continue
        declared[spec.name] = path.name
        specs.append(spec)
    return specs, errors
