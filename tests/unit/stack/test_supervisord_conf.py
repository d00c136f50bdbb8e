"""The generated supervisord.conf, read back with supervisor's own config parser."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from supervisor.options import ServerOptions

from conveyor import stack
from conveyor.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.unit


def _state(settings: Settings) -> stack.StackState:
    return stack.StackState(
        ports=stack.StackPorts(
            airflow=settings.airflow_port,
            mlflow=settings.mlflow_port,
            model_server=settings.model_server_port,
            airflow_worker_logs=18793,
            airflow_trigger_logs=18794,
        ),
        data_root=settings.data_root,
    )


def _programs(settings: Settings, state: stack.StackState, tmp_path: Path) -> dict[str, Any]:
    """Render, write and parse the config exactly as supervisord would."""
    paths = stack.StackPaths(settings.home)
    stack._prepare_home(settings, paths)  # supervisord checks that log and work folders exist
    conf = tmp_path / "supervisord.conf"
    conf.write_text(stack.render_supervisord_conf(settings, state, paths, bin_dir=Path("/opt/venv/bin")))
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    programs = {p.name: p for g in options.process_group_configs for p in g.process_configs}
    programs["__options__"] = options
    return programs


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        data_root=(tmp_path / "home" / "data").as_uri(),
        airflow_port=18080,
        mlflow_port=15000,
        model_server_port=18000,
    )


def test_three_programs_with_their_commands_ports_and_logs(settings: Settings, tmp_path: Path) -> None:
    state = _state(settings)
    programs = _programs(settings, state, tmp_path)
    home = settings.home

    assert {"airflow", "mlflow", "model-server"} <= set(programs)
    assert programs["airflow"].command == "/opt/venv/bin/airflow standalone"

    mlflow = programs["mlflow"].command
    assert mlflow.startswith("/opt/venv/bin/mlflow server ")
    assert f"--backend-store-uri sqlite:///{home}/mlflow/mlflow.db" in mlflow
    assert f"--artifacts-destination {home}/mlflow/artifacts" in mlflow
    assert "--host 127.0.0.1 --port 15000 --workers 1" in mlflow
    assert "--serve-artifacts" in mlflow

    server = programs["model-server"].command
    assert "/opt/venv/bin/uvicorn conveyor.serving.app:create_app --factory" in server
    assert "--host 127.0.0.1 --port 18000" in server

    for name in ("airflow", "mlflow", "model-server"):
        program = programs[name]
        assert program.stdout_logfile == str(home / "logs" / f"{name}.log")
        assert program.redirect_stderr
        # The whole process group is signalled, so no child outlives `down`.
        assert program.stopasgroup and program.killasgroup
    # standalone only shuts its children down on KeyboardInterrupt.
    assert programs["airflow"].stopsignal == 2

    options = programs["__options__"]
    assert options.pidfile == str(home / "supervisord.pid")
    assert options.logfile == str(home / "logs" / "supervisord.log")


def test_airflow_environment_is_small_machine_standalone(settings: Settings, tmp_path: Path) -> None:
    state = _state(settings)
    env = _programs(settings, state, tmp_path)["airflow"].environment
    home = settings.home

    assert env["AIRFLOW_HOME"] == str(home / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home}/airflow/airflow.db"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4
    assert int(env["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"]) <= 4
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert int(env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"]) <= 10
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    # Task processes reach the execution API through base_url; it must follow the port.
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"
    assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "18794"
    assert env["PATH"].startswith("/opt/venv/bin")


def test_airflow_plugins_folder_is_not_the_package_folder(settings: Settings, tmp_path: Path) -> None:
    """Airflow imports every .py of its plugins folder as a top-level module named after the file:
    plugins/conveyor_airflow/hooks/mlflow.py would become `mlflow` and hide the real package."""
    env = _programs(settings, _state(settings), tmp_path)["airflow"].environment
    plugins_folder = Path(env["AIRFLOW__CORE__PLUGINS_FOLDER"])
    assert plugins_folder == settings.home / "airflow" / "plugins"
    assert plugins_folder.resolve() != (REPO_ROOT / "plugins").resolve()


def test_task_environment_points_at_this_stack(settings: Settings, tmp_path: Path) -> None:
    state = _state(settings)
    programs = _programs(settings, state, tmp_path)
    for name in ("airflow", "model-server"):
        env = programs[name].environment
        assert env["CONVEYOR_HOME"] == str(settings.home)
        assert env["CONVEYOR_DATA_ROOT"] == settings.data_root
        assert env["CONVEYOR_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
        assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
        assert env["CONVEYOR_MODEL_SERVER_URL"] == "http://127.0.0.1:18000"
        assert env["CONVEYOR_STACK_ID"] == state.stack_id
    assert programs["mlflow"].environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_model_server_token_only_where_it_is_needed(settings: Settings, tmp_path: Path) -> None:
    state = _state(settings)
    programs = _programs(settings, state, tmp_path)
    assert programs["model-server"].environment["CONVEYOR_MODEL_SERVER_TOKEN"] == state.model_server_token
    # gRPC on the stack's own port, so stacks side by side (a demo and a test) never share 8001
    assert programs["model-server"].environment["CONVEYOR_MODEL_SERVER_GRPC_PORT"] == str(
        state.ports.model_server_grpc
    )
    # Airflow tasks get the token from the model_server_default connection, not from the environment.
    assert state.model_server_token not in programs["airflow"].environment.values()
    assert state.model_server_token not in programs["mlflow"].environment.values()


def test_spaces_and_percent_encoding_survive_the_config_parser(tmp_path: Path) -> None:
    home = tmp_path / "my home"
    settings = Settings(home=home, data_root=(home / "data").as_uri())
    assert "%20" in settings.data_root  # supervisord expands %-formats: this must come out intact
    state = _state(settings)
    programs = _programs(settings, state, tmp_path)
    assert programs["airflow"].environment["AIRFLOW_HOME"] == str(home / "airflow")
    assert programs["airflow"].environment["CONVEYOR_DATA_ROOT"] == settings.data_root
    assert programs["mlflow"].stdout_logfile == str(home / "logs" / "mlflow.log")
    assert f"sqlite:///{home}/mlflow/mlflow.db" in shlex.split(programs["mlflow"].command)


def test_a_literal_percent_in_home_is_refused_clearly(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "100%", data_root=(tmp_path / "data").as_uri())
    paths = stack.StackPaths(settings.home)
    with pytest.raises(stack.StackError, match="'%'"):
        stack.render_supervisord_conf(settings, _state(settings), paths)


def test_environment_values_with_quotes_are_refused(settings: Settings) -> None:
    with pytest.raises(stack.StackError, match="quote or newline"):
        stack._env_line({"X": 'say "hi"'})


def test_long_home_moves_the_socket_to_tmp(tmp_path: Path) -> None:
    long_home = tmp_path / ("x" * 120)
    paths = stack.StackPaths(long_home)
    assert len(str(paths.socket_file)) <= 100
    assert paths.socket_file.parent == Path("/tmp")
    assert stack.StackPaths(long_home).socket_file == paths.socket_file  # stable: status finds it again
    assert stack.StackPaths(tmp_path / "short").socket_file == tmp_path / "short" / "supervisor.sock"


def test_state_file_is_private_and_keeps_secrets_across_restarts(settings: Settings) -> None:
    paths = stack.StackPaths(settings.home)
    first = stack._new_state(settings, None)
    stack.save_state(paths, first)
    assert stat.S_IMODE(os.stat(paths.state_file).st_mode) == 0o600

    again = stack._new_state(settings, stack.load_state(paths))
    assert again.model_server_token == first.model_server_token
    assert again.stack_id == first.stack_id
    assert len(first.model_server_token) >= 32


def test_ports_come_from_settings_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_AIRFLOW_PORT", "18181")
    monkeypatch.setenv("CONVEYOR_MLFLOW_PORT", "15151")
    settings = Settings(home=tmp_path, model_server_port=18282)
    state = stack._new_state(settings, None)
    assert (state.ports.airflow, state.ports.mlflow, state.ports.model_server) == (18181, 15151, 18282)
    assert state.ports.registry_relay == settings.registry_relay_port == 8090
    assert state.ports.model_server_grpc == settings.model_server_grpc_port == 8001
    assert len({*state.ports.public().values(), state.ports.airflow_worker_logs}) == 6


def test_local_state_folder_is_git_ignored() -> None:
    result = subprocess.run(
        ["git", "check-ignore", "-q", str(REPO_ROOT / ".conveyor" / "stack.json")],
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, ".conveyor/ (secrets, databases) must be git-ignored"


def test_distributed_profile_runs_airflow_as_separate_programs_on_celery(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        airflow_port=18080,
        mlflow_port=15000,
        model_server_port=18000,
        profile="distributed",
        postgres_url="postgresql://postgres@db.internal:5432",
        airflow_database="af",
        mlflow_database="ml",
        celery_broker_url="redis://broker:6379/3",
        celery_workers=3,
        celery_worker_concurrency=2,
    )
    state = stack._new_state(settings, None)
    programs = _programs(settings, state, tmp_path)
    names = set(programs) - {"__options__"}
    assert names == {
        "mlflow",
        "model-server",
        "registry-relay",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker-1",
        "airflow-worker-2",
        "airflow-worker-3",
    }
    assert set(state.programs()) == names
    mlflow_args = shlex.split(programs["mlflow"].command)
    assert mlflow_args[mlflow_args.index("--backend-store-uri") + 1] == (
        "postgresql+psycopg2://postgres@db.internal:5432/ml"
    )
    env = programs["airflow-scheduler"].environment
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://postgres@db.internal:5432/af"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://broker:6379/3"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg2://postgres@db.internal:5432/af"
    # Each stack has its own queue, and its workers serve only that queue under unique node names.
    queue = env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    assert queue == f"conveyor-{state.stack_id}"
    hostnames = set()
    for i in (1, 2, 3):
        args = shlex.split(programs[f"airflow-worker-{i}"].command)
        assert args[1:3] == ["celery", "worker"]
        assert args[args.index("--queues") + 1] == queue
        assert args[args.index("--concurrency") + 1] == "2"
        hostnames.add(args[args.index("--celery-hostname") + 1])
        assert programs[f"airflow-worker-{i}"].environment == env
    assert len(hostnames) == 3 and all(state.stack_id in h for h in hostnames)
    assert shlex.split(programs["airflow-api-server"].command)[1:] == ["api-server"]
    assert "standalone" not in " ".join(p.command for n, p in programs.items() if n != "__options__")


def test_a_home_keeps_its_profile(tmp_path: Path) -> None:
    embedded = Settings(home=tmp_path / "home")
    state = stack._new_state(embedded, None)
    assert state.programs() == stack.COMPONENTS and not state.distributed
    with pytest.raises(stack.StackError, match="embedded profile, not distributed"):
        stack._new_state(Settings(home=tmp_path / "home", profile="distributed"), state)


def test_the_registry_relay_runs_beside_the_model_server_with_its_secret(
    settings: Settings, tmp_path: Path
) -> None:
    state = _state(settings)
    programs = _programs(settings, state, tmp_path)
    relay = programs["registry-relay"]
    assert "/opt/venv/bin/uvicorn conveyor.registry_relay:create_app --factory" in relay.command
    assert f"--host 127.0.0.1 --port {state.ports.registry_relay}" in relay.command
    assert relay.stdout_logfile == str(settings.home / "logs" / "registry-relay.log")
    assert relay.stopasgroup and relay.killasgroup
    # it starts after MLflow and the model server, before Airflow
    priority = {name: programs[name].priority for name in stack.COMPONENTS}
    assert priority["mlflow"] < priority["model-server"] < priority["registry-relay"] < priority["airflow"]
    env = relay.environment
    assert env["CONVEYOR_REGISTRY_WEBHOOK_SECRET"] == state.registry_webhook_secret
    # it finds Airflow (and the admin password in <home>/airflow) the way the settings say
    assert env["CONVEYOR_HOME"] == str(settings.home)
    assert env["CONVEYOR_AIRFLOW_PORT"] == str(settings.airflow_port)
    assert env["CONVEYOR_STACK_ID"] == state.stack_id
    # the webhook secret is the relay's alone; MLflow gets it only through the registration
    for name in ("mlflow", "model-server", "airflow"):
        assert state.registry_webhook_secret not in programs[name].environment.values(), name


def test_mlflow_gets_what_delivering_webhooks_to_the_relay_needs(settings: Settings, tmp_path: Path) -> None:
    state = _state(settings)
    programs = _programs(settings, state, tmp_path)
    env = programs["mlflow"].environment
    # a stable key: stored webhook secrets stay readable after a restart
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == state.mlflow_webhook_encryption_key
    from cryptography.fernet import Fernet

    Fernet(state.mlflow_webhook_encryption_key.encode())  # a valid Fernet key
    # the relay is plain HTTP on 127.0.0.1, which MLflow refuses by default
    assert set(env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"].split(",")) == {"http", "https"}
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    for name in ("model-server", "airflow", "registry-relay"):
        assert state.mlflow_webhook_encryption_key not in programs[name].environment.values(), name


def test_webhook_secrets_survive_a_restart_and_the_settings_may_set_the_secret(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    first = stack._new_state(settings, None)
    again = stack._new_state(settings, first)
    assert again.registry_webhook_secret == first.registry_webhook_secret
    assert again.mlflow_webhook_encryption_key == first.mlflow_webhook_encryption_key
    assert first.registry_webhook_secret != stack._new_state(settings, None).registry_webhook_secret
    chosen = Settings(home=tmp_path / "home", registry_webhook_secret="chosen-secret")
    assert stack._new_state(chosen, first).registry_webhook_secret == "chosen-secret"


def test_a_state_from_before_the_relay_still_loads(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    paths = stack.StackPaths(settings.home)
    old = stack._new_state(settings, None).model_dump(mode="json")
    for key in ("registry_webhook_secret", "mlflow_webhook_encryption_key"):
        del old[key]
    del old["ports"]["registry_relay"]
    paths.home.mkdir(parents=True)
    paths.state_file.write_text(json.dumps(old))
    state = stack.load_state(paths)
    assert state is not None and state.ports.registry_relay == 8090
    assert state.registry_webhook_secret and state.mlflow_webhook_encryption_key
