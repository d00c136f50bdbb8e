"""The model server's Open Inference Protocol v2 gRPC port, called by a real gRPC client (the generated
stub over a channel) on real logged models, against the same models' REST answers."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from unit.serving import support

pytestmark = pytest.mark.unit

FEATURES = ["x1", "x2", "color"]


@pytest.fixture
def connect() -> Iterator[Any]:
    """Open a real channel to a local gRPC port and return the generated stub (closed after the test,
    before the app stops)."""
    from conveyor.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    channels: list[Any] = []

    def stub(port: int) -> Any:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        grpc.channel_ready_future(channel).result(timeout=10)
        return pb_grpc.GRPCInferenceServiceStub(channel)

    yield stub
    for channel in channels:
        channel.close()


@pytest.fixture
def grpc_client(make_settings: Any, start_app: Any, grpc_port: int, connect: Any) -> tuple[Any, Any]:
    """(REST test client, gRPC stub) of one app serving ``tiny`` (@champion v1) and ``pending``."""
    client = start_app(make_settings(model_server_grpc_port=grpc_port))
    assert client.app.state.grpc_port == grpc_port
    return client, connect(grpc_port)


def _pb() -> Any:
    from conveyor.serving.grpc import grpc_predict_v2_pb2 as pb

    return pb


def _rows(store: Any, n: int = 5) -> pd.DataFrame:
    return store.train[["row_id", *FEATURES]].iloc[20 : 20 + n].reset_index(drop=True)


def _typed(rows: pd.DataFrame, model: str = "tiny", **fields: Any) -> Any:
    """A ModelInferRequest with one typed tensor per column of ``rows`` (FP64, BYTES, INT64)."""
    pb = _pb()
    request = pb.ModelInferRequest(model_name=model, **fields)
    for column in rows.columns:
        values = rows[column].tolist()
        tensor = request.inputs.add(name=column, shape=[len(values)])
        if column == "color":
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        elif column == "row_id":
            tensor.datatype = "INT64"
            tensor.contents.int64_contents.extend(values)
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(values)
    return request


def _raw(rows: pd.DataFrame, model: str = "tiny") -> Any:
    """The same request with raw_input_contents: little-endian values, BYTES length-prefixed."""
    pb = _pb()
    request = pb.ModelInferRequest(model_name=model)
    for column in rows.columns:
        values = rows[column].tolist()
        if column == "color":
            datatype = "BYTES"
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        elif column == "row_id":
            datatype, raw = "INT64", np.asarray(values, dtype="<i8").tobytes()
        else:
            datatype, raw = "FP64", np.asarray(values, dtype="<f8").tobytes()
        request.inputs.add(name=column, datatype=datatype, shape=[len(values)])
        request.raw_input_contents.append(raw)
    return request


def _at(request: Any, name: str) -> int:
    """The position of input tensor ``name`` (its raw_input_contents entry has the same)."""
    return [t.name for t in request.inputs].index(name)


def _input(request: Any, name: str) -> Any:
    return request.inputs[_at(request, name)]


def _outputs(response: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tensor in response.outputs:
        contents = tensor.contents
        if tensor.datatype == "FP64":
            values: list[Any] = list(contents.fp64_contents)
        elif tensor.datatype == "INT64":
            values = list(contents.int64_contents)
        else:
            values = [v.decode() for v in contents.bytes_contents]
        out[tensor.name] = {"datatype": tensor.datatype, "shape": list(tensor.shape), "data": values}
    return out


def _rest_oip(rows: pd.DataFrame) -> dict[str, Any]:
    types = {"color": "BYTES", "row_id": "INT64"}
    return {
        "inputs": [
            {"name": c, "shape": [len(rows)], "datatype": types.get(c, "FP64"), "data": rows[c].tolist()}
            for c in rows.columns
        ]
    }


def _refused(call: Any, request: Any, code: Any, *needles: str) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30)
    error = raised.value
    assert error.code() == code, (error.code(), error.details())
    details = str(error.details())
    assert "Traceback" not in details
    for needle in needles:
        assert needle in details, f"{needle!r} not in {details!r}"
    return details


# -- health and metadata --------------------------------------------------------------------------


def test_live_ready_and_model_readiness(grpc_client: tuple[Any, Any]) -> None:
    pb = _pb()
    rest, stub = grpc_client
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live is True
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is True
    assert rest.get("/health/ready").json()["ready"] is True
    assert stub.ModelReady(pb.ModelReadyRequest(name="tiny"), timeout=10).ready is True
    assert stub.ModelReady(pb.ModelReadyRequest(name="tiny", version="1"), timeout=10).ready is True
    assert stub.ModelReady(pb.ModelReadyRequest(name="tiny", version="9"), timeout=10).ready is False
    assert stub.ModelReady(pb.ModelReadyRequest(name="pending"), timeout=10).ready is False
    _refused(stub.ModelReady, pb.ModelReadyRequest(name="nope"), grpc.StatusCode.NOT_FOUND, "'nope'", "tiny")


def test_metadata_is_the_rest_metadata(grpc_client: tuple[Any, Any]) -> None:
    import conveyor

    pb = _pb()
    rest, stub = grpc_client
    server = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    assert (server.name, server.version) == ("conveyor-model-server", conveyor.__version__)
    assert list(server.extensions) == rest.get("/v2").json()["extensions"]

    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny"), timeout=10)
    expected = rest.get("/v2/models/tiny").json()
    assert meta.name == "tiny" and meta.platform == expected["platform"] == "mlflow_pyfunc"
    assert list(meta.versions) == expected["versions"] == ["1"]
    for ours, theirs in ((meta.inputs, expected["inputs"]), (meta.outputs, expected["outputs"])):
        assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ours] == theirs
    assert [(t.name, t.datatype) for t in meta.inputs] == [("x1", "FP64"), ("x2", "FP64"), ("color", "BYTES")]
    assert [(t.name, t.datatype) for t in meta.outputs] == [("probability", "FP64"), ("prediction", "INT64")]
    _refused(stub.ModelMetadata, pb.ModelMetadataRequest(name="nope"), grpc.StatusCode.NOT_FOUND, "'nope'")
    _refused(
        stub.ModelMetadata, pb.ModelMetadataRequest(name="tiny", version="7"), grpc.StatusCode.NOT_FOUND, "7"
    )


# -- inference -----------------------------------------------------------------------------------


def test_typed_and_raw_contents_answer_as_rest_v2_infer(grpc_client: tuple[Any, Any], store: Any) -> None:
    rest, stub = grpc_client
    rows = _rows(store)
    typed, metadata = stub.ModelInfer.with_call(_typed(rows, id="req-7"), timeout=30)
    raw = stub.ModelInfer(_raw(rows), timeout=30)
    reference = rest.post("/v2/models/tiny/infer", json=_rest_oip(rows))
    assert reference.status_code == 200, reference.text

    assert (typed.model_name, typed.model_version, typed.id) == ("tiny", "1", "req-7")
    assert dict(metadata.trailing_metadata()) == {"x-request-id": "req-7", "x-model-version": "1"}
    assert raw.model_version == "1" and raw.id  # a generated request id when none was sent
    expected = {
        o["name"]: {k: o[k] for k in ("datatype", "shape", "data")} for o in reference.json()["outputs"]
    }
    assert _outputs(typed) == expected
    assert _outputs(raw) == expected
    offline = support.offline_predict(store.weights["good"], rows[FEATURES])
    np.testing.assert_allclose(expected["probability"]["data"], offline["probability"], rtol=0, atol=1e-12)
    assert expected["prediction"]["data"] == offline["prediction"].tolist()


def test_a_request_id_that_is_not_printable_ascii_is_refused_as_by_rest(
    grpc_client: tuple[Any, Any], store: Any
) -> None:
    rest, stub = grpc_client
    rows = _rows(store, 2)
    for chosen in ("zähler-\U0001f600-˔", "two\nlines"):
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(_typed(rows, id=chosen), metadata=(("x-request-id", "call-9"),), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
        assert '"id"' in str(raised.value.details())
        assert dict(raised.value.trailing_metadata())["x-request-id"] == "call-9"
        response = rest.post("/v2/models/tiny/infer", json={**_rest_oip(rows), "id": chosen})
        assert response.status_code == 400, response.text
    answer, call = stub.ModelInfer.with_call(
        _typed(rows), metadata=(("x-request-id", "call-10"),), timeout=30
    )
    assert answer.id == "call-10" and dict(call.trailing_metadata())["x-request-id"] == "call-10"


def test_requested_outputs_narrow_the_answer(grpc_client: tuple[Any, Any], store: Any) -> None:
    pb = _pb()
    _, stub = grpc_client
    rows = _rows(store, 3)
    request = _typed(rows)
    request.outputs.append(pb.ModelInferRequest.InferRequestedOutputTensor(name="prediction"))
    assert list(_outputs(stub.ModelInfer(request, timeout=30))) == ["prediction"]
    request.outputs.append(pb.ModelInferRequest.InferRequestedOutputTensor(name="logits"))
    _refused(
        stub.ModelInfer, request, grpc.StatusCode.INVALID_ARGUMENT, "'logits'", "probability, prediction"
    )


def test_invalid_tensors_are_invalid_argument_naming_the_column(
    grpc_client: tuple[Any, Any], store: Any
) -> None:
    _, stub = grpc_client
    rows = _rows(store, 3)
    invalid = grpc.StatusCode.INVALID_ARGUMENT

    unknown = _typed(rows)
    unknown.inputs.add(name="x9", datatype="FP64", shape=[3]).contents.fp64_contents.extend([1.0, 2.0, 3.0])
    _refused(stub.ModelInfer, unknown, invalid, "x9")

    missing = _typed(rows[["x1", "x2"]])
    _refused(stub.ModelInfer, missing, invalid, "color")

    short = _typed(rows)
    del _input(short, "x1").contents.fp64_contents[-1]
    _refused(stub.ModelInfer, short, invalid, "'x1'", "shape [3] holds 3 values but data has 2")

    wide = _typed(rows)
    _input(wide, "x1").shape[:] = [1, 3]
    _refused(stub.ModelInfer, wide, invalid, "'x1'", "not one value per row")

    nan = _typed(rows)
    _input(nan, "x1").contents.fp64_contents[1] = float("nan")
    _refused(stub.ModelInfer, nan, invalid, "'x1'", "row 1", "requires a value")

    text = _typed(rows)
    _input(text, "x1").datatype = "BYTES"
    _refused(stub.ModelInfer, text, invalid, "'x1'")  # its values are not in bytes_contents

    wrong_type = _raw(rows)
    _input(wrong_type, "color").datatype = "FP64"  # a string column
    wrong_type.raw_input_contents[_at(wrong_type, "color")] = np.zeros(3, dtype="<f8").tobytes()
    _refused(stub.ModelInfer, wrong_type, invalid, "'color'", "datatype 'FP64' does not fit a string column")

    not_utf8 = _typed(rows)
    _input(not_utf8, "color").contents.bytes_contents[0] = b"\xff\xfe"
    _refused(stub.ModelInfer, not_utf8, invalid, "'color'", "not UTF-8")

    partial = _raw(rows)
    at = _at(partial, "x1")
    partial.raw_input_contents[at] = partial.raw_input_contents[at][:-1]
    _refused(stub.ModelInfer, partial, invalid, "'x1'", "23 raw bytes")

    unknown_type = _typed(rows)
    _input(unknown_type, "x2").datatype = "FP128"
    _refused(stub.ModelInfer, unknown_type, invalid, "'x2'", "'FP128'")

    both = _raw(rows)
    _input(both, "x1").contents.fp64_contents.extend(rows["x1"].tolist())
    _refused(stub.ModelInfer, both, invalid, "'x1'", "raw_input_contents")

    infinite = _typed(rows)
    _input(infinite, "x1").contents.fp64_contents[0] = float("inf")
    _refused(stub.ModelInfer, infinite, invalid, "'x1'", "finite")


def test_a_nullable_column_takes_nan(grpc_client: tuple[Any, Any], store: Any) -> None:
    _, stub = grpc_client
    request = _typed(_rows(store, 2))
    _input(request, "x2").contents.fp64_contents[0] = float("nan")  # x2 allows missing values
    assert len(_outputs(stub.ModelInfer(request, timeout=30))["prediction"]["data"]) == 2


def test_unknown_model_version_and_missing_champion(grpc_client: tuple[Any, Any], store: Any) -> None:
    _, stub = grpc_client
    rows = _rows(store, 2)
    _refused(stub.ModelInfer, _typed(rows, model="nope"), grpc.StatusCode.NOT_FOUND, "'nope'", "tiny")
    _refused(stub.ModelInfer, _typed(rows, model=""), grpc.StatusCode.INVALID_ARGUMENT, "model_name")
    _refused(stub.ModelInfer, _typed(rows, model_version="3"), grpc.StatusCode.NOT_FOUND, "serves version 1")
    _refused(stub.ModelInfer, _typed(rows, model="pending"), grpc.StatusCode.UNAVAILABLE, "no @champion")


def test_batch_and_message_limits_are_the_rest_limits(
    make_settings: Any, start_app: Any, grpc_port: int, connect: Any, store: Any
) -> None:
    start_app(make_settings(model_server_grpc_port=grpc_port), max_batch_rows=4, max_body_bytes=4096)
    stub = connect(grpc_port)
    rows = store.train[["x1", "x2", "color"]].head(5)
    _refused(stub.ModelInfer, _typed(rows), grpc.StatusCode.INVALID_ARGUMENT, "5 rows exceeds the limit of 4")
    big = store.train[["x1", "x2", "color"]].head(300)
    _refused(stub.ModelInfer, _typed(big), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert len(_outputs(stub.ModelInfer(_typed(rows.head(4)), timeout=30))["prediction"]["data"]) == 4


def test_metrics_and_prediction_log_count_grpc_requests(
    grpc_client: tuple[Any, Any], store: Any, tmp_path: Path
) -> None:
    rest, stub = grpc_client
    rows = _rows(store, 3)
    stub.ModelInfer(_typed(rows, id="g-1"), timeout=30)
    bad = _typed(rows[["x1", "x2"]])
    _refused(stub.ModelInfer, bad, grpc.StatusCode.INVALID_ARGUMENT, "color")
    _refused(stub.ModelInfer, _typed(rows, model="nope"), grpc.StatusCode.NOT_FOUND)

    text = rest.get("/metrics").text
    assert 'conveyor_requests_total{model="tiny",route="grpc_infer",status="200",version="1"} 1.0' in text
    assert 'conveyor_requests_total{model="tiny",route="grpc_infer",status="422",version="1"} 1.0' in text
    assert 'conveyor_requests_total{model="_unknown",route="grpc_infer",status="404",version=""} 1.0' in text
    assert 'conveyor_request_latency_seconds_count{model="tiny",route="grpc_infer",version="1"} 2.0' in text
    predicted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('conveyor_predictions_total{model="tiny"')
    )
    assert predicted == 3.0

    assert rest.app.state.predlog.flush(10)
    files = list((tmp_path / "data" / "predictions" / "tiny").glob("date=*/*.jsonl"))
    events = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    predictions = [e for e in events if e["event"] == "prediction"]
    errors = [e for e in events if e["event"] == "error"]
    assert [e["id"] for e in predictions] == rows["row_id"].tolist()
    assert {(e["route"], e["request_id"], e["version"]) for e in predictions} == {("grpc_infer", "g-1", "1")}
    assert [(e["route"], e["status"]) for e in errors] == [("grpc_infer", 422)]


# -- other task types ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``levels`` (multiclass, string labels) and ``amount`` (regression), each @champion v1."""
    root = tmp_path_factory.mktemp("grpc-task-models")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    out: dict[str, Any] = {"tracking_uri": tracking_uri, "specs_dir": root / "specs", "home": root / "home"}
    for name, task in {"levels": "multiclass", "amount": "regression"}.items():
        path = support.write_task_spec(
            out["specs_dir"], name, task, f"conveyor-test-{name}", golden_tolerance=1e-9
        )
        spec = support.load_spec_file(path)
        train = support.make_task_frame(task, 200, seed=5)
        uri, _ = support.log_task_model(tracking_uri, spec, train, artifact_root=root / "artifacts")
        support.register(tracking_uri, spec.registered_model_name, uri)
        out[name] = train
    return out


@pytest.fixture
def task_client(
    task_models: dict[str, Any], start_app: Any, grpc_port: int, connect: Any, tmp_path: Path
) -> tuple[Any, Any]:
    from conveyor.settings import Settings

    settings = Settings(
        home=task_models["home"],
        specs_dir=task_models["specs_dir"],
        mlflow_tracking_uri=task_models["tracking_uri"],
        data_root=(tmp_path / "data").as_uri(),
        model_server_reconcile_s=0,
        model_server_grpc_port=grpc_port,
    )
    return start_app(settings), connect(grpc_port)


@pytest.mark.parametrize(
    ("model", "datatypes"),
    [
        (
            "levels",
            {
                "prediction": "BYTES",
                "probability_low": "FP64",
                "probability_mid": "FP64",
                "probability_high": "FP64",
            },
        ),
        ("amount", {"prediction": "FP64"}),
    ],
)
def test_multiclass_and_regression_answer_as_rest(
    task_client: tuple[Any, Any], task_models: dict[str, Any], model: str, datatypes: dict[str, str]
) -> None:
    rest, stub = task_client
    rows = task_models[model][FEATURES].iloc[10:16].reset_index(drop=True)
    answer = _outputs(stub.ModelInfer(_typed(rows, model=model), timeout=30))
    reference = rest.post(f"/v2/models/{model}/infer", json=_rest_oip(rows))
    assert reference.status_code == 200, reference.text
    expected = {
        o["name"]: {k: o[k] for k in ("datatype", "shape", "data")} for o in reference.json()["outputs"]
    }
    assert answer == expected
    assert {name: tensor["datatype"] for name, tensor in answer.items()} == datatypes
    if model == "levels":
        assert set(answer["prediction"]["data"]) <= set(support.LEVELS)


# -- start and stop ------------------------------------------------------------------------------


def test_the_port_closes_when_the_app_stops(make_settings: Any, grpc_port: int, connect: Any) -> None:
    from fastapi.testclient import TestClient

    from conveyor.serving.app import create_app

    pb = _pb()
    app = create_app(make_settings(model_server_grpc_port=grpc_port), load_attempts=1)
    with TestClient(app):
        assert connect(grpc_port).ServerLive(pb.ServerLiveRequest(), timeout=10).live is True
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", grpc_port)) != 0, "the gRPC port is still open"


def test_port_zero_means_no_grpc_and_a_taken_port_leaves_rest_serving(
    make_settings: Any, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert start_app(make_settings(model_server_grpc_port=0)).app.state.grpc_port is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        client = start_app(make_settings(model_server_grpc_port=port))
        assert client.app.state.grpc_port is None
        assert client.get("/health/live").status_code == 200
    assert any(f"127.0.0.1:{port}" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
