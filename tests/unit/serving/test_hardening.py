"""Client input never gets a 5xx: hostile numbers, nesting and names get a 4xx that says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from .test_app import _assert_error, _post_split

pytestmark = pytest.mark.unit


def _post_raw(client: Any, body: str, path: str = "/models/tiny/invocations") -> Any:
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("digits", [400, 5000])
def test_an_integer_of_hundreds_or_thousands_of_digits_is_a_4xx(app_client: Any, digits: int) -> None:
    number = "9" * digits
    body = '{"dataframe_split": {"columns": ["x1", "x2", "color"], "data": [[NUMBER, 0.2, "red"]]}}'
    body = body.replace("NUMBER", number)
    response = _post_raw(app_client, body)
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text and len(response.text) < 2000, response.text[:500]


def test_a_number_beyond_a_double_is_named(app_client: Any) -> None:
    body = _assert_error(_post_split(app_client, ["x1", "x2", "color"], [[10**400, 0.2, "red"]]), 422, "'x1'")
    assert "outside the range of a double" in body["error"]


def test_json_nested_a_thousand_deep_is_a_400(app_client: Any) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    _assert_error(_post_raw(app_client, '{"inputs": ' + deep + "}"), 400)
    # 900 levels: within what the JSON parser takes, far beyond what a tensor's data may nest
    data = "[" * 900 + "0.5" + "]" * 900
    body = (
        '{"inputs": [{"name": "x1", "shape": [1], "datatype": "FP64", "data": DATA},'
        ' {"name": "x2", "shape": [1], "datatype": "FP64", "data": [0.1]}]}'
    ).replace("DATA", data)
    _assert_error(_post_raw(app_client, body, "/v2/models/tiny/infer"), 400, "nested at most")


def test_names_the_client_sent_are_echoed_truncated(app_client: Any) -> None:
    name = "c" * 100_000
    response = _post_split(app_client, ["x1", "x2", "color", name], [[0.1, 0.2, "red", 1.0]])
    body = _assert_error(response, 422, "unknown column")
    assert len(response.text) < 5000, len(response.text)
    assert "(100002 chars)" in body["error"]
    response = app_client.post("/models/tiny/invocations", json={name: 1, "inputs": []})
    assert response.status_code == 400 and len(response.text) < 5000


def test_values_outside_the_contract_that_break_the_model_are_a_422_naming_them(app_client: Any) -> None:
    """A model that cannot score 1e300 in a column whose contract is [-10, 10] fails the request's
    way: 422 naming the column, the row and the range, not a 500 blaming the model."""
    model = app_client.app.state.server.slots["tiny"].serving

    class Overflowing:
        metadata = model.pyfunc.metadata

        def predict(self, frame: Any) -> Any:
            raise ValueError("Input X contains infinity or a value too large for dtype('float64').")

    original, model.pyfunc = model.pyfunc, Overflowing()
    try:
        response = _post_split(app_client, ["x1", "x2", "color"], [[0.1, 0.2, "red"], [1e300, 0.2, "red"]])
        body = _assert_error(response, 422, "outside its data contract", "'x1' row 1", "[-10, 10]")
        assert body["detail"][0] == {"column": "x1", "row": 1, "message": body["detail"][0]["message"]}
        # in-contract rows that break the model are still the model's fault: 500
        response = _post_split(app_client, ["x1", "x2", "color"], [[0.1, 0.2, "red"]])
        _assert_error(response, 500, "failed to predict")
    finally:
        model.pyfunc = original


def test_admin_token_and_size_are_checked_before_the_body_is_read(app_client: Any, admin: Any) -> None:
    """A malformed body without the token is a 401, not a 400: nobody parses it first."""
    for path in ("/admin/models/tiny/stage", "/admin/models/tiny/promote"):
        response = app_client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        body = _assert_error(response, 401, "Bearer")
        assert response.headers["www-authenticate"] == "Bearer", body
    big = b'{"version": "1", "pad": "' + b"x" * 100_000 + b'"}'
    response = app_client.post(
        "/admin/models/tiny/stage", content=big, headers={**admin, "content-type": "application/json"}
    )
    _assert_error(response, 413, "admin request body")


def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    """A body without a Content-Length is read chunk by chunk and refused as soon as it passes the
    limit: the rest of a 50 KB stream is never read (nor a 200 MB one)."""
    import asyncio

    from conveyor.serving.app import _read_body
    from conveyor.serving.errors import ServingError

    read: list[int] = []

    class Streaming:
        async def stream(self) -> Any:
            for i in range(50):
                read.append(i)
                yield b"r" * 1000

    with pytest.raises(ServingError) as refused:
        asyncio.run(_read_body(Streaming(), 2000))  # type: ignore[arg-type]
    assert refused.value.status == 413 and "exceeds 2000 bytes" in refused.value.message
    assert len(read) == 3


def test_out_of_contract_rows_are_answered_and_flagged_in_the_prediction_log(
    app_client: Any, tmp_path: Any
) -> None:
    """The default policy (``deploy.out_of_contract: flag``): answered, and marked for monitoring."""
    import json

    rows = [[0.1, 0.2, "red"], [50.0, 0.2, "red"], [0.1, -0.2, "purple"]]
    response = _post_split(app_client, ["x1", "x2", "color"], rows)
    assert response.status_code == 200, response.text
    assert app_client.app.state.predlog.flush(10)
    (log,) = (tmp_path / "data" / "predictions" / "tiny").glob("date=*/*.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e.get("out_of_contract") for e in events] == [None, ["x1"], ["color"]]


def test_the_reject_policy_refuses_out_of_contract_rows_naming_them(
    make_settings: Any, start_app: Any, tmp_path: Any
) -> None:
    import yaml

    from .support import write_spec

    specs = tmp_path / "reject-specs"
    path = write_spec(specs, "tiny", "conveyor-test-tiny")
    raw = yaml.safe_load(path.read_text())
    raw["deploy"]["out_of_contract"] = "reject"
    path.write_text(yaml.safe_dump(raw))
    client = start_app(make_settings(specs_dir=specs))
    response = _post_split(client, ["x1", "x2", "color"], [[0.1, 0.2, "red"], [0.1, 11.5, "red"]])
    body = _assert_error(response, 422, "deploy.out_of_contract: reject", "'x2' row 1", "[-10, 10]")
    assert body["detail"][0]["column"] == "x2" and body["detail"][0]["row"] == 1
    assert _post_split(client, ["x1", "x2", "color"], [[0.1, 0.2, "red"]]).status_code == 200


def _oip_body(**extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.1]},
            {"name": "x2", "shape": [1], "datatype": "FP64", "data": [0.2]},
            {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["red"]},
        ],
        **extra,
    }


@pytest.mark.parametrize("request_id", ["\u00e9\u20ac", "a\r\nSet-Cookie: x=1", "tab\there"])
def test_an_oip_id_that_cannot_be_a_header_is_a_400_naming_it(app_client: Any, request_id: str) -> None:
    """The id comes back as the X-Request-ID header: Unicode there was a 500, a line break a forged
    header (found by the schemathesis run of test_openapi_fuzz.py)."""
    response = app_client.post("/v2/models/tiny/infer", json=_oip_body(id=request_id))
    body = _assert_error(response, 400, '"id"', "printable ASCII")
    assert body["detail"] == [{"field": "id", "message": "printable ASCII characters only"}]
    assert "set-cookie" not in response.headers


def test_a_printable_oip_id_is_echoed_in_the_body_and_the_header(app_client: Any) -> None:
    response = app_client.post("/v2/models/tiny/infer", json=_oip_body(id="req 7/a~" + "x" * 200))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == response.headers["x-request-id"] == ("req 7/a~" + "x" * 200)[:128]


@pytest.mark.parametrize(
    ("body", "path", "where"),
    [
        (
            '{"dataframe_split": {"columns": ["x1", "\\ud800"], "data": [[0.1, 0.2]]}}',
            "/models/tiny/invocations",
            "dataframe_split.columns[1]",
        ),
        ('{"dataframe_records": [{"x1": 0.1, "x\\udc00": 0.2}]}', "/invocations?model=tiny", "x\\udc00"),
        (
            '{"inputs": [{"name": "\\udbff", "shape": [1], "datatype": "FP64", "data": [0.1]}]}',
            "/v2/models/tiny/infer",
            "inputs[0].name",
        ),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_where_it_is(
    app_client: Any, body: str, path: str, where: str
) -> None:
    """JSON lets "\\ud800" through as an escape, but it is no Unicode text: echoed, it was a 500."""
    response = _post_raw(app_client, body, path)
    error = _assert_error(response, 400, "lone UTF-16 surrogate", where)
    assert error["detail"][0]["message"] == "lone surrogate"
    # a pair is one character, and fine
    paired = _post_raw(
        app_client, '{"dataframe_records": [{"x1": 0.1, "x2": 0.2, "color": "\\ud83d\\ude00"}]}'
    )
    assert paired.status_code == 200, paired.text


def test_stage_takes_only_a_registry_version_number(app_client: Any, admin: Any) -> None:
    """The version names the model's cache folder: "../.." was taken (and looked up) before."""
    for version in ("../../escape", "1/../..", " 1", "v1"):
        response = app_client.post("/admin/models/tiny/stage", json={"version": version}, headers=admin)
        body = _assert_error(response, 422, "version")
        assert body["detail"][0]["location"] == "version", body
