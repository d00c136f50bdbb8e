"""The model server's read and predict routes, on a real logged model in a real MLflow store."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.unit

FEATURES = ["x1", "x2", "color"]


def _rows(store: Any, n: int = 5) -> pd.DataFrame:
    return store.train[["row_id", *FEATURES]].iloc[20 : 20 + n].reset_index(drop=True)


def _offline(store: Any, role: str, rows: pd.DataFrame) -> pd.DataFrame:
    return _load_offline(store, role).predict(rows[FEATURES])


_OFFLINE: dict[str, Any] = {}


def _load_offline(store: Any, role: str) -> Any:
    import mlflow

    if role not in _OFFLINE:
        client = mlflow.MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
        source = client.get_model_version_download_uri("conveyor-test-tiny", store.versions[role])
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=store.tracking_uri)
        _OFFLINE[role] = mlflow.pyfunc.load_model(local)
    return _OFFLINE[role]


def _split(rows: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}


def test_ready_once_every_champion_answers_its_golden_rows(app_client: Any) -> None:
    response = app_client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True
    assert body["models"]["tiny"] == {
        "state": "loaded",
        "ready": True,
        "version": "1",
        "detail": "loaded, golden rows answered within tolerance",
    }
    assert body["models"]["pending"]["state"] == "no_champion"
    assert app_client.get("/health/live").json() == {"live": True}

    models = {m["name"]: m for m in app_client.get("/models").json()}
    assert models["tiny"]["version"] == "1"
    assert models["tiny"]["registered_model_name"] == "conveyor-test-tiny"
    assert models["tiny"]["ready"] is True and models["tiny"]["loaded_at"]
    assert models["pending"]["ready"] is False and models["pending"]["version"] is None
    assert app_client.get("/v2/models/tiny/ready").json()["ready"] is True
    assert app_client.get("/v2/models/pending/ready").status_code == 503


def test_not_ready_while_a_champion_fails_its_golden_rows(
    store: Any, make_settings: Any, start_app: Any, tmp_path: Any, support_module: Any
) -> None:
    specs = tmp_path / "specs"
    support_module.write_spec(specs, "broken", "conveyor-test-broken")
    support_module.register(store.tracking_uri, "conveyor-test-broken", store.uris["bad_golden"])
    client = start_app(make_settings(specs_dir=specs))
    response = client.get("/health/ready")
    assert response.status_code == 503
    detail = response.json()["models"]["broken"]
    assert detail["ready"] is False
    assert "golden rows differ" in detail["detail"]


def test_v2_metadata_describes_signature_and_versions(app_client: Any) -> None:
    server = app_client.get("/v2").json()
    assert server["name"] == "conveyor-model-server"
    assert server["models"] == ["pending", "tiny"]
    meta = app_client.get("/v2/models/tiny").json()
    assert meta["inputs"] == [
        {"name": "x1", "datatype": "FP64", "shape": [-1]},
        {"name": "x2", "datatype": "FP64", "shape": [-1]},
        {"name": "color", "datatype": "BYTES", "shape": [-1]},
    ]
    assert [o["datatype"] for o in meta["outputs"]] == ["FP64", "INT64"]
    assert meta["versions"] == ["1"]
    assert meta["parameters"]["serving_version"] == "1"
    assert meta["parameters"]["alias"] == "champion"


def test_every_protocol_gives_the_offline_pyfunc_predictions(app_client: Any, store: Any) -> None:
    rows = _rows(store)
    expected = _offline(store, "good", rows)

    split = app_client.post("/invocations?model=tiny", json=_split(rows))
    records = app_client.post(
        "/models/tiny/invocations", json={"dataframe_records": rows.to_dict(orient="records")}
    )
    columnar = app_client.post(
        "/models/tiny/invocations", json={"inputs": {c: rows[c].tolist() for c in FEATURES}}
    )
    oip = app_client.post(
        "/v2/models/tiny/infer",
        json={
            "id": "req-42",
            "inputs": [
                {"name": "x1", "shape": [5], "datatype": "FP64", "data": rows["x1"].tolist()},
                {"name": "x2", "shape": [5, 1], "datatype": "FP64", "data": [[v] for v in rows["x2"]]},
                {"name": "color", "shape": [5], "datatype": "BYTES", "data": rows["color"].tolist()},
                {"name": "row_id", "shape": [5], "datatype": "INT64", "data": rows["row_id"].tolist()},
            ],
        },
    )
    for response in (split, records, columnar):
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == "1"
        predictions = response.json()["predictions"]
        np.testing.assert_allclose(
            [p["probability"] for p in predictions], expected["probability"], rtol=0, atol=1e-12
        )
        assert [p["prediction"] for p in predictions] == expected["prediction"].tolist()

    assert oip.status_code == 200, oip.text
    body = oip.json()
    assert body["model_name"] == "tiny" and body["model_version"] == "1" and body["id"] == "req-42"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probability"]["datatype"] == "FP64" and outputs["probability"]["shape"] == [5]
    assert outputs["prediction"]["datatype"] == "INT64"
    np.testing.assert_allclose(outputs["probability"]["data"], expected["probability"], rtol=0, atol=1e-12)
    assert outputs["prediction"]["data"] == expected["prediction"].tolist()


def _post_split(client: Any, columns: list[str], data: list[list[Any]], model: str = "tiny") -> Any:
    return client.post(
        f"/models/{model}/invocations", json={"dataframe_split": {"columns": columns, "data": data}}
    )


def _assert_error(response: Any, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert "Traceback" not in response.text
    for needle in needles:
        assert needle in body["error"], f"{needle!r} not in {body['error']!r}"
    return body


def test_missing_column_is_422_naming_it(app_client: Any) -> None:
    body = _assert_error(_post_split(app_client, ["x1", "color"], [[0.1, "red"]]), 422, "'x2'", "missing")
    assert body["detail"][0]["column"] == "x2"


def test_record_lacking_a_column_names_column_and_row(app_client: Any) -> None:
    records = [{"x1": 0.1, "x2": 0.2, "color": "red"}, {"x1": 0.3, "color": "blue"}]
    response = app_client.post("/models/tiny/invocations", json={"dataframe_records": records})
    body = _assert_error(response, 422, "'x2'", "row 1")
    assert body["detail"][0] == {"column": "x2", "row": 1, "message": "row 1 lacks column 'x2'"}


def test_unknown_column_is_422_naming_it_but_the_id_column_is_welcome(app_client: Any) -> None:
    body = _assert_error(
        _post_split(app_client, ["x1", "x2", "color", "x9"], [[0.1, 0.2, "red", 1]]), 422, "'x9'"
    )
    assert body["detail"][0]["column"] == "x9"
    ok = _post_split(app_client, ["row_id", "x1", "x2", "color"], [[7, 0.1, 0.2, "red"]])
    assert ok.status_code == 200, ok.text


def test_string_in_numeric_column_names_column_and_row(app_client: Any) -> None:
    response = _post_split(app_client, ["x1", "x2", "color"], [[0.1, 0.2, "red"], ["abc", 0.2, "red"]])
    body = _assert_error(response, 422, "'x1'", "row 1", "expected a number")
    assert body["detail"] == [
        {"column": "x1", "row": 1, "message": 'expected a number (double), got string "abc"'}
    ]


def test_number_in_string_column_and_bool_in_numeric_column_are_refused(app_client: Any) -> None:
    body = _assert_error(_post_split(app_client, ["x1", "x2", "color"], [[True, 0.2, 3]]), 422)
    assert {(d["column"], d["row"]) for d in body["detail"]} == {("x1", 0), ("color", 0)}


def test_null_only_where_the_spec_allows_missing_values(app_client: Any) -> None:
    _assert_error(_post_split(app_client, ["x1", "x2", "color"], [[None, 0.2, "red"]]), 422, "null", "'x1'")
    # x2 declares max_null_fraction > 0: a null is a legitimate missing value.
    assert _post_split(app_client, ["x1", "x2", "color"], [[0.1, None, "red"]]).status_code == 200


def test_empty_batch_is_422(app_client: Any) -> None:
    _assert_error(_post_split(app_client, ["x1", "x2", "color"], []), 422, "empty batch")
    _assert_error(app_client.post("/models/tiny/invocations", json={"dataframe_records": []}), 422, "empty")


def test_oversize_batch_is_refused_before_prediction(make_settings: Any, start_app: Any) -> None:
    client = start_app(make_settings(), max_batch_rows=3, max_body_bytes=2000)
    rows = [[0.1, 0.2, "red"]] * 4
    _assert_error(_post_split(client, ["x1", "x2", "color"], rows), 422, "4 rows", "limit of 3")
    assert _post_split(client, ["x1", "x2", "color"], rows[:3]).status_code == 200
    huge = [[0.1, 0.2, "red" * 1000]]
    _assert_error(_post_split(client, ["x1", "x2", "color"], huge), 413, "exceeds 2000 bytes")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"dataframe_split": {"columns": ["x1"], ', "malformed JSON"),
        (b"", "empty request body"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"dataframe_split": {}, "dataframe_records": []}', "exactly one of"),
        (b'{"rows": []}', "unknown top-level field"),
        (b'{"dataframe_split": {"columns": ["x1", "x2", "color"], "data": [[1, 2]]}}', "row 0 has 2 values"),
    ],
)
def test_malformed_bodies_are_4xx_json(app_client: Any, content: bytes, needle: str) -> None:
    response = app_client.post(
        "/models/tiny/invocations", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert needle in response.json()["error"]
    assert "Traceback" not in response.text


def test_non_json_content_type_is_415(app_client: Any) -> None:
    response = app_client.post(
        "/models/tiny/invocations", content=b"x1,x2,color\n1,2,red\n", headers={"Content-Type": "text/csv"}
    )
    _assert_error(response, 415, "application/json")


def test_oip_wrong_datatype_and_bad_shape(app_client: Any) -> None:
    def infer(tensors: list[dict[str, Any]]) -> Any:
        return app_client.post("/v2/models/tiny/infer", json={"inputs": tensors})

    good = [
        {"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.5]},
        {"name": "x2", "shape": [1], "datatype": "FP64", "data": [0.5]},
        {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["red"]},
    ]
    assert infer(good).status_code == 200
    wrong_type = [dict(good[0], datatype="BYTES", data=["a"]), *good[1:]]
    body = _assert_error(infer(wrong_type), 422, "'x1'")
    assert body["detail"][0]["column"] == "x1"
    bad_shape = [dict(good[0], shape=[2]), *good[1:]]
    _assert_error(infer(bad_shape), 400, "shape [2] holds 2 values but data has 1")
    _assert_error(infer(good[:2]), 422, "missing column 'color'")
    _assert_error(app_client.post("/v2/models/tiny/infer", json={"inputs": "x"}), 400, "list of tensors")


def test_unknown_model_is_404_naming_the_served_ones(app_client: Any) -> None:
    for response in (
        _post_split(app_client, ["x1"], [[1.0]], model="nope"),
        app_client.post("/v2/models/nope/infer", json={"inputs": []}),
        app_client.get("/v2/models/nope"),
    ):
        body = _assert_error(response, 404, "'nope'")
        assert "['pending', 'tiny']" in body["error"]


def test_model_without_champion_is_503_saying_why(app_client: Any) -> None:
    response = _post_split(app_client, ["x1", "x2", "color"], [[0.1, 0.2, "red"]], model="pending")
    _assert_error(response, 503, "no @champion")


def test_invocations_without_model_name_on_a_multi_model_server(app_client: Any) -> None:
    response = app_client.post("/invocations", json={"dataframe_records": [{"x1": 1}]})
    _assert_error(response, 400, "?model=<name>")


def test_unknown_route_and_method_are_json(app_client: Any) -> None:
    _assert_error(app_client.get("/nowhere"), 404, "no route")
    _assert_error(app_client.get("/models/tiny/invocations"), 405, "not allowed")


def test_a_crashing_model_gives_json_500_without_traceback(app_client: Any) -> None:
    model = app_client.app.state.server.slots["tiny"].serving

    class Exploding:
        metadata = model.pyfunc.metadata

        def predict(self, frame: Any) -> Any:
            raise RuntimeError("secret internals /etc/passwd")

    original, model.pyfunc = model.pyfunc, Exploding()
    try:
        response = _post_split(app_client, ["x1", "x2", "color"], [[0.1, 0.2, "red"]])
    finally:
        model.pyfunc = original
    body = _assert_error(response, 500, "failed to predict")
    assert "secret internals" not in response.text
    assert body["detail"] == []


def test_metrics_count_requests_predictions_and_versions(app_client: Any, store: Any) -> None:
    rows = _rows(store, 4)
    assert app_client.post("/invocations?model=tiny", json=_split(rows)).status_code == 200
    assert _post_split(app_client, ["x1"], [[1.0]]).status_code == 422
    text = app_client.get("/metrics").text
    assert 'conveyor_requests_total{model="tiny",route="invocations",status="200",version="1"} 1.0' in text
    assert 'conveyor_requests_total{model="tiny",route="invocations",status="422",version="1"} 1.0' in text
    predicted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('conveyor_predictions_total{model="tiny"')
    )
    assert predicted == 4.0
    assert 'conveyor_model_loaded_version{model="tiny",version="1"} 1.0' in text
    assert 'conveyor_golden_check_passed{model="tiny",slot="serving",version="1"} 1.0' in text
    assert 'conveyor_request_latency_seconds_count{model="tiny",route="invocations",version="1"} 2.0' in text
    assert 'conveyor_model_ready{model="tiny"} 1.0' in text


def test_prediction_log_is_written_off_path_with_ids(app_client: Any, store: Any, tmp_path: Any) -> None:
    rows = _rows(store, 3)
    response = app_client.post("/invocations?model=tiny", json=_split(rows), headers={"X-Request-ID": "r-1"})
    assert response.status_code == 200
    _post_split(app_client, ["x1"], [[1.0]])  # a refused request is logged as an error event
    assert app_client.app.state.predlog.flush(10)

    files = list((tmp_path / "data" / "predictions" / "tiny").glob("date=*/*.jsonl"))
    assert len(files) == 1
    from conveyor.serving.predlog import writer_name

    assert files[0].name == f"{writer_name()}.jsonl"
    events = [json.loads(line) for line in files[0].read_text().splitlines()]
    predictions = [e for e in events if e["event"] == "prediction"]
    errors = [e for e in events if e["event"] == "error"]
    assert [e["id"] for e in predictions] == rows["row_id"].tolist()
    assert {e["request_id"] for e in predictions} == {"r-1"}
    assert {e["version"] for e in predictions} == {"1"}
    assert predictions[0]["features"] == {
        "x1": rows["x1"][0],
        "x2": rows["x2"][0],
        "color": rows["color"][0],
    }
    served = response.json()["predictions"]
    assert [e["probability"] for e in predictions] == [p["probability"] for p in served]
    assert [e["prediction"] for e in predictions] == [p["prediction"] for p in served]
    assert len(errors) == 1 and errors[0]["status"] == 422 and errors[0]["version"] == "1"


def test_a_broken_log_disk_never_fails_a_request(make_settings: Any, start_app: Any, tmp_path: Any) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data root's folders should go")
    client = start_app(make_settings(data_root=(blocker / "data").as_uri()))
    response = _post_split(client, ["x1", "x2", "color"], [[0.1, 0.2, "red"], [0.3, 0.1, "blue"]])
    assert response.status_code == 200
    assert client.app.state.predlog.flush(10)
    text = client.get("/metrics").text
    assert 'conveyor_prediction_log_rows_dropped_total{model="tiny",reason="write_error"} 2.0' in text


def test_port_answers_while_models_load_and_readiness_waits(make_settings: Any, monkeypatch: Any) -> None:
    import threading

    from fastapi.testclient import TestClient

    from conveyor.serving import loader
    from conveyor.serving.app import create_app

    release = threading.Event()
    real_resolve = loader.resolve_champion

    def slow_resolve(settings: Any, spec: Any) -> str:
        assert release.wait(30), "the test never released the loader"
        return real_resolve(settings, spec)

    monkeypatch.setattr(loader, "resolve_champion", slow_resolve)
    app = create_app(make_settings(), load_attempts=1)
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        loading = client.get("/health/ready")
        assert loading.status_code == 503
        assert loading.json()["detail"] == "models are still loading"
        assert loading.json()["models"]["tiny"]["state"] == "loading"
        _assert_error(_post_split(client, FEATURES, [[0.1, 0.2, "red"]]), 503, "still loading")
        release.set()
        assert app.state.server.initial_load_done.wait(60)
        assert client.get("/health/ready").status_code == 200
