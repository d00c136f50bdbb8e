"""The embedded local stack: Airflow standalone, an MLflow tracking server, the model server and the
registry relay (MLflow webhook -> Airflow asset event, :mod:`conveyor.registry_relay`).

Everything lives under one git-ignored folder, ``settings.home`` (``<repo>/.conveyor`` by default)::

    <home>/
      supervisord.conf        generated on every ``up`` (mode 0600: it holds the server token)
      supervisord.pid         supervisor.sock (or /tmp/conveyor-<hash>.sock when the path is long)
      stack.json              generated local secrets and the ports in use (mode 0600)
      logs/                   airflow.log, mlflow.log, model-server.log, registry-relay.log,
                              supervisord.log
      airflow/                AIRFLOW_HOME: airflow.cfg, airflow.db (SQLite), logs/ (task logs),
                              plugins/ (AirflowPlugin classes only; see airflow_env) and
                              simple_auth_manager_passwords.json.generated (the admin password)
      mlflow/                 mlflow.db (SQLite) and artifacts/ (served through the tracking server)
      data/                   the default data root (landing batches, snapshots, prediction logs)

The programs run under supervisord (from the ``supervisor`` package): it daemonizes, keeps
them running, captures their output into ``logs/`` and answers XML-RPC on a unix socket, which is
how :func:`status` and :func:`down` talk to it. Airflow is configured for a small machine
(LocalExecutor with low parallelism, examples off, DAGs unpaused at creation, a 10 s DAG-folder
refresh) entirely through ``AIRFLOW__*`` variables, so the checkout's ``dags/`` is used in place
and ``conveyor``/``conveyor_airflow`` are imported from the (editable) install.

Once Airflow answers, :func:`apply_airflow_settings` loads ``airflow_settings.yaml`` (connections,
pools, variables) through the REST API, with ``${CONVEYOR_...}`` placeholders filled from the
stack's state, so no port or secret is written into the repository.

Once MLflow answers, :func:`register_registry_webhook` registers the relay as MLflow's webhook for
alias moves (with a secret generated into ``stack.json``), so a move of ``challenger`` reaches the
deploy DAG as soon as it is made; the registry watcher's polling stays as the fallback. The MLflow
server gets what delivering needs: the key it encrypts webhook secrets with (also in ``stack.json``;
a new key would make the stored secret unreadable) and leave to call plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.airflow_api import AirflowApiError, AirflowClient
from conveyor.errors import ConveyorError
from conveyor.settings import REPO_ROOT, Settings, get_settings

#: The registry webhook relay's program (:mod:`conveyor.registry_relay`).
REGISTRY_RELAY = "registry-relay"
#: The components every stack has (supervisord programs of the embedded profile; start order is
#: their priority: MLflow, model server, relay, Airflow).
COMPONENTS: tuple[str, ...] = ("mlflow", "model-server", "airflow", REGISTRY_RELAY)
#: The Airflow programs of the distributed profile (plus ``airflow-worker-<n>`` Celery workers).
DISTRIBUTED_AIRFLOW: tuple[str, ...] = (
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
#: Health of every Celery worker of the distributed profile (a ping through the broker).
CELERY_WORKERS = "celery-workers"
#: The simple auth manager's only user on the local stack (standalone generates its password).
AIRFLOW_USERNAME = "admin"
AIRFLOW_SETTINGS_FILE = REPO_ROOT / "airflow_settings.yaml"
#: Seconds ``up`` waits for every component to be healthy (a cold start takes 40 s to minutes on 2 cores).
DEFAULT_UP_TIMEOUT = 600.0
LOCALHOST = "127.0.0.1"

# Airflow sizing for a 2-core machine: LocalExecutor starts `parallelism` worker processes; training
# tasks are CPU-bound and additionally serialised by the `conveyor_training` pool.
AIRFLOW_PARALLELISM = 4
AIRFLOW_MAX_ACTIVE_TASKS_PER_DAG = 3
AIRFLOW_DAG_REFRESH_SECONDS = 10

_FAILED_PROCESS_STATES = frozenset({"FATAL", "EXITED", "BACKOFF", "STOPPED", "UNKNOWN"})
_UNIX_SOCKET_MAX = 100  # sun_path holds 108 bytes on Linux; keep a margin


class StackError(ConveyorError):
    """The local stack could not be started, inspected or stopped; the message says what to do."""


class PortInUseError(StackError):
    """A port the stack needs is taken by another process."""


class StackNotRunningError(StackError):
    """The command needs the local stack, and it is not running."""


class ComponentFailedError(StackError):
    """A component exited or never became healthy; carries the tail of its log."""

    def __init__(self, component: str, message: str, log_tail: str = "") -> None:
        super().__init__(
            message + (f"\n--- last lines of {component}'s log ---\n{log_tail}" if log_tail else "")
        )
        self.component = component
        self.log_tail = log_tail


# ------------------------------------------------------------------------------------------------
# Layout, state and the models returned to callers
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackPaths:
    """Where everything of one stack lives, derived from its home folder."""

    home: Path

    @property
    def conf_file(self) -> Path:
        return self.home / "supervisord.conf"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def pid_file(self) -> Path:
        return self.home / "supervisord.pid"

    @property
    def lock_file(self) -> Path:
        return self.home / ".stack.lock"

    @property
    def socket_file(self) -> Path:
        """The supervisord socket; under /tmp when the home path is too long for a unix socket."""
        candidate = self.home / "supervisor.sock"
        if len(str(candidate)) <= _UNIX_SOCKET_MAX:
            return candidate
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        return Path("/tmp") / f"conveyor-{digest}.sock"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def airflow_plugins(self) -> Path:
        return self.airflow_home / "plugins"

    @property
    def airflow_password_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"


class StackPorts(BaseModel):
    """The TCP ports of one stack (all on 127.0.0.1)."""

    airflow: int
    mlflow: int
    model_server: int
    #: The registry relay (MLflow delivers alias moves there); a state from before it had 8090.
    registry_relay: int = 8090
    #: The model server's OIP v2 gRPC port; a state from before it had the default 8001.
    model_server_grpc: int = 8001
    #: Airflow's log servers for running tasks and triggers (internal; moved if the default is taken).
    airflow_worker_logs: int = 8793
    airflow_trigger_logs: int = 8794

    def public(self) -> dict[str, int]:
        return {
            "airflow": self.airflow,
            "mlflow": self.mlflow,
            "model-server": self.model_server,
            REGISTRY_RELAY: self.registry_relay,
            "model-server-grpc": self.model_server_grpc,
        }


class StackState(BaseModel):
    """What ``up`` generated and must find again: secrets and ports. Stored in ``stack.json`` (0600)."""

    stack_id: str = Field(default_factory=lambda: secrets.token_hex(8))
    model_server_token: str = Field(default_factory=lambda: secrets.token_urlsafe(32))
    airflow_jwt_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(64))
    #: The secret MLflow signs webhook deliveries with, and the relay checks them with.
    registry_webhook_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32))
    #: The Fernet key MLflow's server encrypts stored webhook secrets with (kept: a new one could not
    #: read the stored secret back).
    mlflow_webhook_encryption_key: str = Field(default_factory=lambda: _fernet_key())
    ports: StackPorts
    data_root: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    profile: str = "embedded"
    #: distributed profile: SQLAlchemy URLs, the Celery broker and this stack's own Celery queue.
    airflow_db_url: str = ""
    mlflow_db_url: str = ""
    celery_broker_url: str = ""
    celery_queue: str = ""
    celery_workers: int = 0
    celery_worker_concurrency: int = 0
    #: Databases ``up`` created (``down --purge`` drops these and only these).
    created_databases: list[str] = Field(default_factory=list)

    @property
    def distributed(self) -> bool:
        return self.profile == "distributed"

    def worker_names(self) -> list[str]:
        """Supervisord program names of the Celery workers."""
        return [f"airflow-worker-{i}" for i in range(1, self.celery_workers + 1)]

    def celery_hostname(self, program: str) -> str:
        """The Celery node name of a worker program (unique per stack, so pings find only ours)."""
        return f"{program}.{self.stack_id}@{socket.gethostname()}"

    def programs(self) -> tuple[str, ...]:
        """The supervisord programs of this stack, in start order."""
        if not self.distributed:
            return COMPONENTS
        return ("mlflow", "model-server", REGISTRY_RELAY, *DISTRIBUTED_AIRFLOW, *self.worker_names())

    def health_checks(self) -> tuple[str, ...]:
        """What must be healthy: the three components, plus the Celery workers when distributed."""
        return (*COMPONENTS, CELERY_WORKERS) if self.distributed else COMPONENTS


class StackInfo(BaseModel):
    """How to reach a running stack: URLs and the local credentials."""

    home: Path
    airflow_url: str
    mlflow_url: str
    model_server_url: str
    #: Where MLflow delivers alias moves (the relay's webhook endpoint).
    registry_relay_url: str = ""
    airflow_username: str = AIRFLOW_USERNAME
    airflow_password: str | None
    model_server_token: str
    data_root: str
    logs_dir: Path
    already_running: bool = False
    seconds_to_healthy: float | None = None

    def airflow_client(self) -> AirflowClient:
        """An API client logged in as the local admin."""
        if not self.airflow_password:
            raise StackError(
                f"Airflow has not written its admin password yet ({self.home}/airflow/"
                "simple_auth_manager_passwords.json.generated); wait for `conveyor up` to finish"
            )
        return AirflowClient(self.airflow_url, self.airflow_username, self.airflow_password)


class ComponentStatus(BaseModel):
    """One component as ``status`` sees it: supervisord's process state plus an HTTP health check."""

    name: str
    process_state: str
    healthy: bool
    url: str
    detail: str = ""
    pid: int | None = None


class DownReport(BaseModel):
    """What ``down`` did."""

    was_running: bool
    stopped_in_s: float = 0.0
    killed_leftovers: list[int] = Field(default_factory=list)
    purged: bool = False


def _url(port: int) -> str:
    return f"http://{LOCALHOST}:{port}"


def _fernet_key() -> str:
    """A key in Fernet's format (32 random bytes, URL-safe base64), as MLflow's server expects."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def registry_webhook_url(ports: StackPorts) -> str:
    """Where the stack's MLflow delivers alias moves: the relay's webhook endpoint."""
    from conveyor.registry_relay import WEBHOOK_PATH

    return f"{_url(ports.registry_relay)}{WEBHOOK_PATH}"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def load_state(paths: StackPaths) -> StackState | None:
    """The stack's saved state, or None before the first ``up``."""
    if not paths.state_file.exists():
        return None
    try:
        return StackState.model_validate_json(paths.state_file.read_text())
    except ValidationError as exc:
        raise StackError(
            f"{paths.state_file} is not a valid stack state ({exc.errors()[0]['msg']}); "
            "remove it (the stack generates new secrets) or run `conveyor down --purge`"
        ) from exc


def save_state(paths: StackPaths, state: StackState) -> None:
    _write_private(paths.state_file, state.model_dump_json(indent=2) + "\n")


def read_airflow_password(paths: StackPaths, username: str = AIRFLOW_USERNAME) -> str | None:
    """The password ``airflow standalone`` generated for ``username``, once it has."""
    try:
        passwords = json.loads(paths.airflow_password_file.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    value = passwords.get(username)
    return str(value) if value else None


def ensure_airflow_password(paths: StackPaths, username: str = AIRFLOW_USERNAME) -> str:
    """The admin's password in the simple auth manager's password file (0600), made here if missing.

    Airflow's simple auth manager generates missing passwords itself and prints them into its log
    (``logs/airflow.log``, readable by anyone who can read the logs); a password already in the file
    is used as it is and never printed.
    """
    try:
        passwords = json.loads(paths.airflow_password_file.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        passwords = {}
    if not passwords.get(username):
        passwords[username] = secrets.token_urlsafe(18)
    _write_private(paths.airflow_password_file, json.dumps(passwords) + "\n")
    return str(passwords[username])


def _info(paths: StackPaths, state: StackState, **extra: Any) -> StackInfo:
    return StackInfo(
        home=paths.home,
        airflow_url=_url(state.ports.airflow),
        mlflow_url=_url(state.ports.mlflow),
        model_server_url=_url(state.ports.model_server),
        registry_relay_url=registry_webhook_url(state.ports),
        airflow_password=read_airflow_password(paths),
        model_server_token=state.model_server_token,
        data_root=state.data_root,
        logs_dir=paths.logs_dir,
        **extra,
    )


# ------------------------------------------------------------------------------------------------
# Ports
# ------------------------------------------------------------------------------------------------


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free right now (the OS picks it; tests give each stack its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def isolated_settings(home: Path, **overrides: Any) -> Settings:
    """Settings for a throwaway stack in ``home`` on free ports (pytest fixtures, parallel stacks).

    Args:
        home: The stack's home folder (its data root defaults to ``home/data``).
        **overrides: Any other :class:`~conveyor.settings.Settings` field.
    """
    chosen: list[int] = []
    while len(chosen) < 5:
        port = free_port()
        if port not in chosen:
            chosen.append(port)
    values: dict[str, Any] = {
        "home": home,
        "data_root": (home / "data").as_uri(),
        "airflow_port": chosen[0],
        "mlflow_port": chosen[1],
        "model_server_port": chosen[2],
        "registry_relay_port": chosen[3],
        "model_server_grpc_port": chosen[4],
    }
    return Settings(**(values | overrides))


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """Whether a server could listen on ``host:port`` now (same socket options as uvicorn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _port_holder(port: int) -> str:
    """Best effort: which process listens on ``port`` (``pid 123: python -m http.server``)."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                cmd = " ".join(psutil.Process(conn.pid).cmdline())[:120]
                return f"pid {conn.pid}: {cmd}"
    except Exception:
        return ""
    return ""


def check_ports_free(ports: Mapping[str, int]) -> None:
    """Raise :class:`PortInUseError` naming every component whose port is taken.

    Args:
        ports: Component name → port.
    """
    taken = {name: port for name, port in ports.items() if not port_is_free(port)}
    duplicated = {p for p in ports.values() if list(ports.values()).count(p) > 1}
    if duplicated:
        raise PortInUseError(f"ports must differ, but {sorted(duplicated)} is given to several components")
    if not taken:
        return
    lines = []
    for name, port in taken.items():
        holder = _port_holder(port)
        lines.append(f"  {name}: port {port} is in use" + (f" by {holder}" if holder else ""))
    option = {"airflow": "airflow-port", "mlflow": "mlflow-port", "model-server": "model-server-port"}
    hints = ", ".join(
        [f"--{option[n]} / CONVEYOR_{option[n].upper().replace('-', '_')}" for n in taken if n in option]
        + (["CONVEYOR_REGISTRY_RELAY_PORT"] if REGISTRY_RELAY in taken else [])
        + (["CONVEYOR_MODEL_SERVER_GRPC_PORT"] if "model-server-grpc" in taken else [])
    )
    raise PortInUseError(
        "cannot start the stack, a port is taken:\n"
        + "\n".join(lines)
        + f"\nStop what holds it, or choose another port ({hints})."
    )


def _pick_internal_port(preferred: int, avoid: set[int]) -> int:
    if preferred not in avoid and port_is_free(preferred):
        return preferred
    while True:
        port = free_port()
        if port not in avoid:
            return port


# ------------------------------------------------------------------------------------------------
# supervisord configuration
# ------------------------------------------------------------------------------------------------


def venv_bin() -> Path:
    """The folder of this interpreter's console scripts (``airflow``, ``mlflow``, ``uvicorn``...)."""
    return Path(sys.executable).parent


def _conf_value(value: str) -> str:
    """Escape a value for supervisord's config parser (``%`` starts an interpolation)."""
    return value.replace("%", "%%")


def _env_line(env: Mapping[str, str]) -> str:
    parts = []
    for key, value in env.items():
        if '"' in value or "\n" in value:
            raise StackError(f"environment value of {key} contains a quote or newline: {value!r}")
        parts.append(f'{key}="{_conf_value(value)}"')
    return ",".join(parts)


def _command(*args: str | Path) -> str:
    return _conf_value(" ".join(shlex.quote(str(a)) for a in args))


def conveyor_env(settings: Settings, state: StackState) -> dict[str, str]:
    """The ``CONVEYOR_*`` settings every component sees, so they agree on ports and paths."""
    return {
        "CONVEYOR_HOME": str(settings.home),
        "CONVEYOR_DATA_ROOT": state.data_root,
        "CONVEYOR_SPECS_DIR": str(settings.specs_dir),
        "CONVEYOR_MLFLOW_TRACKING_URI": _url(state.ports.mlflow),
        "MLFLOW_TRACKING_URI": _url(state.ports.mlflow),
        "CONVEYOR_MODEL_SERVER_URL": _url(state.ports.model_server),
        "CONVEYOR_AIRFLOW_PORT": str(state.ports.airflow),
        "CONVEYOR_MLFLOW_PORT": str(state.ports.mlflow),
        "CONVEYOR_MODEL_SERVER_PORT": str(state.ports.model_server),
        # Every alias writer (tasks on any worker, the CLI) must take the same lock.
        "CONVEYOR_REGISTRY_LOCK_URL": settings.registry_lock_url,
    }


def mlflow_webhook_env(state: StackState) -> dict[str, str]:
    """What the MLflow server needs to store webhook secrets and deliver to the relay on 127.0.0.1.

    MLflow encrypts stored webhook secrets with ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`` (a random
    key per process otherwise, so a restart could not read them back) and by default delivers only
    over HTTPS to public addresses; the local relay is plain HTTP on the loopback address. The list
    of webhooks is cached per event; a short cache sees a registration made after a move soon.
    """
    return {
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": state.mlflow_webhook_encryption_key,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": "10",
        "MLFLOW_WEBHOOK_REQUEST_TIMEOUT": "15",
    }


def airflow_env(settings: Settings, state: StackState, paths: StackPaths) -> dict[str, str]:
    """``AIRFLOW__*`` configuration of the standalone Airflow (and the environment of its tasks)."""
    ports = state.ports
    return {
        "AIRFLOW_HOME": str(paths.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        # Not <repo>/plugins: Airflow imports every .py under the plugins folder as a top-level
        # module named after the file, so conveyor_airflow/hooks/mlflow.py would replace the real
        # `mlflow` in sys.modules of every Airflow process. conveyor_airflow is installed
        # (editable) and imports normally; this folder is for AirflowPlugin classes only.
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(paths.airflow_plugins),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(AIRFLOW_PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(AIRFLOW_MAX_ACTIVE_TASKS_PER_DAG),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # A DAG file import pays ~5 s for airflow.sdk on this machine; leave room under load.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
        "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES": "airflow.* conveyor.*",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{paths.airflow_home / 'airflow.db'}",
        "AIRFLOW__API__HOST": LOCALHOST,
        "AIRFLOW__API__PORT": str(ports.airflow),
        # Also where task processes find the execution API (base_url + /execution/).
        "AIRFLOW__API__BASE_URL": _url(ports.airflow),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": state.airflow_jwt_secret,
        # New DAG files show up within ~10 s; changed files are re-parsed on their next loop anyway.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(AIRFLOW_DAG_REFRESH_SECONDS),
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # An idle scheduler loop looks for asset events and finished upstream tasks 4 times a second
        # (default once): each hop of a deploy (event -> run, run -> plan, plan -> deploy) waits less.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports.airflow_worker_logs),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports.airflow_trigger_logs),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(paths.airflow_home / "logs"),
        "NO_COLOR": "1",
        **(_distributed_airflow_env(state) if state.distributed else {}),
    }


def _distributed_airflow_env(state: StackState) -> dict[str, str]:
    """PostgreSQL metadata DB and CeleryExecutor; every task goes to this stack's own queue."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        # More slots than one LocalExecutor: the workers hold the tasks, not the scheduler.
        "AIRFLOW__CORE__PARALLELISM": str(max(AIRFLOW_PARALLELISM, state.celery_workers * 2)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": state.airflow_db_url,
        "AIRFLOW__CELERY__BROKER_URL": state.celery_broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + state.airflow_db_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(state.celery_worker_concurrency),
        # One task at a time per free slot: a long training task never hides a second one.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        # Several stacks may share one Redis: each has its own queue, and its workers serve only it.
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": state.celery_queue,
        # `airflow standalone` sets this up itself; the separate API server needs the user named.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USERNAME}:admin",
    }


def render_supervisord_conf(
    settings: Settings, state: StackState, paths: StackPaths, bin_dir: Path | None = None
) -> str:
    """The ``supervisord.conf`` of one stack.

    Args:
        settings: Where the stack lives (``home``) and which specs it serves.
        state: Ports and generated secrets.
        paths: The stack's layout (derived from ``settings.home``).
        bin_dir: Folder of the ``airflow``, ``mlflow`` and ``uvicorn`` scripts; this venv's by default.
    """
    bin_dir = bin_dir or venv_bin()
    if "%" in str(settings.home) or "%" in str(bin_dir):
        # supervisord %-expands some values twice (log file names), so no escaping is safe for all
        raise StackError(f"the stack's home and venv paths cannot contain '%': {settings.home}, {bin_dir}")
    common = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONUNBUFFERED": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        "CONVEYOR_STACK_ID": state.stack_id,
    }
    conveyor = conveyor_env(settings, state)
    ports = state.ports
    programs: dict[str, dict[str, str]] = {
        "mlflow": {
            "command": _command(
                bin_dir / "mlflow",
                "server",
                "--backend-store-uri",
                state.mlflow_db_url or f"sqlite:///{paths.mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(paths.mlflow_artifacts),
                "--serve-artifacts",
                "--host",
                LOCALHOST,
                "--port",
                str(ports.mlflow),
                "--workers",
                "1",
            ),
            "directory": str(paths.mlflow_dir),
            "environment": _env_line(
                {**common, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **mlflow_webhook_env(state)}
            ),
            "priority": "100",
            "stopsignal": "TERM",
            "stopwaitsecs": "15",
        },
        "model-server": {
            "command": _command(
                bin_dir / "uvicorn",
                "conveyor.serving.app:create_app",
                "--factory",
                "--host",
                LOCALHOST,
                "--port",
                str(ports.model_server),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "10",
            ),
            "directory": str(settings.home),
            "environment": _env_line(
                {
                    **common,
                    **conveyor,
                    "CONVEYOR_MODEL_SERVER_TOKEN": state.model_server_token,
                    "CONVEYOR_MODEL_SERVER_GRPC_PORT": str(ports.model_server_grpc),
                }
            ),
            "priority": "200",
            "stopsignal": "TERM",
            "stopwaitsecs": "15",
        },
        REGISTRY_RELAY: {
            "command": _command(
                bin_dir / "uvicorn",
                "conveyor.registry_relay:create_app",
                "--factory",
                "--host",
                LOCALHOST,
                "--port",
                str(ports.registry_relay),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
            ),
            "directory": str(settings.home),
            # It posts to Airflow as the local admin, reading the password from <home>/airflow.
            "environment": _env_line(
                {**common, **conveyor, "CONVEYOR_REGISTRY_WEBHOOK_SECRET": state.registry_webhook_secret}
            ),
            "priority": "250",
            "stopsignal": "TERM",
            "stopwaitsecs": "10",
        },
    }
    airflow = _env_line({**common, **conveyor, **airflow_env(settings, state, paths)})
    if not state.distributed:
        programs["airflow"] = {
            "command": _command(bin_dir / "airflow", "standalone"),
            "directory": str(paths.airflow_home),
            "environment": airflow,
            "priority": "300",
            # standalone stops its scheduler, API server, DAG processor and triggerer on SIGINT
            # (KeyboardInterrupt); the whole process group gets it. The scheduler often lingers
            # (it waits for running tasks), so after 20 s the group gets SIGKILL and `down` ends
            # task processes, which run in sessions of their own (see stack_processes).
            "stopsignal": "INT",
            "stopwaitsecs": "20",
        }
    else:
        for priority, name in enumerate(DISTRIBUTED_AIRFLOW, start=300):
            programs[name] = {
                "command": _command(bin_dir / "airflow", name.removeprefix("airflow-")),
                "directory": str(paths.airflow_home),
                "environment": airflow,
                "priority": str(priority),
                "stopsignal": "TERM",
                "stopwaitsecs": "20",
            }
        for name in state.worker_names():
            programs[name] = {
                # Task logs land in the shared log folder, which the API server reads directly.
                "command": _command(
                    bin_dir / "airflow",
                    "celery",
                    "worker",
                    "--queues",
                    state.celery_queue,
                    "--concurrency",
                    str(state.celery_worker_concurrency),
                    "--celery-hostname",
                    state.celery_hostname(name),
                    "--skip-serve-logs",
                ),
                "directory": str(paths.airflow_home),
                "environment": airflow,
                "priority": "400",
                # Celery's warm shutdown waits for running tasks; `down` ends what is left.
                "stopsignal": "TERM",
                "stopwaitsecs": "30",
            }
    lines = [
        "; Generated by `conveyor up` on every start; edit conveyor/stack.py, not this file.",
        "[unix_http_server]",
        f"file={_conf_value(str(paths.socket_file))}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={_conf_value(str(paths.log_file('supervisord')))}",
        "logfile_maxbytes=10MB",
        "logfile_backups=2",
        f"pidfile={_conf_value(str(paths.pid_file))}",
        f"childlogdir={_conf_value(str(paths.logs_dir))}",
        f"directory={_conf_value(str(settings.home))}",
        f"identifier=conveyor-{state.stack_id}",
        "strip_ansi=true",
        "loglevel=info",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_conf_value(str(paths.socket_file))}",
        "",
    ]
    for name, program in programs.items():
        lines += [
            f"[program:{name}]",
            f"command={program['command']}",
            f"directory={_conf_value(program['directory'])}",
            f"environment={program['environment']}",
            f"priority={program['priority']}",
            "autostart=true",
            "autorestart=unexpected",
            "startsecs=3",
            "startretries=2",
            f"stopsignal={program['stopsignal']}",
            f"stopwaitsecs={program['stopwaitsecs']}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_conf_value(str(paths.log_file(name)))}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
            "",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Talking to supervisord
# ------------------------------------------------------------------------------------------------


def _rpc(paths: StackPaths) -> Any:
    """An XML-RPC proxy to this stack's supervisord over its unix socket."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{paths.socket_file}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def supervisord_running(paths: StackPaths) -> bool:
    """Whether this stack's supervisord answers on its socket."""
    if not paths.socket_file.exists():
        return False
    try:
        return bool(_rpc(paths).supervisor.getState()["statename"] == "RUNNING")
    except (OSError, xmlrpc.client.Error):
        return False


def _process_info(paths: StackPaths) -> dict[str, dict[str, Any]]:
    try:
        return {p["name"]: p for p in _rpc(paths).supervisor.getAllProcessInfo()}
    except (OSError, xmlrpc.client.Error):
        return {}


def _supervisord_pid(paths: StackPaths) -> int | None:
    try:
        return int(paths.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        return bool(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except Exception:
        return False


def _clean_env(state: StackState) -> dict[str, str]:
    """The environment supervisord starts with: the caller's, minus settings of another stack."""
    dropped = ("CONVEYOR_", "AIRFLOW__")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k not in {"AIRFLOW_HOME", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV"}
    }
    env["CONVEYOR_STACK_ID"] = state.stack_id
    return env


def stack_processes(stack_id: str, home: Path) -> list[int]:
    """PIDs of live processes of the stack ``stack_id`` living in ``home``.

    A process belongs to the stack when it carries ``CONVEYOR_STACK_ID=<stack_id>`` in its
    environment, or when it is this venv's Python working inside ``home``: Airflow renames its
    workers, API server and task processes with setproctitle, which wipes their visible
    environment, and task processes run in sessions of their own (a process-group kill misses
    them), but they keep the working directory supervisord gave the program. This process and
    its ancestors are never included.
    """
    import psutil

    home = home.resolve()
    python = os.path.realpath(sys.executable)
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in spared:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("CONVEYOR_STACK_ID") == stack_id:
                found.append(proc.pid)
                continue
            cwd = Path(proc.cwd())
            if (cwd == home or home in cwd.parents) and proc.exe() == python:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


# ------------------------------------------------------------------------------------------------
# Health
# ------------------------------------------------------------------------------------------------


@functools.cache
def _health_http() -> httpx.Client:
    # One client for all health polls: a new one per call builds an SSL context each time, which
    # costs real CPU on the 2-core machine the stack is busy starting on.
    return httpx.Client()


def _http_get(url: str, timeout: float = 3.0) -> httpx.Response | None:
    try:
        return _health_http().get(url, timeout=timeout)
    except httpx.HTTPError:
        return None


def check_health(component: str, ports: StackPorts) -> tuple[bool, str]:
    """HTTP health of one component: (healthy, detail)."""
    if component == "mlflow":
        response = _http_get(f"{_url(ports.mlflow)}/health")
        if response is None:
            return False, "not answering yet"
        return response.status_code == 200, f"/health {response.status_code}"
    if component == "model-server":
        live = _http_get(f"{_url(ports.model_server)}/health/live")
        if live is None:
            return False, "not answering yet"
        if live.status_code != 200:
            return False, f"/health/live {live.status_code}"
        ready = _http_get(f"{_url(ports.model_server)}/health/ready")
        if ready is not None and ready.status_code == 200:
            return True, "live, ready"
        reason = ""
        if ready is not None:
            with contextlib.suppress(ValueError):
                body = ready.json()
                reason = str(body.get("detail") or body.get("reason") or body)[:120]
        return True, "live, not ready" + (f" ({reason})" if reason else " (no champion deployed yet)")
    if component == REGISTRY_RELAY:
        response = _http_get(f"{_url(ports.registry_relay)}/health")
        if response is None:
            return False, "not answering yet"
        if response.status_code != 200:
            return False, f"/health {response.status_code}"
        with contextlib.suppress(ValueError):
            body = response.json()
            return True, (
                f"{body.get('relayed', 0)} moves relayed, {body.get('refused', 0)} deliveries refused, "
                f"{body.get('airflow_failed', 0)} not taken by Airflow"
            )
        return True, "/health 200"
    if component == "airflow":
        response = _http_get(f"{_url(ports.airflow)}/api/v2/monitor/health")
        if response is None:
            return False, "API server not answering yet"
        if response.status_code != 200:
            return False, f"/api/v2/monitor/health {response.status_code}"
        body = response.json()
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        unhealthy = [p for p in parts if (body.get(p) or {}).get("status") != "healthy"]
        if unhealthy:
            return False, "waiting for " + ", ".join(unhealthy)
        return True, "scheduler, triggerer, DAG processor healthy"
    raise ValueError(f"unknown component {component!r}; known: {COMPONENTS}")


def celery_workers_health(state: StackState, timeout: float = 2.0) -> tuple[bool, str]:
    """Ping this stack's Celery workers through the broker: (all answered, detail)."""
    from celery import Celery

    expected = {state.celery_hostname(name) for name in state.worker_names()}
    app = Celery(broker=state.celery_broker_url)
    try:
        replies = app.control.ping(destination=sorted(expected), timeout=timeout)
    except Exception as exc:  # the broker is down or refuses us
        return False, f"broker {_redact(state.celery_broker_url)} not answering ({type(exc).__name__})"
    finally:
        app.close()
    answered = {name for reply in replies for name in reply}
    missing = sorted(expected - answered)
    if missing:
        return False, f"{len(answered)}/{len(expected)} workers answer a ping"
    return True, f"{len(expected)} workers answer on queue {state.celery_queue}"


def _redact(url: str) -> str:
    """``url`` without its password (for messages)."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def stack_health(check: str, state: StackState) -> tuple[bool, str]:
    """One entry of :meth:`StackState.health_checks`: (healthy, detail)."""
    if check == CELERY_WORKERS:
        return celery_workers_health(state)
    return check_health(check, state.ports)


def _health_of_program(program: str, state: StackState) -> tuple[bool, str]:
    if program.startswith("airflow-worker-"):
        ok, detail = celery_workers_health(state)
        return ok, detail
    if program.startswith("airflow"):
        return check_health("airflow", state.ports)
    return check_health(program, state.ports)


def _component_url(component: str, ports: StackPorts) -> str:
    if component.startswith("airflow"):
        return _url(ports.airflow)
    return _url(ports.public()[component])


# ------------------------------------------------------------------------------------------------
# Public operations
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(paths: StackPaths) -> Iterator[None]:
    """One ``up``/``down`` at a time per home (a second waits for the first)."""
    paths.home.mkdir(parents=True, exist_ok=True)
    with paths.lock_file.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _new_state(settings: Settings, previous: StackState | None) -> StackState:
    """State for a fresh start: the configured ports, secrets kept from the last run if any."""
    public = {
        settings.airflow_port,
        settings.mlflow_port,
        settings.model_server_port,
        settings.registry_relay_port,
        settings.model_server_grpc_port,
    }
    old = previous.ports if previous else None
    worker_logs = _pick_internal_port(old.airflow_worker_logs if old else 8793, public)
    trigger_logs = _pick_internal_port(old.airflow_trigger_logs if old else 8794, public | {worker_logs})
    ports = StackPorts(
        airflow=settings.airflow_port,
        mlflow=settings.mlflow_port,
        model_server=settings.model_server_port,
        registry_relay=settings.registry_relay_port,
        model_server_grpc=settings.model_server_grpc_port,
        airflow_worker_logs=worker_logs,
        airflow_trigger_logs=trigger_logs,
    )
    values: dict[str, Any] = {"ports": ports, "data_root": settings.data_root, "profile": settings.profile}
    if previous is not None:
        if previous.profile != settings.profile:
            raise StackError(
                f"the stack in {settings.home} was created with the {previous.profile} profile, not "
                f"{settings.profile}; use another home (--home / CONVEYOR_HOME) or "
                "`conveyor down --purge` first"
            )
        values |= {
            "stack_id": previous.stack_id,
            "model_server_token": previous.model_server_token,
            "airflow_jwt_secret": previous.airflow_jwt_secret,
            "registry_webhook_secret": previous.registry_webhook_secret,
            "mlflow_webhook_encryption_key": previous.mlflow_webhook_encryption_key,
            "created_at": previous.created_at,
            "created_databases": previous.created_databases,
        }
    if settings.model_server_token:
        values["model_server_token"] = settings.model_server_token
    if settings.registry_webhook_secret.get_secret_value():
        values["registry_webhook_secret"] = settings.registry_webhook_secret.get_secret_value()
    state = StackState(**values)
    if settings.profile == "distributed":
        server = settings.postgres_url.rstrip("/")
        driver = server.replace("postgresql://", "postgresql+psycopg2://", 1)
        state.airflow_db_url = f"{driver}/{settings.airflow_database}"
        state.mlflow_db_url = f"{driver}/{settings.mlflow_database}"
        state.celery_broker_url = settings.celery_broker_url
        state.celery_queue = f"conveyor-{state.stack_id}"
        state.celery_workers = settings.celery_workers
        state.celery_worker_concurrency = settings.celery_worker_concurrency
    return state


# ------------------------------------------------------------------------------------------------
# Distributed profile: PostgreSQL databases and Airflow's schema
# ------------------------------------------------------------------------------------------------


def _server_dsn(db_url: str, database: str = "postgres") -> tuple[str, str]:
    """(libpq DSN of the server's ``database``, the database named in ``db_url``)."""
    parsed = urlparse(db_url)
    return parsed._replace(scheme="postgresql", path=f"/{database}").geturl(), parsed.path.lstrip("/")


@contextlib.contextmanager
def _maintenance_cursor(db_url: str) -> Iterator[Any]:
    """An autocommit cursor on the ``postgres`` database of the server holding ``db_url``."""
    import psycopg2

    dsn, _ = _server_dsn(db_url)
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise StackError(
            f"PostgreSQL at {_redact(dsn)} refused a connection: {str(exc).strip()}; start it or "
            "set CONVEYOR_POSTGRES_URL"
        ) from exc
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def ensure_databases(state: StackState) -> list[str]:
    """Create the Airflow and MLflow databases of a distributed stack if they do not exist.

    Returns:
        The databases created now.

    Raises:
        StackError: PostgreSQL does not answer or refuses (the message says which server).
    """
    from psycopg2 import sql

    created = []
    for url in (state.airflow_db_url, state.mlflow_db_url):
        name = _server_dsn(url)[1]
        with _maintenance_cursor(url) as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
    return created


def drop_databases(state: StackState) -> list[str]:
    """Drop the databases this stack created (never one it found already there)."""
    from psycopg2 import sql

    dropped = []
    for url in (state.airflow_db_url, state.mlflow_db_url):
        name = _server_dsn(url)[1]
        if name in state.created_databases:
            with _maintenance_cursor(url) as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            dropped.append(name)
    return dropped


def migrate_airflow_db(settings: Settings, state: StackState, paths: StackPaths, bin_dir: Path) -> None:
    """``airflow db migrate`` against the stack's PostgreSQL database (idempotent; ~30 s when new).

    Raises:
        ComponentFailedError: The migration failed; carries the tail of its log.
    """
    env = {
        **_clean_env(state),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        **conveyor_env(settings, state),
        **airflow_env(settings, state, paths),
    }
    log = paths.log_file("airflow-db-migrate")
    with log.open("w") as fh:
        result = subprocess.run(
            [str(bin_dir / "airflow"), "db", "migrate"],
            env=env,
            cwd=paths.airflow_home,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        )
    if result.returncode != 0:
        raise ComponentFailedError(
            "airflow-db-migrate",
            f"`airflow db migrate` failed (exit {result.returncode}); full log: {log}",
            tail(log, 40),
        )


#: ``$AIRFLOW_HOME/config/airflow_local_settings.py``: Airflow imports it at the start of each of its
#: processes. Task processes are forked from the scheduler's LocalExecutor workers (or a Celery
#: worker), so importing MLflow once in those parents spares every task ``import mlflow`` (~3 s on 2
#: cores: about half of an alias move's way to being served). Nothing is exported into Airflow.
AIRFLOW_LOCAL_SETTINGS = '''"""Written by `conveyor up` on each start (conveyor.stack)."""

import sys

__all__: list[str] = []

# Only the processes tasks are forked from: the scheduler (LocalExecutor) and Celery workers.
if any(arg in ("scheduler", "worker") for arg in sys.argv[1:3]):
    import mlflow  # noqa: F401
'''


def _prepare_home(settings: Settings, paths: StackPaths) -> None:
    for folder in (paths.logs_dir, paths.airflow_plugins, paths.mlflow_artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    for folder in (paths.home, paths.logs_dir, paths.airflow_home):
        folder.chmod(0o700)  # secrets and logs of one user's stack
    config = paths.airflow_home / "config"
    config.mkdir(exist_ok=True)
    (config / "airflow_local_settings.py").write_text(AIRFLOW_LOCAL_SETTINGS)
    ensure_airflow_password(paths)
    parsed = urlparse(settings.data_root)
    if parsed.scheme in ("", "file"):
        Path(parsed.path).mkdir(parents=True, exist_ok=True)


def _check_executables(bin_dir: Path) -> None:
    missing = [n for n in ("supervisord", "airflow", "mlflow", "uvicorn") if not (bin_dir / n).exists()]
    if missing:
        raise StackError(
            f"{', '.join(missing)} not found in {bin_dir}; run conveyor from the project's virtualenv "
            "(`.venv/bin/conveyor` or `make up`)"
        )


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    if lines <= 0 or not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block, data = 8192, b""
        while size > 0 and data.count(b"\n") <= lines:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def up(
    settings: Settings | None = None,
    wait: bool = True,
    timeout: float = DEFAULT_UP_TIMEOUT,
    *,
    on_progress: Callable[[str], None] | None = None,
    airflow_settings_path: Path | None = AIRFLOW_SETTINGS_FILE,
) -> StackInfo:
    """Start the local stack (idempotent) and, with ``wait``, return once every component is healthy.

    On an already running stack it starts any stopped component, waits for health and re-applies
    ``airflow_settings.yaml``; ``StackInfo.already_running`` is then True.

    Args:
        settings: Home, ports and data root; the process settings by default.
        wait: Wait for Airflow, MLflow and the model server to be healthy, then apply
            ``airflow_settings.yaml``. Without waiting, :func:`ensure_airflow_settings` applies it later.
        timeout: Seconds to wait for health.
        on_progress: Called with a short message whenever what is being waited for changes.
        airflow_settings_path: Connections/pools/variables to apply; None to skip.

    Raises:
        PortInUseError: A port is taken (nothing was started).
        ComponentFailedError: A component exited or stayed unhealthy; the stack was stopped again
            and the message carries the tail of its log.
    """
    settings = settings or get_settings()
    paths = StackPaths(settings.home)
    progress = on_progress or (lambda _msg: None)
    bin_dir = venv_bin()
    _check_executables(bin_dir)
    started = time.monotonic()
    with _locked(paths):
        if supervisord_running(paths):
            state = load_state(paths)
            if state is None:
                raise StackError(
                    f"supervisord runs for {paths.home} but {paths.state_file} is missing; "
                    "run `conveyor down` and `conveyor up` again"
                )
            rpc = _rpc(paths)
            for name, proc in _process_info(paths).items():
                if proc["statename"] in _FAILED_PROCESS_STATES:
                    progress(f"restarting {name} ({proc['statename']})")
                    with contextlib.suppress(xmlrpc.client.Fault):
                        rpc.supervisor.startProcess(name, False)
            already = True
        else:
            previous = load_state(paths)
            if previous is not None and (orphans := stack_processes(previous.stack_id, paths.home)):
                # supervisord died (killed, machine suspended) and left its children running
                progress(f"stopping {len(orphans)} orphaned processes of the previous run")
                _kill_leftovers(previous.stack_id, paths.home, grace=0.0)
            state = _new_state(settings, previous)
            check_ports_free(
                {
                    **state.ports.public(),
                    "airflow log server": state.ports.airflow_worker_logs,
                    "airflow trigger log server": state.ports.airflow_trigger_logs,
                }
            )
            _prepare_home(settings, paths)
            save_state(paths, state)
            if state.distributed:
                progress("creating the PostgreSQL databases if missing, migrating Airflow's schema")
                created = ensure_databases(state)
                state.created_databases = sorted({*state.created_databases, *created})
                save_state(paths, state)
                migrate_airflow_db(settings, state, paths, bin_dir)
            _write_private(paths.conf_file, render_supervisord_conf(settings, state, paths, bin_dir))
            progress(f"starting supervisord ({', '.join(state.programs())})")
            _launch_supervisord(paths, state, bin_dir)
            already = False
    if not wait:
        return _info(paths, state, already_running=already)
    try:
        _wait_healthy(
            paths, state, timeout, progress, airflow_settings_path, settings_values(settings, state)
        )
    except StackError:
        if not already:
            progress("start failed; stopping what was started")
            with contextlib.suppress(StackError):
                down(settings)
        raise
    return _info(
        paths, state, already_running=already, seconds_to_healthy=round(time.monotonic() - started, 1)
    )


def _launch_supervisord(paths: StackPaths, state: StackState, bin_dir: Path) -> None:
    stale = paths.socket_file
    if stale.exists() and not supervisord_running(paths):
        stale.unlink()
    result = subprocess.run(
        [str(bin_dir / "supervisord"), "-c", str(paths.conf_file)],
        env=_clean_env(state),
        cwd=paths.home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"supervisord did not start (exit {result.returncode}):\n{result.stdout}{result.stderr}\n"
            f"{tail(paths.log_file('supervisord'), 20)}"
        )
    deadline = time.monotonic() + 20
    while not supervisord_running(paths):
        if time.monotonic() > deadline:
            raise ComponentFailedError(
                "supervisord",
                f"supervisord did not answer on {paths.socket_file} within 20 s",
                tail(paths.log_file("supervisord"), 30),
            )
        time.sleep(0.2)


def _wait_healthy(
    paths: StackPaths,
    state: StackState,
    timeout: float,
    progress: Callable[[str], None],
    airflow_settings_path: Path | None,
    values: Mapping[str, str],
) -> None:
    deadline = time.monotonic() + timeout
    applied = airflow_settings_path is None
    registered = False
    last_message = apply_error = register_error = ""
    while True:
        procs = _process_info(paths)
        if not procs:
            raise ComponentFailedError(
                "supervisord",
                f"supervisord stopped answering on {paths.socket_file} while the stack was starting",
                tail(paths.log_file("supervisord"), 30),
            )
        for name in state.programs():
            proc_state = procs.get(name, {}).get("statename", "UNKNOWN")
            if proc_state in _FAILED_PROCESS_STATES:
                spawn_error = procs.get(name, {}).get("spawnerr") or ""
                raise ComponentFailedError(
                    name,
                    f"{name} {proc_state.lower()} while the stack was starting"
                    + (f" ({spawn_error})" if spawn_error else "")
                    + f"; full log: {paths.log_file(name)}. Fix the cause, then run `conveyor up` again.",
                    tail(paths.log_file(name), 40),
                )
        health = {name: stack_health(name, state) for name in state.health_checks()}
        if not registered and health["mlflow"][0]:
            try:
                outcome = register_registry_webhook(state)
                registered = True
                progress(f"MLflow webhook {outcome}: alias moves go to {registry_webhook_url(state.ports)}")
            except Exception as exc:  # MLflow refused or failed; say why and try again
                if str(exc) != register_error:
                    register_error = str(exc)
                    progress(f"MLflow webhook not registered yet ({exc})")
        if not applied and _airflow_api_up(state) and read_airflow_password(paths):
            # Pools first of all: the scheduler holds back tasks of a pool that does not exist yet.
            try:
                with _info(paths, state).airflow_client() as client:
                    apply_airflow_settings(client, airflow_settings_path, values)
                applied = True
                progress("applied airflow_settings.yaml (connections, pools, variables)")
            except AirflowApiError as exc:
                if exc.status_code in (400, 422):  # the file asks for something Airflow refuses
                    raise StackError(f"airflow_settings.yaml could not be applied: {exc}") from exc
                if str(exc) != apply_error:
                    apply_error = str(exc)
                    progress(f"airflow_settings.yaml not applied yet ({exc})")
        pending = [f"{n} ({detail})" for n, (ok, detail) in health.items() if not ok]
        if not pending and applied and registered:
            return
        message = (
            "waiting for " + ", ".join(pending)
            if pending
            else "applying airflow_settings.yaml"
            if not applied
            else "registering the MLflow webhook"
        )
        if message != last_message:
            progress(message)
            last_message = message
        if time.monotonic() > deadline:
            name = next((n for n, (ok, _) in health.items() if not ok), "airflow")
            log_name = _log_name_for(name, state)
            if not pending and applied:
                name, log_name = "mlflow", "mlflow"
            unfinished = (
                ", ".join(pending)
                if pending
                else "airflow_settings.yaml not applied: " + apply_error
                if not applied
                else "the MLflow webhook not registered: " + register_error
            )
            raise ComponentFailedError(
                name,
                f"the stack was not healthy within {timeout:.0f}s: {unfinished}; "
                f"full log: {paths.log_file(log_name)}",
                tail(paths.log_file(log_name), 40),
            )
        time.sleep(2.0)


def register_registry_webhook(state: StackState) -> str:
    """Register the stack's relay as MLflow's webhook for alias moves (idempotent, by name).

    Returns:
        ``"created"`` or ``"updated"`` (see :func:`conveyor.registry_relay.ensure_webhook`).
    """
    from conveyor.registry.tracking import client_for
    from conveyor.registry_relay import ensure_webhook

    client = client_for(_url(state.ports.mlflow))
    return ensure_webhook(client, registry_webhook_url(state.ports), state.registry_webhook_secret)


def _log_name_for(check: str, state: StackState) -> str:
    """The program whose log explains an unhealthy check."""
    if not state.distributed:
        return check
    if check == CELERY_WORKERS:
        return state.worker_names()[0]
    return "airflow-scheduler" if check == "airflow" else check


def _airflow_api_up(state: StackState) -> bool:
    response = _http_get(f"{_url(state.ports.airflow)}/api/v2/monitor/health", timeout=2.0)
    return response is not None and response.status_code == 200


def stack_info(settings: Settings | None = None) -> StackInfo:
    """URLs and credentials of the running stack.

    Raises:
        StackNotRunningError: The stack is not running.
    """
    settings = settings or get_settings()
    paths = StackPaths(settings.home)
    state = load_state(paths)
    if state is None or not supervisord_running(paths):
        raise StackNotRunningError(
            f"the local stack in {paths.home} is not running; start it with `conveyor up`"
        )
    return _info(paths, state, already_running=True)


def status(settings: Settings | None = None) -> list[ComponentStatus]:
    """Process state (from supervisord) and HTTP health of every component."""
    settings = settings or get_settings()
    paths = StackPaths(settings.home)
    state = load_state(paths)
    ports = (
        state.ports
        if state
        else StackPorts(
            airflow=settings.airflow_port,
            mlflow=settings.mlflow_port,
            model_server=settings.model_server_port,
            registry_relay=settings.registry_relay_port,
        )
    )
    programs = state.programs() if state else COMPONENTS
    if not supervisord_running(paths):
        return [
            ComponentStatus(
                name=name,
                process_state="STOPPED",
                healthy=False,
                url=_component_url(name, ports),
                detail="not running",
            )
            for name in programs
        ]
    assert state is not None  # supervisord runs only after `up` saved the state
    procs = _process_info(paths)
    result = []
    health_cache: dict[str, tuple[bool, str]] = {}
    for name in programs:
        proc = procs.get(name, {})
        proc_state = str(proc.get("statename", "UNKNOWN"))
        if proc_state == "RUNNING":
            key = "workers" if name.startswith("airflow-worker-") else name
            if key not in health_cache:
                health_cache[key] = _health_of_program(name, state)
            healthy, detail = health_cache[key]
        else:
            healthy, detail = False, ""
        if proc_state != "RUNNING":
            detail = (
                f"{proc.get('spawnerr') or proc.get('description') or proc_state}; see `conveyor logs {name}`"
            )
        result.append(
            ComponentStatus(
                name=name,
                process_state=proc_state,
                healthy=healthy,
                url=_component_url(name, ports),
                detail=detail,
                pid=int(proc["pid"]) if proc.get("pid") else None,
            )
        )
    return result


def down(settings: Settings | None = None, purge: bool = False, timeout: float = 90.0) -> DownReport:
    """Stop every process of the stack and wait until they are gone; data stays unless ``purge``.

    Args:
        settings: Which stack (its home).
        purge: Also delete the home folder (databases, artifacts, landed data, logs, secrets).
        timeout: Seconds to wait for a clean stop before stragglers are killed.
    """
    settings = settings or get_settings()
    paths = StackPaths(settings.home)
    started = time.monotonic()
    report = DownReport(was_running=False)
    if not paths.home.exists():
        return report
    with _locked(paths):
        state = load_state(paths)
        if supervisord_running(paths):
            report.was_running = True
            pid = _supervisord_pid(paths)
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                _rpc(paths).supervisor.shutdown()
            deadline = time.monotonic() + timeout
            while pid and _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.3)
        if state is not None:
            # after a clean shutdown give stragglers a moment; orphans of a dead supervisord none
            grace = 10.0 if report.was_running else 0.0
            report.killed_leftovers = _kill_leftovers(state.stack_id, paths.home, grace=grace)
        report.stopped_in_s = round(time.monotonic() - started, 1)
    if purge:
        if state is not None and state.distributed and state.created_databases:
            drop_databases(state)
        purge_home(paths)
        report.purged = True
    return report


def _kill_leftovers(stack_id: str, home: Path, grace: float) -> list[int]:
    """Wait up to ``grace`` s for processes of this stack to exit, then SIGTERM and SIGKILL them.

    Returns:
        The PIDs that had to be signalled.
    """
    deadline = time.monotonic() + grace
    while (pids := stack_processes(stack_id, home)) and time.monotonic() < deadline:
        time.sleep(0.3)
    signalled: set[int] = set()
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        signalled.update(pids)
        end = time.monotonic() + wait_s
        while (pids := stack_processes(stack_id, home)) and time.monotonic() < end:
            time.sleep(0.2)
    return sorted(signalled)


def purge_home(paths: StackPaths) -> None:
    """Delete a stack's home folder, refusing anything that does not look like one."""
    home = paths.home.resolve()
    if not home.exists():
        return
    forbidden = {Path("/"), Path.home().resolve(), REPO_ROOT.resolve()}
    if home in forbidden or home in REPO_ROOT.resolve().parents:
        raise StackError(f"refusing to delete {home}: it is not a Conveyor home folder")
    markers = (paths.state_file, paths.conf_file, paths.airflow_home, paths.mlflow_dir)
    contents = [p for p in home.iterdir() if p.name != paths.lock_file.name]
    if contents and not any(m.exists() for m in markers):
        raise StackError(
            f"refusing to delete {home}: it holds no stack.json/supervisord.conf; delete it yourself"
        )
    if supervisord_running(paths):
        raise StackError(f"the stack in {home} is still running; run `conveyor down` first")
    shutil.rmtree(home)
    with contextlib.suppress(FileNotFoundError):
        paths.socket_file.unlink()


def log_path(settings: Settings, component: str) -> Path:
    """The log file of ``component`` (a program, or ``supervisord``)."""
    state = load_state(StackPaths(settings.home))
    known = (*(state.programs() if state else COMPONENTS), "supervisord", "airflow-db-migrate")
    if component not in known:
        raise StackError(f"unknown component {component!r}; choose one of {', '.join(known)}")
    return StackPaths(settings.home).log_file(component)


def logs(settings: Settings, component: str, lines: int = 50, follow: bool = False) -> Iterator[str]:
    """Yield the last ``lines`` lines of a component's log, then (``follow``) new lines as they come.

    Raises:
        StackError: Unknown component, or no log yet.
    """
    path = log_path(settings, component)
    if not path.exists():
        raise StackError(f"no log for {component} yet ({path}); has `conveyor up` run?")
    if lines > 0:
        yield from tail(path, lines).splitlines()
    if not follow:
        return
    fh = path.open("r", errors="replace")
    fh.seek(0, os.SEEK_END)
    try:
        while True:
            line = fh.readline()
            if line:
                yield line.rstrip("\n")
                continue
            # supervisord rotates the file: reopen when it shrank or was replaced
            if path.exists() and path.stat().st_size < fh.tell():
                fh.close()
                fh = path.open("r", errors="replace")
            time.sleep(0.5)
    finally:
        fh.close()


# ------------------------------------------------------------------------------------------------
# airflow_settings.yaml (Astro CLI shape)
# ------------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConnectionEntry(_Strict):
    conn_id: str
    conn_type: str
    conn_host: str | None = None
    conn_schema: str | None = None
    conn_login: str | None = None
    conn_password: str | None = None
    conn_port: int | None = None
    conn_extra: dict[str, Any] | str | None = None

    def api_body(self) -> dict[str, Any]:
        extra = json.dumps(self.conn_extra) if isinstance(self.conn_extra, dict) else self.conn_extra
        return {
            "connection_id": self.conn_id,
            "conn_type": self.conn_type,
            "host": self.conn_host,
            "schema": self.conn_schema,
            "login": self.conn_login,
            "password": self.conn_password,
            "port": self.conn_port,
            "extra": extra,
        }


class PoolEntry(_Strict):
    pool_name: str
    pool_slot: int = Field(ge=0)
    pool_description: str | None = None


class VariableEntry(_Strict):
    variable_name: str
    variable_value: str


class AirflowObjects(_Strict):
    connections: list[ConnectionEntry] = Field(default_factory=list)
    pools: list[PoolEntry] = Field(default_factory=list)
    variables: list[VariableEntry] = Field(default_factory=list)


class AirflowSettingsFile(_Strict):
    """``airflow_settings.yaml``: ``airflow: {connections: [...], pools: [...], variables: [...]}``."""

    airflow: AirflowObjects


class AppliedSettings(BaseModel):
    """What :func:`apply_airflow_settings` did, per object: ``created`` or ``updated``."""

    connections: dict[str, str] = Field(default_factory=dict)
    pools: dict[str, str] = Field(default_factory=dict)
    variables: dict[str, str] = Field(default_factory=dict)


def substitute_placeholders(obj: Any, values: Mapping[str, str], *, where: str = "") -> Any:
    """Replace ``${NAME}`` in every string of ``obj`` (nested lists/dicts) with ``values[NAME]``.

    Raises:
        StackError: A placeholder has no value; the message lists the known names.
    """
    if isinstance(obj, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                known = ", ".join(sorted(values))
                raise StackError(
                    f"{where or 'settings'}: no value for placeholder ${{{name}}}; known: {known}"
                )
            return str(values[name])

        return _PLACEHOLDER.sub(replace, obj)
    if isinstance(obj, list):
        return [substitute_placeholders(v, values, where=where) for v in obj]
    if isinstance(obj, dict):
        return {k: substitute_placeholders(v, values, where=where) for k, v in obj.items()}
    return obj


def load_airflow_settings(path: Path, values: Mapping[str, str]) -> AirflowSettingsFile:
    """Read ``path``, fill its placeholders from ``values`` and validate its shape.

    Raises:
        StackError: The file is missing, is not YAML, has an unknown placeholder or a wrong shape.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise StackError(f"{path} not found") from exc
    except yaml.YAMLError as exc:
        raise StackError(f"{path} is not valid YAML: {exc}") from exc
    filled = substitute_placeholders(raw or {}, values, where=str(path))
    try:
        return AirflowSettingsFile.model_validate(filled)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise StackError(f"{path} has the wrong shape: {problems}") from exc


def settings_values(settings: Settings, state: StackState) -> dict[str, str]:
    """Values for ``${...}`` placeholders in ``airflow_settings.yaml``."""
    return {
        **conveyor_env(settings, state),
        "CONVEYOR_HOST": LOCALHOST,
        "CONVEYOR_AIRFLOW_URL": _url(state.ports.airflow),
        "CONVEYOR_MODEL_SERVER_TOKEN": state.model_server_token,
    }


def apply_airflow_settings(
    client: AirflowClient,
    path: Path | None = AIRFLOW_SETTINGS_FILE,
    values: Mapping[str, str] | None = None,
) -> AppliedSettings:
    """Create or update the connections, pools and variables of ``path`` through the REST API.

    Args:
        client: A logged-in client.
        path: An ``airflow_settings.yaml``.
        values: Placeholder values; those of the stack in ``get_settings().home`` when omitted.
    """
    path = path or AIRFLOW_SETTINGS_FILE
    if values is None:
        settings = get_settings()
        state = load_state(StackPaths(settings.home))
        if state is None:
            raise StackNotRunningError(f"no stack state in {settings.home}; run `conveyor up` first")
        values = settings_values(settings, state)
    spec = load_airflow_settings(path, values)
    applied = AppliedSettings()
    for pool in spec.airflow.pools:
        applied.pools[pool.pool_name] = client.set_pool(pool.pool_name, pool.pool_slot, pool.pool_description)
    for conn in spec.airflow.connections:
        applied.connections[conn.conn_id] = client.set_connection(conn.api_body())
    for var in spec.airflow.variables:
        applied.variables[var.variable_name] = client.set_variable(var.variable_name, var.variable_value)
    return applied


def ensure_airflow_settings(settings: Settings | None = None, path: Path = AIRFLOW_SETTINGS_FILE) -> bool:
    """Apply ``airflow_settings.yaml`` unless its pools already exist (after ``up --no-wait``).

    Returns:
        True when the settings were applied now.
    """
    settings = settings or get_settings()
    info = stack_info(settings)
    paths = StackPaths(settings.home)
    state = load_state(paths)
    assert state is not None  # stack_info checked it
    values = settings_values(settings, state)
    spec = load_airflow_settings(path, values)
    with info.airflow_client() as client:
        if all(client.get_pool(p.pool_name) for p in spec.airflow.pools):
            return False
        apply_airflow_settings(client, path, values)
    return True
