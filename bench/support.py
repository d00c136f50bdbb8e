"""Helpers the benchmarks share: child processes, server subprocesses, free ports, percentiles.

The quick smoke run executes benchmarks side by side in threads of one process, so a benchmark that
needs process-wide state (``MLFLOW_TRACKING_URI``, ``CONVEYOR_*`` settings, the working directory,
TensorFlow) does that part in a child interpreter (:func:`run_child`) and only reads its JSON result.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never a default port of the stack)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus ``MLFLOW_*``/``CONVEYOR_*``/``AIRFLOW*`` settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CONVEYOR_", "AIRFLOW"))}
    # Console scripts (``uvicorn`` that ``mlflow models serve`` runs) come from this venv.
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "/usr/bin:/bin")))
    env.update({"PYTHONUNBUFFERED": "1", "GIT_PYTHON_REFRESH": "quiet", "TF_CPP_MIN_LOG_LEVEL": "2"})
    env.update(extra)
    return env


def conveyor_env(home: Path, tracking_uri: str, **extra: str) -> dict[str, str]:
    """A clean environment whose Conveyor settings point at ``home`` and ``tracking_uri`` only."""
    return clean_env(
        CONVEYOR_HOME=str(home),
        CONVEYOR_DATA_ROOT=(home / "data").as_uri(),
        CONVEYOR_MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_TRACKING_URI=tracking_uri,
        **extra,
    )


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def run_child(
    module: str,
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path,
    timeout: float,
) -> dict[str, Any]:
    """Run ``python -m <module> <out.json> *args`` and return the JSON the child wrote to ``out.json``.

    Raises:
        RuntimeError: the child failed or wrote nothing; carries the tail of its output.
    """
    fd, out_name = tempfile.mkstemp(prefix="bench-child-", suffix=".json")
    os.close(fd)
    out = Path(out_name)
    log = out.with_suffix(".log")
    child_env = dict(env)
    # The child runs in ``cwd`` (its MLflow store may write ./mlruns there) but imports ``bench``.
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    try:
        with log.open("wb") as fh:
            proc = subprocess.run(
                [sys.executable, "-m", module, str(out), *args],
                cwd=cwd,
                env=child_env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if proc.returncode != 0 or out.stat().st_size == 0:
            raise RuntimeError(f"python -m {module} failed ({proc.returncode}):\n{log_tail(log)}")
        return dict(json.loads(out.read_text()))
    finally:
        out.unlink(missing_ok=True)
        log.unlink(missing_ok=True)


def start_process(
    cmd: Sequence[str | Path], env: Mapping[str, str], *, cwd: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session of its own (so :func:`stop_process` also ends its children)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``timeout`` seconds."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # children it may have left behind
        return
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        break
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    cmd: Sequence[str | Path],
    env: Mapping[str, str],
    *,
    cwd: Path,
    log_path: Path,
    ready_url: str,
    timeout: float = 300.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess that answered 200 on ``ready_url``; stopped on exit, also on failure."""
    proc = start_process(cmd, env, cwd=cwd, log_path=log_path)
    try:
        wait_http(ready_url, proc, log_path, timeout)
        yield proc
    finally:
        stop_process(proc)


@dataclass(frozen=True)
class Server:
    """A server subprocess to start: its command, environment, folder, log and readiness URL."""

    cmd: Sequence[str | Path]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    ready_url: str
    timeout: float = 300.0


@contextlib.contextmanager
def running_together(*servers: Server) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start every server at once, wait until each answers; all are stopped on exit, also on failure."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for server in servers:
            procs.append(start_process(server.cmd, server.env, cwd=server.cwd, log_path=server.log_path))
        for server, proc in zip(servers, procs, strict=True):
            wait_http(server.ready_url, proc, server.log_path, server.timeout)
        yield procs
    finally:
        for proc in procs:
            stop_process(proc)


def wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> float:
    """Poll ``url`` until it answers 200; return the seconds it took.

    Raises:
        RuntimeError: ``proc`` exited or time ran out; carries the tail of its log.
    """
    started = time.monotonic()
    with httpx.Client(timeout=5.0) as http:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {proc.returncode}:\n{log_tail(log_path)}")
            try:
                if http.get(url).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s:\n{log_tail(log_path)}")


def mlflow_server_cmd(root: Path, port: int) -> list[str | Path]:
    """``mlflow server`` as the embedded stack runs it: SQLite store, proxied artifacts, one worker."""
    return [
        BIN / "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def child_main(measure: Any) -> None:
    """Entry point of a benchmark's child mode: ``python -m bench.<name> <out.json> [args...]``."""
    out = Path(sys.argv[1])
    result = measure(sys.argv[2:])
    out.write_text(json.dumps(result, allow_nan=True))
