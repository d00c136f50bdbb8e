"""``conveyor ci``: specs, tests, then training runs classified into exit codes, against an
in-memory Airflow (the real :class:`~conveyor.airflow_api.AirflowClient` over a mock transport)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from conveyor import ci
from conveyor.airflow_api import AirflowClient
from conveyor.cli import app
from conveyor.config import DEFAULT_SPECS_DIR

from .fake_runs import FakeTrainingAirflow, Script

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef0123456789abcdef01234567"
URL = "http://airflow.example"
GATE = {
    "action": "reject",
    "passed": False,
    "reasons": ["roc_auc 0.61 < floor 0.80"],
    "report_url": "http://mlflow/r/1",
}
REGISTERED = {"name": "churn", "version": "7", "alias": "challenger", "created": True}


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    for name in ("churn", "breast_cancer"):
        shutil.copy(DEFAULT_SPECS_DIR / f"{name}.yaml", folder)
    return folder


@pytest.fixture
def fake() -> FakeTrainingAirflow:
    return FakeTrainingAirflow()


@pytest.fixture
def connect(fake: FakeTrainingAirflow) -> Any:
    return lambda: (AirflowClient(URL, "admin", "pw", transport=fake.transport()), URL)


def no_airflow() -> Any:
    raise AssertionError("Airflow was contacted although an earlier step failed")


def run(specs: Path, connect: Any, **options: Any) -> tuple[ci.CiReport, str]:
    console = Console(record=True, width=200, force_terminal=False)
    options.setdefault("commit", SHA)
    report = ci.run_ci(ci.CiOptions(**options), specs_dir=specs, connect=connect, console=console, poll=0)
    return report, console.export_text()


# -- classification and exit codes ----------------------------------------------------------------


def test_a_registered_challenger_exits_0_and_the_conf_carries_the_commit(
    specs: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    fake.add_dag("conveyor_train_churn", Script(xcoms={"register": REGISTERED, "evaluate_gate": GATE}))
    report, out = run(specs, connect, models=("churn",), gate_mode="enforce", window_end="2026-11-23")
    assert report.exit_code == 0 and report.failed_step is None
    (result,) = report.runs
    assert (result.outcome, result.version, result.ok) == ("registered", "7", True)
    assert "registered churn v7 as churn@challenger" in out
    assert f"{URL}/dags/conveyor_train_churn/runs/{result.run_id}" in out
    (body,) = fake.triggered
    assert body["conf"] == {
        "force_retrain": True,
        "commit": SHA,
        "gate_mode": "enforce",
        "window_end": "2026-11-23",
    }
    assert body["note"] == f"conveyor ci {SHA[:12]}"


def test_a_gate_rejection_exits_1_with_the_reasons_and_the_report_link(
    specs: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    script = Script.with_states(
        promote="skipped", compress="skipped", register="skipped", not_promoted="success"
    )
    script.xcoms = {"evaluate_gate": GATE}
    fake.add_dag("conveyor_train_churn", script)
    report, out = run(specs, connect, models=("churn",))
    assert report.exit_code == 1 and report.failed_step == "runs"
    assert report.runs[0].outcome == "rejected"
    assert "churn: FAILED: the gate rejected the challenger" in out
    assert "roc_auc 0.61 < floor 0.80" in out and "gate report: http://mlflow/r/1" in out


def test_a_validation_failure_exits_1_with_the_task_log(
    specs: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    tasks = {t: "upstream_failed" for t in ("train", "evaluate_gate", "register")}
    fake.add_dag("conveyor_train_churn", Script.with_states("failed", validate_data="failed", **tasks))
    report, out = run(specs, connect, models=("churn",))
    assert report.exit_code == 1 and report.runs[0].outcome == "invalid_data"
    assert "the data window failed validation" in out
    assert "task validate_data failed" in out and "validate_data line 49" in out


def test_any_other_failure_exits_1_naming_the_failed_task(
    specs: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    fake.add_dag(
        "conveyor_train_churn", Script.with_states("failed", train="failed", register="upstream_failed")
    )
    report, out = run(specs, connect, models=("churn",))
    assert report.exit_code == 1 and report.runs[0].outcome == "failed"
    assert "task train failed" in out and "not run because of it: register" in out


def test_unchanged_data_without_force_retrain_exits_0_with_a_note(
    specs: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    skipped = {t: "skipped" for t in ("train", "evaluate_gate", "gate", "promote", "compress", "register")}
    fake.add_dag("conveyor_train_churn", Script.with_states(data_changed="success", **skipped))
    report, out = run(specs, connect, models=("churn",), force_retrain=False)
    assert report.exit_code == 0 and report.runs[0].outcome == "unchanged"
    assert "unchanged data" in out
    assert fake.triggered[0]["conf"]["force_retrain"] is False


@pytest.mark.parametrize(("passed", "code"), [(True, 0), (False, 1)])
def test_a_dry_run_exits_with_the_gate_verdict(
    specs: Path, fake: FakeTrainingAirflow, connect: Any, passed: bool, code: int
) -> None:
    script = Script.with_states(
        promote="skipped", compress="skipped", register="skipped", not_promoted="success"
    )
    script.xcoms = {"evaluate_gate": {**GATE, "action": "dry_run", "passed": passed}}
    fake.add_dag("conveyor_train_churn", script)
    report, out = run(specs, connect, models=("churn",), gate_mode="dry_run")
    assert report.exit_code == code
    assert f"dry run: the gate {'passed' if passed else 'failed'}" in out


def test_a_person_rejecting_the_challenger_exits_1_naming_them(
    specs: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    script = Script.with_states(
        await_approval="success", promote="skipped", compress="skipped", register="skipped"
    )
    script.xcoms = {"evaluate_gate": {**GATE, "action": "await_approval", "passed": True}}
    script.approval = {"chosen_options": ["Reject"], "responded_by_user": {"id": "2", "name": "bob"}}
    fake.add_dag("conveyor_train_churn", script)
    report, out = run(specs, connect, models=("churn",), gate_mode="require_approval")
    assert report.exit_code == 1 and report.runs[0].outcome == "rejected"
    assert "bob rejected the challenger in Airflow" in out


def test_every_model_is_triggered_before_any_is_followed_and_one_rejection_fails_all(
    specs: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    fake.add_dag("conveyor_train_churn", Script(xcoms={"register": REGISTERED}))
    rejected = Script.with_states(
        promote="skipped", compress="skipped", register="skipped", not_promoted="success"
    )
    rejected.xcoms = {"evaluate_gate": GATE}
    fake.add_dag("conveyor_train_breast_cancer", rejected)
    report, _ = run(specs, connect, all_models=True)
    assert [(r.model, r.outcome) for r in report.runs] == [
        ("breast_cancer", "rejected"),
        ("churn", "registered"),
    ]
    assert report.exit_code == 1
    posts = [i for i, (m, p) in enumerate(fake.calls) if m == "POST" and p.endswith("/dagRuns")]
    first_poll = next(i for i, (m, p) in enumerate(fake.calls) if m == "GET" and "/dagRuns/" in p)
    assert len(posts) == 2 and max(posts) < first_poll


def test_a_paused_dag_fails_without_a_run(specs: Path, fake: FakeTrainingAirflow, connect: Any) -> None:
    fake.add_dag("conveyor_train_churn", Script(), paused=True)
    report, out = run(specs, connect, models=("churn",))
    assert report.exit_code == 1 and report.runs[0].run_id is None and not fake.triggered
    assert "conveyor_train_churn is paused" in out


def test_the_xcom_getter_reads_text_and_native_values_and_none_when_missing(
    fake: FakeTrainingAirflow,
) -> None:
    fake.add_dag("conveyor_train_churn", Script(xcoms={"register": REGISTERED}))
    with AirflowClient(URL, "admin", "pw", transport=fake.transport()) as client:
        run_id = client.trigger("conveyor_train_churn", {})
        assert client.xcom("conveyor_train_churn", run_id, "register") == REGISTERED
        fake.native_xcom = True
        assert client.xcom("conveyor_train_churn", run_id, "register") == REGISTERED
        assert client.xcom("conveyor_train_churn", run_id, "evaluate_gate") is None


# -- the steps before Airflow ---------------------------------------------------------------------


def test_an_invalid_spec_exits_1_before_tests_or_airflow(specs: Path) -> None:
    (specs / "broken.yaml").write_text("name: broken\ndata: {min_rows: -1}\n")
    (specs / "renamed.yaml").write_text((specs / "churn.yaml").read_text())
    report, out = run(specs, no_airflow, models=("churn",), tests=("does-not-matter",))
    assert report.exit_code == 1 and report.failed_step == "specs" and report.tests is None
    assert f"{specs / 'broken.yaml'}: INVALID" in out
    assert "rename the file to churn.yaml" in out
    assert f"{specs / 'churn.yaml'}: valid" in out


TEAM_TESTS: dict[str, Any] = {"tests": ("test_model.py",), "pytest_args": "-p no:cacheprovider -q"}


@pytest.fixture
def team_tests(tmp_path: Path) -> Path:
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "test_model.py").write_text(
        "import os\n\ndef test_ok():\n    assert True\n\n"
        "def test_flag():\n    assert os.environ.get('TEAM_FLAG') != 'broken', 'the model code is broken'\n"
    )
    return folder


def test_failing_tests_exit_1_with_pytests_tail_before_airflow(
    specs: Path, team_tests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_FLAG", "broken")
    report, out = run(specs, no_airflow, models=("churn",), cwd=team_tests, **TEAM_TESTS)
    assert report.exit_code == 1 and report.failed_step == "tests"
    assert report.tests is not None and report.tests.returncode == 1
    assert "the model code is broken" in report.tests.tail and "1 failed, 1 passed" in out


def test_passing_tests_go_on_to_training(
    specs: Path, team_tests: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    fake.add_dag("conveyor_train_churn", Script(xcoms={"register": REGISTERED}))
    report, out = run(specs, connect, models=("churn",), cwd=team_tests, **TEAM_TESTS)
    assert report.tests is not None and report.tests.passed and report.exit_code == 0
    assert "2 passed" in out


def test_no_test_paths_skip_the_tests_with_a_note(
    specs: Path, fake: FakeTrainingAirflow, connect: Any
) -> None:
    fake.add_dag("conveyor_train_churn", Script(xcoms={"register": REGISTERED}))
    report, out = run(specs, connect, models=("churn",))
    assert report.tests == ci.TestsResult(None) and "no test paths given (--tests): skipped" in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "--model"),
        ({"models": ("churn",), "all_models": True}, "--all"),
        ({"models": ("fraud",)}, "no spec for ['fraud']"),
        ({"models": ("churn",), "gate_mode": "yolo"}, "--gate-mode"),
        ({"models": ("churn",), "window_end": "23/11/2026"}, "--window-end"),
        ({"models": ("churn",), "tests": ("t",), "pytest_args": "-k 'unclosed"}, "--pytest-args"),
    ],
)
def test_usage_errors_are_raised_before_anything_runs(
    specs: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ci.CiUsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(specs, no_airflow, **options)


# -- the commit --------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "repo"
    folder.mkdir()
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    yield folder, head.stdout.strip()


def test_the_commit_is_the_option_then_git_head_then_the_ci_variables(
    repo: tuple[Path, str], tmp_path: Path
) -> None:
    folder, head = repo
    env = {"GITHUB_SHA": "github", "CI_COMMIT_SHA": "gitlab", "GIT_COMMIT": "jenkins"}
    assert ci.resolve_commit(" abc123 ", cwd=folder, env=env) == "abc123"
    assert ci.resolve_commit(None, cwd=folder, env=env) == head
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    assert ci.resolve_commit(None, cwd=not_a_repo, env=env) == "jenkins"
    assert (
        ci.resolve_commit(None, cwd=not_a_repo, env={"CI_COMMIT_SHA": "gitlab", "GITHUB_SHA": "gh"}) == "gh"
    )
    assert ci.resolve_commit(None, cwd=not_a_repo, env={"CI_COMMIT_SHA": "gitlab"}) == "gitlab"
    assert ci.resolve_commit("", cwd=not_a_repo, env={"GIT_COMMIT": " "}) is None


# -- the command line ------------------------------------------------------------------------------


def test_the_cli_maps_usage_errors_to_2_and_failed_steps_to_1(
    specs: Path, conveyor_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_SPECS_DIR", str(specs))
    monkeypatch.delenv("CONVEYOR_AIRFLOW_PASSWORD", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["ci"], terminal_width=200)
    assert result.exit_code == 2 and "--model" in result.output
    result = runner.invoke(app, ["ci", "--all", "--airflow-url", URL], terminal_width=200)
    assert result.exit_code == 2 and "CONVEYOR_AIRFLOW_PASSWORD" in result.output
    (specs / "broken.yaml").write_text("name: broken\n")
    result = runner.invoke(app, ["ci", "--all", "--commit", SHA], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert f"commit: {SHA}" in result.output and "broken.yaml: INVALID" in result.output
