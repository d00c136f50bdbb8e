from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.evaluation.champion import (
    EvaluationDataError,
    ModelScoringError,
    evaluate,
    report_markdown,
    score_on_snapshot,
    write_gate_report,
)
from conveyor.evaluation.metrics import binary_metrics
from conveyor.registry.aliases import set_alias
from conveyor.registry.tracking import get_or_create_run
from conveyor.registry.versions import register_version
from unit.registry import support

pytestmark = pytest.mark.unit


@pytest.fixture
def spec() -> Any:
    return support.make_spec(floors={"roc_auc": 0.6, "accuracy": 0.5}, min_improvement=0.0)


@pytest.fixture
def eval_df() -> Any:
    return support.make_frame(rows=600, seed=11)


def _logged(client: Any, spec: Any, dag_run_id: str, weights: dict[str, Any]) -> tuple[str, str]:
    run_id = get_or_create_run(client, spec, dag_run_id, "conveyor_training__toy")
    return run_id, support.log_tiny_model(client, run_id, weights)


def _make_champion(client: Any, spec: Any, weights: dict[str, Any]) -> str:
    run_id, uri = _logged(client, spec, "scheduled__champion", weights)
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


def test_score_on_snapshot_scores_the_logged_pyfunc(client: Any, spec: Any, eval_df: Any) -> None:
    _, uri = _logged(client, spec, "manual__1", support.GOOD_WEIGHTS)
    scored = score_on_snapshot(uri, spec, eval_df, client=client)
    expected = support.expected_probability(support.GOOD_WEIGHTS, eval_df)
    np.testing.assert_allclose(scored.scores, expected, rtol=1e-12)
    assert scored.metrics == binary_metrics(eval_df["label"], expected)
    assert scored.model_uri == uri


def test_frame_problems_are_reported_before_loading(spec: Any, eval_df: Any) -> None:
    with pytest.raises(EvaluationDataError, match=r"lacks columns \['x2'\]"):
        score_on_snapshot("models:/m-never-loaded", spec, eval_df.drop(columns=["x2"]))
    with pytest.raises(EvaluationDataError, match="no rows"):
        score_on_snapshot("models:/m-never-loaded", spec, eval_df.iloc[:0])
    unlabeled = eval_df.astype({"label": float})
    unlabeled.loc[3, "label"] = np.nan
    with pytest.raises(EvaluationDataError, match="1 rows without a 'label' label"):
        score_on_snapshot("models:/m-never-loaded", spec, unlabeled)


def test_a_model_breaking_the_output_contract_is_refused(client: Any, spec: Any, eval_df: Any) -> None:
    _, uri = _logged(client, spec, "manual__bad", {**support.GOOD_WEIGHTS, "bad_output": True})
    with pytest.raises(ModelScoringError, match=r"columns \['score'\]"):
        score_on_snapshot(uri, spec, eval_df, client=client)


def test_evaluate_cold_start_passes_on_floors(client: Any, spec: Any, eval_df: Any) -> None:
    _, uri = _logged(client, spec, "manual__1", support.GOOD_WEIGHTS)
    decision = evaluate(client, spec, uri, eval_df).decision
    assert decision.cold_start is True and decision.champion_version is None
    assert decision.passed is True and decision.action == "register"
    assert decision.paired is None


def test_evaluate_against_the_champion_on_the_same_rows(client: Any, spec: Any, eval_df: Any) -> None:
    version = _make_champion(client, spec, support.WEAK_WEIGHTS)
    run_id, uri = _logged(client, spec, "manual__2", support.GOOD_WEIGHTS)
    decision = evaluate(client, spec, uri, eval_df, n_boot=300).decision
    assert decision.champion_version == version and decision.cold_start is False
    champion_p = support.expected_probability(support.WEAK_WEIGHTS, eval_df)
    assert decision.champion_metrics == binary_metrics(eval_df["label"], champion_p)
    assert decision.passed is True and decision.action == "register"
    assert decision.paired is not None and decision.paired.ci_low > 0
    assert decision.paired.n_rows == len(eval_df)
    # and the other way round: a weak challenger against a good champion is rejected
    _, weak_uri = _logged(client, spec, "manual__3", support.WEAK_WEIGHTS)
    set_alias(
        client,
        spec.registered_model_name,
        "champion",
        register_version(client, spec, uri, run_id, "manual__2", {}).version,
        expected_version=version,
        actor="test",
        reason="swap",
    )
    worse = evaluate(client, spec, weak_uri, eval_df, n_boot=300).decision
    assert worse.passed is False and worse.action == "reject"
    assert worse.paired is not None and worse.paired.ci_high < 0


def test_an_unloadable_champion_is_reported_not_skipped(client: Any, spec: Any, eval_df: Any) -> None:
    version = _make_champion(client, spec, {**support.GOOD_WEIGHTS, "fail_on_load": True})
    _, uri = _logged(client, spec, "manual__2", support.GOOD_WEIGHTS)
    decision = evaluate(client, spec, uri, eval_df, n_boot=100).decision
    assert decision.passed is False and decision.action == "reject"
    assert decision.cold_start is False and decision.champion_version == version
    assert decision.champion_error is not None and "fail on load" in decision.champion_error
    assert any(c.name == "champion_scored" and not c.passed for c in decision.checks)


def test_an_unloadable_challenger_raises(client: Any, spec: Any, eval_df: Any) -> None:
    _, uri = _logged(client, spec, "manual__x", {**support.GOOD_WEIGHTS, "fail_on_load": True})
    with pytest.raises(ModelScoringError, match="cannot load model"):
        evaluate(client, spec, uri, eval_df)


def test_write_gate_report_attaches_json_markdown_plot_and_metrics(
    client: Any, spec: Any, eval_df: Any, tmp_path: Path
) -> None:
    _make_champion(client, spec, support.WEAK_WEIGHTS)
    run_id, uri = _logged(client, spec, "manual__2", support.GOOD_WEIGHTS)
    evaluation = evaluate(client, spec, uri, eval_df, n_boot=100)
    decision = evaluation.decision
    paths = write_gate_report(client, run_id, evaluation)
    # no slices in this spec: every figure but the per-slice bars
    assert paths == [
        "gate/report.json",
        "gate/report.md",
        "gate/metrics.png",
        "gate/roc.png",
        "gate/confusion.png",
        "gate/importance.png",
    ]
    assert sorted(a.path for a in client.list_artifacts(run_id, "gate")) == sorted(paths)
    report = json.loads(
        Path(client.download_artifacts(run_id, "gate/report.json", str(tmp_path))).read_text()
    )
    assert report["action"] == "register" and report["reasons"] == decision.reasons
    markdown = Path(client.download_artifacts(run_id, "gate/report.md", str(tmp_path))).read_text()
    assert "| check | value | threshold | result |" in markdown
    assert "| `floor:roc_auc` |" in markdown and "## Paired test (bootstrap)" in markdown
    assert "## Permutation feature importance" in markdown
    assert set(report["importance"]) == {"challenger", f"champion v{decision.champion_version}"}
    for figure in paths[2:]:
        png = Path(client.download_artifacts(run_id, figure, str(tmp_path))).read_bytes()
        assert png.startswith(b"\x89PNG"), figure
    metrics = client.get_run(run_id).data.metrics
    assert metrics["gate_passed"] == 1.0
    assert metrics["challenger_roc_auc"] == pytest.approx(decision.challenger_metrics["roc_auc"])
    assert metrics["champion_roc_auc"] == pytest.approx(decision.champion_metrics["roc_auc"])
    # re-running the task overwrites the same report
    assert write_gate_report(client, run_id, evaluation) == paths


def test_markdown_of_a_cold_start_with_nan() -> None:
    from conveyor.evaluation.gate import decide

    decision = decide(support.make_spec(), {"roc_auc": float("nan"), "accuracy": 0.5}, None, paired=None)
    text = report_markdown(decision)
    assert "none (cold start)" in text and "| roc_auc | NaN | — | — |" in text
    assert "FAILED" in text


def test_a_tampered_champion_is_refused_by_the_gate(client: Any, spec: Any, eval_df: Any) -> None:
    from urllib.parse import urlparse

    version = _make_champion(client, spec, support.WEAK_WEIGHTS)
    stored = Path(urlparse(client.get_model_version_download_uri(spec.registered_model_name, version)).path)
    victim = max((p for p in stored.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    _, uri = _logged(client, spec, "manual__2", support.GOOD_WEIGHTS)
    decision = evaluate(client, spec, uri, eval_df, n_boot=100).decision
    assert decision.passed is False and decision.action == "reject"
    assert decision.champion_error is not None
    assert f"models:/{spec.registered_model_name}/{version}" in decision.champion_error
    assert "sha256" in decision.champion_error and "nothing was loaded" in decision.champion_error


def test_a_challenger_better_only_by_noise_is_not_promoted(client: Any, spec: Any, eval_df: Any) -> None:
    """Two real logged models whose ROC AUC difference lies inside the paired interval."""
    near = {"coef": {"x1": 1.8, "x2": 1.0}, "intercept": 0.0}  # almost the true model's ranking
    _make_champion(client, spec, near)
    _, uri = _logged(client, spec, "manual__noise", support.GOOD_WEIGHTS)
    by_interval = evaluate(client, spec, uri, eval_df, n_boot=300, seed=7, explain=False).decision
    paired = by_interval.paired
    assert paired is not None and paired.delta > 0  # the challenger is better on these rows...
    assert paired.ci_low < 0 < paired.ci_high  # ...by less than the noise of 600 rows
    assert by_interval.passed is False and by_interval.action == "reject"
    check = next(c for c in by_interval.checks if c.name == "paired_bootstrap:roc_auc")
    assert check.passed is False and "within what noise explains" in check.reason
    # the same two models, judged on the point estimate alone, would have promoted the challenger
    point = spec.model_copy(update={"gate": spec.gate.model_copy(update={"decide_on": "point_estimate"})})
    assert evaluate(client, point, uri, eval_df, n_boot=300, seed=7, explain=False).decision.passed is True
    # and a non-inferiority margin wider than the interval's lower bound lets it through
    margin = spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_improvement": -0.005})})
    assert evaluate(client, margin, uri, eval_df, n_boot=300, seed=7, explain=False).decision.passed is True
