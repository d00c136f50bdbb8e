"""Every gate decision, enforced under the real scheduler on the embedded stack.

One stack for the module (Airflow scheduler, triggerer and API server, MLflow server, model server)
with two test specs of its own: ``gatebc`` (scikit-learn's breast-cancer data, a fast trainer) and
``gatebc_cold`` (the same, with ``cold_start: reject``). Their schedule is off, so only the runs
this module triggers exist. Each scenario is one DAG run triggered through the REST API, and each
asserts what the registry shows before and after (versions, ``challenger``, ``champion``, the
ledger) and that the model server still answers a fixed row as it did. Scenarios that need a
challenger the gate rejects edit the spec's floor to one no model can meet (tasks read the spec at
run time; the DAG's shape does not depend on floors).

The scenarios run in file order and share the registry: the seed run makes v1 champion; the
override and the approval each add one version.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.e2e import failure_logs, running_stack, stack_environment, states, wait_for_champion
from support.specs import write_spec

from conveyor.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "gatebc"
COLD = "gatebc_cold"
TRAIN = f"conveyor_train_{MODEL}"
TRAIN_COLD = f"conveyor_train_{COLD}"
DEPLOY = "conveyor_deploy"
REGISTERED = "conveyor-gate-bc"
REGISTERED_COLD = "conveyor-gate-bc-cold"
IMPOSSIBLE = {"roc_auc": 1.01}  # no model reaches a ROC AUC above 1
NOT_REGISTERED = {"promote": "skipped", "compress": "skipped", "register": "skipped"}


def _write_spec(specs: Path, name: str, registered: str, **gate: Any) -> None:
    write_spec(specs, name, registered, gate=gate)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any, Path]]:
    def specs(folder: Path) -> None:
        _write_spec(folder, MODEL, REGISTERED)
        _write_spec(folder, COLD, REGISTERED_COLD, cold_start="reject")

    with running_stack(tmp_path_factory.mktemp("gate-stack"), specs) as running:
        yield running


@pytest.fixture(scope="module")
def env(stack: tuple[Settings, Any, Path]) -> Iterator[dict[str, Any]]:
    """This process reads the stack's data root, specs and MLflow; both models' data has landed."""
    from conveyor.config import load_spec
    from conveyor.data.generate import breast_cancer_batches, land_batch
    from conveyor.registry.tracking import client_for
    from conveyor.serving.client import ModelServerClient

    settings, info, specs = stack
    with stack_environment(settings, info, specs):
        today = datetime.now(UTC).date()
        for name in (MODEL, COLD):
            spec = load_spec(name)
            for day, frame in breast_cancer_batches(spec, spec.data.window_days, today, seed=0):
                land_batch(spec, frame, day)
        af = info.airflow_client()
        for dag_id in (TRAIN, TRAIN_COLD, DEPLOY):
            af.wait_for_dag(dag_id, timeout=240, unpause=True)
        spec = load_spec(MODEL)
        frame = breast_cancer_batches(spec, 1, today, seed=0)[0][1]
        row = frame.sort_values(spec.data.id_column).iloc[:1][spec.feature_names].to_dict(orient="records")
        server = ModelServerClient(info.model_server_url, token=info.model_server_token)
        yield {
            "af": af,
            "mlflow": client_for(info.mlflow_url),
            "server": server,
            "specs": specs,
            "today": today.isoformat(),
            "row": row,
            "user": af.username,
        }
        server.close()


@contextmanager
def edited_gate(specs: Path, **gate: Any) -> Iterator[None]:
    """``gatebc`` with these gate fields, for the duration of the block."""
    path = specs / f"{MODEL}.yaml"
    original = path.read_text()
    _write_spec(specs, MODEL, REGISTERED, **gate)
    try:
        yield
    finally:
        path.write_text(original)


def impossible_floor(specs: Path) -> Any:
    """``gatebc`` with a floor no challenger meets, for the duration of the block."""
    return edited_gate(specs, floors=IMPOSSIBLE)


def registry(env: dict[str, Any], registered: str = REGISTERED) -> dict[str, Any]:
    """What the registry and the server show now."""
    from conveyor.registry.aliases import get_alias_version, ledger

    mlflow = env["mlflow"]
    versions = sorted(int(v.version) for v in mlflow.search_model_versions(f"name='{registered}'"))
    champion = get_alias_version(mlflow, registered, "champion")
    served = None
    if registered == REGISTERED and champion is not None:
        served = round(env["server"].predict(MODEL, env["row"])[0]["probability"], 9)
    return {
        "versions": versions,
        "challenger": get_alias_version(mlflow, registered, "challenger"),
        "champion": champion,
        "ledger": len(ledger(mlflow, registered, limit=500)),
        "served": served,
    }


def run_dag(env: dict[str, Any], conf: dict[str, Any], dag_id: str = TRAIN) -> tuple[str, dict, dict]:
    """One DAG run on today's window; it retrains on the same rows unless ``conf`` says otherwise."""
    af = env["af"]
    run_id = af.trigger(dag_id, conf={"window_end": env["today"], "force_retrain": True, **conf})
    run = af.wait_for_run(dag_id, run_id, timeout=900)
    return run_id, run, states(af, dag_id, run_id)


def assert_not_promoted(env: dict[str, Any], run_id: str, run: dict, got: dict, dag_id: str = TRAIN) -> None:
    assert run["state"] == "success", (got, failure_logs(env["af"], dag_id, run_id))
    assert got["evaluate_gate"] == "success" and got["not_promoted"] == "success", got
    assert {k: got[k] for k in NOT_REGISTERED} == NOT_REGISTERED, got


def gate_run_tags(env: dict[str, Any], run_id: str, model: str = MODEL) -> dict[str, str]:
    """Tags of the DAG run's MLflow run, after checking the gate report is attached to it."""
    mlflow = env["mlflow"]
    experiment = mlflow.get_experiment_by_name(f"conveyor/{model}")
    (mlrun,) = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`conveyor.dag_run_id` = '{run_id}'"
    )
    artifacts = {a.path for a in mlflow.list_artifacts(mlrun.info.run_id, "gate")}
    assert {"gate/report.json", "gate/report.md"} <= artifacts, artifacts
    return dict(mlrun.data.tags)


def test_seed_a_passing_challenger_is_registered_and_deployed(env: dict[str, Any]) -> None:
    before = registry(env)
    assert before["versions"] == [] and before["champion"] is None
    run_id, run, got = run_dag(env, {"gate_mode": "enforce"})
    assert run["state"] == "success", (got, failure_logs(env["af"], TRAIN, run_id))
    assert got["promote"] == "success" and got["register"] == "success", got
    assert got["await_approval"] == "skipped" and got["not_promoted"] == "skipped", got
    champion, deploys = wait_for_champion(env["af"], env["mlflow"], REGISTERED, DEPLOY)
    assert champion == "1" and all(d["state"] == "success" for d in deploys), deploys
    after = registry(env)
    assert after["versions"] == [1] and after["challenger"] == "1" and after["served"] is not None
    version = env["mlflow"].get_model_version(REGISTERED, "1")
    assert version.tags["conveyor.promotion"] == "gate"
    assert version.tags["conveyor.promoted_by"] == env["user"] == version.tags["conveyor.triggered_by"]


def test_unchanged_data_ends_the_run_before_training(env: dict[str, Any]) -> None:
    before = registry(env)
    run_id, run, got = run_dag(env, {"gate_mode": "enforce", "force_retrain": False})
    assert run["state"] == "success", (got, failure_logs(env["af"], TRAIN, run_id))
    assert got["validate_data"] == "success" and got["data_changed"] == "success", got
    skipped = {t: s for t, s in got.items() if t not in ("validate_data", "data_changed")}
    assert set(skipped.values()) == {"skipped"}, got  # train, the gate, promote, compress, register
    assert registry(env) == before
    mlflow = env["mlflow"]
    experiment = mlflow.get_experiment_by_name(f"conveyor/{MODEL}")
    (mlrun,) = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`conveyor.dag_run_id` = '{run_id}'"
    )
    assert mlrun.data.tags["conveyor.outcome"] == "unchanged_data"
    log = env["af"].task_log(TRAIN, run_id, "validate_data", 1)
    assert "unchanged data" in log and "force_retrain" in log, log[-2000:]


def test_a_slice_below_its_floor_blocks_promotion_and_is_named(env: dict[str, Any]) -> None:
    before = registry(env)
    slices = {"columns": [{"column": "mean_radius", "bins": [0, 14, 50]}], "floors": {"accuracy": 1.01}}
    with edited_gate(env["specs"], slices=slices):
        run_id, run, got = run_dag(env, {"gate_mode": "enforce"})
    assert_not_promoted(env, run_id, run, got)
    assert registry(env) == before
    log = env["af"].task_log(TRAIN, run_id, "not_promoted", 1)
    assert "slice:mean_radius∈[0, 14):accuracy" in log, log[-2000:]
    assert "floor:roc_auc" not in log.split("failing:")[-1].split(";")[0], log[-2000:]
    mlflow = env["mlflow"]
    tags = gate_run_tags(env, run_id)
    assert tags["conveyor.gate"] == "reject"
    experiment = mlflow.get_experiment_by_name(f"conveyor/{MODEL}")
    (mlrun,) = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`conveyor.dag_run_id` = '{run_id}'"
    )
    figures = {a.path for a in mlflow.list_artifacts(mlrun.info.run_id, "gate")}
    assert {"gate/roc.png", "gate/confusion.png", "gate/slices.png", "gate/importance.png"} <= figures


def test_dry_run_evaluates_and_reports_but_registers_nothing(env: dict[str, Any]) -> None:
    before = registry(env)
    run_id, run, got = run_dag(env, {"gate_mode": "dry_run"})
    assert_not_promoted(env, run_id, run, got)
    assert registry(env) == before
    assert gate_run_tags(env, run_id)["conveyor.gate"] == "dry_run"
    # the gate task's log links the report's MLflow run (no credentials in it)
    log_text = env["af"].task_log(TRAIN, run_id, "evaluate_gate", 1)
    url = re.search(r"MLflow run: (http://\S+/#/experiments/\d+/runs/\w+)", log_text)
    assert url is not None and "@" not in url.group(1), log_text[-2000:]
    # and the task instance's "MLflow gate report" button (an operator extra link) opens the same run
    links = env["af"].extra_links(TRAIN, run_id, "evaluate_gate")
    assert links == {"MLflow gate report": url.group(1)}, links


def test_dry_run_with_force_still_registers_nothing(env: dict[str, Any]) -> None:
    before = registry(env)
    run_id, run, got = run_dag(env, {"gate_mode": "dry_run", "force": True, "justification": "try it"})
    assert_not_promoted(env, run_id, run, got)
    assert registry(env) == before


def test_enforce_rejects_a_challenger_below_its_floor(env: dict[str, Any]) -> None:
    before = registry(env)
    with impossible_floor(env["specs"]):
        run_id, run, got = run_dag(env, {"gate_mode": "enforce"})
    assert_not_promoted(env, run_id, run, got)
    assert got["await_approval"] == "skipped", got
    assert registry(env) == before
    tags = gate_run_tags(env, run_id)
    assert tags["conveyor.gate"] == "reject" and tags["conveyor.gate_passed"] == "false"
    log = env["af"].task_log(TRAIN, run_id, "not_promoted", 1)
    assert "floor:roc_auc" in log and "NOT promoted" in log, log[-2000:]


def test_a_failing_challenger_in_require_approval_mode_asks_nobody(env: dict[str, Any]) -> None:
    before = registry(env)
    with impossible_floor(env["specs"]):
        run_id, run, got = run_dag(env, {"gate_mode": "require_approval"})
    assert_not_promoted(env, run_id, run, got)
    assert got["await_approval"] == "skipped", got
    assert registry(env) == before


def test_override_without_justification_fails_at_the_first_task_once(env: dict[str, Any]) -> None:
    before = registry(env)
    run_id, run, got = run_dag(env, {"force": True})
    assert run["state"] == "failed" and got["validate_data"] == "failed", got
    assert all(state in ("upstream_failed", None) for task, state in got.items() if task != "validate_data")
    (ti,) = [t for t in env["af"].task_instances(TRAIN, run_id) if t["task_id"] == "validate_data"]
    assert ti["try_number"] == 1, ti  # a deterministic failure is not retried
    assert "needs a justification" in env["af"].task_log(TRAIN, run_id, "validate_data", 1)
    assert registry(env) == before


def test_override_with_justification_registers_flagged_as_an_override(env: dict[str, Any]) -> None:
    from conveyor.registry.aliases import ledger

    before = registry(env)
    why = "INC-1234: the floor is being recalibrated; accepted by the model owner"
    with impossible_floor(env["specs"]):
        run_id, run, got = run_dag(env, {"gate_mode": "enforce", "force": True, "justification": why})
    assert run["state"] == "success", (got, failure_logs(env["af"], TRAIN, run_id))
    assert got["promote"] == "success" and got["register"] == "success", got
    assert gate_run_tags(env, run_id)["conveyor.gate"] == "reject"  # the verdict stays on record
    version = env["mlflow"].search_model_versions(
        f"name='{REGISTERED}' and tags.`conveyor.dag_run_id` = '{run_id}'"
    )
    (mv,) = version
    assert mv.tags["conveyor.override"] == "true" and mv.tags["conveyor.override_justification"] == why
    assert mv.tags["conveyor.promotion"] == "override" and mv.tags["conveyor.promoted_by"] == env["user"]
    assert mv.tags["conveyor.gate"] == "forced: reject"
    (entry,) = ledger(env["mlflow"], REGISTERED, alias="challenger", limit=1)
    assert entry.to_version == mv.version and entry.actor == env["user"]
    assert entry.details["override"] is True and why in entry.reason
    champion, _ = wait_for_champion(env["af"], env["mlflow"], REGISTERED, DEPLOY)
    after = registry(env)
    assert after["versions"] == [*before["versions"], int(mv.version)]
    assert after["challenger"] == champion == mv.version
    assert after["ledger"] >= before["ledger"] + 2  # challenger, then champion after the deploy


def _await_approval(env: dict[str, Any]) -> str:
    af = env["af"]
    conf = {"window_end": env["today"], "gate_mode": "require_approval", "force_retrain": True}
    run_id = af.trigger(TRAIN, conf=conf)
    af.wait_for_task_state(TRAIN, run_id, "await_approval", ["awaiting_input", "deferred"], timeout=600)
    time.sleep(5)  # a person reads the request before answering
    detail = af.hitl_detail(TRAIN, run_id, "await_approval")
    assert detail["options"] == ["Approve", "Reject"] and detail["subject"].startswith("Promote"), detail
    assert "Gate report: http://" in (detail.get("body") or ""), detail
    return run_id


def answer(env: dict[str, Any], run_id: str, option: str, attempts: int = 3) -> dict[str, Any]:
    """Answer ``await_approval`` as a person in Required Actions would, again if Airflow asks again.

    Airflow 3.3 races when the answer comes before the scheduler has processed the worker's "task
    paused" event (seconds on a busy machine): the event then lands on the re-queued task, which is
    marked up_for_retry and asks again in a new try. A person sees the request reappear and answers
    it once more; so does this.
    """
    af = env["af"]

    def task() -> dict[str, Any]:
        (ti,) = [t for t in af.task_instances(TRAIN, run_id) if t["task_id"] == "await_approval"]
        return ti

    for _ in range(attempts):
        asked_in = task()["try_number"]
        given = af.respond_hitl(TRAIN, run_id, "await_approval", [option])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ti = task()
            if ti["state"] in ("success", "failed", "skipped"):
                return given
            if ti["try_number"] > asked_in and ti["state"] in ("awaiting_input", "deferred"):
                break  # asked again
            time.sleep(1)
        else:
            raise AssertionError(f"await_approval of {run_id} did not finish after the answer: {task()}")
    raise AssertionError(f"await_approval of {run_id} asked {attempts} times")


def test_require_approval_rejected_by_a_person_registers_nothing(env: dict[str, Any]) -> None:
    before = registry(env)
    run_id = _await_approval(env)
    given = answer(env, run_id, "Reject")
    assert given["responded_by"]["name"] == env["user"]
    run = env["af"].wait_for_run(TRAIN, run_id, timeout=600)
    got = states(env["af"], TRAIN, run_id)
    assert run["state"] == "success" and got["await_approval"] == "success", got
    assert {k: got[k] for k in NOT_REGISTERED} == NOT_REGISTERED, got
    assert got["not_promoted"] == "skipped", got
    assert registry(env) == before


def test_require_approval_approved_by_a_person_registers_on_their_word(env: dict[str, Any]) -> None:
    from conveyor.registry.aliases import ledger

    before = registry(env)
    run_id = _await_approval(env)
    answer(env, run_id, "Approve")
    run = env["af"].wait_for_run(TRAIN, run_id, timeout=600)
    got = states(env["af"], TRAIN, run_id)
    assert run["state"] == "success", (got, failure_logs(env["af"], TRAIN, run_id))
    assert got["promote"] == "success" and got["register"] == "success", got
    (mv,) = env["mlflow"].search_model_versions(
        f"name='{REGISTERED}' and tags.`conveyor.dag_run_id` = '{run_id}'"
    )
    assert mv.tags["conveyor.promotion"] == "approval" and mv.tags["conveyor.approved_by"] == env["user"]
    assert "conveyor.override" not in mv.tags
    (entry,) = ledger(env["mlflow"], REGISTERED, alias="challenger", limit=1)
    assert entry.to_version == mv.version and entry.actor == env["user"]
    assert entry.details["promotion"]["how"] == "approval" and entry.details["override"] is False
    champion, _ = wait_for_champion(env["af"], env["mlflow"], REGISTERED, DEPLOY)
    after = registry(env)
    assert champion == mv.version and after["versions"] == [*before["versions"], int(mv.version)]
    # the same data and seed train the same model: the newly served champion answers as before
    assert after["served"] == pytest.approx(before["served"], abs=1e-6)


def test_cold_start_reject_keeps_the_first_model_out(env: dict[str, Any]) -> None:
    before = registry(env, REGISTERED_COLD)
    assert before["versions"] == [] and before["champion"] is None
    run_id, run, got = run_dag(env, {"gate_mode": "enforce"}, dag_id=TRAIN_COLD)
    assert_not_promoted(env, run_id, run, got, dag_id=TRAIN_COLD)
    assert registry(env, REGISTERED_COLD) == before
    tags = gate_run_tags(env, run_id, model=COLD)
    assert tags["conveyor.gate"] == "reject"


def test_history_and_the_model_page_show_every_move(env: dict[str, Any]) -> None:
    """After the runs above: `conveyor history` prints the ledger, the MLflow model page the latest moves."""
    from typer.testing import CliRunner

    from conveyor.cli import app
    from conveyor.registry.aliases import MOVES_BEGIN, MOVES_END, ledger

    entries = ledger(env["mlflow"], REGISTERED, limit=100)
    moves = {(e.alias, e.from_version, e.to_version) for e in entries}
    # seed, override, approval: three challenger moves and three deploys; nothing else moved
    assert {(a, t) for a, _, t in moves} == {(a, v) for a in ("challenger", "champion") for v in "123"}
    assert len(entries) == 6, entries
    home = ["--home", str(env["specs"].parent)]  # the stack's home (each test gets its own by default)
    result = CliRunner().invoke(app, [*home, "history", MODEL], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "→" in line and "v" in line]
    assert len(lines) == 6, result.output
    assert "- → v1" in result.output and "v1 → v2" in result.output and "v2 → v3" in result.output
    assert "OVERRIDE" in result.output and env["user"] in result.output
    assert "PASSED (enforce)" in result.output and "PASSED (require_approval)" in result.output
    only = CliRunner().invoke(app, [*home, "history", MODEL, "--alias", "champion"], env={"COLUMNS": "300"})
    assert only.exit_code == 0 and "challenger" not in only.output.split("moves, newest first")[1]
    description = env["mlflow"].get_registered_model(REGISTERED).description
    assert MOVES_BEGIN in description and MOVES_END in description
    newest = entries[0]
    assert f"| {newest.alias} | v{newest.from_version} → v{newest.to_version} |" in description
    unknown = CliRunner().invoke(app, [*home, "history", "no_such_model"])
    assert unknown.exit_code == 1 and "no_such_model" in unknown.output


@pytest.mark.browser
def test_the_trigger_form_submits_in_a_browser(
    env: dict[str, Any], stack: tuple[Settings, Any, Path]
) -> None:
    """A person in Chromium: log in, open each training DAG's form, trigger with defaults and dry_run."""
    from support import browser

    assert browser.missing() is None, browser.missing()
    _, info, _ = stack
    af = env["af"]
    started = datetime.now(UTC)
    with browser.chromium() as driver:
        browser.log_in(driver, info.airflow_url, info.airflow_username, info.airflow_password)
        for dag_id in (TRAIN_COLD, TRAIN):  # the form comes from the same code for every spec
            browser.open_trigger_form(driver, info.airflow_url, dag_id)
            assert browser.form_errors(driver) == [], dag_id
        browser.submit(driver)  # TRAIN, every Param at its default
        browser.open_trigger_form(driver, info.airflow_url, TRAIN)
        browser.choose(driver, "gate_mode", "dry_run")
        browser.submit(driver)
    runs = browser.wait_for(
        af, lambda a: (r := a.dag_runs(TRAIN, run_after_gte=started)) and len(r) >= 2 and r, what="two runs"
    )
    by_mode = {run["conf"]["gate_mode"]: run for run in runs}
    assert set(by_mode) == {"spec", "dry_run"}, [r["conf"] for r in runs]
    for run in runs:
        assert run["conf"].get("window_end") in (None, ""), run["conf"]
        assert run["conf"]["force"] is False and run["triggered_by"] == "ui", run
    dry = by_mode["dry_run"]
    finished = af.wait_for_run(TRAIN, dry["dag_run_id"], timeout=900)
    got = states(af, TRAIN, dry["dag_run_id"])
    assert finished["state"] == "success", (got, failure_logs(af, TRAIN, dry["dag_run_id"]))
    # the form's force_retrain defaults to off, and the champion was trained on exactly this window:
    # the run ends as "unchanged data" before training, and registers nothing
    assert dry["conf"]["force_retrain"] is False, dry["conf"]
    assert got["data_changed"] == "success" and got["train"] == "skipped", got
    assert got["register"] == "skipped", got
    default = by_mode["spec"]["dag_run_id"]
    af.wait_for_task_state(TRAIN, default, "validate_data", ["success"], timeout=600)
