"""The model server answers a multiclass and a regression model by their task's output contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from unit.serving import support

pytestmark = pytest.mark.unit

FEATURES = ["x1", "x2", "color"]
MODELS = {"levels": "multiclass", "amount": "regression"}


@pytest.fixture(scope="module")
def task_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``levels`` (multiclass, string labels) and ``amount`` (regression), each @champion v1."""
    root = tmp_path_factory.mktemp("task-models")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    specs_dir = root / "specs"
    out: dict[str, Any] = {"tracking_uri": tracking_uri, "specs_dir": specs_dir, "home": root / "home"}
    for name, task in MODELS.items():
        path = support.write_task_spec(specs_dir, name, task, f"conveyor-test-{name}", golden_tolerance=1e-9)
        spec = support.load_spec_file(path)
        train = support.make_task_frame(task, 300, seed=3)
        uri, weights = support.log_task_model(tracking_uri, spec, train, artifact_root=root / "artifacts")
        support.register(tracking_uri, spec.registered_model_name, uri)
        out[name] = {"spec": spec, "train": train, "weights": weights}
    return out


@pytest.fixture(scope="module")
def client(task_models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from conveyor.serving.app import create_app
    from conveyor.settings import Settings

    settings = Settings(
        home=task_models["home"],
        specs_dir=task_models["specs_dir"],
        mlflow_tracking_uri=task_models["tracking_uri"],
        data_root=(tmp_path_factory.mktemp("task-data")).as_uri(),
    )
    app = create_app(settings, load_attempts=1)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        assert app.state.server.initial_load_done.wait(120)
        test_client.app_state = app.state  # type: ignore[attr-defined]
        yield test_client


def _rows(task_models: dict[str, Any], name: str, n: int = 6) -> pd.DataFrame:
    return task_models[name]["train"][["row_id", *FEATURES]].iloc[40 : 40 + n].reset_index(drop=True)


def _expected(task_models: dict[str, Any], name: str, rows: pd.DataFrame) -> pd.DataFrame:
    from conveyor import tasks

    model = task_models[name]
    return tasks.outputs(model["spec"], support.offline_task_scores(model["weights"], rows[FEATURES]))


def _split(rows: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}


def _oip(rows: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    tensors = [
        {
            "name": c,
            "shape": [len(rows)],
            "datatype": "BYTES" if c == "color" else "FP64",
            "data": rows[c].tolist(),
        }
        for c in FEATURES
    ]
    return {"inputs": tensors, **extra}


def test_both_models_load_and_answer_their_golden_rows(client: Any) -> None:
    body = client.get("/health/ready").json()
    assert body["ready"] is True, body
    assert {name: m["state"] for name, m in body["models"].items()} == {
        "levels": "loaded",
        "amount": "loaded",
    }


def test_mlflow_scoring_returns_every_multiclass_output_column(
    client: Any, task_models: dict[str, Any]
) -> None:
    rows = _rows(task_models, "levels")
    expected = _expected(task_models, "levels", rows)
    response = client.post("/invocations", params={"model": "levels"}, json=_split(rows))
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    columns = ["prediction", "probability_low", "probability_mid", "probability_high"]
    assert [list(p) for p in predictions] == [columns] * len(rows)
    assert [p["prediction"] for p in predictions] == expected["prediction"].tolist()
    assert all(p["prediction"] in support.LEVELS for p in predictions)
    probabilities = np.asarray([[p[c] for c in columns[1:]] for p in predictions])
    np.testing.assert_allclose(probabilities, expected[columns[1:]].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)


def test_mlflow_scoring_returns_a_float_regression_prediction(
    client: Any, task_models: dict[str, Any]
) -> None:
    rows = _rows(task_models, "amount")
    expected = _expected(task_models, "amount", rows)
    response = client.post("/models/amount/invocations", json=_split(rows))
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert all(list(p) == ["prediction"] and isinstance(p["prediction"], float) for p in predictions)
    np.testing.assert_allclose([p["prediction"] for p in predictions], expected["prediction"], atol=1e-9)


def test_oip_infer_gives_one_tensor_per_output_column(client: Any, task_models: dict[str, Any]) -> None:
    rows = _rows(task_models, "levels")
    expected = _expected(task_models, "levels", rows)
    response = client.post("/v2/models/levels/infer", json=_oip(rows, id="req-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-1" and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["prediction", "probability_low", "probability_mid", "probability_high"]
    assert outputs["prediction"]["datatype"] == "BYTES"
    assert outputs["prediction"]["data"] == expected["prediction"].tolist()
    assert outputs["probability_mid"]["datatype"] == "FP64"
    assert outputs["probability_mid"]["shape"] == [len(rows)]
    np.testing.assert_allclose(outputs["probability_mid"]["data"], expected["probability_mid"], atol=1e-12)

    rows = _rows(task_models, "amount")
    body = client.post("/v2/models/amount/infer", json=_oip(rows)).json()
    assert [(o["name"], o["datatype"]) for o in body["outputs"]] == [("prediction", "FP64")]
    np.testing.assert_allclose(
        body["outputs"][0]["data"], _expected(task_models, "amount", rows)["prediction"], atol=1e-9
    )


def test_requested_outputs_narrow_the_answer_and_unknown_ones_are_refused(
    client: Any, task_models: dict[str, Any]
) -> None:
    rows = _rows(task_models, "levels")
    narrowed = client.post(
        "/v2/models/levels/infer",
        json=_oip(rows, outputs=[{"name": "probability_high"}, {"name": "prediction"}]),
    )
    assert narrowed.status_code == 200, narrowed.text
    assert [o["name"] for o in narrowed.json()["outputs"]] == ["prediction", "probability_high"]

    refused = client.post("/v2/models/levels/infer", json=_oip(rows, outputs=[{"name": "probability"}]))
    assert refused.status_code == 400
    assert "unknown output(s) 'probability';" in refused.json()["error"]
    assert "probability_low" in refused.json()["error"]

    rows = _rows(task_models, "amount")
    refused = client.post("/v2/models/amount/infer", json=_oip(rows, outputs=[{"name": "probability"}]))
    assert refused.status_code == 400
    assert "the regression model returns prediction" in refused.json()["error"]


def test_metadata_lists_the_tasks_outputs(client: Any) -> None:
    levels = client.get("/v2/models/levels").json()
    assert levels["outputs"] == [
        {"name": "prediction", "datatype": "BYTES", "shape": [-1]},
        {"name": "probability_low", "datatype": "FP64", "shape": [-1]},
        {"name": "probability_mid", "datatype": "FP64", "shape": [-1]},
        {"name": "probability_high", "datatype": "FP64", "shape": [-1]},
    ]
    assert levels["parameters"]["task"] == "multiclass"
    assert levels["parameters"]["classes"] == list(support.LEVELS)
    amount = client.get("/v2/models/amount").json()
    assert amount["outputs"] == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    assert amount["parameters"]["task"] == "regression"


def test_prediction_log_and_metrics_follow_the_task(client: Any, task_models: dict[str, Any]) -> None:
    levels, amount = _rows(task_models, "levels", 4), _rows(task_models, "amount", 3)
    assert client.post("/models/levels/invocations", json=_split(levels)).status_code == 200
    assert client.post("/models/amount/invocations", json=_split(amount)).status_code == 200
    assert client.app_state.predlog.flush(10)
    root = Path(client.app_state.settings.data_root.removeprefix("file://"))
    logged = {
        name: [
            json.loads(line)
            for path in sorted((root / "predictions" / name).rglob("*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        for name in MODELS
    }
    expected = _expected(task_models, "levels", levels)
    last = logged["levels"][-4:]
    assert [e["id"] for e in last] == levels["row_id"].tolist()
    assert [e["prediction"] for e in last] == expected["prediction"].tolist()
    assert list(last[0]["probabilities"]) == list(support.LEVELS)
    assert last[0]["probabilities"]["high"] == pytest.approx(expected["probability_high"][0], abs=1e-12)
    assert "probability" not in last[0]
    regression = logged["amount"][-3:]
    assert all(set(e) >= {"prediction", "features"} and "probabilities" not in e for e in regression)
    assert [e["prediction"] for e in regression] == pytest.approx(
        _expected(task_models, "amount", amount)["prediction"]
    )

    text = client.get("/metrics").text
    counted = [line for line in text.splitlines() if line.startswith("conveyor_predictions_total{")]
    labels = {line.split('prediction="')[1].split('"')[0] for line in counted if 'model="levels"' in line}
    assert labels <= set(support.LEVELS) and labels
    amount_lines = [line for line in counted if 'model="amount"' in line]
    assert len(amount_lines) == 1 and 'prediction=""' in amount_lines[0], amount_lines


def test_a_model_breaking_its_task_contract_fails_its_golden_rows(
    task_models: dict[str, Any], tmp_path: Path
) -> None:
    """A multiclass spec served a model whose golden outputs disagree: not ready, the column named."""
    import mlflow

    from conveyor.serving import loader
    from conveyor.serving.validation import input_columns

    spec = task_models["levels"]["spec"]
    client = mlflow.MlflowClient(
        tracking_uri=task_models["tracking_uri"], registry_uri=task_models["tracking_uri"]
    )
    source = client.get_model_version_download_uri(spec.registered_model_name, "1")
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(tmp_path), tracking_uri=task_models["tracking_uri"]
        )
    )
    pyfunc = mlflow.pyfunc.load_model(str(local))
    golden_path = local / "artifacts" / "golden_rows.json"
    golden = json.loads(golden_path.read_text())

    result, _ = loader.replay_golden(spec, pyfunc, input_columns(pyfunc, spec), local)
    assert result.passed, result.error

    golden["outputs"]["probability_mid"][2] += 0.01
    golden_path.write_text(json.dumps(golden))
    result, _ = loader.replay_golden(spec, pyfunc, input_columns(pyfunc, spec), local)
    assert not result.passed and "probability_mid" in str(result.error)

    golden["outputs"]["probability_mid"][2] -= 0.01
    golden["outputs"]["prediction"][0] = "nope"
    golden_path.write_text(json.dumps(golden))
    result, _ = loader.replay_golden(spec, pyfunc, input_columns(pyfunc, spec), local)
    assert not result.passed and result.prediction_mismatches == 1

    del golden["outputs"]["probability_high"]
    golden_path.write_text(json.dumps(golden))
    result, _ = loader.replay_golden(spec, pyfunc, input_columns(pyfunc, spec), local)
    assert not result.passed and "probability_high" in str(result.error)

    with pytest.raises(loader.ModelContractError, match="probability_low"):
        loader.model_outputs(spec, pd.DataFrame({"prediction": ["low"]}), 1)
