"""Bring your own model, under the real scheduler on one embedded stack (Airflow, MLflow, model server).

Each test drives the stack the way a team would and asserts what the registry and the server show:

* ``conveyor ci`` exits 0 when its run registers the challenger (the commit in the lineage) and 1
  when the gate rejects it (printing the reasons and the report link);
* a spec added to the running stack, with the team's own training code (``trainer.kind: python``)
  and a tuning budget, appears as its DAG, trains, is gated, registered, deployed and served, and no
  process of the stack restarts;
* a bad entrypoint fails the train task once, naming the entrypoint, and registers nothing;
* a spec file that does not validate gets a DAG saying so, and every other DAG stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.e2e import (
    failure_logs,
    point_at_stack,
    running_stack,
    stack_environment,
    states,
    wait_for_champion,
)
from support.specs import write_spec

from conveyor.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = "ci_seed"
SEED_REGISTERED = "conveyor-ci-seed"
BYOM = "byom_gbm"
BYOM_REGISTERED = "conveyor-byom-gbm"
BAD = "byom_bad"
DEPLOY = "conveyor_deploy"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TUNING = {
    "n_trials": 3,
    "timeout_minutes": 2,
    "space": {"learning_rate": {"type": "float", "low": 0.05, "high": 0.3, "log": True}},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any, Path]]:
    with running_stack(
        tmp_path_factory.mktemp("byom-stack"), lambda specs: write_spec(specs, SEED, SEED_REGISTERED)
    ) as running:
        yield running


@pytest.fixture(scope="module")
def env(stack: tuple[Settings, Any, Path]) -> Iterator[dict[str, Any]]:
    from conveyor.registry.tracking import client_for
    from conveyor.serving.client import ModelServerClient

    settings, info, specs = stack
    with stack_environment(settings, info, specs):
        today = datetime.now(UTC).date()
        land(SEED, today)
        af = info.airflow_client()
        for dag_id in (f"conveyor_train_{SEED}", DEPLOY):
            af.wait_for_dag(dag_id, timeout=240, unpause=True)
        server = ModelServerClient(info.model_server_url, token=info.model_server_token)
        yield {
            "settings": settings,
            "af": af,
            "mlflow": client_for(info.mlflow_url),
            "server": server,
            "specs": specs,
            "today": today,
        }
        server.close()


@pytest.fixture(autouse=True)
def stack_paths(
    stack: tuple[Settings, Any, Path], conveyor_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test bodies land data where the stack reads it (the suite gives each test its own home)."""
    settings, info, _ = stack
    point_at_stack(settings, info, monkeypatch)


def land(model: str, today: Any) -> None:
    """The model's window of breast-cancer batches, up to ``today``."""
    from conveyor.config import load_spec
    from conveyor.data.generate import breast_cancer_batches, land_batch

    spec = load_spec(model)
    for day, frame in breast_cancer_batches(spec, spec.data.window_days, today, seed=0):
        land_batch(spec, frame, day)


def ci(env: dict[str, Any], *args: str) -> Any:
    """``conveyor --home <stack> ci ...`` as a CI job runs it."""
    from typer.testing import CliRunner

    from conveyor.cli import app

    home = ["--home", str(env["settings"].home)]
    return CliRunner().invoke(
        app,
        [*home, "ci", *args, "--window-end", env["today"].isoformat(), "--timeout", "900"],
        env={"COLUMNS": "300"},
    )


def versions(env: dict[str, Any], registered: str) -> list[Any]:
    return sorted(env["mlflow"].search_model_versions(f"name='{registered}'"), key=lambda v: int(v.version))


def pids(env: dict[str, Any]) -> dict[str, int | None]:
    """Each process of the stack, by name: a restart shows as a new pid."""
    from conveyor.stack import status

    return {component.name: component.pid for component in status(env["settings"])}


def test_conveyor_ci_exits_0_when_the_challenger_is_registered(env: dict[str, Any]) -> None:
    assert versions(env, SEED_REGISTERED) == []
    result = ci(env, "--model", SEED, "--commit", COMMIT, "--gate-mode", "enforce")
    assert result.exit_code == 0, result.output
    assert "registered" in result.output, result.output
    (version,) = versions(env, SEED_REGISTERED)
    assert version.tags["conveyor.git_commit"] == COMMIT
    assert version.tags["conveyor.dag_run_id"] in result.output


def test_conveyor_ci_exits_1_when_the_gate_rejects(env: dict[str, Any]) -> None:
    path = env["specs"] / f"{SEED}.yaml"
    original = path.read_text()
    write_spec(env["specs"], SEED, SEED_REGISTERED, gate={"floors": {"roc_auc": 1.01}})
    try:
        result = ci(env, "--model", SEED, "--commit", COMMIT, "--gate-mode", "enforce")
    finally:
        path.write_text(original)
    assert result.exit_code == 1, result.output
    assert "floor:roc_auc" in result.output, result.output
    assert "/#/experiments/" in result.output, result.output  # the gate report's MLflow run
    assert len(versions(env, SEED_REGISTERED)) == 1  # nothing new registered


def test_a_spec_added_to_the_running_stack_with_its_own_code_and_tuning_is_served_without_restarts(
    env: dict[str, Any],
) -> None:
    from conveyor.config import load_spec

    before = pids(env)
    write_spec(
        env["specs"],
        BYOM,
        BYOM_REGISTERED,
        trainer={
            "kind": "python",
            "entrypoint": "conveyor_examples.sklearn_gbm:train",
            "seed": 7,
            "params": {"max_iter": 60, "learning_rate": 0.1, "max_leaf_nodes": 15},
        },
        tuning=TUNING,
    )
    land(BYOM, env["today"])
    af = env["af"]
    dag_id = f"conveyor_train_{BYOM}"
    appeared = time.monotonic()
    af.wait_for_dag(dag_id, timeout=240, unpause=True)  # the DAG processor's next parse
    seconds_to_dag = time.monotonic() - appeared
    run_id = af.trigger(dag_id, conf={"window_end": env["today"].isoformat()})
    run = af.wait_for_run(dag_id, run_id, timeout=900)
    got = states(af, dag_id, run_id)
    assert run["state"] == "success", (got, failure_logs(af, dag_id, run_id))
    assert got["register"] == "success", got
    (version,) = versions(env, BYOM_REGISTERED)
    assert version.tags["conveyor.trainer"] == "python"
    champion, deploys = wait_for_champion(af, env["mlflow"], BYOM_REGISTERED, DEPLOY)
    assert champion == version.version
    assert all(d["state"] == "success" for d in deploys), [
        failure_logs(af, DEPLOY, d["dag_run_id"]) for d in deploys
    ]
    # tuning ran inside the train task: one nested MLflow run per trial, within the budget
    mlflow = env["mlflow"]
    experiment = mlflow.get_experiment_by_name(f"conveyor/{BYOM}")
    parent = mlflow.get_run(version.run_id)
    trials = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert 1 <= len(trials) <= TUNING["n_trials"], len(trials)
    assert parent.data.metrics["tuning_seconds"] <= TUNING["timeout_minutes"] * 60 + 60
    # the running server took the new model in: a prediction, and no process restarted
    spec = load_spec(BYOM)
    from conveyor.data.generate import breast_cancer_batches

    frame = breast_cancer_batches(spec, 1, env["today"], seed=0)[0][1]
    rows = frame.iloc[:3][spec.feature_names].to_dict(orient="records")
    predictions = env["server"].predict(BYOM, rows)
    assert len(predictions) == 3 and all(0.0 <= p["probability"] <= 1.0 for p in predictions)
    assert pids(env) == before
    print(
        f"\n{dag_id} appeared {seconds_to_dag:.0f} s after its spec was written; {len(trials)} tuning trials"
    )


def test_a_bad_entrypoint_fails_the_train_task_once_and_registers_nothing(env: dict[str, Any]) -> None:
    write_spec(
        env["specs"],
        BAD,
        "conveyor-byom-bad",
        trainer={"kind": "python", "entrypoint": "conveyor_examples.sklearn_gbm:no_such_function", "seed": 7},
    )
    try:
        land(BAD, env["today"])
        af = env["af"]
        dag_id = f"conveyor_train_{BAD}"
        af.wait_for_dag(dag_id, timeout=240, unpause=True)
        run_id = af.trigger(dag_id, conf={"window_end": env["today"].isoformat()})
        run = af.wait_for_run(dag_id, run_id, timeout=600)
        got = states(af, dag_id, run_id)
        assert run["state"] == "failed" and got["train"] == "failed", got
        (train,) = [t for t in af.task_instances(dag_id, run_id) if t["task_id"] == "train"]
        assert train["try_number"] == 1, train  # a deterministic failure is not retried
        log = af.task_log(dag_id, run_id, "train", 1)
        assert "conveyor_examples.sklearn_gbm:no_such_function" in log, log[-3000:]
        assert got["register"] in ("upstream_failed", None), got
        assert versions(env, "conveyor-byom-bad") == []
    finally:
        (env["specs"] / f"{BAD}.yaml").unlink()


def test_a_broken_spec_gets_a_dag_that_says_so_and_the_others_stay(env: dict[str, Any]) -> None:
    af = env["af"]
    broken = env["specs"] / "broken.yaml"
    broken.write_text((env["specs"] / f"{SEED}.yaml").read_text().replace("mode: enforce", "mode: sometimes"))
    try:
        af.wait_for_dag("conveyor_train_broken", timeout=240)
        dag = af.get_dag("conveyor_train_broken")
        assert dag is not None and dag["description"].startswith("INVALID SPEC broken.yaml"), dag
        assert af.import_errors() == []
        for model in (SEED, BYOM):
            assert af.get_dag(f"conveyor_train_{model}") is not None, model
    finally:
        broken.unlink()


def test_a_sql_sourced_spec_trains_from_postgresql_through_an_airflow_connection(env: dict[str, Any]) -> None:
    """The window comes from a query on the real PostgreSQL, through an Airflow connection."""
    import uuid

    import pandas as pd
    import sqlalchemy as sa

    from conveyor.config import load_spec
    from conveyor.data.generate import breast_cancer_batches

    name = f"conveyor_test_byom_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    model, registered = "byom_sql", "conveyor-byom-sql"
    query = "SELECT * FROM events WHERE event_date >= :start AND event_date < CAST(:end AS date) + 1"
    path = write_spec(
        env["specs"],
        model,
        registered,
        data={"source": {"kind": "sql", "conn_id": "byom_warehouse", "query": query}},
    )
    try:
        spec = load_spec(model)
        frames = [
            frame for _, frame in breast_cancer_batches(spec, spec.data.window_days, env["today"], seed=0)
        ]
        engine = sa.create_engine(
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}", poolclass=sa.pool.NullPool
        )
        try:
            pd.concat(frames, ignore_index=True).to_sql("events", engine, index=False)
        finally:
            engine.dispose()
        af = env["af"]
        af.set_connection(
            {
                "connection_id": "byom_warehouse",
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "login": "postgres",
                "schema": name,
            }
        )
        dag_id = f"conveyor_train_{model}"
        af.wait_for_dag(dag_id, timeout=240, unpause=True)
        run_id = af.trigger(dag_id, conf={"window_end": env["today"].isoformat()})
        run = af.wait_for_run(dag_id, run_id, timeout=900)
        got = states(af, dag_id, run_id)
        assert run["state"] == "success", (got, failure_logs(af, dag_id, run_id))
        assert got["register"] == "success", got
        (version,) = versions(env, registered)
        rows = sum(len(f) for f in frames)
        assert f"on {rows} rows" in version.tags["conveyor.validation"], version.tags
    finally:
        path.unlink()
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
