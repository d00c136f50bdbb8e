"""Delivery that can be undone, under the real scheduler on the embedded stack.

One stack for the module (Airflow scheduler, triggerer, API server; MLflow; the model server) with a
test spec of its own, ``deliverbc`` (breast-cancer data, the quick scikit-learn trainer, schedule
off). Its versions are trained and registered in this process with Conveyor's own trainer and
registration (what the training DAG's tasks call); every alias move after that is made as a person
makes it in the MLflow UI (``set_registered_model_alias``, no lock, no ledger) or through the
``conveyor_rollback`` DAG, and the registry watcher, the deploy DAG and the model server's
reconciliation do the rest.

Each scenario asserts what the registry, the ledger and the server show, and the invariant:
``champion`` names exactly the version the server serves. While the deploy and the rollback run,
a client sends single-row requests at about 25 per second and every one must answer 200.

The scenarios run in file order and share the registry (v1..v3 good, v4 answers its golden rows
wrong).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.e2e import failure_logs, running_stack, stack_environment, states
from support.specs import write_spec

from conveyor.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "deliverbc"
REGISTERED = "conveyor-deliver-bc"
DEPLOY = "conveyor_deploy"
ROLLBACK = "conveyor_rollback"
LATE = "deliverlate"
LATE_REGISTERED = "conveyor-deliver-late"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any, Path]]:
    with running_stack(
        tmp_path_factory.mktemp("delivery-stack"), lambda folder: write_spec(folder, MODEL, REGISTERED)
    ) as running:
        yield running


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def _register(mlflow: Any, spec: Any, frames: tuple[Any, Any], key: str, corrupt_golden: bool = False) -> str:
    """Train ``spec`` with Conveyor's trainer and register the model (no alias); its version.

    ``corrupt_golden`` registers the same files with golden outputs that the model does not give,
    as a broken export would: the version loads, and fails its golden rows in the server.
    """
    from conveyor.registry.tracking import get_or_create_run
    from conveyor.registry.versions import local_model_dir, register_version
    from conveyor.training import train

    run_id = get_or_create_run(mlflow, spec, dag_run_id=key, dag_id="test_delivery")
    trained = train(spec, frames[0], frames[1], run_id)
    model_uri = trained.model_uri
    if corrupt_golden:
        from mlflow.entities import LoggedModelStatus

        with tempfile.TemporaryDirectory() as tmp, local_model_dir(mlflow, model_uri) as files:
            copy = Path(tmp) / "model"
            shutil.copytree(files, copy)
            golden_path = copy / "artifacts" / "golden_rows.json"
            golden = json.loads(golden_path.read_text())
            golden["outputs"]["probability"] = [1.0 - p for p in golden["outputs"]["probability"]]
            golden["outputs"]["prediction"] = [1 - p for p in golden["outputs"]["prediction"]]
            golden_path.write_text(json.dumps(golden))
            experiment_id = mlflow.get_run(run_id).info.experiment_id
            logged = mlflow.create_logged_model(experiment_id, name="model", source_run_id=run_id)
            mlflow.log_model_artifacts(logged.model_id, str(copy))
            mlflow.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            model_uri = f"models:/{logged.model_id}"
    lineage = {
        "dag_id": "test_delivery",
        "data_fingerprint": key,
        "validation": "passed",
        "gate": "register",
        "compression": "none",
        "parent_model_uri": model_uri,
        "git_commit": "test",
        "params": "{}",
    }
    return register_version(mlflow, spec, model_uri, run_id, key, lineage).version


@pytest.fixture(scope="module")
def env(stack: tuple[Settings, Any, Path]) -> Iterator[dict[str, Any]]:
    """v1..v3 (good) and v4 (wrong golden rows) registered; v1 champion; the deploy DAG unpaused."""
    from conveyor.config import load_spec
    from conveyor.data.generate import breast_cancer_batches
    from conveyor.data.snapshot import split_is_eval
    from conveyor.registry.aliases import set_alias
    from conveyor.registry.tracking import client_for

    settings, info, specs = stack
    with stack_environment(settings, info, specs), _tracking(info.mlflow_url):
        import pandas as pd

        spec = load_spec(MODEL)
        today = datetime.now(UTC).date()
        df = pd.concat([f for _, f in breast_cancer_batches(spec, 4, today, seed=0)], ignore_index=True)
        is_eval = split_is_eval(df[spec.data.id_column].tolist(), spec.data.holdout_fraction)
        frames = (df[~is_eval].reset_index(drop=True), df[is_eval].reset_index(drop=True))
        mlflow = client_for(info.mlflow_url)
        versions = [_register(mlflow, spec, frames, f"seed-{k}") for k in range(3)]
        versions.append(_register(mlflow, spec, frames, "broken", corrupt_golden=True))
        assert versions == ["1", "2", "3", "4"], versions
        set_alias(mlflow, REGISTERED, "champion", "1", expected_version=None, actor="test", reason="seed")
        af = info.airflow_client()
        for dag_id in (DEPLOY, ROLLBACK):
            af.wait_for_dag(dag_id, timeout=240, unpause=True)
        row = frames[1].iloc[:1][spec.feature_names].to_dict(orient="split")
        http = httpx.Client(base_url=info.model_server_url, timeout=30)
        body = {"dataframe_split": {"columns": row["columns"], "data": row["data"]}}
        yield {"af": af, "mlflow": mlflow, "http": http, "body": body, "specs": specs, "info": info}
        http.close()


def served(env: dict[str, Any], model: str = MODEL) -> str:
    response = env["http"].post(f"/models/{model}/invocations", json=env["body"])
    assert response.status_code == 200, response.text
    return str(response.headers["X-Model-Version"])


def served_or_none(env: dict[str, Any]) -> str | None:
    response = env["http"].post(f"/models/{MODEL}/invocations", json=env["body"])
    return str(response.headers["X-Model-Version"]) if response.status_code == 200 else None


def aliases(env: dict[str, Any]) -> dict[str, str]:
    return dict(env["mlflow"].get_registered_model(REGISTERED).aliases)


def converge(env: dict[str, Any], champion: str, timeout: float = 240) -> None:
    """Wait until ``champion`` names ``champion`` and the server serves it (the invariant)."""
    deadline = time.monotonic() + timeout
    while True:
        now = aliases(env).get("champion"), served_or_none(env)
        if now == (champion, champion):
            return
        assert time.monotonic() < deadline, f"champion/served {now}, expected v{champion}"
        time.sleep(1)


def champion_moves(env: dict[str, Any], since: datetime) -> list[Any]:
    from conveyor.registry.aliases import ledger

    moves = ledger(env["mlflow"], REGISTERED, alias="champion", limit=100)
    return [e for e in moves if e.moved_at >= since]


def active_deploy_runs(env: dict[str, Any]) -> list[dict[str, Any]]:
    """Deploy runs queued or running. (A move is reported twice, by the webhook relay and by the
    watcher, and Airflow may fold a later move's event into a run queued for an earlier one, so runs
    are not told apart by time; what they did is read from the ledger.)"""
    return env["af"].dag_runs(DEPLOY, limit=50, state=["queued", "running"])


def wait_deploys_done(env: dict[str, Any], timeout: float = 300) -> None:
    """Until no deploy run is queued or running, twice in a row, a few seconds apart."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 2:
        quiet = quiet + 1 if not active_deploy_runs(env) else 0
        assert time.monotonic() < deadline, active_deploy_runs(env)
        time.sleep(3)
    failed = env["af"].dag_runs(DEPLOY, limit=50, state=["failed"])
    assert failed == [], [(r["dag_run_id"], failure_logs(env["af"], DEPLOY, r["dag_run_id"])) for r in failed]


@contextmanager
def steady_load(env: dict[str, Any], per_second: float = 25.0) -> Iterator[dict[str, Any]]:
    """Single-row requests sent on a fixed schedule (``per_second``, open loop: a slow answer does
    not delay the next request) from a small pool of threads; counts the answers by outcome."""
    from concurrent.futures import ThreadPoolExecutor

    seen: dict[str, Any] = {"ok": 0, "failed": [], "versions": set(), "sent": 0}
    lock = threading.Lock()
    stop = threading.Event()
    http = httpx.Client(
        base_url=env["info"].model_server_url, timeout=10, limits=httpx.Limits(max_connections=8)
    )

    def one() -> None:
        try:
            r = http.post(f"/models/{MODEL}/invocations", json=env["body"])
            outcome = (r.status_code, r.text[:200]) if r.status_code != 200 else r.headers["X-Model-Version"]
        except httpx.HTTPError as exc:
            outcome = ("error", repr(exc))
        with lock:
            if isinstance(outcome, str):
                seen["ok"] += 1
                seen["versions"].add(outcome)
            else:
                seen["failed"].append(outcome)

    def schedule(pool: ThreadPoolExecutor) -> None:
        next_at = time.perf_counter()
        while not stop.is_set():
            pool.submit(one)
            seen["sent"] += 1
            next_at += 1.0 / per_second
            stop.wait(max(0.0, next_at - time.perf_counter()))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        thread = threading.Thread(target=schedule, args=(pool,), daemon=True)
        thread.start()
        try:
            yield seen
        finally:
            stop.set()
            thread.join(timeout=30)
            seen["rate"] = seen["sent"] / max(time.monotonic() - started, 1e-9)
    http.close()


def test_the_server_follows_the_seeded_champion(env: dict[str, Any]) -> None:
    converge(env, "1")


def test_a_hand_move_of_challenger_is_deployed_with_zero_failed_requests(env: dict[str, Any]) -> None:
    since = datetime.now(UTC)
    with steady_load(env) as load:
        env["mlflow"].set_registered_model_alias(REGISTERED, "challenger", "2")  # as in the MLflow UI
        converge(env, "2")
        wait_deploys_done(env)
    assert load["failed"] == [] and load["ok"] == load["sent"] > 0, load  # every request answered 200
    assert load["rate"] >= 20, load
    assert load["versions"] <= {"1", "2"}
    (move,) = champion_moves(env, since)
    assert (move.from_version, move.to_version) == ("1", "2") and move.actor.startswith(
        "airflow:conveyor_deploy"
    )
    tags = env["mlflow"].get_model_version(REGISTERED, "2").tags
    assert tags["conveyor.deploy_status"] == "deployed"


def test_moving_challenger_back_to_a_version_deployed_before_deploys_it(env: dict[str, Any]) -> None:
    assert env["mlflow"].get_model_version(REGISTERED, "1").tags.get("conveyor.alias.champion.set_at")
    since = datetime.now(UTC)
    env["mlflow"].set_registered_model_alias(REGISTERED, "challenger", "1")
    converge(env, "1")
    wait_deploys_done(env)
    (move,) = champion_moves(env, since)
    assert (move.from_version, move.to_version) == ("2", "1")


def test_three_rapid_moves_give_one_deploy_of_the_last(env: dict[str, Any]) -> None:
    since = datetime.now(UTC)
    for version in ("2", "3", "2", "3"):  # within a second
        env["mlflow"].set_registered_model_alias(REGISTERED, "challenger", version)
    converge(env, "3")
    wait_deploys_done(env)
    time.sleep(8)  # one more watcher poll and scheduler loop: nothing else follows
    wait_deploys_done(env)
    moves = champion_moves(env, since)
    assert [(m.from_version, m.to_version) for m in moves] == [("1", "3")], moves
    assert served(env) == "3"


def test_a_rollback_dag_run_puts_the_previous_champion_back_under_load(env: dict[str, Any]) -> None:
    af = env["af"]
    since = datetime.now(UTC)
    with steady_load(env) as load:
        run_id = af.trigger(
            ROLLBACK, conf={"model": MODEL, "to_version": "previous", "reason": "p99 doubled"}
        )
        run = af.wait_for_run(ROLLBACK, run_id, timeout=600)
        assert run["state"] == "success", (states(af, ROLLBACK, run_id), failure_logs(af, ROLLBACK, run_id))
        converge(env, "1")
    assert load["failed"] == [] and load["ok"] == load["sent"] and load["rate"] >= 20, load
    (move,) = champion_moves(env, since)
    assert (move.from_version, move.to_version) == ("3", "1")
    assert move.actor.startswith(f"airflow:{ROLLBACK}/{run_id}") and move.reason == "rollback: p99 doubled"
    assert env["mlflow"].get_model_version(REGISTERED, "3").tags["conveyor.deploy_status"] == "rolled_back"
    assert "challenger" not in aliases(env)  # it named the version left; removed through the ledger
    time.sleep(12)  # the watcher does not deploy v3 again
    wait_deploys_done(env)
    assert len(champion_moves(env, since)) == 1 and served(env) == "1"


def test_a_rollback_to_a_version_failing_its_golden_rows_is_refused(env: dict[str, Any]) -> None:
    af = env["af"]
    since = datetime.now(UTC)
    run_id = af.trigger(ROLLBACK, conf={"model": MODEL, "to_version": "4", "reason": "try v4"})
    run = af.wait_for_run(ROLLBACK, run_id, timeout=600)
    tis = {ti["task_id"]: ti for ti in af.task_instances(ROLLBACK, run_id)}
    assert run["state"] == "failed" and tis["rollback"]["state"] == "failed"
    assert tis["rollback"]["try_number"] == 1  # deterministic: failed once, not retried
    log = af.task_log(ROLLBACK, run_id, "rollback", 1)
    assert "refusing to roll conveyor-deliver-bc back to v4: golden rows" in log, log[-3000:]
    assert champion_moves(env, since) == []
    assert aliases(env)["champion"] == "1" and served(env) == "1"


def test_a_hand_move_of_champion_is_served_and_recorded_as_manual(env: dict[str, Any]) -> None:
    since = datetime.now(UTC)
    env["mlflow"].set_registered_model_alias(REGISTERED, "champion", "2")  # as in the MLflow UI
    converge(env, "2", timeout=60)  # two reconciliation passes (5 s each) and a load
    deadline = time.monotonic() + 30
    while not (moves := champion_moves(env, since)):
        assert time.monotonic() < deadline, "the hand move was not recorded in the ledger"
        time.sleep(1)
    (move,) = moves
    assert (move.from_version, move.to_version) == ("1", "2") and move.actor.startswith("manual")


def _kill_task_process(ti_id: str) -> bool:
    """SIGKILL the task runner of task instance ``ti_id`` (Airflow titles it ``airflow worker -- <id>``)."""
    import os
    import signal
    import subprocess

    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if line.strip().endswith(f"-- {ti_id}")]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return bool(pids)


def test_a_deploy_killed_mid_switch_converges(env: dict[str, Any]) -> None:
    """The deploy task's process is killed the moment the server holds the candidate (staged, or
    swapped in before ``champion`` moved): the server returns to what ``champion`` names on its own,
    and the task's retry finishes the deploy."""
    af = env["af"]
    before = aliases(env)["champion"]
    candidate = "3"
    assert before != candidate
    since = datetime.now(UTC)
    env["mlflow"].set_registered_model_alias(REGISTERED, "challenger", candidate)
    deadline = time.monotonic() + 240
    killed = None
    while killed is None:
        assert time.monotonic() < deadline, "the deploy never staged the candidate"
        status = next(m for m in env["http"].get("/models").json() if m["name"] == MODEL)
        if candidate in (status.get("staged_version"), status.get("version")):
            for run in active_deploy_runs(env):
                for ti in af.task_instances(DEPLOY, run["dag_run_id"]):
                    if (
                        ti["task_id"] == "deploy"
                        and ti["state"] == "running"
                        and _kill_task_process(ti["id"])
                    ):
                        killed = (run["dag_run_id"], aliases(env)["champion"], status.get("version"))
        time.sleep(0.02)
    run_id, champion_at_kill, served_at_kill = killed
    # whatever the kill left (staged only, or swapped in before champion moved), it converges
    converge(env, candidate, timeout=300)
    run = af.wait_for_run(DEPLOY, run_id, timeout=300)
    tis = {ti["task_id"]: ti for ti in af.task_instances(DEPLOY, run_id)}
    assert run["state"] == "success" and tis["deploy"]["try_number"] == 2, (
        tis,
        champion_at_kill,
        served_at_kill,
    )
    moves = champion_moves(env, since)
    assert [(m.from_version, m.to_version) for m in moves] == [(before, candidate)], moves


def test_a_spec_added_at_run_time_is_served(env: dict[str, Any], stack: tuple[Settings, Any, Path]) -> None:
    from conveyor.config import load_spec
    from conveyor.registry.aliases import set_alias

    settings, info, specs = stack
    write_spec(specs, LATE, LATE_REGISTERED)
    with stack_environment(settings, info, specs), _tracking(info.mlflow_url):
        import pandas as pd

        from conveyor.data.generate import breast_cancer_batches
        from conveyor.data.snapshot import split_is_eval

        spec = load_spec(LATE)
        df = pd.concat(
            [f for _, f in breast_cancer_batches(spec, 2, datetime.now(UTC).date(), seed=1)],
            ignore_index=True,
        )
        is_eval = split_is_eval(df[spec.data.id_column].tolist(), spec.data.holdout_fraction)
        frames = (df[~is_eval].reset_index(drop=True), df[is_eval].reset_index(drop=True))
        version = _register(env["mlflow"], spec, frames, "late-1")
        set_alias(
            env["mlflow"], LATE_REGISTERED, "champion", version, expected_version=None, actor="t", reason="r"
        )
    deadline = time.monotonic() + 90
    while True:
        response = env["http"].post(f"/models/{LATE}/invocations", json=env["body"])
        if response.status_code == 200:
            assert response.headers["X-Model-Version"] == version
            break
        assert time.monotonic() < deadline, response.text
        time.sleep(1)
    assert served(env) == aliases(env)["champion"]  # the other model is untouched
