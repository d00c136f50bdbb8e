"""The Conveyor model server: one ASGI process serving every model that has a ``@champion``.

Run it with ``uvicorn conveyor.serving.app:create_app --factory --port 8000``.

Routes:

* ``GET /health/live``, ``GET /health/ready`` (200/503 with per-model detail; also under ``/v2/health``)
* ``GET /v2``, ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready`` (Open Inference Protocol v2)
* ``POST /v2/models/{name}/infer`` (OIP v2: one tensor per feature column in, one per output column out)
* ``POST /invocations?model=<name>``, ``POST /models/{name}/invocations`` (MLflow scoring protocol)
* ``GET /models``, ``GET /metrics``
* ``POST /admin/models/{name}/stage|promote|reload`` (``Authorization: Bearer <token>``)

Every error is JSON ``{"error": sentence, "detail": [...]}``; no route returns a traceback.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import conveyor
from conveyor import tasks
from conveyor.serving.errors import InvalidInput, ModelContractError, ServingError
from conveyor.serving.loader import LoadedModel
from conveyor.serving.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from conveyor.serving.predlog import PredictionChunk, PredictionLogWriter
from conveyor.serving.schemas import (
    ModelStatus,
    PromoteRequest,
    PromoteResult,
    ReloadResult,
    StageReport,
    StageRequest,
)
from conveyor.serving.state import ModelServer, scan_specs
from conveyor.serving.validation import (
    DEFAULT_MAX_ROWS,
    Batch,
    batch_from_oip,
    batch_from_scoring_body,
    echo,
    input_columns,
    out_of_contract,
    parse_json,
)
from conveyor.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec

log = logging.getLogger(__name__)

SERVER_NAME = "conveyor-model-server"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: Admin bodies are a version number and a few options.
MAX_ADMIN_BODY_BYTES = 64 * 1024
_UNKNOWN = "_unknown"
#: Open Inference Protocol datatype of each MLflow output type (``conveyor.tasks.output_types``).
OIP_OUTPUT_DATATYPES = {"double": "FP64", "long": "INT64", "string": "BYTES"}


def create_app(
    settings: Settings | None = None,
    *,
    max_batch_rows: int = DEFAULT_MAX_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    load_attempts: int = 3,
    champion_recheck_s: float = 30.0,
) -> FastAPI:
    """Build the model-server app for every spec in ``settings.specs_dir``.

    Models load in a background thread started by the lifespan, so the port opens at once and
    ``/health/ready`` says 503 until every model with a champion is loaded and checked. A spec file
    that does not parse is logged and listed under ``spec_errors`` in ``/health/ready``; the other
    models serve. Specs added to the folder later are found at run time (see
    :meth:`ModelServer.refresh_specs`), so a new model needs no restart.

    Args:
        settings: defaults to the process settings (``CONVEYOR_*`` environment).
        max_batch_rows: rows per prediction request above which the request is refused (422).
        max_body_bytes: request bodies above this size are refused (413).
        load_attempts: tries per model at startup (MLflow may come up after the server).
        champion_recheck_s: least pause before a prediction for a model without a champion makes
            the server look for ``@champion`` in the registry again.
    """
    settings = settings or get_settings()
    specs, spec_errors = scan_specs(settings.specs_dir)
    metrics = ServerMetrics()
    server = ModelServer(
        settings,
        specs,
        metrics,
        load_attempts=load_attempts,
        specs_dir=settings.specs_dir,
        spec_errors=spec_errors,
        champion_recheck_s=champion_recheck_s,
    )
    predlog = PredictionLogWriter(
        settings.data_root,
        on_drop=lambda model, reason, n: metrics.log_dropped.labels(model, reason).inc(n),
        on_write=lambda model, n: metrics.log_written.labels(model).inc(n),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predlog.start()
        server.start_loading()
        server.start_reconciling(settings.model_server_reconcile_s)
        try:
            yield
        finally:
            server.stop_reconciling()
            predlog.close()

    app = FastAPI(
        title="Conveyor model server",
        version=conveyor.__version__,
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.server = server
    app.state.metrics = metrics
    app.state.predlog = predlog
    _install_error_handlers(app)

    def require_admin(request: Request) -> None:
        admin_check(request.headers)

    def admin_check(headers: Mapping[str, str]) -> None:
        """The admin token and body size, from the headers alone (the gate runs before any body read)."""
        token = settings.model_server_token
        if not token:
            raise ServingError(
                403,
                "admin routes are disabled because this server has no admin token: set "
                "CONVEYOR_MODEL_SERVER_TOKEN in the server's environment and restart it",
            )
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
            raise ServingError(
                401,
                "admin routes need the header 'Authorization: Bearer <token>' with the server's "
                "token (CONVEYOR_MODEL_SERVER_TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_ADMIN_BODY_BYTES:
            raise ServingError(
                413, f"admin request body of {length} bytes exceeds {MAX_ADMIN_BODY_BYTES} bytes"
            )

    app.add_middleware(_AdminGate, check=admin_check)

    # -- health -------------------------------------------------------------------------------------

    @app.get("/health/live", tags=["health"])
    @app.get("/v2/health/live", include_in_schema=False)
    @app.get("/ping", include_in_schema=False)
    def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/health/ready", tags=["health"])
    @app.get("/v2/health/ready", include_in_schema=False)
    def ready() -> JSONResponse:
        is_ready, detail = server.readiness()
        if not server.initial_load_done.is_set():
            note = "models are still loading"
        elif is_ready:
            note = "every model with a champion is loaded and answered its golden rows"
        else:
            note = "a model with a champion is not loaded or failed its golden rows"
        body: dict[str, Any] = {"ready": is_ready, "detail": note, "models": detail}
        if server.spec_errors:
            body["spec_errors"] = dict(server.spec_errors)
        return JSONResponse(body, status_code=200 if is_ready else 503)

    # -- metadata -----------------------------------------------------------------------------------

    @app.get("/models", tags=["models"], response_model=list[ModelStatus])
    def models() -> list[ModelStatus]:
        return server.statuses()

    @app.get("/v2", tags=["oip"])
    def server_metadata() -> dict[str, Any]:
        server.refresh_specs()
        return {
            "name": SERVER_NAME,
            "version": conveyor.__version__,
            "extensions": [],
            "models": sorted(server.slots),
            "spec_errors": dict(server.spec_errors),
        }

    @app.get("/v2/models/{name}", tags=["oip"])
    def model_metadata(name: str) -> dict[str, Any]:
        slot = server.slot(name)
        model, staged = slot.serving, slot.staged
        columns = model.columns if model else input_columns(None, slot.spec)
        return {
            "name": name,
            "versions": [m.version for m in (model, staged) if m is not None],
            "platform": "mlflow_pyfunc",
            "inputs": [{"name": c.name, "datatype": c.oip_datatype, "shape": [-1]} for c in columns],
            "outputs": [
                {"name": column, "datatype": OIP_OUTPUT_DATATYPES[kind], "shape": [-1]}
                for column, kind in tasks.output_types(slot.spec)
            ],
            "parameters": {
                "registered_model_name": slot.spec.registered_model_name,
                "serving_version": model.version if model else None,
                "alias": model.alias if model else None,
                "model_uri": model.model_uri if model else None,
                "staged_version": staged.version if staged else None,
                "id_column": slot.spec.data.id_column,
                "task": slot.spec.task,
                "classes": list(slot.spec.classes),
                "state": slot.state,
                "ready": slot.ready,
            },
        }

    @app.get("/v2/models/{name}/ready", tags=["oip"])
    def model_ready(name: str) -> JSONResponse:
        slot = server.slot(name)
        model = slot.serving
        body = {"name": name, "ready": slot.ready, "version": model.version if model else None}
        if not slot.ready:
            body["detail"] = slot.status().error or slot.state
        return JSONResponse(body, status_code=200 if slot.ready else 503)

    @app.get("/metrics", tags=["health"])
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- predictions --------------------------------------------------------------------------------

    async def serve(request: Request, name: str | None, route: str) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id", "")[:128] or uuid.uuid4().hex
        label, version = _UNKNOWN, ""
        slot = None
        try:
            if name is None:
                if len(server.slots) != 1:
                    raise InvalidInput(
                        "name the model: POST /invocations?model=<name> or /models/<name>/invocations; "
                        f"this server serves {sorted(server.slots)}",
                        status=400,
                    )
                name = next(iter(server.slots))
            if name not in server.slots:  # reads the specs folder again: off the event loop
                await run_in_threadpool(server.slot, name)
            slot = server.slot(name)
            label = name
            slot, model = server.serving(name)
            version = model.version
            _check_content(request, max_body_bytes)
            raw = await _read_body(request, max_body_bytes)
            # Parsing, validation, prediction and rendering are CPU work: off the event loop, so a
            # 10,000-row batch never stalls the other requests (or /health) for its duration.
            batch, outputs, counts, response = await run_in_threadpool(
                _answer, route, name, model, slot.spec, raw, max_batch_rows, request_id
            )
            request_id = batch.request_id or request_id
        except Exception as raised:
            if isinstance(raised, ServingError):
                exc = raised
            else:
                log.exception("unexpected error serving %s on %s", name, route)
                exc = ServingError(500, "internal server error; the server log has the details")
            latency = time.perf_counter() - started
            metrics.requests.labels(label, version, route, str(exc.status)).inc()
            metrics.latency.labels(label, version, route).observe(latency)
            if slot is not None:
                predlog.submit(_error_event(name or label, version, request_id, route, exc, latency))
            return _error_response(exc, {"X-Request-ID": request_id})
        latency = time.perf_counter() - started
        metrics.requests.labels(name, version, route, "200").inc()
        metrics.latency.labels(name, version, route).observe(latency)
        for predicted, n in counts:
            metrics.predictions.labels(name, version, predicted).inc(n)
        predlog.submit(
            PredictionChunk(
                model=name,
                version=version,
                request_id=request_id,
                route=route,
                ts=datetime.now(UTC),
                latency_ms=latency * 1000.0,
                frame=batch.frame,
                outputs=outputs,
                ids=batch.ids,
                spec=slot.spec,
            )
        )
        response.headers["X-Request-ID"] = request_id
        response.headers["X-Model-Version"] = version
        return response

    @app.post("/v2/models/{name}/infer", tags=["oip"])
    async def infer(name: str, request: Request) -> Response:
        """Open Inference Protocol v2: ``{"inputs": [{"name", "shape", "datatype", "data"}, ...]}``."""
        return await serve(request, name, "v2_infer")

    @app.post("/invocations", tags=["mlflow"])
    async def invocations(request: Request, model: str | None = None) -> Response:
        """MLflow scoring protocol: ``dataframe_split``, ``dataframe_records`` or ``inputs``."""
        return await serve(request, model, "invocations")

    @app.post("/models/{name}/invocations", tags=["mlflow"])
    async def model_invocations(name: str, request: Request) -> Response:
        """MLflow scoring protocol for one named model."""
        return await serve(request, name, "invocations")

    # -- admin --------------------------------------------------------------------------------------

    @app.post("/admin/models/{name}/stage", tags=["admin"], dependencies=[Depends(require_admin)])
    def stage(name: str, body: StageRequest) -> StageReport:
        """Load a candidate into the staging slot, replay its golden rows, time it. Serving is untouched."""
        return server.stage(name, body)

    @app.post("/admin/models/{name}/promote", tags=["admin"], dependencies=[Depends(require_admin)])
    def promote(name: str, body: PromoteRequest | None = None) -> PromoteResult:
        """Swap the staged version in atomically; in-flight requests finish on the old one."""
        return server.promote(name, body or PromoteRequest())

    @app.post("/admin/models/{name}/reload", tags=["admin"], dependencies=[Depends(require_admin)])
    def reload(name: str) -> ReloadResult:
        """Load ``@champion`` again and swap it in when it answers its golden rows."""
        return server.reload(name)

    return app


def _answer(
    route: str,
    name: str,
    model: LoadedModel,
    spec: ModelSpec,
    raw: bytes,
    max_rows: int,
    request_id: str,
) -> tuple[Batch, pd.DataFrame, list[tuple[str, int]], JSONResponse]:
    body = parse_json(raw)
    if route == "v2_infer":
        batch = batch_from_oip(body, model.columns, spec, max_rows)
        _check_requested_outputs(spec, batch.requested_outputs)
    else:
        batch = batch_from_scoring_body(body, model.columns, spec, max_rows)
    if spec.deploy.out_of_contract == "reject":
        problems = out_of_contract(spec, batch.frame)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InvalidInput(
                f"values outside the data contract (deploy.out_of_contract: reject): "
                f"{problems[0]['message']}{more}",
                problems,
            )
    outputs = _predict(model, batch)
    response = _format(route, name, model, spec, batch, outputs, batch.request_id or request_id)
    return batch, outputs, _prediction_counts(spec, outputs), response


def _check_requested_outputs(spec: ModelSpec, requested: tuple[str, ...] | None) -> None:
    """Refuse (400) OIP ``outputs`` that name no output column of the model's task."""
    if not requested:
        return
    columns = tasks.output_columns(spec.task, spec.classes)
    unknown = sorted(set(requested) - set(columns))
    if unknown:
        raise InvalidInput(
            f"unknown output(s) {', '.join(echo(o) for o in unknown[:10])}; the {spec.task} model returns "
            f"{', '.join(columns)}",
            [{"output": echo(o), "message": "not an output of this model"} for o in unknown[:50]],
            status=400,
        )


def _prediction_counts(spec: ModelSpec, outputs: pd.DataFrame) -> list[tuple[str, int]]:
    """Rows per predicted class, the ``prediction`` label of ``conveyor_predictions``.

    Classification labels come from ``data.classes`` (checked by the contract), so the label set is
    bounded; a regression value is never a label: its rows are counted under ``prediction=""``.
    """
    import numpy as np

    if spec.task == "regression":
        return [("", len(outputs))]
    values, counts = np.unique(outputs["prediction"].to_numpy(), return_counts=True)
    return [(str(v), int(n)) for v, n in zip(values.tolist(), counts.tolist(), strict=True)]


def _predict(model: LoadedModel, batch: Batch) -> pd.DataFrame:
    """The model's outputs for ``batch``. A model that fails on values outside the spec's data
    contract (a range or category it never saw) is the request's fault: a 422 naming them."""
    try:
        return _predict_checked(model, batch)
    except ServingError as exc:
        if exc.status < 500:
            raise
        problems = out_of_contract(model.spec, batch.frame)
        if not problems:
            raise
        raise InvalidInput(
            f"the model could not score values outside its data contract: {problems[0]['message']}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems,
        ) from None


def _predict_checked(model: LoadedModel, batch: Batch) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(batch.frame)
    except ModelContractError as exc:
        log.error("model %s version %s broke the output contract: %s", model.name, model.version, exc)
        raise ServingError(
            500, f"model {model.name!r} version {model.version} broke its contract: {exc}"
        ) from None
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            first_line = str(exc.message).strip().splitlines()[0][:500]
            raise InvalidInput(f"the model refused the input: {first_line}") from None
        log.exception("model %s version %s failed to predict", model.name, model.version)
        raise ServingError(500, "the model failed to predict; the server log has the details") from None
    except Exception:
        log.exception("model %s version %s failed to predict", model.name, model.version)
        raise ServingError(500, "the model failed to predict; the server log has the details") from None


def _format(
    route: str,
    name: str,
    model: LoadedModel,
    spec: ModelSpec,
    batch: Batch,
    outputs: pd.DataFrame,
    request_id: str,
) -> JSONResponse:
    """The response of each protocol, one value per output column of the task (docs/CONTRACTS.md).

    MLflow scoring: ``{"predictions": [{column: value, ...}, ...]}``, columns in contract order. OIP
    v2: one tensor per column (``FP64`` probabilities and regression values, ``INT64`` or ``BYTES``
    labels), narrowed to ``outputs`` when the request names some.
    """
    types = tasks.output_types(spec)
    values = {column: outputs[column].tolist() for column, _ in types}
    if route != "v2_infer":
        names = list(values)
        return JSONResponse(
            {
                "predictions": [
                    dict(zip(names, row, strict=True)) for row in zip(*values.values(), strict=True)
                ]
            }
        )
    requested = batch.requested_outputs
    tensors = [
        {
            "name": column,
            "datatype": OIP_OUTPUT_DATATYPES[kind],
            "shape": [len(values[column])],
            "data": values[column],
        }
        for column, kind in types
        if not requested or column in requested
    ]
    return JSONResponse(
        {"model_name": name, "model_version": model.version, "id": request_id, "outputs": tensors}
    )


def _check_content(request: Request, max_body_bytes: int) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type.lower():
        raise ServingError(415, f"content type {echo(content_type)} is not supported; send application/json")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise ServingError(413, f"request body of {length} bytes exceeds {max_body_bytes} bytes")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes: a chunked body without
    a Content-Length is never read whole first."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServingError(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _AdminGate:
    """ASGI middleware: ``/admin/`` requests are checked (token, declared size) before anything reads
    their body, so an unauthenticated client cannot make the server read or parse 100 MB."""

    def __init__(self, app: Any, check: Callable[[Mapping[str, str]], None]) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/admin/"):
            from starlette.datastructures import Headers

            try:
                self.check(Headers(scope=scope))
            except ServingError as exc:
                await _error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error_event(
    model: str, version: str, request_id: str, route: str, exc: ServingError, latency_s: float
) -> dict[str, Any]:
    return {
        "event": "error",
        "ts": datetime.now(UTC).isoformat(),
        "model": model,
        "version": version or None,
        "request_id": request_id,
        "route": route,
        "status": exc.status,
        "error": exc.message[:500],
        "latency_ms": round(latency_s * 1000.0, 3),
    }


def _error_response(exc: ServingError, headers: dict[str, str] | None = None) -> JSONResponse:
    merged = {**(exc.headers or {}), **(headers or {})}
    return JSONResponse(exc.body(), status_code=exc.status, headers=merged or None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        detail = [
            {
                "location": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
                "message": str(e.get("msg", "")),
            }
            for e in errors
        ]
        malformed = any(e.get("type") == "json_invalid" for e in errors)
        first = detail[0] if detail else {"location": "body", "message": "invalid"}
        message = (
            "malformed JSON body"
            if malformed
            else f"invalid request: {first['location']}: {first['message']}"
        )
        return JSONResponse({"error": message, "detail": detail}, status_code=400 if malformed else 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the routes"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(
            {"error": message, "detail": []},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal server error; the server log has the details", "detail": []}, status_code=500
        )
