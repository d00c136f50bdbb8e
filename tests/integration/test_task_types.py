"""Every task type end to end under the real scheduler, on the shipped specs and data (one stack).

``digits`` (multiclass: scikit-learn's 8x8 digit images, ten classes, a Keras MLP compressed to
TFLite) and ``diabetes`` (regression: scikit-learn's diabetes data, a scikit-learn Pipeline) each go
validate → train → gate → compress → register → deploy → served prediction, and the monitoring DAG
scores the served predictions against the labels that landed. The test asserts what the registry,
the model artifacts, the server (MLflow scoring and Open Inference Protocol v2), the prediction log
and the monitoring report show: each follows the task's output contract (docs/CONTRACTS.md).
"""

from __future__ import annotations

import json
import shutil
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

from conveyor.config import DEFAULT_SPECS_DIR
from conveyor.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = ("digits", "diabetes")
DEPLOY = "conveyor_deploy"
MONITOR = "conveyor_monitor"
PIPELINE = ("validate_data", "train", "evaluate_gate", "compress", "register")


def _shipped(specs: Path) -> None:
    for model in MODELS:
        shutil.copy(DEFAULT_SPECS_DIR / f"{model}.yaml", specs / f"{model}.yaml")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any, Path]]:
    with running_stack(tmp_path_factory.mktemp("tasks-stack"), _shipped) as running:
        yield running


@pytest.fixture(autouse=True)
def stack_paths(
    stack: tuple[Settings, Any, Path], conveyor_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test bodies read where the stack writes (the suite gives each test its own home)."""
    settings, info, _ = stack
    point_at_stack(settings, info, monkeypatch)


@pytest.fixture(scope="module")
def trained(stack: tuple[Settings, Any, Path]) -> Iterator[dict[str, Any]]:
    """Both models landed, trained (in parallel), registered and deployed as ``champion``."""
    from conveyor.config import load_spec
    from conveyor.data.generate import land_demo_data
    from conveyor.registry.tracking import client_for
    from conveyor.serving.client import ModelServerClient

    settings, info, specs = stack
    with stack_environment(settings, info, specs):
        today = datetime.now(UTC).date()
        af = info.airflow_client()
        mlflow = client_for(info.mlflow_url)
        for model in MODELS:
            spec = load_spec(model)
            land_demo_data(spec, spec.data.window_days, today)
        for dag_id in (*(f"conveyor_train_{m}" for m in MODELS), DEPLOY, MONITOR):
            af.wait_for_dag(dag_id, timeout=240, unpause=True)
        conf = {"window_end": today.isoformat(), "force_retrain": True, "gate_mode": "enforce"}
        runs = {m: af.trigger(f"conveyor_train_{m}", conf=conf) for m in MODELS}
        finished = {m: af.wait_for_run(f"conveyor_train_{m}", runs[m], timeout=1200) for m in MODELS}
        server = ModelServerClient(info.model_server_url, token=info.model_server_token)
        yield {
            "af": af,
            "mlflow": mlflow,
            "server": server,
            "runs": runs,
            "finished": finished,
            "today": today,
            "data_root": info.data_root,
        }
        server.close()


def _version(env: dict[str, Any], model: str) -> Any:
    from conveyor.config import load_spec

    af, mlflow = env["af"], env["mlflow"]
    dag_id = f"conveyor_train_{model}"
    got = states(af, dag_id, env["runs"][model])
    assert env["finished"][model]["state"] == "success", (got, failure_logs(af, dag_id, env["runs"][model]))
    assert all(got[t] == "success" for t in PIPELINE), got
    registered = load_spec(model).registered_model_name
    champion, deploys = wait_for_champion(af, mlflow, registered, DEPLOY, timeout=900)
    assert all(d["state"] == "success" for d in deploys), [
        failure_logs(af, DEPLOY, d["dag_run_id"]) for d in deploys
    ]
    return mlflow.get_model_version(registered, champion)


def _rows(model: str, today: Any, n: int = 5) -> Any:
    from conveyor.config import load_spec
    from conveyor.data.landing import load_window

    spec = load_spec(model)
    return spec, load_window(spec, today).tail(n)  # the newest days: inside the look-back


@pytest.mark.parametrize("model", MODELS)
def test_each_task_type_is_trained_gated_registered_deployed_and_served_by_its_contract(
    trained: dict[str, Any], model: str
) -> None:
    import mlflow as mlflow_lib

    from conveyor import tasks
    from conveyor.registry.versions import local_model_dir

    version = _version(trained, model)
    spec, rows = _rows(model, trained["today"])
    columns = tasks.output_columns(spec.task, spec.classes)
    metrics = trained["mlflow"].get_run(version.run_id).data.metrics
    for name in spec.metric_names:  # the gate scored the task's metrics
        assert f"challenger_{name}" in metrics and f"eval_{name}" in metrics, (name, sorted(metrics))

    # the signature and the golden rows follow the task's output contract
    uri = f"models:/{spec.registered_model_name}/{version.version}"
    with local_model_dir(trained["mlflow"], uri) as model_dir:
        signature = mlflow_lib.models.Model.load(str(model_dir / "MLmodel")).signature
        golden = json.loads((model_dir / "artifacts" / "golden_rows.json").read_text())
    assert [c.name for c in signature.outputs.inputs] == columns
    assert list(golden["outputs"]) == columns

    # served: MLflow scoring and Open Inference Protocol v2 give the contract's columns
    records = rows[[spec.data.id_column, *spec.feature_names]].to_dict(orient="records")
    predictions = trained["server"].predict(model, records)
    assert len(predictions) == len(records)
    assert all(list(p) == columns for p in predictions), predictions[0]
    v2 = trained["server"].infer_v2(model, {f: rows[f].tolist() for f in spec.feature_names})
    assert [o["name"] for o in v2["outputs"]] == columns, v2
    served = [p["prediction"] for p in predictions]
    if spec.task == "multiclass":
        assert all(p["prediction"] in spec.classes for p in predictions)
        for p in predictions:
            assert sum(p[tasks.probability_column(c)] for c in spec.classes) == pytest.approx(1, abs=1e-3)
        assert v2["outputs"][0]["datatype"] == "INT64"
        assert v2["outputs"][0]["data"] == served
        # the model is right on most of the rows it was shown
        truth = rows[spec.data.target].tolist()
        assert sum(a == b for a, b in zip(served, truth, strict=True)) >= len(truth) - 1, (served, truth)
    else:
        assert all(isinstance(v, float) for v in served)
        assert v2["outputs"][0]["datatype"] == "FP64"
        assert v2["outputs"][0]["data"] == pytest.approx(served)
        assert spec.data.target_min is None or min(served) > spec.data.target_min - 100
    print(
        f"\n{model} ({spec.task}) v{version.version}: "
        + ", ".join(f"{m}={metrics[f'eval_{m}']:.4f}" for m in spec.metric_names)
    )


def test_monitoring_scores_served_predictions_with_each_tasks_metrics(trained: dict[str, Any]) -> None:
    """Predictions of landed rows (their ids ride along) are joined with the landed labels."""
    for model in MODELS:
        _version(trained, model)
        spec, rows = _rows(model, trained["today"], n=60)
        records = rows[[spec.data.id_column, *spec.feature_names]].to_dict(orient="records")
        trained["server"].predict(model, records)
    af = trained["af"]
    run_id = af.trigger(MONITOR, conf={})
    run = af.wait_for_run(MONITOR, run_id, timeout=600)
    assert run["state"] == "success", failure_logs(af, MONITOR, run_id)
    reports = {}
    for index in range(len(MODELS)):
        report = af.xcom(MONITOR, run_id, "monitor", map_index=index)
        reports[report["model"]] = report
    digits, diabetes = reports["digits"], reports["diabetes"]
    assert digits["n_labelled"] >= 60 and diabetes["n_labelled"] >= 60, reports
    assert digits["live"]["metrics"]["accuracy"] > 0.8, digits["live"]
    assert "f1_macro" in digits["live"]["metrics"], digits["live"]
    assert 0 < diabetes["live"]["metrics"]["rmse"] < 100, diabetes["live"]
    assert "r2" in diabetes["live"]["metrics"], diabetes["live"]
