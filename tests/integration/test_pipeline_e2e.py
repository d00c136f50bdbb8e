"""End to end on the real embedded stack: Airflow scheduler and triggerer, MLflow server, model server.

One stack per module (starting Airflow costs about a minute on 2 cores):

1. churn data lands, the training DAG runs under the real scheduler, registers a version and moves
   ``challenger``;
2. the registry watcher in the triggerer sees the alias and starts ``conveyor_deploy``, which moves
   ``champion`` only after the model server checked the candidate; the server answers a prediction;
3. a corrupted batch fails ``validate_data`` naming the checks, registers nothing, and the champion
   keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.e2e import failure_logs, states, wait_for_champion

from conveyor.settings import Settings, get_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN_DAG = "conveyor_train_churn"
DEPLOY_DAG = "conveyor_deploy"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, object]]:
    from conveyor.stack import down, isolated_settings, up

    settings = isolated_settings(tmp_path_factory.mktemp("e2e-stack"))
    info = up(settings, timeout=420)
    try:
        yield settings, info
    finally:
        down(settings)


@pytest.fixture
def stack_env(stack: tuple[Settings, object], monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, object]:
    """Make this test process read and write the stack's data root and MLflow server."""
    settings, info = stack
    monkeypatch.setenv("CONVEYOR_HOME", str(settings.home))
    monkeypatch.setenv("CONVEYOR_DATA_ROOT", info.data_root)  # type: ignore[attr-defined]
    monkeypatch.setenv("CONVEYOR_MLFLOW_TRACKING_URI", info.mlflow_url)  # type: ignore[attr-defined]
    get_settings.cache_clear()
    return settings, info


def test_train_deploy_serve_then_bad_batch_changes_nothing(
    stack_env: tuple[Settings, object], capsys: pytest.CaptureFixture[str]
) -> None:
    from conveyor.config import load_spec
    from conveyor.data.generate import corrupt, generate_churn, land_batch, land_demo_data
    from conveyor.registry.aliases import get_alias_version
    from conveyor.registry.tracking import client_for
    from conveyor.serving.client import ModelServerClient

    _, info = stack_env
    spec = load_spec("churn")
    today = datetime.now(UTC).date()
    land_demo_data(spec, days=7, end_day=today, rows_per_day=400, seed=1)

    af = info.airflow_client()  # type: ignore[attr-defined]
    af.wait_for_dag(TRAIN_DAG, timeout=240, unpause=True)
    af.wait_for_dag(DEPLOY_DAG, timeout=240, unpause=True)
    run_id = af.trigger(
        TRAIN_DAG, conf={"window_end": today.isoformat(), "window_days": 7, "force_retrain": True}
    )
    run = af.wait_for_run(TRAIN_DAG, run_id, timeout=900)
    train_states = states(af, TRAIN_DAG, run_id)
    assert run["state"] == "success", (train_states, failure_logs(af, TRAIN_DAG, run_id))
    assert train_states["register"] == "success" and train_states["not_promoted"] == "skipped", train_states
    wall = datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
    with capsys.disabled():  # shown in the CI log: the note compares both profiles
        print(f"\n{TRAIN_DAG} wall time on SQLite + LocalExecutor: {wall.total_seconds():.1f} s")

    mlflow = client_for(info.mlflow_url)  # type: ignore[attr-defined]
    versions = mlflow.search_model_versions(f"name='{spec.registered_model_name}'")
    # A fresh stack also runs the nightly slot it just missed (catchup=False): one version per DAG
    # run, never two for the same run.
    run_ids = [v.tags.get("conveyor.dag_run_id") for v in versions]
    assert len(run_ids) == len(set(run_ids)) and run_id in run_ids, run_ids
    mine = next(v for v in versions if v.tags.get("conveyor.dag_run_id") == run_id)
    assert mine.tags["conveyor.data_fingerprint"] and mine.tags["conveyor.artifact_sha256"]

    # The alias moves, not this test, start the deploy DAG (AssetWatcher in the triggerer). The
    # latest challenger ends up champion once every deploy run it set off has finished.
    champion, deploys = wait_for_champion(af, mlflow, spec.registered_model_name, DEPLOY_DAG)
    challenger = champion
    failed = [r["dag_run_id"] for r in deploys if r["state"] != "success"]
    assert not failed, [failure_logs(af, DEPLOY_DAG, rid) for rid in failed]
    versions_before_bad_batch = len(versions)
    assert (
        mlflow.get_model_version(spec.registered_model_name, champion).tags["conveyor.deploy_status"]
        == "deployed"
    )

    server = ModelServerClient(info.model_server_url, token=info.model_server_token)  # type: ignore[attr-defined]
    rows = generate_churn(spec, n_rows=3, day=today, seed=99)
    records = rows[[spec.data.id_column, *spec.feature_names]].to_dict(orient="records")
    predictions = server.predict("churn", records)
    assert len(predictions) == 3
    assert all(0.0 <= p["probability"] <= 1.0 and p["prediction"] in (0, 1) for p in predictions)

    # A corrupted batch: missing column, NaNs and wrong types.
    bad_day = today + timedelta(days=1)
    bad = corrupt(
        generate_churn(spec, n_rows=600, day=bad_day, seed=5),
        spec,
        ["missing_column", "nulls", "wrong_types"],
        seed=5,
    )
    land_batch(spec, bad, bad_day)
    bad_run_id = af.trigger(TRAIN_DAG, conf={"window_end": bad_day.isoformat(), "window_days": 1})
    bad_run = af.wait_for_run(TRAIN_DAG, bad_run_id, timeout=600)
    bad_states = states(af, TRAIN_DAG, bad_run_id)
    assert bad_run["state"] == "failed" and bad_states["validate_data"] == "failed", bad_states
    assert bad_states["register"] in ("upstream_failed", None), bad_states
    log_text = af.task_log(TRAIN_DAG, bad_run_id, "validate_data", 1)
    assert "expect_column" in log_text.lower() or "ExpectColumn" in log_text, log_text[-3000:]
    assert (
        len(mlflow.search_model_versions(f"name='{spec.registered_model_name}'")) == versions_before_bad_batch
    )
    assert get_alias_version(mlflow, spec.registered_model_name, "champion") == challenger
    time.sleep(1)
    again = server.predict("churn", records)
    assert [round(p["probability"], 6) for p in again] == [round(p["probability"], 6) for p in predictions]
