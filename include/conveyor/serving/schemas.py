"""Wire models shared by the model server and its client (pydantic only: safe to import anywhere)."""

from __future__ import annotations

import copy
import functools
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    TypeAdapter,
    field_validator,
    model_validator,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


def _version_to_str(value: Any) -> Any:
    # JSON clients send versions as numbers as often as strings; the registry's versions are strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


class StageRequest(BaseModel):
    """Body of ``POST /admin/models/{name}/stage``: a registry version or any MLflow model URI."""

    model_config = ConfigDict(extra="forbid")

    # A registry version is a number; it also names the model's cache folder, so nothing else is taken.
    version: str | None = Field(default=None, pattern=r"^[0-9]+$", description='a registry version, e.g. "3"')
    # A store URI, never a path on the server's disk (the server would copy it whole into its cache).
    model_uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        pattern=r"^(models|runs|mlflow-artifacts|s3|gs|wasbs|abfss|dbfs|hdfs|https?):",
        description='a model in a store: "models:/<name>/<version>", "models:/m-…", "runs:/…", "s3://…"',
    )

    _coerce_version = field_validator("version", mode="before")(_version_to_str)

    @model_validator(mode="after")
    def _exactly_one(self) -> StageRequest:
        if (self.version is None) == (self.model_uri is None):
            raise ValueError('give exactly one of "version" (e.g. "3") or "model_uri" (e.g. "models:/m-…")')
        return self


class PromoteRequest(BaseModel):
    """Body of ``POST /admin/models/{name}/promote``; without ``version`` whatever is staged is promoted."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, min_length=1)

    _coerce_version = field_validator("version", mode="before")(_version_to_str)


class StageReport(_Frozen):
    """What staging a candidate found: loaded, golden rows reproduced, latency against the budget."""

    model: str
    registered_model_name: str
    version: str
    model_uri: str
    loaded: bool
    golden_passed: bool
    n_golden: int = 0
    max_abs_diff: float | None = None
    prediction_mismatches: int = 0
    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    latency_budget_ms: float
    within_budget: bool = False
    error: str | None = None
    checked_at: datetime

    @property
    def passed(self) -> bool:
        """Loaded, golden rows answered within tolerance and p95 latency within the budget."""
        return self.loaded and self.golden_passed and self.within_budget


class PromoteResult(_Frozen):
    """Outcome of a promote or reload: which version serves now and which served before."""

    model: str
    version: str
    previous_version: str | None
    changed: bool
    at: datetime


class ReloadResult(_Frozen):
    """Outcome of ``POST /admin/models/{name}/reload``."""

    model: str
    version: str | None
    previous_version: str | None
    changed: bool
    report: StageReport | None = None
    message: str


class ModelStatus(_Frozen):
    """One served model as ``GET /models`` lists it."""

    name: str
    registered_model_name: str
    state: str = Field(description="loading | loaded | no_champion | error")
    ready: bool
    version: str | None = None
    alias: str | None = None
    model_uri: str | None = None
    loaded_at: datetime | None = None
    golden_passed: bool | None = None
    p95_latency_ms: float | None = None
    staged_version: str | None = None
    error: str | None = None
    spec_removed: bool = Field(
        default=False,
        description="its spec left the specs folder (removed, renamed or invalid) while it was "
        "served: it serves what it loaded until the server restarts",
    )


class ErrorBody(_Frozen):
    """Every error the server returns: a sentence plus structured detail (column, row, message)."""

    error: str
    detail: list[dict[str, Any]] = Field(description="one item per problem, e.g. {column, row, message}")
    detail_truncated: int | None = Field(
        default=None, description="how many more detail items there were (present only when some were cut)"
    )


# -- OpenAPI documentation of the routes ---------------------------------------------------------------
# The prediction routes read their body themselves (streamed under a size limit) and validate it in
# ``conveyor.serving.validation``, which answers every problem with a 4xx naming the column and row.
# The models below describe those bodies for ``/openapi.json`` only: no request is parsed with them.

#: One cell: a JSON scalar (``null`` only where the model's spec allows missing values).
Cell = str | float | bool | None

#: Open Inference Protocol v2 tensor datatypes.
OipDatatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]

#: What a request id (OIP ``id``) may hold: it comes back as the ``X-Request-ID`` response header.
REQUEST_ID_PATTERN = r"^[ -~]*$"


class _Open(BaseModel):
    """A wire object whose unknown fields the server ignores."""

    model_config = ConfigDict(extra="ignore")


class _Closed(BaseModel):
    """A wire object whose unknown fields the server refuses (400)."""

    model_config = ConfigDict(extra="forbid")


class DataframeSplit(_Open):
    """``pandas.DataFrame.to_dict(orient="split")``: column names and rows of values."""

    columns: list[str] = Field(
        json_schema_extra={"uniqueItems": True},
        description="the model's input columns (any order), each named once; the spec's id column may "
        "be added",
    )
    data: list[list[Cell]] = Field(min_length=1, description="rows, one value per column, in column order")
    index: list[Any] | None = Field(default=None, description="row labels; accepted and ignored")


class _ScoringBody(_Closed):
    params: dict[str, Any] | None = Field(
        default=None, description="MLflow inference parameters; accepted and ignored (the models take none)"
    )


class DataframeSplitBody(_ScoringBody):
    dataframe_split: DataframeSplit


class DataframeRecordsBody(_ScoringBody):
    dataframe_records: list[dict[str, Cell]] = Field(
        min_length=1, description="one object per row: column -> value (a row may omit an optional column)"
    )


class InputsBody(_ScoringBody):
    inputs: list[dict[str, Cell]] | dict[str, list[Cell] | Cell] = Field(
        description="rows (as ``dataframe_records``) or columns: column -> list of values (a single value "
        "is a one-row column); every column has the same length",
        min_length=1,
    )


#: Body of ``POST /invocations`` and ``POST /models/{name}/invocations``: exactly one of the three formats.
ScoringRequest = DataframeSplitBody | DataframeRecordsBody | InputsBody


class ScoringResponse(_Frozen):
    """MLflow scoring answer: one object per input row holding the task's output columns."""

    predictions: list[dict[str, float | int | str]] = Field(
        description="binary: probability, prediction (0/1); multiclass: prediction and probability_<label> "
        "per class; regression: prediction (docs/CONTRACTS.md)"
    )


class OipInputTensor(_Open):
    """One input column as an Open Inference Protocol tensor."""

    name: str = Field(description="an input column of the model (or the spec's id column)")
    shape: list[NonNegativeInt] = Field(min_length=1, description="[rows] or [rows, 1]: one value per row")
    datatype: OipDatatype = Field(
        description="one that fits the column's type (GET /v2/models/{name} lists them)"
    )
    data: list[Cell | list[Cell]] = Field(description="the values, flat or one list per row")
    parameters: dict[str, Any] | None = Field(default=None, description="accepted and ignored")


class OipRequestedOutput(_Open):
    name: str = Field(description="an output column of the model's task")
    parameters: dict[str, Any] | None = Field(default=None, description="accepted and ignored")


class OipInferRequest(_Open):
    """Body of ``POST /v2/models/{name}/infer``: one tensor per input column."""

    id: str | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="request id, echoed as the answer's id and X-Request-ID header (first 128 characters); "
        "printable ASCII",
    )
    inputs: list[OipInputTensor] = Field(min_length=1)
    outputs: list[OipRequestedOutput] | None = Field(
        default=None, description="the output columns to return; all of them when absent"
    )
    parameters: dict[str, Any] | None = Field(default=None, description="accepted and ignored")


class OipOutputTensor(_Frozen):
    name: str
    datatype: str = Field(description="FP64 (probabilities, regression values), INT64 or BYTES (labels)")
    shape: list[int]
    data: list[float | int | str]


class OipInferResponse(_Frozen):
    """Open Inference Protocol answer: one tensor per output column."""

    model_name: str
    model_version: str
    id: str
    outputs: list[OipOutputTensor]


class TensorMetadata(_Frozen):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataParameters(_Frozen):
    registered_model_name: str
    serving_version: str | None
    alias: str | None
    model_uri: str | None
    staged_version: str | None
    id_column: str
    task: str
    classes: list[int | str]
    state: str = Field(description="loading | loaded | no_champion | error")
    ready: bool


class ModelMetadata(_Frozen):
    """``GET /v2/models/{name}``: the model's input and output tensors and what serves it."""

    name: str
    versions: list[str] = Field(description="the serving version, then the staged one")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: ModelMetadataParameters


class ModelReady(_Frozen):
    """``GET /v2/models/{name}/ready``: 200 when ready, 503 with ``detail`` saying why not."""

    name: str
    ready: bool
    version: str | None
    detail: str | None = Field(default=None, description="why the model is not ready (only then)")


class ServerMetadata(_Frozen):
    """``GET /v2``: the server and the models it serves."""

    name: str
    version: str
    extensions: list[str]
    models: list[str]
    spec_errors: dict[str, str] = Field(description="spec file -> why it does not parse (not served)")


class Live(_Frozen):
    live: bool


class ModelReadiness(_Frozen):
    state: str = Field(description="loading | loaded | no_champion | error")
    ready: bool
    version: str | None
    detail: str


class Readiness(_Frozen):
    """``GET /health/ready``: 200 when every model with a champion answers its golden rows, else 503."""

    ready: bool
    detail: str
    models: dict[str, ModelReadiness]
    spec_errors: dict[str, str] = Field(
        default_factory=dict, description="spec file -> why it does not parse; present only when some do not"
    )


_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: not JSON or not UTF-8, not the expected object, an unknown top-level field, an "
    "unknown output, or (POST /invocations) no model named on a server serving several",
    401: "No 'Authorization: Bearer <token>' header with the server's token (CONVEYOR_MODEL_SERVER_TOKEN)",
    403: "Admin routes are disabled: the server has no admin token",
    404: "No model of that name; the message lists the served ones",
    409: "Refused: nothing (or another version) is staged, the candidate failed its golden rows, or the "
    "champion cannot be loaded; serving is unchanged",
    413: "The request body is over the server's limit",
    415: "The Content-Type is not JSON",
    422: "The body does not fit: each item of detail names the column, the row and what was expected",
    503: "The model has no loaded version to answer with (still loading, no @champion, or its load failed)",
}
_DEFAULT_RESPONSE = {
    "description": "Any other error, e.g. a 500 on an unexpected failure (a model that fails to predict): "
    "the same error body, never a traceback (the server log has the details)",
    "model": ErrorBody,
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status]} for status in statuses
    }
    out["default"] = _DEFAULT_RESPONSE
    return out


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with each ``#/$defs/...`` reference replaced by its definition: a request body given
    through ``openapi_extra`` cannot add to the document's components (the models are not recursive)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: resolve(v) for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[ref.removeprefix("#/$defs/")]), **rest}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _json_body(model: Any, description: str, examples: dict[str, Any]) -> dict[str, Any]:
    schema = _inline_defs(TypeAdapter(model).json_schema())
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {
                    "schema": schema,
                    "examples": {name: {"value": value} for name, value in examples.items()},
                }
            },
        }
    }


_REQUEST_ID_HEADER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "an id for the request, echoed in the X-Request-ID response header and the prediction log "
    "(first 128 characters); one is made up when absent",
    "schema": {"type": "string"},
}
_PREDICTION_HEADERS = {
    "X-Request-ID": {"description": "the request's id", "schema": {"type": "string"}},
    "X-Model-Version": {"description": "the registry version that answered", "schema": {"type": "string"}},
}
_ROW = {"x1": 0.4, "x2": -1.2, "color": "red"}


def _prediction_route(answer: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    return {
        "responses": {
            200: {"model": answer, "headers": _PREDICTION_HEADERS},
            **_errors(400, 404, 413, 415, 422, 503),
        },
        "openapi_extra": {**body, "parameters": [_REQUEST_ID_HEADER]},
    }


def _scoring_route() -> dict[str, Any]:
    body = _json_body(
        ScoringRequest,
        "Exactly one of dataframe_split, dataframe_records or inputs (MLflow scoring protocol), holding the "
        "model's input columns (GET /v2/models/{name} lists them) and at most the server's row limit "
        "(10,000 rows by default); values are checked against the model's signature and data contract.",
        {
            "dataframe_split": {"dataframe_split": {"columns": list(_ROW), "data": [list(_ROW.values())]}},
            "dataframe_records": {"dataframe_records": [_ROW]},
            "inputs": {"inputs": {name: [value] for name, value in _ROW.items()}},
        },
    )
    return _prediction_route(ScoringResponse, body)


def _infer_route() -> dict[str, Any]:
    body = _json_body(
        OipInferRequest,
        "One tensor per input column (Open Inference Protocol v2), each with one value per row.",
        {
            "tensors": {
                "id": "req-1",
                "inputs": [
                    {"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.4]},
                    {"name": "x2", "shape": [1], "datatype": "FP64", "data": [-1.2]},
                    {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["red"]},
                ],
            }
        },
    )
    return _prediction_route(OipInferResponse, body)


def _ok(model: Any, *more: tuple[int, Any, str], errors: tuple[int, ...] = ()) -> dict[str, Any]:
    responses: dict[int | str, dict[str, Any]] = {200: {"model": model}}
    responses.update({status: {"model": body, "description": why} for status, body, why in more})
    return {"responses": {**responses, **_errors(*errors)}}


@functools.cache
def _route_docs() -> dict[str, dict[str, Any]]:
    scoring = _scoring_route()
    return {
        "live": _ok(Live),
        "ready": _ok(Readiness, (503, Readiness, "Not ready: a model with a champion is not loaded")),
        "models": {"responses": _errors()},  # its 200 is the route's response_model
        "server_metadata": _ok(ServerMetadata),
        "model_metadata": _ok(ModelMetadata, errors=(404,)),
        "model_ready": _ok(ModelReady, (503, ModelReady, "Not ready; detail says why"), errors=(404,)),
        "metrics": {
            "responses": {
                200: {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(),
            }
        },
        "infer": _infer_route(),
        "invocations": scoring,
        "model_invocations": scoring,
        "stage": {"responses": _errors(400, 401, 403, 404, 413, 422)},
        "promote": {"responses": _errors(400, 401, 403, 404, 409, 413, 422)},
        "reload": {"responses": _errors(401, 403, 404, 409, 413)},
    }


def route_doc(route: str) -> dict[str, Any]:
    """Keyword arguments of the route decorator named ``route`` (its function's name in ``app.py``) that
    document its request body and every response it gives, errors included, in ``/openapi.json``.

    The request-body schemas are generated from the models above when the first app is built.
    """
    return copy.deepcopy(_route_docs()[route])
