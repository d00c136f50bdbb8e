"""Real server subprocesses for the integration tests: free ports, an MLflow tracking server, waits, stops.

Conftests import it as ``support.servers`` (``pythonpath = ["tests"]`` in pyproject.toml).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
MLFLOW_BIN = BIN / "mlflow"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``MLFLOW_*``/``CONVEYOR_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CONVEYOR_"))}
    env.update(extra)
    return env


def _log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""


def wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 180) -> None:
    """Poll ``url`` until it answers 200; raise with the log tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}:\n{_log_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{_log_tail(log_path)}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM ``proc`` (if still running), kill it after ``timeout`` seconds; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


def start_mlflow_server(
    root: Path,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start ``mlflow server`` on a SQLite store and proxied artifacts under ``root``; wait for /health.

    The server gets :func:`clean_env` with job execution off, plus ``env``. Returns the process, its
    URL and its log path; if it exits or never gets healthy it is stopped and ``RuntimeError`` carries
    the log tail.
    """
    port = free_port()
    log_path = root / "mlflow.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(MLFLOW_BIN),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **(env or {})),
            cwd=root,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, log_path, timeout)
    except BaseException:
        stop_process(proc)
        raise
    return proc, url, log_path
