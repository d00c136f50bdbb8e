"""The real local stack: `up` in a temporary home on free ports, health, settings, `down`.

One stack for the module (a cold start takes from ~40 s on an idle 2-core machine to a few minutes
under load). The time to healthy is printed (run with ``-s``) and attached to the test report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conveyor import stack
from conveyor.cli import app
from conveyor.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UP_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, stack.StackInfo]]:
    settings = stack.isolated_settings(tmp_path_factory.mktemp("stack") / "home")
    messages: list[str] = []
    started = time.monotonic()
    try:
        info = stack.up(settings, timeout=UP_TIMEOUT, on_progress=messages.append)
    except stack.StackError:
        stack.down(settings)
        raise
    print(f"\nconveyor up: healthy in {time.monotonic() - started:.1f}s; progress: {messages}")
    yield settings, info
    stack.down(settings)


def test_up_reports_urls_credentials_and_time(running: tuple[Settings, stack.StackInfo]) -> None:
    settings, info = running
    assert info.airflow_url == f"http://127.0.0.1:{settings.airflow_port}"
    assert info.mlflow_url == f"http://127.0.0.1:{settings.mlflow_port}"
    assert info.model_server_url == f"http://127.0.0.1:{settings.model_server_port}"
    assert info.airflow_username == "admin" and info.airflow_password
    assert info.model_server_token and not info.already_running
    assert info.seconds_to_healthy is not None and info.seconds_to_healthy < UP_TIMEOUT
    paths = stack.StackPaths(settings.home)
    assert paths.state_file.stat().st_mode & 0o077 == 0
    assert paths.conf_file.stat().st_mode & 0o077 == 0
    # the admin password lives in a 0600 file only: no log line carries it
    assert paths.airflow_password_file.stat().st_mode & 0o077 == 0
    assert paths.home.stat().st_mode & 0o077 == 0 and paths.logs_dir.stat().st_mode & 0o077 == 0
    for log in paths.logs_dir.glob("*.log"):
        assert str(info.airflow_password) not in log.read_text(errors="replace"), log


def test_every_component_answers_its_health_check(running: tuple[Settings, stack.StackInfo]) -> None:
    settings, info = running
    assert httpx.get(f"{info.mlflow_url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{info.model_server_url}/health/live", timeout=10).status_code == 200
    with info.airflow_client() as client:
        health = client.health()
    assert health["metadatabase"]["status"] == "healthy"
    assert health["scheduler"]["status"] == "healthy"
    components = {c.name: c for c in stack.status(settings)}
    assert set(components) == set(stack.COMPONENTS)
    assert all(c.process_state == "RUNNING" and c.pid for c in components.values())
    assert components["mlflow"].healthy and components["model-server"].healthy


def test_airflow_settings_were_applied(running: tuple[Settings, stack.StackInfo]) -> None:
    settings, info = running
    with info.airflow_client() as client:
        mlflow = client.get_connection("mlflow_default")
        server = client.get_connection("model_server_default")
        training = client.get_pool("conveyor_training")
        serving = client.get_pool("conveyor_serving")
        data_root = client.get_variable("conveyor_data_root")
    assert mlflow is not None and (mlflow["host"], mlflow["port"]) == ("127.0.0.1", settings.mlflow_port)
    assert server is not None and server["port"] == settings.model_server_port
    assert server["password"]  # stored (the API shows it masked)
    assert training is not None and training["slots"] == 1
    assert serving is not None and serving["slots"] == 2
    assert data_root == settings.data_root


def test_dags_are_parsed_unpaused_without_import_errors(running: tuple[Settings, stack.StackInfo]) -> None:
    _, info = running
    with info.airflow_client() as client:
        dag = client.wait_for_dag("conveyor_train_churn", timeout=300)
        errors = client.import_errors()
    assert dag["is_paused"] is False  # dags_are_paused_at_creation = False
    assert errors == [], errors


def test_up_again_is_idempotent(running: tuple[Settings, stack.StackInfo]) -> None:
    settings, info = running
    started = time.monotonic()
    again = stack.up(settings, timeout=120)
    assert again.already_running
    assert again.airflow_url == info.airflow_url and again.model_server_token == info.model_server_token
    assert time.monotonic() - started < 60


def test_cli_status_and_urls(running: tuple[Settings, stack.StackInfo]) -> None:
    settings, info = running
    runner = CliRunner()
    status = runner.invoke(app, ["--home", str(settings.home), "status"], terminal_width=250)
    assert "RUNNING" in status.output
    assert status.exit_code in (0, 1)  # 1 only if Airflow's heartbeat check flaps under load
    urls = runner.invoke(app, ["--home", str(settings.home), "urls"], terminal_width=250)
    assert urls.exit_code == 0
    assert info.airflow_url in urls.output and str(info.airflow_password) in urls.output


def test_down_leaves_no_process_and_keeps_the_data(running: tuple[Settings, stack.StackInfo]) -> None:
    """Last test on the module's stack: `down` stops every process it started (grandchildren too)."""
    settings, _ = running
    paths = stack.StackPaths(settings.home)
    state = stack.load_state(paths)
    assert state is not None
    # supervisord, the 3 programs and Airflow's children (renamed ones included)
    processes = stack.stack_processes(state.stack_id, settings.home)
    assert len(processes) >= 8, processes

    report = stack.down(settings)
    print(f"\nconveyor down: stopped in {report.stopped_in_s}s, killed leftovers: {report.killed_leftovers}")
    assert report.was_running
    assert stack.stack_processes(state.stack_id, settings.home) == []
    assert not stack.supervisord_running(paths)
    ports = (settings.airflow_port, settings.mlflow_port, settings.model_server_port)
    assert all(stack.port_is_free(p) for p in ports)
    assert (paths.mlflow_dir / "mlflow.db").exists() and (paths.airflow_home / "airflow.db").exists()
    assert stack.status(settings)[0].process_state == "STOPPED"


def test_purge_removes_the_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    home: Path = tmp_path_factory.mktemp("stack-purge") / "home"
    settings = stack.isolated_settings(home)
    stack.up(settings, wait=False)
    report = stack.down(settings, purge=True)
    assert report.was_running and report.purged
    assert not home.exists()
