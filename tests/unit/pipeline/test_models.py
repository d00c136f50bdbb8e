"""The stage boundary's models (``conveyor.stages``): XCom round trips, strictness, size."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from typing import Any

import pydantic
import pytest

from conveyor.data.snapshot import SnapshotInfo
from conveyor.evaluation.gate import GateDecision, PairedTest, SliceResult, decide
from conveyor.evaluation.promotion import Promotion
from conveyor.stages import (
    CompressionResult,
    GateOutcome,
    Registered,
    RunContext,
    StageContractError,
    StageModel,
    TrainResult,
    Validated,
    VariantReport,
)
from unit.registry.support import make_spec

pytestmark = pytest.mark.unit

#: What the DAG's tasks read from XCom by key: these must stay at the top level of the JSON.
DAG_READS = {"unchanged"}, {"register", "await_approval", "reasons", "report_url"}

RUN = RunContext(
    model="churn",
    dag_id="conveyor_train_churn",
    dag_run_id="manual__2026-11-23T10:00:00+00:00",
    triggered_by="alice",
    window_end="2026-11-23",
    window_days=7,
    gate_mode="require_approval",
    compression=("tflite_dynamic_range",),
    force=True,
    justification="INC-42",
)
SNAPSHOT = SnapshotInfo(
    model="churn",
    run_key="manual__2026-11-23T10_00_00_00_00",
    train_uri="file:///data/snapshots/churn/manual__2026-11-23T10_00_00_00_00/train.parquet",
    eval_uri="file:///data/snapshots/churn/manual__2026-11-23T10_00_00_00_00/eval.parquet",
    manifest_uri="file:///data/snapshots/churn/manual__2026-11-23T10_00_00_00_00/manifest.json",
    fingerprint="sha256:" + "ab" * 32,
    rows=13_905,
    train_rows=11_124,
    eval_rows=2_781,
    window_start=dt.date(2026, 11, 17),
    window_end=dt.date(2026, 11, 23),
)
VALIDATED = Validated(
    run_id="0123456789abcdef0123456789abcdef",
    dag_run_id=RUN.dag_run_id,
    fingerprint=SNAPSHOT.fingerprint,
    rows=14_000,
    checks=31,
    quarantined_rows=95,
    quarantine_uri="file:///data/quarantine/churn/manual__2026-11-23T10_00_00_00_00/rows.parquet",
    label_mix={"0": 0.734512, "1": 0.265488},
    unchanged=False,
    snapshot=SNAPSHOT,
)
UNCHANGED = Validated(
    run_id="0123456789abcdef0123456789abcdef",
    dag_run_id=RUN.dag_run_id,
    fingerprint=SNAPSHOT.fingerprint,
    rows=14_000,
    checks=31,
    unchanged=True,
    champion_version="7",
)
METRICS = {"roc_auc": 0.91, "accuracy": 0.86, "precision": 0.8, "recall": 0.7, "f1": 0.75, "log_loss": 0.3}
TRAINED = TrainResult(
    run_id=VALIDATED.run_id,
    model_uri="models:/m-0123456789abcdef0123456789abcdef",
    trainer="keras_mlp",
    metrics=METRICS,
    params={"hidden_units": [32, 16], "epochs": 30, "epochs_trained": 12, "learning_rate": 0.001},
    n_train=11_124,
    n_eval=2_781,
    train_seconds=41.5,
    model_size_bytes=120_331,
)
VARIANT = VariantReport(
    method="tflite_dynamic_range",
    model_uri="models:/m-fedcba9876543210fedcba9876543210",
    size_bytes=31_200,
    size_ratio=0.26,
    metric=0.909,
    metric_drop=0.001,
    p50_latency_ms=0.21,
    accepted=True,
    reason="roc_auc drop 0.0010 within 0.0100; 0.26x the size",
)
COMPRESSED = CompressionResult(
    chosen="tflite_dynamic_range",
    model_uri=VARIANT.model_uri,
    primary_metric="roc_auc",
    max_metric_drop=0.01,
    reason="tflite_dynamic_range: the smallest accepted variant",
    baseline=VARIANT.model_copy(update={"method": "none", "size_ratio": 1.0, "metric_drop": 0.0}),
    variants=[VARIANT],
)
PROMOTION = Promotion(
    how="approval",
    actor="bob",
    triggered_by="alice",
    approved_by="bob",
    gate_action="await_approval",
    gate_passed=True,
)
REGISTERED = Registered(
    name="conveyor-churn",
    version="8",
    model_uri="models:/conveyor-churn/8",
    source=VARIANT.model_uri,
    run_id=VALIDATED.run_id,
    artifact_sha256="ef" * 32,
    created=True,
    alias="challenger",
)


#: The README's slice floors: ``contract`` (3 values) and ``tenure_months`` (3 buckets, one too small).
SLICES = [
    ("contract", "contract=month-to-month", 1_400),
    ("contract", "contract=one-year", 700),
    ("contract", "contract=two-year", 681),
    ("tenure_months", "tenure_months∈[0, 12)", 900),
    ("tenure_months", "tenure_months∈[12, 24)", 600),
    ("tenure_months", "tenure_months∈[24, 120]", 25),
]


def _decision(slices: bool = False) -> GateDecision:
    """A realistic decision: the shipped churn gate (two floors) against a champion, with the paired
    test; ``slices`` adds :data:`SLICES` judged against a ``roc_auc`` floor."""
    # (the toy spec's features are x1, x2: the slice floors are what decide() reads of gate.slices)
    sliced_gate = {
        "columns": [{"column": "x1", "bins": [0, 1, 2]}],
        "floors": {"roc_auc": 0.75},
        "min_rows": 30,
    }
    spec = make_spec(
        floors={"roc_auc": 0.65, "accuracy": 0.65},
        min_improvement=-0.005,
        mode="require_approval",
        **({"slices": sliced_gate} if slices else {}),
    )
    champion = {k: v - 0.01 if k != "log_loss" else v + 0.01 for k, v in METRICS.items()}
    paired = PairedTest(
        metric="roc_auc", delta=0.01, ci_low=0.002, ci_high=0.018, p_value=0.01, n_boot=1000, n_rows=2781
    )
    results = [
        SliceResult(
            column=column, label=label, rows=rows, judged=rows >= 30, challenger=METRICS, champion=champion
        )
        for column, label, rows in SLICES
    ]
    return decide(
        spec, METRICS, champion, paired=paired, champion_version="7", slices=results if slices else None
    )


OUTCOME = GateOutcome.decide(
    _decision(), report_url="https://mlflow.example.com/#/experiments/3/runs/0123456789abcdef0123456789abcdef"
)
MODELS: list[StageModel] = [
    RUN,
    VALIDATED,
    UNCHANGED,
    TRAINED,
    VARIANT,
    COMPRESSED,
    OUTCOME,
    PROMOTION,
    REGISTERED,
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_each_model_round_trips_through_its_xcom_json(model: StageModel) -> None:
    payload = model.xcom()
    assert json.loads(json.dumps(payload)) == payload  # plain JSON
    assert type(model).of(payload) == model
    assert type(model).of(json.loads(json.dumps(payload))) == model
    assert type(model).of(model) is model  # a model is taken as it is


def test_nan_metrics_survive_the_round_trip_as_strings() -> None:
    trained = TRAINED.model_copy(update={"metrics": {**METRICS, "roc_auc": float("nan")}})
    payload = trained.xcom()
    assert payload["metrics"]["roc_auc"] == "NaN"
    json.dumps(payload, allow_nan=False)  # strict JSON
    back = TrainResult.of(payload)
    assert back.metrics["roc_auc"] != back.metrics["roc_auc"]  # NaN


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_an_unknown_key_is_refused_naming_it(model: StageModel) -> None:
    with pytest.raises(StageContractError, match="extra_forbidden") as err:
        type(model).of({**model.xcom(), "reigster": True})
    assert "reigster" in str(err.value)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_models_are_frozen(model: StageModel) -> None:
    field = next(iter(type(model).model_fields))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        setattr(model, field, getattr(model, field))


@pytest.mark.parametrize(
    ("model", "broken", "field"),
    [
        (VALIDATED, {"rows": "many"}, "rows"),
        (VALIDATED, {"fingerprint": None}, "fingerprint"),
        (TRAINED, {"model_uri": None}, "model_uri"),
        (OUTCOME, {"action": "ship_it"}, "action"),
        (REGISTERED, {"version": None}, "version"),
        (RUN, {"gate_mode": "yolo"}, "gate_mode"),
        (RUN, {"window_days": 0}, "window_days"),
    ],
)
def test_a_malformed_xcom_is_refused_naming_the_field(
    model: StageModel, broken: dict[str, Any], field: str
) -> None:
    with pytest.raises(StageContractError) as err:
        type(model).of({**model.xcom(), **broken})
    assert field in {str(e["loc"][0]) for e in err.value.__cause__.errors()}, err.value
    assert field in str(err.value)
    # a broken contract is deterministic: the task fails once, without retries
    from conveyor.errors import PermanentError

    assert isinstance(err.value, PermanentError)


def test_a_missing_field_is_refused_naming_it() -> None:
    payload = OUTCOME.xcom()
    del payload["report_url"], payload["register"]
    with pytest.raises(StageContractError, match="register") as err:
        GateOutcome.of(payload)
    assert [e["loc"] for e in err.value.__cause__.errors()] == [("register",)]  # report_url is optional
    with pytest.raises(StageContractError, match="snapshot"):
        Validated.of({**VALIDATED.xcom(), "snapshot": None})  # a changed window needs its snapshot
    with pytest.raises(StageContractError, match="champion_version"):
        Validated.of({**UNCHANGED.xcom(), "champion_version": None})


def test_the_xcom_of_validated_and_the_gate_outcome_stays_small() -> None:
    for model in (VALIDATED, OUTCOME):
        size = len(json.dumps(model.xcom()))
        assert size < 4_096, f"{type(model).__name__}: {size} bytes of XCom"
    # Slices add their metrics and checks: six of them (the README's example) stay well under 16 KB.
    sliced = GateOutcome.decide(_decision(slices=True), report_url=OUTCOME.report_url)
    assert len(sliced.slices) == 6 and len(json.dumps(sliced.xcom())) < 16_384


def test_the_keys_the_dag_reads_stay_at_the_top_level() -> None:
    validated_keys, gate_keys = DAG_READS
    assert validated_keys <= set(UNCHANGED.xcom()) and UNCHANGED.xcom()["unchanged"] is True
    assert gate_keys <= set(OUTCOME.xcom())
    payload = OUTCOME.xcom()
    assert payload["register"] is OUTCOME.registers is False
    assert payload["await_approval"] is True and payload["action"] == "await_approval"
    assert payload["report_url"].startswith("https://")


def test_the_gate_outcome_is_the_decision_plus_where_it_goes() -> None:
    decision = _decision()
    outcome = GateOutcome.decide(decision, report_url="runs:/abc")
    assert isinstance(outcome, GateDecision)
    assert {k: getattr(outcome, k) for k in GateDecision.model_fields} == dict(decision)
    assert outcome.promote is decision.promote  # the computed field is derived, not read back
    rejected = decision.model_copy(update={"passed": False, "action": "reject"})
    forced = GateOutcome.decide(rejected, force=True, justification="  INC-42 ")
    assert (forced.registers, forced.await_approval, forced.forced, forced.justification) == (
        True,
        False,
        True,
        "INC-42",
    )
    dry = GateOutcome.decide(decision.model_copy(update={"action": "dry_run"}), force=True, justification="x")
    assert (dry.registers, dry.forced, dry.justification) == (False, False, None)
    passed = GateOutcome.decide(
        decision.model_copy(update={"action": "register"}), force=True, justification="x"
    )
    assert (passed.registers, passed.forced, passed.justification) == (True, False, None)


def test_the_run_context_params_are_the_trigger_forms() -> None:
    assert RUN.params() == {
        "window_end": "2026-11-23",
        "window_days": 7,
        "gate_mode": "require_approval",
        "compression": ["tflite_dynamic_range"],
        "force": True,
        "justification": "INC-42",
        "force_retrain": False,
    }


def test_the_trained_and_compressed_models_are_the_training_and_compression_ones() -> None:
    from conveyor import compression, training

    assert training.TrainResult is TrainResult
    assert compression.CompressionResult is CompressionResult and compression.VariantReport is VariantReport


def test_importing_the_models_pulls_in_no_heavy_library() -> None:
    """The pipeline imports them at module level, DAG tasks inside their bodies."""
    code = (
        "import json, sys; import conveyor.stages, conveyor.pipeline\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pandas', 'mlflow', 'sklearn', 'tensorflow', 'keras', 'great_expectations', 'evidently'})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout) == []
