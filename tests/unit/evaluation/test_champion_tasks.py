"""The gate end to end for multiclass and regression models: real logged pyfuncs scored through their
output frames (``conveyor.tasks``), the champion comparison, and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor import tasks
from conveyor.evaluation.champion import (
    EvaluationDataError,
    ModelScoringError,
    evaluate,
    report_figures,
    score_on_snapshot,
    write_gate_report,
)
from conveyor.registry.aliases import set_alias
from conveyor.registry.tracking import get_or_create_run
from conveyor.registry.versions import register_version
from unit.evaluation.task_support import (
    MC_TRUE,
    MC_WEAK,
    REG_TRUE,
    REG_WEAK,
    log_task_model,
    make_frame,
    make_spec,
    multiclass_proba,
    regression_prediction,
)

pytestmark = pytest.mark.unit

#: Per task: gate fields, the true model's and a weak model's weights, and the expected scores.
CASES: dict[str, dict[str, Any]] = {
    "multiclass": {
        "gate": {"floors": {"accuracy": 0.6, "log_loss": 0.9}, "primary_metric": "f1_macro"},
        "good": MC_TRUE,
        "weak": MC_WEAK,
        "scores": multiclass_proba,
    },
    "regression": {
        "gate": {"floors": {"rmse": 1.5, "r2": 0.8}},
        "good": REG_TRUE,
        "weak": REG_WEAK,
        "scores": regression_prediction,
    },
}


def _spec(task: str) -> Any:
    return make_spec(
        task,
        slices={"columns": [{"column": "plan"}], "floors": {}, "min_rows": 10},
        **CASES[task]["gate"],
    )


def _logged(client: Any, spec: Any, dag_run_id: str, coef: Any, **extra: Any) -> tuple[str, str]:
    run_id = get_or_create_run(client, spec, dag_run_id, f"conveyor_training__{spec.name}")
    return run_id, log_task_model(client, run_id, spec, coef, **extra)


def _make_champion(client: Any, spec: Any, coef: Any) -> str:
    run_id, uri = _logged(client, spec, "scheduled__champion", coef)
    version = register_version(client, spec, uri, run_id, "scheduled__champion", {"gate": "register"}).version
    set_alias(
        client,
        spec.registered_model_name,
        "champion",
        version,
        expected_version=None,
        actor="test",
        reason="seed",
    )
    return version


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_score_on_snapshot_reads_the_tasks_output_frame(client: Any, task: str) -> None:
    spec, frame = _spec(task), make_frame(task, rows=300, seed=3)
    _, uri = _logged(client, spec, "manual__1", CASES[task]["good"])
    scored = score_on_snapshot(uri, spec, frame, client=client)
    expected = CASES[task]["scores"](CASES[task]["good"], frame)
    np.testing.assert_allclose(scored.scores, expected, rtol=1e-12)
    y = tasks.encode_target(spec, frame["label"])
    assert scored.metrics == tasks.metrics(spec, y, expected)
    assert list(scored.metrics) == list(spec.metric_names)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_evaluate_and_report_against_the_champion(client: Any, task: str, tmp_path: Path) -> None:
    spec, frame = _spec(task), make_frame(task, rows=500, seed=4)
    version = _make_champion(client, spec, CASES[task]["weak"])
    run_id, uri = _logged(client, spec, "manual__2", CASES[task]["good"])
    evaluation = evaluate(client, spec, uri, frame, n_boot=200)
    decision = evaluation.decision
    assert decision.task == task and decision.champion_version == version
    assert decision.passed is True and decision.action == "register", decision.reasons
    paired = decision.paired
    assert paired is not None and paired.metric == spec.gate.primary_metric and paired.ci_low > 0
    assert [s.label for s in decision.slices] == ["plan=basic", "plan=pro"]
    assert set(decision.slices[0].challenger) == set(spec.metric_names)

    paths = write_gate_report(client, run_id, evaluation)
    assert paths == ["gate/report.json", "gate/report.md", "gate/metrics.png", *report_figures(task)]
    for figure in paths[2:]:
        png = Path(client.download_artifacts(run_id, figure, str(tmp_path))).read_bytes()
        assert png.startswith(b"\x89PNG"), figure
    markdown = Path(client.download_artifacts(run_id, "gate/report.md", str(tmp_path))).read_text()
    assert f"- task: `{task}`" in markdown
    rows = [line.split(" | ")[0].lstrip("| ").split(" (")[0] for line in markdown.splitlines()]
    table = rows[rows.index("metric") + 2 : rows.index("metric") + 2 + len(spec.metric_names)]
    assert table == list(spec.metric_names)  # the task's metrics, in the task's order
    report = json.loads(
        Path(client.download_artifacts(run_id, "gate/report.json", str(tmp_path))).read_text()
    )
    assert report["task"] == task and set(report["challenger_metrics"]) == set(spec.metric_names)
    assert set(report["importance"]) == {"challenger", f"champion v{version}"}
    assert report["importance"]["challenger"]["metric"] == spec.gate.primary_metric
    metrics = client.get_run(run_id).data.metrics
    first = spec.metric_names[0]
    assert metrics[f"challenger_{first}"] == pytest.approx(decision.challenger_metrics[first])


def test_a_weak_regression_challenger_is_rejected_on_its_ceiling_and_the_champion(client: Any) -> None:
    spec, frame = _spec("regression"), make_frame("regression", rows=400, seed=5)
    _make_champion(client, spec, REG_TRUE)
    _, uri = _logged(client, spec, "manual__weak", REG_WEAK)
    decision = evaluate(client, spec, uri, frame, n_boot=200, explain=False).decision
    assert decision.passed is False
    failing = {c.name for c in decision.checks if not c.passed and not c.informational}
    assert failing == {"floor:rmse", "floor:r2", "paired_bootstrap:rmse"}
    assert decision.paired is not None and decision.paired.ci_high < 0


def test_a_multiclass_model_breaking_its_contract_is_refused(client: Any) -> None:
    spec, frame = _spec("multiclass"), make_frame("multiclass", rows=50)
    _, uri = _logged(client, spec, "manual__bad", MC_TRUE, bad_output=True)
    with pytest.raises(ModelScoringError, match="probabilities that do not sum to 1"):
        score_on_snapshot(uri, spec, frame, client=client)


def test_labels_outside_the_classes_are_a_data_error() -> None:
    spec, frame = _spec("multiclass"), make_frame("multiclass", rows=20)
    frame.loc[3, "label"] = "zebra"
    with pytest.raises(EvaluationDataError, match=r"labels \['zebra'\] outside data.classes"):
        score_on_snapshot("models:/m-never-loaded", spec, frame)
