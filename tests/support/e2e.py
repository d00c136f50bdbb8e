"""Helpers for the end-to-end tests that drive a whole stack through its REST APIs."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def states(client: Any, dag_id: str, run_id: str) -> dict[str, str | None]:
    """Task id → state of one DAG run."""
    return {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}


def failure_logs(client: Any, dag_id: str, run_id: str) -> str:
    """The logs of the failed tasks of a DAG run (the tail, for an assertion message)."""
    out = []
    for ti in client.task_instances(dag_id, run_id):
        if ti["state"] == "failed":
            out.append(client.task_log(dag_id, run_id, ti["task_id"], ti.get("try_number") or 1))
    return "\n".join(out)[-6000:]


def wait_for_champion(
    airflow: Any, mlflow: Any, model_name: str, deploy_dag: str, timeout: float = 600
) -> tuple[str, list[dict[str, Any]]]:
    """Wait until the latest ``challenger`` is ``champion`` and every registry-triggered deploy ended.

    Returns:
        The champion version and the deploy DAG runs the registry watcher started.
    """
    from conveyor.registry.aliases import get_alias_version

    deadline = time.monotonic() + timeout
    while True:
        challenger = get_alias_version(mlflow, model_name, "challenger")
        champion = get_alias_version(mlflow, model_name, "champion")
        runs = airflow.dag_runs(deploy_dag, limit=20)
        deploys = [r for r in runs if r.get("run_type") == "asset_triggered"]
        finished = deploys and all(r["state"] in ("success", "failed") for r in deploys)
        if champion is not None and champion == challenger and finished:
            return champion, deploys
        assert time.monotonic() < deadline, (challenger, champion, deploys)
        time.sleep(3)


_WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='(\w+)', dag_id='(\w+)', run_id='([^']+)'")


def celery_executions(log_files: list[Path]) -> dict[tuple[str, str, str], list[str]]:
    """(dag_id, run_id, task_id) → the Celery workers (log file stems) that executed it."""
    seen: dict[tuple[str, str, str], list[str]] = {}
    for path in log_files:
        for match in _WORKLOAD.finditer(path.read_text(errors="replace")):
            task_id, dag_id, run_id = match.groups()
            seen.setdefault((dag_id, run_id, task_id), []).append(path.stem)
    return seen


@contextmanager
def running_stack(home: Path, write_specs: Callable[[Path], None]) -> Iterator[tuple[Any, Any, Path]]:
    """An embedded stack in ``home`` on free ports, serving the specs ``write_specs`` puts in
    ``home/specs``; stopped afterwards. Yields ``(settings, info, specs)``."""
    from conveyor.stack import down, isolated_settings, up

    specs = home / "specs"
    specs.mkdir()
    write_specs(specs)
    settings = isolated_settings(home, specs_dir=specs)
    info = up(settings, timeout=420)
    try:
        yield settings, info, specs
    finally:
        down(settings)


@contextmanager
def stack_environment(settings: Any, info: Any, specs: Path) -> Iterator[None]:
    """This process reads the stack's home, data root, MLflow and specs (as its tasks do)."""
    import pytest

    from conveyor.settings import get_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("CONVEYOR_HOME", str(settings.home))
    mp.setenv("CONVEYOR_DATA_ROOT", info.data_root)
    mp.setenv("CONVEYOR_MLFLOW_TRACKING_URI", info.mlflow_url)
    mp.setenv("CONVEYOR_SPECS_DIR", str(specs))
    get_settings.cache_clear()
    try:
        yield
    finally:
        mp.undo()
        get_settings.cache_clear()


def point_at_stack(settings: Any, info: Any, monkeypatch: Any) -> None:
    """Make this test process read and write where the stack does (the suite's autouse
    ``conveyor_home`` gives each test its own home): its home and data root."""
    from conveyor.settings import get_settings

    monkeypatch.setenv("CONVEYOR_HOME", str(settings.home))
    monkeypatch.setenv("CONVEYOR_DATA_ROOT", info.data_root)
    get_settings.cache_clear()
