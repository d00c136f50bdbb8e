"""``conveyor ci``: what a CI job (Jenkins, GitHub Actions, GitLab CI) runs on a push.

1. :func:`validate_specs`: every spec in the specs dir loads (``conveyor spec check``'s checks, from
   :mod:`conveyor.spec_tools`); one broken spec breaks every training DAG, so all are checked.
2. :func:`run_tests`: the team's tests, ``python -m pytest <paths> <args>`` (skipped when no path).
3. :func:`run_models`: trigger ``conveyor_train_<model>`` for each model through Airflow's REST API
   with the commit in the conf (:func:`training_conf`), follow each run to its end and
   :func:`classify` it.

:func:`run_ci` does the three in order and stops at the first step that fails. Its
:class:`CiReport` carries the exit code: ``0`` when every model's challenger was registered (or, by
choice, nothing needed to be: see :data:`OK_OUTCOMES`), ``1`` when a spec is invalid, a test fails, the
gate rejects or a run fails; usage errors (:class:`CiUsageError`) are ``2``.

The Airflow client is handed in (``connect``), so tests drive this with a fake of the few
:class:`~conveyor.airflow_api.AirflowClient` methods used: ``get_dag``, ``wait_for_dag``, ``trigger``,
``wait_for_run``, ``task_log``, ``xcom`` and ``hitl_detail``.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.text import Text

from conveyor.errors import ConveyorError
from conveyor.spec_tools import SpecInvalidError, SpecProblem, load_spec_file

if TYPE_CHECKING:
    from conveyor.airflow_api import AirflowClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Environment variables CI systems put the built commit in, read in this order after ``git``:
#: Jenkins' git plugin, GitHub Actions, GitLab CI.
COMMIT_ENV_VARS = ("GIT_COMMIT", "GITHUB_SHA", "CI_COMMIT_SHA")
GATE_MODES = ("spec", "enforce", "dry_run", "require_approval")
DEFAULT_RUN_TIMEOUT_S = 3600.0
DEFAULT_DAG_TIMEOUT_S = 120.0

Outcome = Literal[
    "registered", "unchanged", "dry_run_passed", "dry_run_failed", "rejected", "invalid_data", "failed"
]
#: Outcomes that leave the exit code 0: a registered challenger; unchanged data (only with
#: ``force_retrain`` off: the champion was trained on exactly this window, nothing to do); a dry run
#: whose gate passed (dry runs never register).
OK_OUTCOMES: frozenset[str] = frozenset({"registered", "unchanged", "dry_run_passed"})


class CiUsageError(ConveyorError):
    """The command line asks for something impossible (exit code 2)."""


# -- the commit ------------------------------------------------------------------------------------


def git_head(cwd: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` in ``cwd``; ``None`` outside a repository or without git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def resolve_commit(
    explicit: str | None = None, *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The commit the run trains: ``explicit`` (``--commit``), else the checkout's ``HEAD`` in ``cwd``,
    else the first of :data:`COMMIT_ENV_VARS` that is set (a CI job that fetched no ``.git``), else
    ``None`` (the worker's checkout is recorded)."""
    if explicit and explicit.strip():
        return explicit.strip()
    head = git_head(cwd)
    if head:
        return head
    env = os.environ if env is None else env
    for name in COMMIT_ENV_VARS:
        value = (env.get(name) or "").strip()
        if value:
            return value
    return None


# -- step 1: specs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecResult:
    """One spec file: its name when it loads, else the problems (field → why)."""

    path: Path
    name: str | None
    problems: tuple[SpecProblem, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.problems


def validate_specs(specs_dir: Path) -> list[SpecResult]:
    """Load every ``*.yaml`` in ``specs_dir`` with :func:`conveyor.spec_tools.load_spec_file`.

    A spec whose ``name`` is not its file's stem is a problem too: its DAG,
    ``conveyor_train_<name>``, loads ``<name>.yaml`` and would not find it.
    """
    results = []
    for path in sorted(specs_dir.glob("*.yaml")):
        try:
            spec = load_spec_file(path)
        except SpecInvalidError as exc:
            results.append(SpecResult(path, None, tuple(exc.problems)))
            continue
        if spec.name != path.stem:
            problem = SpecProblem(
                "name", f"{spec.name!r} is not the file's name: rename the file to {spec.name}.yaml"
            )
            results.append(SpecResult(path, spec.name, (problem,)))
            continue
        results.append(SpecResult(path, spec.name))
    return results


def select_models(specs: Sequence[SpecResult], models: Sequence[str], all_models: bool) -> list[str]:
    """The models to train: ``models``, or every spec with ``all_models``.

    Raises:
        CiUsageError: neither or both, or a model that has no spec file.
    """
    if all_models == bool(models):
        raise CiUsageError("name the models to train (--model, repeatable) or pass --all")
    known = [s.path.stem for s in specs]
    if all_models:
        return known
    unknown = [m for m in models if m not in known]
    if unknown:
        raise CiUsageError(f"no spec for {unknown}; specs: {known}")
    return list(dict.fromkeys(models))


# -- step 2: the team's tests ----------------------------------------------------------------------


@dataclass(frozen=True)
class TestsResult:
    """The team's tests: the command run (``None``: no paths given, skipped), its exit code, the
    last lines it printed."""

    __test__ = False  # not a pytest test class

    command: tuple[str, ...] | None
    returncode: int = 0
    tail: str = ""

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def pytest_command(paths: Sequence[str], pytest_args: str | None = None) -> list[str]:
    """``<this python> -m pytest <paths> <args>`` (``args`` split as a shell would)."""
    try:
        extra = shlex.split(pytest_args or "")
    except ValueError as exc:
        raise CiUsageError(f"--pytest-args {pytest_args!r}: {exc}") from exc
    return [sys.executable, "-m", "pytest", *paths, *extra]


def run_tests(
    paths: Sequence[str],
    pytest_args: str | None = None,
    *,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = 40,
) -> TestsResult:
    """Run pytest on ``paths`` in ``cwd``, handing each output line to ``on_line`` as it comes.

    No paths: nothing runs (``command`` is ``None``). Any non-zero exit fails, pytest's 5 ("no tests
    collected") too: paths that hold no test are a mistake in the CI job.
    """
    if not paths:
        return TestsResult(None)
    command = pytest_command(paths, pytest_args)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    with subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)
        returncode = proc.wait()
    return TestsResult(tuple(command), returncode, "\n".join(tail))


# -- step 3: the training runs ---------------------------------------------------------------------


def training_conf(
    *,
    commit: str | None,
    gate_mode: str | None = None,
    window_end: str | None = None,
    force_retrain: bool = True,
) -> dict[str, Any]:
    """The conf of a CI training run (the DAG's Params). ``force_retrain`` is on by default: new code
    must be trained and gated even when the data window is the champion's.

    Raises:
        CiUsageError: a gate mode the DAG does not know, or a window end that is not a date.
    """
    conf: dict[str, Any] = {"force_retrain": force_retrain}
    if commit:
        conf["commit"] = commit
    if gate_mode:
        if gate_mode not in GATE_MODES:
            raise CiUsageError(f"--gate-mode must be one of {', '.join(GATE_MODES)}, got {gate_mode!r}")
        conf["gate_mode"] = gate_mode
    if window_end:
        try:
            dt.date.fromisoformat(window_end)
        except ValueError as exc:
            raise CiUsageError(f"--window-end must be YYYY-MM-DD, got {window_end!r}") from exc
        conf["window_end"] = window_end
    return conf


@dataclass(frozen=True)
class ModelRun:
    """How one model's training run ended, for a person reading CI's log.

    Attributes:
        model: The spec.
        dag_id: ``conveyor_train_<model>``.
        run_id: The DAG run (``None``: it was never triggered).
        run_url: The run in the Airflow UI.
        outcome: See :data:`Outcome`; :attr:`ok` says whether it keeps the exit code 0.
        summary: One line: what happened.
        details: Why: the gate's reasons, or the failed tasks' log tails.
        report_url: The gate report (the MLflow run page) when the gate ran.
        version: The registered version (``registered`` only).
    """

    model: str
    dag_id: str
    run_id: str | None
    run_url: str | None
    outcome: Outcome
    summary: str
    details: str = ""
    report_url: str | None = None
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in OK_OUTCOMES


def _state(tis: Sequence[Mapping[str, Any]], task_id: str) -> str | None:
    return next((t.get("state") for t in tis if t.get("task_id") == task_id), None)


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _xcom(client: AirflowClient, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    try:
        return _mapping(client.xcom(dag_id, run_id, task_id))
    except ConveyorError:
        return {}


def _reasons(decision: Mapping[str, Any]) -> str:
    reasons = [str(r) for r in decision.get("reasons") or []]
    return "\n".join(f"  - {r}" for r in reasons) if reasons else "  (the gate gave no reasons)"


def classify(
    client: AirflowClient, dag_id: str, run_id: str, run: Mapping[str, Any], tis: Sequence[Mapping[str, Any]]
) -> tuple[Outcome, str, str, str | None, str | None]:
    """``(outcome, summary, details, report_url, version)`` of a finished training run.

    Reads the task states, the ``evaluate_gate`` and ``register`` results (XCom) and, for failures,
    the failed tasks' logs (:func:`conveyor.demo.explain_failure`).
    """
    from conveyor.demo import explain_failure

    if _state(tis, "register") == "success":
        registered = _xcom(client, dag_id, run_id, "register")
        version = registered.get("version")
        name, alias = registered.get("name", "the model"), registered.get("alias", "challenger")
        summary = (
            f"registered {name} v{version} as {name}@{alias}"
            if version
            else "registered (the register task succeeded; its result is not readable)"
        )
        report = _xcom(client, dag_id, run_id, "evaluate_gate").get("report_url")
        return "registered", summary, "", report, str(version) if version else None

    if run.get("state") != "success":
        details = explain_failure(client, dag_id, run_id, [dict(t) for t in tis])
        if _state(tis, "validate_data") == "failed":
            return "invalid_data", "the data window failed validation", details, None, None
        return "failed", f"the run {run.get('state')}", details, None, None

    if _state(tis, "train") == "skipped":
        return (
            "unchanged",
            "unchanged data: the champion was trained on exactly this window, nothing was trained "
            "(--no-force-retrain)",
            "",
            None,
            None,
        )
    decision = _xcom(client, dag_id, run_id, "evaluate_gate")
    report = decision.get("report_url")
    if decision.get("action") == "dry_run":
        verdict = "passed" if decision.get("passed") else "failed"
        outcome: Outcome = "dry_run_passed" if decision.get("passed") else "dry_run_failed"
        return (
            outcome,
            f"dry run: the gate {verdict} (nothing is registered)",
            _reasons(decision),
            report,
            None,
        )
    if _state(tis, "not_promoted") == "success":
        return "rejected", "the gate rejected the challenger", _reasons(decision), report, None
    if _state(tis, "await_approval") == "success":
        who = "a person"
        try:
            answer = client.hitl_detail(dag_id, run_id, "await_approval")
            who = str(_mapping(answer.get("responded_by_user")).get("name") or who)
        except ConveyorError:
            pass
        return "rejected", f"{who} rejected the challenger in Airflow", _reasons(decision), report, None
    return (
        "failed",
        f"the run succeeded but registered nothing (register {_state(tis, 'register')})",
        "",
        report,
        None,
    )


def _run_url(airflow_url: str, dag_id: str, run_id: str) -> str:
    from conveyor.demo import run_url

    return run_url(airflow_url.rstrip("/"), dag_id, run_id)


def run_models(
    client: AirflowClient,
    models: Sequence[str],
    conf: Mapping[str, Any],
    *,
    airflow_url: str,
    console: Console,
    timeout: float = DEFAULT_RUN_TIMEOUT_S,
    dag_timeout: float = DEFAULT_DAG_TIMEOUT_S,
    poll: float = 2.0,
) -> list[ModelRun]:
    """Trigger every model's training DAG (they train side by side), then follow each to its end."""
    from conveyor.demo import follow_run, training_dag_id

    note = f"conveyor ci {str(conf.get('commit') or '')[:12]}".strip()
    started: dict[str, str] = {}
    results: dict[str, ModelRun] = {}
    for model in models:
        dag_id = training_dag_id(model)
        try:
            dag = client.get_dag(dag_id)
            if dag is not None and dag.get("is_paused"):
                raise ConveyorError(f"{dag_id} is paused: unpause it in Airflow, then rerun")
            client.wait_for_dag(dag_id, timeout=dag_timeout)
            started[model] = client.trigger(dag_id, conf, note=note)
        except ConveyorError as exc:
            results[model] = ModelRun(model, dag_id, None, None, "failed", "not triggered", str(exc))
            continue
        url = _run_url(airflow_url, dag_id, started[model])
        console.print(Text(f"triggered {dag_id} run {started[model]}\n  {url}"))
    for model, run_id in started.items():
        dag_id = training_dag_id(model)
        url = _run_url(airflow_url, dag_id, run_id)
        try:
            run, tis = follow_run(client, dag_id, run_id, console=console, timeout=timeout, poll=poll)
            outcome, summary, details, report, version = classify(client, dag_id, run_id, run, tis)
        except ConveyorError as exc:  # timed out, or Airflow stopped answering
            results[model] = ModelRun(
                model, dag_id, run_id, url, "failed", "not followed to its end", f"{exc}; the run goes on"
            )
            continue
        results[model] = ModelRun(model, dag_id, run_id, url, outcome, summary, details, report, version)
    return [results[m] for m in models]


# -- all of it -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CiOptions:
    """What ``conveyor ci`` was asked to do (its command line)."""

    models: tuple[str, ...] = ()
    all_models: bool = False
    tests: tuple[str, ...] = ()
    pytest_args: str | None = None
    commit: str | None = None
    window_end: str | None = None
    gate_mode: str | None = None
    force_retrain: bool = True
    timeout: float = DEFAULT_RUN_TIMEOUT_S
    cwd: Path | None = None


@dataclass
class CiReport:
    """What each step found; :attr:`exit_code` is the command's."""

    commit: str | None
    specs: list[SpecResult] = field(default_factory=list)
    tests: TestsResult | None = None
    runs: list[ModelRun] = field(default_factory=list)
    failed_step: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.failed_step is None else EXIT_FAILED


def _print_runs(console: Console, runs: Sequence[ModelRun]) -> None:
    for r in runs:
        style = "bold green" if r.ok else "bold red"
        console.print(Text(f"{r.model}: {'OK' if r.ok else 'FAILED'}: {r.summary}", style=style))
        if r.details:
            console.print(Text(r.details))
        if r.report_url:
            console.print(Text(f"  gate report: {r.report_url}"))
        if r.run_url:
            console.print(Text(f"  Airflow run: {r.run_url}"))


def run_ci(
    options: CiOptions,
    *,
    specs_dir: Path,
    connect: Callable[[], tuple[AirflowClient, str]],
    console: Console,
    poll: float = 2.0,
) -> CiReport:
    """Validate the specs, run the tests, train and gate every model; stop at the first failed step.

    Args:
        options: The command line.
        specs_dir: The specs to validate (and to train with ``all_models``).
        connect: Returns an Airflow client and Airflow's URL (for links); called only once steps 1
            and 2 passed, so a broken spec or test fails without Airflow.
        console: Where progress and the verdicts go.
        poll: Seconds between polls of a run.

    Raises:
        CiUsageError: a usage error (exit code 2), found before anything is triggered.
    """
    commit = resolve_commit(options.commit, cwd=options.cwd)
    conf = training_conf(
        commit=commit,
        gate_mode=options.gate_mode,
        window_end=options.window_end,
        force_retrain=options.force_retrain,
    )
    report = CiReport(commit=commit)
    console.print(Text(f"commit: {commit or 'unknown (the workers record their own checkout)'}"))

    console.rule("1. specs")
    report.specs = validate_specs(specs_dir)
    if not report.specs:
        raise CiUsageError(f"no spec files in {specs_dir}")
    models = select_models(report.specs, options.models, options.all_models)
    if options.tests:
        pytest_command(options.tests, options.pytest_args)  # a usage error fails before anything runs
    for spec in report.specs:
        if spec.valid:
            console.print(Text(f"{spec.path}: valid", style="green"))
            continue
        console.print(Text(f"{spec.path}: INVALID", style="bold red"))
        for problem in spec.problems:
            console.print(Text(f"  {problem.field} → {problem.message}"))
    if not all(s.valid for s in report.specs):
        report.failed_step = "specs"
        console.print(
            Text("FAILED: a spec does not validate (`conveyor spec check <name>`)", style="bold red")
        )
        return report

    console.rule("2. tests")
    report.tests = run_tests(
        options.tests,
        options.pytest_args,
        cwd=options.cwd,
        on_line=lambda line: console.out(line, highlight=False),
    )
    if report.tests.command is None:
        console.print(Text("no test paths given (--tests): skipped", style="yellow"))
    elif not report.tests.passed:
        report.failed_step = "tests"
        console.print(
            Text(f"FAILED: the tests exited {report.tests.returncode}; last lines:", style="bold red")
        )
        console.print(Text(report.tests.tail))
        return report

    console.rule("3. train and gate: " + ", ".join(models))
    client, airflow_url = connect()
    with client:
        report.runs = run_models(
            client, models, conf, airflow_url=airflow_url, console=console, timeout=options.timeout, poll=poll
        )
    console.rule("verdict")
    _print_runs(console, report.runs)
    if not all(r.ok for r in report.runs):
        report.failed_step = "runs"
    return report
