"""Schemathesis fuzzes every route of the model server from its own OpenAPI document, in process.

The app is the real one with real logged models (``tiny`` serves, ``pending`` has no champion); the
cases are generated from ``/openapi.json``: requests that fit the documented schemas (positive) and
requests that break them (negative), for the served model, the unready one and names the server
does not know, with and without the admin token; then once more with the prediction bodies narrowed
to ``tiny``'s columns, so cases also reach value checks, the model and the answer. Every answer must
be a status the document names (never a 5xx) with the documented body, headers and content type.
Generation is derandomized and writes no example database, so a run is reproducible; its count of
cases is asserted. The run takes about 40 s on two cores, hence ``slow`` (``make test`` runs it;
``-m "not slow"`` leaves it out).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import TOKEN

pytestmark = pytest.mark.unit

#: Generated requests the whole run must make at least.
MIN_CASES = 1000


@dataclass(frozen=True)
class Plan:
    """One batch of generated cases for an operation."""

    mode: str  # "positive" or "negative"
    max_examples: int
    model: str | None = "tiny"  # the path's {name} (or ?model=); None: generated
    token: bool = True  # send the admin token (admin routes only)


def _plans(operation: Any) -> list[Plan]:
    """What to generate for ``operation``: most cases where they reach a loaded model's validation
    and prediction, a few for the unready model (503), some for generated names (404) and, on admin
    routes, some without the token (401). An operation without inputs yields one distinct case."""
    path, method = operation.path, operation.method.upper()
    if path.startswith("/admin/"):
        if path.endswith("/reload"):  # no body: one case per name
            return [Plan("positive", 2), Plan("positive", 2, model=None), Plan("positive", 2, token=False)]
        return [
            Plan("positive", 40),
            Plan("negative", 40),
            Plan("positive", 10, model=None),
            Plan("negative", 15, token=False),
        ]
    if method == "POST":  # the prediction routes
        return [
            Plan("positive", 160),
            Plan("negative", 120),
            Plan("positive", 5, model="pending"),
            Plan("positive", 20, model=None),
            Plan("negative", 15, model=None),
        ]
    if "{name}" in path:
        return [Plan("positive", 3), Plan("positive", 3, model="pending"), Plan("positive", 25, model=None)]
    return [Plan("positive", 3)]


def _safe_model_uri(case: Any) -> Any:
    """A staged ``model_uri`` is fetched: keep generated ones to run ids of the test store (none
    exists), so no generated string is read as a local path (``.`` would copy the working tree)."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model_uri"), str):
        digest = hashlib.sha256(body["model_uri"].encode("utf-8", "surrogatepass")).hexdigest()[:32]
        case.body = {**body, "model_uri": f"runs:/{digest}/model"}
    return case


#: The ``tiny`` model's input columns as JSON Schemas (``support.write_spec``: x2 may be missing).
_TINY_CELLS = {"x1": {"type": "number"}, "x2": {"type": ["number", "null"]}, "color": {"type": "string"}}
_TINY_OIP_DATATYPES = {"x1": "FP64", "x2": "FP64", "color": "BYTES"}


def _tiny_bodies() -> dict[str, dict[str, Any]]:
    """The documented request bodies narrowed to what ``tiny`` takes (its columns, one tensor each),
    so generated cases also get past the column checks to value checks, the model and the answer."""
    names = list(_TINY_CELLS)
    row = {"type": "object", "properties": _TINY_CELLS, "required": names, "additionalProperties": False}
    split = {
        "type": "object",
        "properties": {
            "columns": {"const": names},
            "data": {
                "type": "array",
                "minItems": 1,
                "maxItems": 5,
                "items": {"type": "array", "prefixItems": list(_TINY_CELLS.values()), "items": False},
            },
        },
        "required": ["columns", "data"],
    }
    tensors = [
        {
            "type": "object",
            "properties": {
                "name": {"const": name},
                "shape": {"const": [1]},
                "datatype": {"const": _TINY_OIP_DATATYPES[name]},
                "data": {"type": "array", "items": cell, "minItems": 1, "maxItems": 1},
            },
            "required": ["name", "shape", "datatype", "data"],
        }
        for name, cell in _TINY_CELLS.items()
    ]
    oip = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 140},
            "inputs": {"type": "array", "prefixItems": tensors, "minItems": 3, "items": False},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"enum": ["probability", "prediction"]}},
                    "required": ["name"],
                },
            },
        },
        "required": ["inputs"],
    }
    scoring = {
        "oneOf": [
            {
                "type": "object",
                "properties": {"dataframe_split": split},
                "required": ["dataframe_split"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "dataframe_records": {"type": "array", "items": row, "minItems": 1, "maxItems": 5}
                },
                "required": ["dataframe_records"],
                "additionalProperties": False,
            },
        ]
    }
    return {"/v2/models/{name}/infer": oip, "/invocations": scoring, "/models/{name}/invocations": scoring}


def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """Schemathesis hook (its name says when it runs; registered only while the narrowed schema
    loads): the prediction bodies become ``_tiny_bodies``."""
    for path, body in _tiny_bodies().items():
        content = raw_schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        content["schema"] = body
        content.pop("examples", None)


def _fuzzer(strategy: Any, max_examples: int, check: Callable[[Any], None]) -> Callable[[], None]:
    """A Hypothesis test that draws up to ``max_examples`` cases from ``strategy``, reproducibly."""
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        check(case)

    return run


@pytest.fixture
def hypothesis_home(tmp_path: Any) -> Iterator[None]:
    """Hypothesis keeps caches (constants of the code, Unicode tables) in ``./.hypothesis``; the run
    writes them under its tmp folder instead (no example database is written at all)."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path / "hypothesis")
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)


def test_the_document_describes_every_request_body_and_error(make_settings: Any) -> None:
    """Every route documents its errors with the body the server really sends (no FastAPI
    ``HTTPValidationError``), every POST that takes a body documents it, and the OIP datatypes the
    document lists are those the validation knows."""
    from typing import get_args

    from conveyor.serving.app import create_app
    from conveyor.serving.schemas import OipDatatype
    from conveyor.serving.validation import OIP_DATATYPES

    doc = create_app(make_settings()).openapi()
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "200" in responses and "default" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith("4") or status == "default":
                    assert response["content"] == error_body, (method, path, status)
            if method == "post" and not path.endswith("/reload"):
                assert operation["requestBody"]["content"]["application/json"]["schema"], (method, path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert set(get_args(OipDatatype)) == set().union(*OIP_DATATYPES.values())


@pytest.mark.slow
@pytest.mark.usefixtures("hypothesis_home")
def test_schemathesis_finds_no_server_error_on_any_route(make_settings: Any) -> None:
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from conveyor.serving.app import create_app

    app = create_app(make_settings(), load_attempts=1)
    # Loading the schema starts the app's lifespan (models load in the background); schemathesis's
    # pytest plugin ends it when this test tears down.
    documented = schemathesis.openapi.from_asgi("/openapi.json", app)
    schemathesis.hook(before_load_schema)
    try:
        narrowed = schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        schemathesis.hooks.unregister(before_load_schema)
    assert app.state.server.initial_load_done.wait(120), "models did not load within 120 s"
    assert app.state.server.slots["tiny"].ready

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    admin = {"Authorization": f"Bearer {TOKEN}"}
    failures: list[str] = []
    cases: Counter[str] = Counter()
    statuses: Counter[int] = Counter()

    def fuzz(operation: Any, plan: Plan, tag: str) -> None:
        fixed: dict[str, Any] = {}
        if plan.model and "{name}" in operation.path:
            fixed["path_parameters"] = {"name": plan.model}
        if plan.model and operation.path == "/invocations":
            fixed["query"] = {"model": plan.model}
        mode = GenerationMode.POSITIVE if plan.mode == "positive" else GenerationMode.NEGATIVE
        headers = admin if plan.token and operation.path.startswith("/admin/") else {}
        # Statuses the document names for this operation ("default" is for the unexpected 500).
        named = set(operation.definition.raw["responses"]) - {"default"}
        # A model without a champion answers 503 by design: a documented status, not a server error.
        run_checks = [c for c in checks if c is not not_a_server_error] if plan.model == "pending" else checks

        def check(case: Any) -> None:
            cases[f"{case.operation.label}{tag}"] += 1
            try:
                # In process, an exception the app did not turn into a response reaches the caller
                # (the client of a real server gets its 500).
                response = case.call(headers=headers)
            except Exception as exc:
                statuses[500] += 1
                failures.append(f"{case.as_curl_command(headers=headers)}\n  -> 500: {exc!r}")
                return
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=run_checks)
                assert str(response.status_code) in named, (
                    f"undocumented status {response.status_code}: {response.text[:300]}"
                )
            except (AssertionError, BaseExceptionGroup) as exc:
                failures.append(f"{case.as_curl_command(headers=headers)}\n  -> {exc}")

        strategy = operation.as_strategy(generation_mode=mode, **fixed).map(_safe_model_uri)
        _fuzzer(strategy, plan.max_examples, check)()

    operations = [result.ok() for result in documented.get_all_operations()]
    assert len(operations) == 13, [op.label for op in operations]
    for operation in operations:
        for plan in _plans(operation):
            fuzz(operation, plan, "")
    for result in narrowed.get_all_operations():
        operation = result.ok()
        if operation.method.upper() == "POST" and not operation.path.startswith("/admin/"):
            fuzz(operation, Plan("positive", 60), " (tiny's columns)")
            fuzz(operation, Plan("negative", 60), " (tiny's columns)")

    total = sum(cases.values())
    report = "\n".join(f"{n:5d}  {label}" for label, n in sorted(cases.items()))
    assert not failures, f"{len(failures)} failing case(s) of {total}:\n" + "\n\n".join(failures[:10])
    assert {op.label for op in operations} <= set(cases), report
    assert total >= MIN_CASES, f"only {total} cases:\n{report}"
    print(f"\n{total} schemathesis cases, statuses {dict(sorted(statuses.items()))}:\n{report}")
    assert all(statuses[status] for status in (200, 400, 401, 404, 409, 422, 503)), statuses
