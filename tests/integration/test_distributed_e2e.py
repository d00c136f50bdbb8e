"""End to end on the distributed profile: PostgreSQL, CeleryExecutor on Redis, two Celery workers.

The same DAGs and specs as the embedded stack, on the PostgreSQL server and Redis broker running on
this machine (``CONVEYOR_POSTGRES_URL`` / ``CONVEYOR_CELERY_BROKER_URL``). The stack gets databases
of its own, which ``up`` creates and ``down --purge`` drops (checked here). The training DAG runs
under the real scheduler on the Celery workers, the registry watcher starts ``conveyor_deploy``,
the model server answers, and every task that ran is found in a Celery worker's log.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from support.e2e import celery_executions, failure_logs, states, wait_for_champion

from conveyor.settings import Settings, get_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN_DAG = "conveyor_train_churn"
DEPLOY_DAG = "conveyor_deploy"


def _databases(postgres_url: str) -> set[str]:
    import psycopg2

    conn = psycopg2.connect(f"{postgres_url.rstrip('/')}/postgres", connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def _require_services(settings: Settings) -> None:
    """PostgreSQL and Redis run on developer and CI machines; say so plainly if they do not."""
    import psycopg2
    import redis

    try:
        _databases(settings.postgres_url)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {settings.postgres_url} is needed (CONVEYOR_POSTGRES_URL): {exc}")
    try:
        redis.Redis.from_url(settings.celery_broker_url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {settings.celery_broker_url} is needed (CONVEYOR_CELERY_BROKER_URL): {exc}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    from conveyor.stack import down, isolated_settings, up

    suffix = secrets.token_hex(4)
    settings = isolated_settings(
        tmp_path_factory.mktemp("distributed-stack"),
        profile="distributed",
        airflow_database=f"conveyor_test_{suffix}_airflow",
        mlflow_database=f"conveyor_test_{suffix}_mlflow",
        celery_workers=2,
    )
    _require_services(settings)
    ours = {settings.airflow_database, settings.mlflow_database}
    assert not ours & _databases(settings.postgres_url)
    try:
        info = up(settings, timeout=600)
        assert ours <= _databases(settings.postgres_url)
        yield settings, info
    finally:
        down(settings, purge=True)
    assert not ours & _databases(settings.postgres_url), "down --purge left the stack's databases"


@pytest.fixture
def stack_env(stack: tuple[Settings, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, Any]:
    settings, info = stack
    monkeypatch.setenv("CONVEYOR_HOME", str(settings.home))
    monkeypatch.setenv("CONVEYOR_DATA_ROOT", info.data_root)
    monkeypatch.setenv("CONVEYOR_MLFLOW_TRACKING_URI", info.mlflow_url)
    get_settings.cache_clear()
    return settings, info


def test_train_and_deploy_on_celery_workers(
    stack_env: tuple[Settings, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from conveyor.config import load_spec
    from conveyor.data.generate import generate_churn, land_demo_data
    from conveyor.registry.tracking import client_for
    from conveyor.serving.client import ModelServerClient
    from conveyor.stack import StackPaths, load_state

    settings, info = stack_env
    state = load_state(StackPaths(settings.home))
    assert state is not None and state.distributed and len(state.worker_names()) == 2
    spec = load_spec("churn")
    today = datetime.now(UTC).date()
    land_demo_data(spec, days=7, end_day=today, rows_per_day=400, seed=1)

    af = info.airflow_client()
    af.wait_for_dag(TRAIN_DAG, timeout=240, unpause=True)
    af.wait_for_dag(DEPLOY_DAG, timeout=240, unpause=True)
    run_id = af.trigger(
        TRAIN_DAG, conf={"window_end": today.isoformat(), "window_days": 7, "force_retrain": True}
    )
    run = af.wait_for_run(TRAIN_DAG, run_id, timeout=900)
    train_states = states(af, TRAIN_DAG, run_id)
    assert run["state"] == "success", (train_states, failure_logs(af, TRAIN_DAG, run_id))
    assert train_states["register"] == "success" and train_states["not_promoted"] == "skipped"
    wall = datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
    with capsys.disabled():  # shown in the CI log: the note compares both profiles
        print(f"\n{TRAIN_DAG} wall time on PostgreSQL + CeleryExecutor: {wall.total_seconds():.1f} s")

    mlflow = client_for(info.mlflow_url)
    versions = mlflow.search_model_versions(f"name='{spec.registered_model_name}'")
    run_ids = [v.tags.get("conveyor.dag_run_id") for v in versions]
    assert len(run_ids) == len(set(run_ids)) and run_id in run_ids, run_ids

    champion, deploys = wait_for_champion(af, mlflow, spec.registered_model_name, DEPLOY_DAG)
    failed = [r["dag_run_id"] for r in deploys if r["state"] != "success"]
    assert not failed, [failure_logs(af, DEPLOY_DAG, rid) for rid in failed]
    version = mlflow.get_model_version(spec.registered_model_name, champion)
    assert version.tags["conveyor.deploy_status"] == "deployed"

    server = ModelServerClient(info.model_server_url, token=info.model_server_token)
    rows = generate_churn(spec, n_rows=3, day=today, seed=99)
    records = rows[[spec.data.id_column, *spec.feature_names]].to_dict(orient="records")
    predictions = server.predict("churn", records)
    assert len(predictions) == 3 and all(0.0 <= p["probability"] <= 1.0 for p in predictions)

    # Every task that ran went through this stack's Celery queue and shows up in a worker's log.
    executed = celery_executions([StackPaths(settings.home).log_file(n) for n in state.worker_names()])
    runs = [(TRAIN_DAG, run_id), *((DEPLOY_DAG, d["dag_run_id"]) for d in deploys)]
    ran = [
        (dag_id, dag_run, ti)
        for dag_id, dag_run in runs
        for ti in af.task_instances(dag_id, dag_run)
        if ti["state"] in ("success", "failed") and ti.get("operator") != "EmptyOperator"
    ]
    assert len(ran) >= 8, ran
    for dag_id, dag_run, ti in ran:
        assert ti["queue"] == state.celery_queue, ti
        assert (dag_id, dag_run, ti["task_id"]) in executed, (dag_id, dag_run, ti["task_id"], executed)
    workers = sorted({w for key, names in executed.items() if key[1] == run_id for w in names})
    with capsys.disabled():
        print(f"training tasks ran on: {workers}")
