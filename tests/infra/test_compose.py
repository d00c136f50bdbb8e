"""docker-compose.yaml: valid Compose, consistent with .env.example, and wired the way Conveyor needs.

Nothing is started (no Docker engine here): the file is interpolated with ``.env.example`` the way
``docker compose config`` does it, validated against the Compose specification's JSON schema, and its
services, volumes, dependencies and settings are checked against each other and the repository.
The two start scripts are run with stand-ins for ``airflow`` and ``mlflow`` to check what they do.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shlex
import stat
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from .helpers import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    ImageRef,
    InterpolationError,
    VarRef,
    dockerfile_stages,
    interpolate,
    read_env_file,
    var_refs,
)

SCHEMA_FILE = Path(__file__).parent / "schemas" / "compose-spec.json"
AIRFLOW_SETTINGS = REPO_ROOT / "airflow_settings.yaml"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$")
LONG_RUNNING_RESTART = {"always", "unless-stopped"}
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


@cache
def raw_text() -> str:
    return COMPOSE_FILE.read_text()


@cache
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def filled_env() -> dict[str, str]:
    """``.env.example`` with a stand-in for every empty secret, as a filled-in ``.env`` would be."""
    return {key: value or f"test-{key.lower()}-0123456789" for key, value in example_env().items()}


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    return []


@cache
def compose_refs() -> tuple[VarRef, ...]:
    """Every ``${VAR}`` in the values Compose interpolates (comments are not interpolated)."""
    return tuple(ref for text in _strings(yaml.safe_load(raw_text())) for ref in var_refs(text))


@cache
def _config_json() -> str:
    raw = yaml.safe_load(raw_text())
    return json.dumps(interpolate(raw, filled_env()))


def config() -> dict[str, Any]:
    """The Compose model after YAML anchors/merge keys and interpolation (a fresh copy per call)."""
    return json.loads(_config_json())


def services() -> dict[str, dict[str, Any]]:
    return config()["services"]


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def one_shot(name: str, service: dict[str, Any]) -> bool:
    """Init jobs and tools: not restarted, started on purpose or awaited to completion."""
    return str(service.get("restart", "no")) in {"no", "on-failure"} or bool(service.get("profiles"))


def airflow_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in services().items()
        if (svc.get("build") or {}).get("dockerfile") == "docker/airflow/Dockerfile"
    }


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    for entry in service.get("ports") or []:
        target = entry["target"] if isinstance(entry, dict) else str(entry).rsplit(":", 1)[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


def dockerfile_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    build = {"context": build} if isinstance(build, str) else build
    return COMPOSE_FILE.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


# ------------------------------------------------------------------------------------------------
# The file as Compose reads it
# ------------------------------------------------------------------------------------------------


def test_the_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config()), key=lambda e: list(e.absolute_path))
    report = "\n".join(f"  {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    assert not errors, f"docker-compose.yaml breaks the Compose specification:\n{report}"


def test_the_schema_check_can_fail() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = config()
    broken["services"]["redis"]["healthcheck"]["interval"] = ["10s"]
    broken["services"]["postgres"]["restart_policy"] = "always"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_every_variable_is_declared_in_env_example() -> None:
    declared = set(example_env())
    used = {ref.name for ref in compose_refs()}
    assert used, "no ${VAR} found: the reader is broken"
    assert not used - declared, (
        f"used in docker-compose.yaml but missing from .env.example: {used - declared}"
    )
    assert not declared - used, f"declared in .env.example but never used: {declared - used}"


def test_secrets_are_required_and_never_defaulted() -> None:
    refs = compose_refs()
    secrets = {ref.name for ref in refs if SECRET_NAME.search(ref.name)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"} <= secrets
    loose = sorted({f"${{{r.name}{r.op}{r.arg}}}" for r in refs if r.name in secrets and not r.required})
    assert not loose, f"secrets must use ${{VAR:?message}} so Compose refuses to start without them: {loose}"


def test_env_example_holds_no_secret_values() -> None:
    """Every secret is empty in .env.example, so an unedited copy fails loudly instead of running."""
    filled = {key: value for key, value in example_env().items() if SECRET_NAME.search(key) and value}
    assert not filled, f".env.example must leave secrets empty: {sorted(filled)}"
    required = {ref.name for ref in compose_refs() if ref.required}
    empty = {key for key, value in example_env().items() if not value}
    assert empty <= required, f"empty in .env.example but not required (${{VAR:?}}): {empty - required}"


def test_compose_refuses_to_start_without_a_secret() -> None:
    env = filled_env()
    env["MLFLOW_ADMIN_PASSWORD"] = ""
    with pytest.raises(InterpolationError, match="MLFLOW_ADMIN_PASSWORD"):
        interpolate(yaml.safe_load(raw_text()), env)


# ------------------------------------------------------------------------------------------------
# Services, images, ports, volumes, dependencies
# ------------------------------------------------------------------------------------------------


def test_every_service_has_an_image_or_a_build_whose_files_exist() -> None:
    for name, service in services().items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
        if service.get("build"):
            dockerfile = dockerfile_of(service)
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
            assert dockerfile.parent.is_dir()


def test_pulled_images_are_pinned_to_an_exact_release() -> None:
    for name, service in services().items():
        if service.get("build"):
            continue
        problem = ImageRef.parse(service["image"]).pin_problem()
        assert problem is None, f"{name}: image {service['image']}: {problem}"


def test_built_images_carry_the_project_version() -> None:
    version = re.search(r'^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert version
    for name, service in services().items():
        if service.get("build"):
            assert ImageRef.parse(service["image"]).tag == version.group(1), name


def test_published_ports_do_not_collide() -> None:
    published: list[tuple[str, int, str]] = []
    for name, service in services().items():
        for entry in service.get("ports") or []:
            if isinstance(entry, dict):
                host_ip, host_port = entry.get("host_ip", "0.0.0.0"), entry.get("published")
            else:
                parts = str(entry).split(":")
                assert len(parts) in (2, 3), f"{name}: publish an explicit host port, not {entry!r}"
                host_ip, host_port = (parts[0], parts[1]) if len(parts) == 3 else ("0.0.0.0", parts[0])
            published.append((host_ip, int(host_port), name))
    assert len(published) >= 4, published
    by_port = Counter(port for _, port, _ in published)
    clashes = [entry for entry in published if by_port[entry[1]] > 1]
    assert not clashes, f"host ports published twice: {clashes}"


def test_every_service_is_either_long_running_or_a_one_shot_job() -> None:
    for name, service in services().items():
        restart = str(service.get("restart", "no"))
        assert restart in LONG_RUNNING_RESTART or one_shot(name, service), f"{name}: restart={restart}"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        if one_shot(name, service):
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, f"{name}: healthcheck {test}"


def _volumes(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of every volume entry, short or long syntax."""
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((entry.get("type", "volume"), entry.get("source", ""), entry["target"]))
            continue
        source, _, rest = str(entry).partition(":")
        target = rest.split(":")[0]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append((kind, source, target))
    return out


def test_named_volumes_are_declared_and_bind_mounts_exist() -> None:
    compose = config()
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in compose["services"].items():
        for kind, source, target in _volumes(service):
            if kind == "volume" and source:
                assert source in declared, f"{name}: volume {source} is not declared under top-level volumes"
                used.add(source)
            elif kind == "bind":
                host = (COMPOSE_FILE.parent / source).resolve()
                assert host.exists(), f"{name}: bind-mounted {source} does not exist"
                assert REPO_ROOT in host.parents, f"{name}: {source} is outside the repository"
                assert target.startswith("/"), f"{name}: {target} is not an absolute container path"
    assert declared == used, f"declared but unused volumes: {declared - used}"


def test_depends_on_names_services_with_a_condition_they_can_meet() -> None:
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: use the long depends_on form with a condition"
        for target, spec in depends.items():
            assert target in all_services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert all_services[target].get("healthcheck"), f"{name} waits for {target}'s health check"
            elif condition == "service_completed_successfully":
                assert one_shot(target, all_services[target]), f"{target} never completes (restarted)"
            else:
                pytest.fail(f"{name} -> {target}: condition {condition!r}; wait for health or completion")


def test_dependencies_have_no_cycle() -> None:
    graph = {name: set(svc.get("depends_on") or {}) for name, svc in services().items()}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in visiting, f"dependency cycle: {' -> '.join([*path, node])}"
        if node in done:
            return
        visiting.add(node)
        for nxt in graph[node]:
            visit(nxt, [*path, node])
        visiting.discard(node)
        done.add(node)

    for node in graph:
        visit(node, [])


# ------------------------------------------------------------------------------------------------
# Airflow
# ------------------------------------------------------------------------------------------------


def test_airflow_runs_every_component_and_at_least_two_celery_workers() -> None:
    airflow = airflow_services()
    commands = {name: " ".join(command_words(svc)) for name, svc in airflow.items()}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert component in commands.values(), f"no Airflow {component} service"
    workers = [
        name for name, cmd in commands.items() if cmd == "celery worker" and not one_shot(name, airflow[name])
    ]
    replicas = sum(int((airflow[w].get("deploy") or {}).get("replicas", 1)) for w in workers)
    assert replicas >= 2, f"celery workers: {workers}"


def test_airflow_uses_celery_on_redis_postgres_and_the_fab_auth_manager() -> None:
    all_services = services()
    for name, service in airflow_services().items():
        env = service_env(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB, name
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        assert broker.scheme == "redis" and broker.password, (
            f"{name}: broker {broker.scheme}://{broker.hostname}"
        )
        assert "redis" in all_services[broker.hostname]["image"], name
        for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
            url = urlsplit(env[key].removeprefix("db+"))
            assert url.scheme.startswith("postgresql"), f"{name}: {key} is {url.scheme}"
            assert ImageRef.parse(all_services[url.hostname]["image"]).name == "postgres", f"{name}: {key}"
            assert url.path == "/airflow", f"{name}: {key} uses database {url.path}"


def test_airflow_never_imports_the_repository_plugins_as_plugin_modules() -> None:
    """plugins/conveyor_airflow/hooks/mlflow.py would shadow `mlflow` if Airflow imported it as a plugin."""
    airflow_dockerfile = (REPO_ROOT / "docker/airflow/Dockerfile").read_text()
    for name, service in airflow_services().items():
        env = service_env(service)
        folder = env["AIRFLOW__CORE__PLUGINS_FOLDER"]
        assert folder not in {"/opt/airflow/plugins", "/opt/conveyor/plugins"}, f"{name}: {folder}"
        assert re.search(rf"mkdir -p [^\n]*{re.escape(folder)}", airflow_dockerfile), (
            f"{folder} is not created"
        )
        assert env["AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES"] == "airflow.* conveyor.*", name
        mounts = {target for _, _, target in _volumes(service)}
        assert not any(m == folder or m.startswith(f"{folder}/") for m in mounts), (
            f"{name} mounts into {folder}"
        )
    copied_into_plugins = re.findall(
        r"^COPY .*\s(/opt/airflow/conveyor-plugins\S*)", airflow_dockerfile, re.M
    )
    assert not copied_into_plugins


def test_airflow_components_share_one_configuration() -> None:
    airflow = airflow_services()
    reference = service_env(airflow["airflow-scheduler"])
    for name, service in airflow.items():
        env = service_env(service)
        missing = {k for k in reference if k not in env}
        differing = {k for k in reference if k in env and env[k] != reference[k]}
        assert not missing and not differing, f"{name}: missing {missing}, differing {differing}"


def test_the_dags_find_mlflow_the_model_server_and_the_data_root() -> None:
    for name, service in airflow_services().items():
        env = service_env(service)
        assert env["CONVEYOR_MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["CONVEYOR_MODEL_SERVER_URL"] == "http://model-server:8000", name
        assert env["CONVEYOR_DATA_ROOT"].startswith(("file:///", "s3://", "gs://")), name
        if env["CONVEYOR_DATA_ROOT"].startswith("file:///"):
            path = urlsplit(env["CONVEYOR_DATA_ROOT"]).path
            shared = {target for kind, _, target in _volumes(service) if kind == "volume"}
            assert path in shared, f"{name}: data root {path} is not on a shared volume"


def _connections() -> dict[str, dict[str, Any]]:
    env = service_env(airflow_services()["airflow-scheduler"])
    return {
        key.removeprefix("AIRFLOW_CONN_").lower(): json.loads(value)
        for key, value in env.items()
        if key.startswith("AIRFLOW_CONN_")
    }


def test_airflow_settings_connections_variables_and_pools_are_all_provided() -> None:
    """The production stack provides what airflow_settings.yaml gives the embedded one."""
    settings = yaml.safe_load(AIRFLOW_SETTINGS.read_text())["airflow"]
    connections = _connections()
    for conn in settings["connections"]:
        assert conn["conn_id"] in connections, f"no AIRFLOW_CONN_{conn['conn_id'].upper()}"
        assert connections[conn["conn_id"]]["conn_type"] == conn["conn_type"]
    env = service_env(airflow_services()["airflow-scheduler"])
    for variable in settings["variables"]:
        assert f"AIRFLOW_VAR_{variable['variable_name'].upper()}" in env, variable["variable_name"]
    init_script = (REPO_ROOT / "docker/airflow/airflow-init.sh").read_text()
    for pool in settings["pools"]:
        assert re.search(rf"airflow pools set {pool['pool_name']}\b", init_script), pool["pool_name"]


def test_connections_point_at_services_with_credentials() -> None:
    all_services = services()
    connections = _connections()
    for conn_id, service_name in (("mlflow_default", "mlflow"), ("model_server_default", "model-server")):
        conn = connections[conn_id]
        assert conn["host"] == service_name and service_name in all_services, conn_id
        assert conn["port"] in container_ports(all_services[service_name]), f"{conn_id}: port {conn['port']}"
        assert conn["login"] and conn["password"], f"{conn_id} has no credentials"
    mlflow_env = service_env(all_services["mlflow"])
    assert connections["mlflow_default"]["login"] == mlflow_env["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert connections["mlflow_default"]["password"] == mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    server_env = service_env(all_services["model-server"])
    assert connections["model_server_default"]["password"] == server_env["CONVEYOR_MODEL_SERVER_TOKEN"]


def _fake_bin(tmp_path: Path, name: str, script: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _run_script(
    script: Path, env: dict[str, str], bin_dir: Path, shell: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shell, str(script)],
        env={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_airflow_init_migrates_creates_the_admin_and_sets_the_pools(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    bin_dir = _fake_bin(tmp_path, "airflow", f'echo "$*" >> {calls}\n')
    init = services()["airflow-init"]
    assert "airflow-init.sh" in " ".join(command_words(init))
    env = {k: v for k, v in service_env(init).items() if not k.startswith("AIRFLOW__")}
    result = _run_script(REPO_ROOT / "docker/airflow/airflow-init.sh", env, bin_dir, "bash")
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    commands = [" ".join(line.split()[:2]) for line in lines]
    assert commands[0] == "db migrate", "migrate before anything touches the database"
    create = lines[commands.index("users create")]
    assert f"--username {env['AIRFLOW_ADMIN_USERNAME']}" in create and "--role Admin" in create
    assert f"--password {env['AIRFLOW_ADMIN_PASSWORD']}" in create
    # `users create` leaves an existing user untouched, so the password from .env is set again.
    reset = lines[commands.index("users reset-password")]
    assert commands.index("users reset-password") > commands.index("users create")
    assert f"--password {env['AIRFLOW_ADMIN_PASSWORD']}" in reset
    pools = [line for line in lines if line.startswith("pools set ")]
    assert any(
        p.startswith(f"pools set conveyor_training {env['CONVEYOR_TRAINING_POOL_SLOTS']} ") for p in pools
    )
    assert any(
        p.startswith(f"pools set conveyor_serving {env['CONVEYOR_SERVING_POOL_SLOTS']} ") for p in pools
    )


def test_airflow_init_refuses_to_run_without_the_admin_password(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, "airflow", "exit 0\n")
    env = {k: v for k, v in service_env(services()["airflow-init"]).items() if not k.startswith("AIRFLOW__")}
    env["AIRFLOW_ADMIN_PASSWORD"] = ""
    result = _run_script(REPO_ROOT / "docker/airflow/airflow-init.sh", env, bin_dir, "bash")
    assert result.returncode != 0 and "AIRFLOW_ADMIN_PASSWORD" in result.stderr


def test_the_databases_are_created_before_airflow_and_mlflow_start() -> None:
    all_services = services()
    init = all_services["postgres-init"]
    script_mount = next(source for kind, source, _ in _volumes(init) if kind == "bind")
    script = (COMPOSE_FILE.parent / script_mount).read_text()
    for database in ("airflow", "mlflow", "mlflow_auth"):
        assert re.search(rf"\('{database}', '\w+'\)", script), f"{database} is not created"
    assert all_services["airflow-init"]["depends_on"]["postgres-init"]["condition"] == (
        "service_completed_successfully"
    )
    assert (
        all_services["mlflow"]["depends_on"]["postgres-init"]["condition"] == "service_completed_successfully"
    )


# ------------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------------


def _mlflow_auth_keys() -> set[str]:
    """The keys MLflow's own basic_auth.ini knows (found without importing mlflow, which is slow)."""
    spec = importlib.util.find_spec("mlflow")
    assert spec and spec.submodule_search_locations
    shipped = Path(next(iter(spec.submodule_search_locations))) / "server" / "auth" / "basic_auth.ini"
    return {m.group(1) for m in re.finditer(r"^#?\s*(\w+)\s*=", shipped.read_text(), re.M)}


def test_mlflow_runs_basic_auth_on_postgres_with_the_auth_ini_rendered_at_start(tmp_path: Path) -> None:
    mlflow = services()["mlflow"]
    env = service_env(mlflow)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    db_host = services()[env["MLFLOW_DB_HOST"]]
    assert ImageRef.parse(db_host["image"]).name == "postgres"

    _, stages = dockerfile_stages(dockerfile_of(mlflow).read_text())
    entrypoint = json.loads(stages[-1].all("ENTRYPOINT")[-1].value)
    script = REPO_ROOT / "docker/mlflow" / Path(entrypoint[-1]).name
    assert script.is_file(), entrypoint

    out = tmp_path / "mlflow-call"
    bin_dir = _fake_bin(
        tmp_path,
        "mlflow",
        f'{{ echo "ARGS $*"; echo "BACKEND $MLFLOW_BACKEND_STORE_URI"; echo "INI $MLFLOW_AUTH_CONFIG_PATH";'
        f' cat "$MLFLOW_AUTH_CONFIG_PATH"; }} > {out}\n',
    )
    result = _run_script(script, {**env, "TMPDIR": str(tmp_path)}, bin_dir, "sh")
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    args = text.splitlines()[0]
    assert "--app-name basic-auth" in args and "--serve-artifacts" in args
    assert "--port 5000" in args and 5000 in container_ports(mlflow)
    backend = urlsplit(re.search(r"^BACKEND (\S+)", text, re.M).group(1))
    assert backend.scheme.startswith("postgresql") and backend.hostname == env["MLFLOW_DB_HOST"]
    assert backend.path == "/mlflow"

    ini_path = Path(re.search(r"^INI (\S+)", text, re.M).group(1))
    assert stat.S_IMODE(ini_path.stat().st_mode) == 0o600, "the auth ini holds a database password"
    parser = configparser.ConfigParser()
    parser.read(ini_path)
    section = parser["mlflow"]
    assert set(section) <= _mlflow_auth_keys(), f"unknown keys: {set(section) - _mlflow_auth_keys()}"
    assert urlsplit(section["database_uri"]).path == "/mlflow_auth"
    assert urlsplit(section["database_uri"]).password == env["MLFLOW_DB_PASSWORD"]
    assert section["admin_username"] == env["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert "admin_password" not in section, "the admin password stays in the environment"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] and env["MLFLOW_FLASK_SERVER_SECRET_KEY"]


def test_no_mlflow_auth_ini_is_committed() -> None:
    for path in (REPO_ROOT / "docker").rglob("*.ini"):
        pytest.fail(f"{path.relative_to(REPO_ROOT)}: render the auth configuration at start instead")


def test_mlflow_server_packages_are_pinned_by_requirements() -> None:
    pins = {
        line.split("==")[0].lower()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    wanted = [
        re.split(r"[\[<>=~ ]", line.strip())[0].lower()
        for line in (REPO_ROOT / "docker/mlflow/server-packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert wanted and all(name in pins for name in wanted), f"not in requirements.txt: {set(wanted) - pins}"


# ------------------------------------------------------------------------------------------------
# Model server and Prometheus
# ------------------------------------------------------------------------------------------------


def test_the_model_server_runs_one_uvicorn_process_with_readiness_and_its_token() -> None:
    server = services()["model-server"]
    words = command_words(server)
    assert words[:3] == ["uvicorn", "conveyor.serving.app:create_app", "--factory"]
    assert words[words.index("--workers") + 1] == "1", "staging and swaps live in one process"
    port = int(words[words.index("--port") + 1])
    assert port in container_ports(server)
    assert "/health/ready" in " ".join(server["healthcheck"]["test"])
    _, stages = dockerfile_stages(dockerfile_of(server).read_text())
    assert "/health/live" in stages[-1].all("HEALTHCHECK")[-1].value
    env = service_env(server)
    assert env["CONVEYOR_MODEL_SERVER_TOKEN"]
    assert env["CONVEYOR_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    shared = {source for kind, source, _ in _volumes(server) if kind == "volume"}
    workers = [s for s in airflow_services().values() if " ".join(command_words(s)) == "celery worker"]
    for worker in workers:
        assert shared & {source for kind, source, _ in _volumes(worker)}, "prediction logs must reach workers"


def test_prometheus_scrapes_the_model_server() -> None:
    prometheus = services()["prometheus"]
    flags = dict(word.split("=", 1) for word in command_words(prometheus) if "=" in word)
    config_in_container = flags["--config.file"]
    source = next(src for kind, src, target in _volumes(prometheus) if target == config_in_container)
    scrape = yaml.safe_load((COMPOSE_FILE.parent / source).read_text())
    targets = {
        (job.get("metrics_path", "/metrics"), target)
        for job in scrape["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    server = services()["model-server"]
    words = command_words(server)
    expected = ("/metrics", f"model-server:{words[words.index('--port') + 1]}")
    assert expected in targets, f"no scrape of the model server in {targets}"


@pytest.mark.parametrize("name", ["redis", "postgres"])
def test_stateful_backends_keep_their_data_on_a_volume(name: str) -> None:
    kinds = {kind for kind, _, _ in _volumes(services()[name])}
    assert "volume" in kinds, f"{name} loses its data with the container"


def test_interpolation_reader(tmp_path: Path) -> None:
    """The reader behind these checks follows Compose's rules."""
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${UNSET:-d}/${EMPTY-d}/$$SET/$SET", env) == "v/d/d//$SET/v"
    assert interpolate("${SET:+alt}${EMPTY:+alt}", env) == "alt"
    with pytest.raises(InterpolationError):
        interpolate("${EMPTY:?needed}", env)
    with pytest.raises(InterpolationError):
        interpolate("${A:-${B}}", env)
    assert [r.name for r in var_refs("$$NOT ${A:?x} $B")] == ["A", "B"]
