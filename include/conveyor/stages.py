"""The stage boundary: what the pipeline's stages take and hand on, as frozen pydantic models.

Every stage of :mod:`conveyor.pipeline` takes the :class:`RunContext` and the results of the stages
before it, and returns one of these models. Between Airflow tasks they travel as XCom in their small
JSON form (:meth:`StageModel.xcom`); a stage accepts either the model or that JSON
(:meth:`StageModel.of`), so a DAG task, the CLI, a benchmark or a test calls it the same way.

* ``validate_data`` → :class:`Validated` (the DAG's ``data_changed`` reads ``unchanged``)
* ``train`` → :class:`TrainResult`
* ``evaluate_gate`` → :class:`GateOutcome` (the ``gate`` branch reads ``register`` and
  ``await_approval``; the approval's message ``reasons`` and ``report_url``; the task's "MLflow gate
  report" button ``report_url``)
* ``promote`` → :class:`conveyor.evaluation.promotion.Promotion`
* ``compress`` → :class:`CompressionResult`
* ``register`` → :class:`Registered`

Every model is frozen and forbids unknown keys: a renamed or misspelt key fails where it is read,
naming the field, instead of turning into ``None`` three tasks later. Data and models live in the
data root and in MLflow; only their URIs and small summaries are here. The MLflow tracking URI (it
may carry credentials) is never part of any of them.

Imported by the pipeline at module level and by DAG tasks inside their bodies: pydantic and
Conveyor's light modules only (numpy, through the gate's models; no pandas, no MLflow).
``TrainResult`` and ``CompressionResult`` are defined here, not in ``conveyor.training`` and
``conveyor.compression`` (which re-export them), because those packages import pandas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conveyor.data.snapshot import SnapshotInfo
from conveyor.errors import PermanentError
from conveyor.evaluation.gate import GateDecision
from conveyor.registry.versions import RegisterResult

__all__ = [
    "CompressionResult",
    "GateMode",
    "GateOutcome",
    "Registered",
    "RunContext",
    "StageContractError",
    "StageModel",
    "TrainResult",
    "TuningSummary",
    "Validated",
    "VariantReport",
]


class StageContractError(PermanentError, ValueError):
    """A stage was handed a result that is not what the stage before it returns (a broken contract)."""


#: The run's ``gate_mode`` param: ``spec`` keeps the spec's ``gate.mode``.
GateMode = Literal["spec", "enforce", "dry_run", "require_approval"]


class StageModel(BaseModel):
    """A stage's input or result: frozen, no unknown keys, small JSON for XCom."""

    # NaN metrics (ROC AUC on a one-class set) travel as "NaN" and are read back as NaN.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    def xcom(self) -> dict[str, Any]:
        """The model as small plain JSON (what an Airflow task returns).

        ``model_dump(mode="json")``, except that NaN and infinities are strings, as in
        ``model_dump_json`` (``mode="json"`` leaves them floats, which strict JSON has no words for).
        """
        return dict(json.loads(self.model_dump_json()))

    @classmethod
    def of(cls, value: Self | Mapping[str, Any]) -> Self:
        """``value`` itself when it is one already, else the model read from its XCom JSON.

        Raises:
            StageContractError: the JSON lacks a field, has an unknown one, or a wrong type; the
                message names the field. It is permanent: the same XCom fails the same way on a retry.
        """
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise StageContractError(f"{cls.__name__} from an upstream stage's result: {exc}") from exc

    @model_validator(mode="before")
    @classmethod
    def _drop_computed_fields(cls, data: Any) -> Any:
        """Computed fields are in the JSON (``GateDecision.promote``) but derived, not read back."""
        if isinstance(data, Mapping) and cls.model_computed_fields:
            return {k: v for k, v in data.items() if k not in cls.model_computed_fields}
        return data


class RunContext(StageModel):
    """The DAG run a stage works for: who and what, and the params it was triggered with.

    Built by each DAG task from its Airflow context (never sent through XCom). The params keep the
    trigger form's names.

    Attributes:
        model: The model spec's name.
        dag_id: The training DAG's id.
        dag_run_id: The DAG run's id; it keys the MLflow run, the snapshot and the model version.
        triggered_by: The Airflow user who triggered the run (``None``: the scheduler).
        window_end: The last landed day to train on, ``YYYY-MM-DD`` (checked by ``validate_data``).
        window_days: The window's length in days (``None``: the spec's ``data.window_days``).
        gate_mode: ``spec`` (the spec's ``gate.mode``) or a mode that replaces it for this run.
        compression: Compression methods for this run (``None``: the spec's).
        force: Override the gate (needs ``justification``; never applies to ``dry_run``).
        justification: Why the override.
        force_retrain: Train even when the window is the champion's training data.
        commit: The git commit of the model code and specs this run trains (``conveyor ci`` sets
            it; ``None``: the worker's own checkout). Recorded as the ``conveyor.git_commit``
            lineage tag, so it is not repeated in :meth:`params`.
    """

    model: str
    dag_id: str
    dag_run_id: str
    triggered_by: str | None = None
    window_end: str
    window_days: int | None = Field(default=None, ge=1)
    gate_mode: GateMode = "spec"
    compression: tuple[str, ...] | None = None
    force: bool = False
    justification: str | None = None
    force_retrain: bool = False
    commit: str | None = Field(default=None, max_length=200)

    def params(self) -> dict[str, Any]:
        """The run's params as JSON (the ``conveyor.params`` lineage tag), less ``commit``."""
        return self.model_dump(
            mode="json", exclude={"model", "dag_id", "dag_run_id", "triggered_by", "commit"}
        )


class Validated(StageModel):
    """What ``validate_data`` found in the window and froze (or why it froze nothing).

    Attributes:
        run_id: The DAG run's MLflow run.
        dag_run_id: The DAG run.
        fingerprint: The kept rows' fingerprint (``sha256:<hex>``).
        rows: Rows validated, before quarantine.
        checks: Checks evaluated.
        quarantined_rows: Rows set aside (checks of severity ``quarantine``).
        quarantine_uri: Where they were written (``None``: none).
        label_mix: The kept rows' label shares.
        unchanged: The kept rows are exactly those the ``champion`` was trained on: nothing was
            frozen and the run ends (unless ``force_retrain``).
        champion_version: That champion (``unchanged`` only).
        snapshot: The frozen train/eval snapshot (``None`` exactly when ``unchanged``).
    """

    run_id: str
    dag_run_id: str
    fingerprint: str
    rows: int
    checks: int
    quarantined_rows: int = 0
    quarantine_uri: str | None = None
    label_mix: dict[str, float] = {}
    unchanged: bool
    champion_version: str | None = None
    snapshot: SnapshotInfo | None = None

    @model_validator(mode="after")
    def _snapshot_unless_unchanged(self) -> Self:
        if self.unchanged and (self.snapshot is not None or self.champion_version is None):
            raise ValueError("an unchanged window has a champion_version and no snapshot")
        if not self.unchanged and self.snapshot is None:
            raise ValueError("a changed window needs its snapshot")
        return self


class TuningSummary(StageModel):
    """How a spec's ``tuning:`` search went (``TrainResult.tuning``; the version's ``conveyor.tuning``).

    Attributes:
        metric: The metric the trials were scored by on the evaluation rows; ``direction`` orients it.
        best_value: The best trial's ``metric``; ``best_params`` its sampled params (the final model's).
        trials: Trials started; ``failed`` of them raised.
        seconds: The search's wall time (the final fit excluded); ``budget_seconds`` and
            ``budget_trials`` the spec's budget (``None``: not set).
        stopped_by: ``n_trials``, ``timeout`` (the wall budget ran out, or the next trial would not fit
            in what was left of it) or ``reused`` (an earlier try of the task found these params).
    """

    metric: str
    direction: Literal["maximize", "minimize"]
    best_value: float
    best_params: dict[str, Any]
    trials: int
    failed: int
    seconds: float
    budget_trials: int | None = None
    budget_seconds: float | None = None
    stopped_by: Literal["n_trials", "timeout", "reused"]


class TrainResult(StageModel):
    """What a trainer hands on to the gate, compression and registration (``train``'s result)."""

    run_id: str
    model_uri: str
    trainer: str
    metrics: dict[str, float] = Field(
        description="the task's metrics on the evaluation set (conveyor.config.TASK_METRICS)"
    )
    params: dict[str, Any] = Field(description="effective trainer parameters (spec params + defaults)")
    n_train: int
    n_eval: int
    train_seconds: float
    model_size_bytes: int = Field(description="bytes of the files the serving runtime loads")
    tuning: TuningSummary | None = Field(
        default=None, description="the spec's tuning search, when it has one (params: its best)"
    )


class VariantReport(StageModel):
    """One model variant measured in its serving runtime."""

    method: str
    model_uri: str
    size_bytes: int
    size_ratio: float
    metric: float
    metric_drop: float
    p50_latency_ms: float
    accepted: bool
    reason: str


class CompressionResult(StageModel):
    """What compression decided (``compress``'s result): the model to register and why."""

    chosen: str
    model_uri: str
    primary_metric: str
    max_metric_drop: float
    reason: str
    baseline: VariantReport | None = None
    variants: list[VariantReport] = []


class GateOutcome(GateDecision, StageModel):
    """The gate's decision plus where the DAG goes next (``evaluate_gate``'s result).

    The decision's fields stay at the top level of the JSON: the DAG's ``gate`` branch reads
    ``register`` and ``await_approval``, the approval's message ``reasons`` and ``report_url``, and
    the task's "MLflow gate report" button ``report_url``.

    Attributes:
        registers: Promote now: the gate let it through, or an override (``register`` in the
            JSON; ``register`` itself would shadow ``BaseModel.register``, ABC's method).
        await_approval: A person decides (``require_approval`` mode, a passing challenger).
        forced: An override: ``force`` asked for and needed (the gate alone would not register);
            never for a dry run.
        justification: The override's justification (``forced`` only).
        report_url: The MLflow run page with the gate report (``runs:/<id>`` for a local store).
    """

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    registers: bool = Field(alias="register")
    await_approval: bool
    forced: bool = False
    justification: str | None = None
    report_url: str | None = None

    @classmethod
    def decide(
        cls,
        decision: GateDecision,
        *,
        force: bool = False,
        justification: str | None = None,
        report_url: str | None = None,
    ) -> GateOutcome:
        """Where ``decision`` sends the challenger, with ``force`` (an override) taken into account."""
        forced = force and decision.action not in ("register", "dry_run")
        return cls.model_validate(
            {
                **{name: getattr(decision, name) for name in GateDecision.model_fields},
                "register": decision.action == "register" or forced,
                "await_approval": decision.action == "await_approval" and not forced,
                "forced": forced,
                "justification": ((justification or "").strip() or None) if forced else None,
                "report_url": report_url,
            }
        )


class Registered(RegisterResult, StageModel):
    """The model version ``register`` made (or found) for the DAG run, and the alias now on it."""

    alias: str
