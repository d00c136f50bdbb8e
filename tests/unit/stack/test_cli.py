"""The `conveyor` command without a running stack: help, status, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor import stack
from conveyor.cli import app

pytestmark = pytest.mark.unit

COMMANDS = ["up", "down", "status", "logs", "land-data", "trigger", "follow", "predict", "demo", "urls"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_options_named_in_the_docs_exist(runner: CliRunner) -> None:
    expectations = {
        "up": ["--no-wait", "--airflow-port", "--mlflow-port", "--model-server-port"],
        "down": ["--purge"],
        "logs": ["--lines", "--follow"],
        "land-data": ["--model", "--days", "--end-day", "--rows-per-day", "--seed", "--drift", "--corrupt"],
        "trigger": [
            "--model",
            "--window-end",
            "--window-days",
            "--gate-mode",
            "--force",
            "--justification",
            "--follow",
        ],
        "predict": ["--model", "--rows"],
    }
    for command, options in expectations.items():
        output = runner.invoke(app, [command, "--help"], terminal_width=200).output
        for option in options:
            assert option in output, f"{command} {option}"


def test_status_on_a_stopped_stack_says_so_and_fails(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "status"], terminal_width=200)
    assert result.exit_code == 1
    assert "not running" in result.output
    assert "conveyor up" in result.output
    for name in stack.COMPONENTS:
        assert name in result.output


def test_commands_needing_the_stack_explain_how_to_start_it(runner: CliRunner, tmp_path: Path) -> None:
    for args in (["urls"], ["trigger", "--model", "churn"], ["follow", "d", "r"], ["predict"]):
        result = runner.invoke(app, ["--home", str(tmp_path), *args], terminal_width=200)
        assert result.exit_code == 1, args
        assert "not running; start it with `conveyor up`" in result.output, args


def test_down_on_a_stopped_stack_is_harmless(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), "down"])
    assert result.exit_code == 0
    assert "was not running" in result.output


def test_bad_arguments_are_refused_before_any_work(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--home", str(tmp_path), "trigger", "--gate-mode", "yolo"], terminal_width=200
    )
    assert result.exit_code == 1 and "--gate-mode must be one of" in result.output
    result = runner.invoke(
        app, ["--home", str(tmp_path), "land-data", "--end-day", "23/11"], terminal_width=200
    )
    assert result.exit_code == 1 and "YYYY-MM-DD" in result.output
    result = runner.invoke(app, ["--home", str(tmp_path), "logs", "webserver"], terminal_width=200)
    assert result.exit_code == 1 and "unknown component" in result.output


def test_land_data_writes_daily_batches_under_the_home(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = runner.invoke(
        app,
        [
            "--home",
            str(home),
            "land-data",
            "--model",
            "churn",
            "--days",
            "2",
            "--end-day",
            "2026-11-20",
            "--rows-per-day",
            "50",
        ],
        terminal_width=300,
        env={"CONVEYOR_DATA_ROOT": ""},
    )
    assert result.exit_code == 0, result.output
    landed = sorted(p.relative_to(home / "data") for p in (home / "data").rglob("*.parquet"))
    assert [str(p.parent) for p in landed] == [
        "landing/churn/date=2026-11-19",
        "landing/churn/date=2026-11-20",
    ]
