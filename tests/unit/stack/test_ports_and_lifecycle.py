"""Port checks, a stopped stack, logs and purge: everything of the stack that needs no running server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import stack
from conveyor.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something is listening on (as if another server held it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_free_port_is_free_and_a_listening_port_is_not(listening: int) -> None:
    port = stack.free_port()
    assert stack.port_is_free(port)
    assert not stack.port_is_free(listening)


def test_isolated_settings_give_distinct_free_ports_under_home(tmp_path: Path) -> None:
    settings = stack.isolated_settings(tmp_path / "h")
    ports = {
        settings.airflow_port,
        settings.mlflow_port,
        settings.model_server_port,
        settings.registry_relay_port,
    }
    assert len(ports) == 4
    assert all(stack.port_is_free(p) for p in ports)
    assert settings.data_root == (tmp_path / "h" / "data").as_uri()


def test_taken_port_names_the_component_and_the_fix(listening: int) -> None:
    with pytest.raises(stack.PortInUseError) as err:
        stack.check_ports_free({"airflow": stack.free_port(), "mlflow": listening})
    message = str(err.value)
    assert f"mlflow: port {listening} is in use" in message
    assert "--mlflow-port" in message and "CONVEYOR_MLFLOW_PORT" in message
    assert "airflow:" not in message


def test_taken_relay_port_names_its_setting(listening: int) -> None:
    with pytest.raises(stack.PortInUseError) as err:
        stack.check_ports_free({"registry-relay": listening})
    assert f"registry-relay: port {listening} is in use" in str(err.value)
    assert "CONVEYOR_REGISTRY_RELAY_PORT" in str(err.value)


def test_same_port_for_two_components_is_refused() -> None:
    port = stack.free_port()
    with pytest.raises(stack.PortInUseError, match="must differ"):
        stack.check_ports_free({"airflow": port, "mlflow": port})


def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path, listening: int) -> None:
    settings = stack.isolated_settings(tmp_path / "home", airflow_port=listening)
    with pytest.raises(stack.PortInUseError, match=f"airflow: port {listening}"):
        stack.up(settings, timeout=5)
    paths = stack.StackPaths(settings.home)
    assert not paths.conf_file.exists()
    assert not stack.supervisord_running(paths)


def test_busy_default_log_server_port_moves_elsewhere(listening: int) -> None:
    assert stack._pick_internal_port(listening, avoid=set()) != listening
    free = stack.free_port()
    assert stack._pick_internal_port(free, avoid=set()) == free
    assert stack._pick_internal_port(free, avoid={free}) != free


def test_status_of_a_stopped_stack(tmp_path: Path) -> None:
    settings = stack.isolated_settings(tmp_path)
    components = stack.status(settings)
    assert [c.name for c in components] == list(stack.COMPONENTS)
    assert all(c.process_state == "STOPPED" and not c.healthy for c in components)
    assert components[2].url == f"http://127.0.0.1:{settings.airflow_port}"
    assert components[3].name == "registry-relay"
    assert components[3].url == f"http://127.0.0.1:{settings.registry_relay_port}"


def test_stack_info_and_down_when_not_running(tmp_path: Path) -> None:
    settings = stack.isolated_settings(tmp_path)
    with pytest.raises(stack.StackNotRunningError, match="conveyor up"):
        stack.stack_info(settings)
    report = stack.down(settings)
    assert not report.was_running and not report.killed_leftovers


def test_logs_tail_and_unknown_component(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with pytest.raises(
        stack.StackError, match="choose one of mlflow, model-server, airflow, registry-relay, supervisord"
    ):
        list(stack.logs(settings, "webserver"))
    with pytest.raises(stack.StackError, match="no log for mlflow yet"):
        list(stack.logs(settings, "mlflow"))
    log = stack.StackPaths(tmp_path).log_file("mlflow")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert list(stack.logs(settings, "mlflow", lines=3)) == ["line 4997", "line 4998", "line 4999"]
    assert stack.tail(log, 0) == ""


def test_purge_refuses_folders_that_are_not_a_stack_home(tmp_path: Path) -> None:
    with pytest.raises(stack.StackError, match="refusing"):
        stack.purge_home(stack.StackPaths(REPO_ROOT))
    stranger = tmp_path / "someone-elses"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("precious")
    with pytest.raises(stack.StackError, match="refusing"):
        stack.purge_home(stack.StackPaths(stranger))
    assert (stranger / "thesis.tex").exists()


def test_purge_deletes_a_stopped_stack_home(tmp_path: Path) -> None:
    settings = stack.isolated_settings(tmp_path / "home")
    paths = stack.StackPaths(settings.home)
    stack._prepare_home(settings, paths)
    stack.save_state(paths, stack._new_state(settings, None))
    report = stack.down(settings, purge=True)
    assert report.purged and not settings.home.exists()


def _sleeper(cwd: Path, stack_id: str | None = None, python: bool = True) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_STACK_ID"}
    if stack_id:
        env["CONVEYOR_STACK_ID"] = stack_id
    argv = [sys.executable, "-c", "import time; time.sleep(120)"] if python else ["sleep", "120"]
    return subprocess.Popen(argv, cwd=cwd, env=env)


def test_down_stops_orphans_of_a_dead_supervisord(tmp_path: Path) -> None:
    """Processes of this stack outlive a killed supervisord; `down` still ends them. They are found
    by their CONVEYOR_STACK_ID, or (Airflow's setproctitle'd processes, whose environment reads
    empty) as this venv's Python working inside the home."""
    settings = stack.isolated_settings(tmp_path / "home")
    paths = stack.StackPaths(settings.home)
    state = stack._new_state(settings, None)
    stack._prepare_home(settings, paths)
    stack.save_state(paths, state)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marked = _sleeper(elsewhere, state.stack_id)
    renamed = _sleeper(paths.airflow_home)  # no marker visible, but works in the stack's folder
    spared = [
        _sleeper(elsewhere, "another-stack"),  # another stack's process
        _sleeper(elsewhere),  # unrelated Python
        _sleeper(paths.home, python=False),  # e.g. a developer's shell command inside .conveyor/
    ]
    try:
        time.sleep(0.5)
        found = stack.stack_processes(state.stack_id, settings.home)
        assert sorted(found) == sorted([marked.pid, renamed.pid])
        report = stack.down(settings)
        assert not report.was_running
        assert report.killed_leftovers == sorted([marked.pid, renamed.pid])
        assert marked.wait(timeout=10) != 0 and renamed.wait(timeout=10) != 0
        assert all(proc.poll() is None for proc in spared)
    finally:
        for proc in (marked, renamed, *spared):
            proc.kill()
            proc.wait(timeout=10)


def test_down_purge_of_a_home_that_never_existed_creates_nothing(tmp_path: Path) -> None:
    settings = stack.isolated_settings(tmp_path / "never")
    report = stack.down(settings, purge=True)
    assert not report.was_running
    assert not (tmp_path / "never").exists()


def test_the_airflow_admin_password_is_made_private_before_airflow_starts(tmp_path: Path) -> None:
    import json as _json

    from conveyor.stack import StackPaths, ensure_airflow_password

    paths = StackPaths(tmp_path)
    paths.airflow_home.mkdir(parents=True)
    paths.airflow_password_file.write_text('{"admin": ""}\n')
    paths.airflow_password_file.chmod(0o644)  # as an older stack left it
    password = ensure_airflow_password(paths)
    assert len(password) >= 20
    assert paths.airflow_password_file.stat().st_mode & 0o777 == 0o600
    assert _json.loads(paths.airflow_password_file.read_text()) == {"admin": password}
    assert ensure_airflow_password(paths) == password  # kept across restarts


def test_task_processes_start_with_mlflow_imported_in_their_parent(tmp_path: Path) -> None:
    """``airflow_local_settings.py`` imports MLflow in the scheduler and Celery workers only (tasks are
    forked from them) and exports nothing into Airflow's settings."""
    import subprocess
    import sys

    settings = stack.isolated_settings(tmp_path / "home")
    paths = stack.StackPaths(settings.home)
    stack._prepare_home(settings, paths)
    local = paths.airflow_home / "config" / "airflow_local_settings.py"
    probe = (
        "import sys; sys.path.insert(0, sys.argv[-1]); sys.argv[1:3] = {argv!r}; "
        "import airflow_local_settings as m; print(m.__all__, 'mlflow' in sys.modules)"
    )
    for argv, imported in ((["scheduler"], True), (["celery", "worker"], True), (["api-server"], False)):
        out = subprocess.run(
            [sys.executable, "-c", probe.format(argv=argv), str(local.parent)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == f"[] {imported}", (argv, out)
