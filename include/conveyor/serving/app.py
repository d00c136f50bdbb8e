"""The Conveyor model server: one ASGI process serving every model that has a ``@champion``.

Run it with ``uvicorn conveyor.serving.app:create_app --factory --port 8000``.

Routes:

* ``GET /health/live``, ``GET /health/ready`` (200/503 with per-model detail; also under ``/v2/health``)
* ``GET /v2``, ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready`` (Open Inference Protocol v2)
* ``POST /v2/models/{name}/infer`` (OIP v2: one tensor per feature column in, one per output column out)
* OIP v2 over gRPC (``inference.GRPCInferenceService``) on its own port (``CONVEYOR_MODEL_SERVER_GRPC_PORT``)
* ``POST /invocations?model=<name>``, ``POST /models/{name}/invocations`` (MLflow scoring protocol)
* ``GET /models``, ``GET /metrics``
* ``POST /admin/models/{name}/stage|promote|reload`` (``Authorization: Bearer <token>``)

Every error is JSON ``{"error": sentence, "detail": [...]}``; no route returns a traceback.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import conveyor
from conveyor.serving import inference
from conveyor.serving.errors import ServingError
from conveyor.serving.inference import InferenceCore
from conveyor.serving.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from conveyor.serving.predlog import PredictionLogWriter
from conveyor.serving.schemas import (
    ModelStatus,
    PromoteRequest,
    PromoteResult,
    ReloadResult,
    StageReport,
    StageRequest,
)
from conveyor.serving.state import ModelServer, scan_specs
from conveyor.serving.validation import DEFAULT_MAX_ROWS, echo, parse_json
from conveyor.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: The REST body limit, and the gRPC message limit.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: Admin bodies are a version number and a few options.
MAX_ADMIN_BODY_BYTES = 64 * 1024


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
        max_body_bytes: request bodies (and gRPC messages) above this size are refused (413,
            ``RESOURCE_EXHAUSTED``).
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

    core = InferenceCore(server, metrics, predlog, max_batch_rows)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predlog.start()
        server.start_loading()
        server.start_reconciling(settings.model_server_reconcile_s)
        grpc_server = await _start_grpc(app, core, settings, max_body_bytes)
        try:
            yield
        finally:
            if grpc_server is not None:
                from conveyor.serving.grpc import server as grpc_service

                await grpc_service.stop(grpc_server)
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
    app.state.core = core
    app.state.grpc_port = None  # the bound gRPC port once the lifespan started it
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

    @app.get("/health/live", tags=["health"], **conveyor.serving.schemas.route_doc("live"))
    @app.get("/v2/health/live", include_in_schema=False)
    @app.get("/ping", include_in_schema=False)
    def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/health/ready", tags=["health"], **conveyor.serving.schemas.route_doc("ready"))
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

    @app.get(
        "/models",
        tags=["models"],
        response_model=list[ModelStatus],
        **conveyor.serving.schemas.route_doc("models"),
    )
    def models() -> list[ModelStatus]:
        return server.statuses()

    @app.get("/v2", tags=["oip"], **conveyor.serving.schemas.route_doc("server_metadata"))
    def server_metadata() -> dict[str, Any]:
        return inference.server_metadata(server)

    @app.get("/v2/models/{name}", tags=["oip"], **conveyor.serving.schemas.route_doc("model_metadata"))
    def model_metadata(name: str) -> dict[str, Any]:
        return inference.model_metadata(server, name)

    @app.get("/v2/models/{name}/ready", tags=["oip"], **conveyor.serving.schemas.route_doc("model_ready"))
    def model_ready(name: str) -> JSONResponse:
        slot = server.slot(name)
        model = slot.serving
        body = {"name": name, "ready": slot.ready, "version": model.version if model else None}
        if not slot.ready:
            body["detail"] = slot.status().error or slot.state
        return JSONResponse(body, status_code=200 if slot.ready else 503)

    @app.get(
        "/metrics", tags=["health"], response_class=Response, **conveyor.serving.schemas.route_doc("metrics")
    )
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- predictions --------------------------------------------------------------------------------

    async def serve(request: Request, name: str | None, route: str) -> Response:
        request_id = request.headers.get("x-request-id", "")[:128] or uuid.uuid4().hex

        async def read() -> bytes:
            _check_content(request, max_body_bytes)
            return await _read_body(request, max_body_bytes)

        try:
            answer = await core.infer(
                name,
                protocol="oip" if route == "v2_infer" else "scoring",
                route=route,
                request_id=request_id,
                read=read,
                decode=parse_json,
            )
        except ServingError as exc:
            return _error_response(exc, {"X-Request-ID": request_id})
        return JSONResponse(
            answer.body, headers={"X-Request-ID": answer.request_id, "X-Model-Version": answer.version}
        )

    @app.post("/v2/models/{name}/infer", tags=["oip"], **conveyor.serving.schemas.route_doc("infer"))
    async def infer(name: str, request: Request) -> Response:
        """Open Inference Protocol v2: ``{"inputs": [{"name", "shape", "datatype", "data"}, ...]}``."""
        return await serve(request, name, "v2_infer")

    @app.post("/invocations", tags=["mlflow"], **conveyor.serving.schemas.route_doc("invocations"))
    async def invocations(request: Request, model: str | None = None) -> Response:
        """MLflow scoring protocol: ``dataframe_split``, ``dataframe_records`` or ``inputs``."""
        return await serve(request, model, "invocations")

    @app.post(
        "/models/{name}/invocations",
        tags=["mlflow"],
        **conveyor.serving.schemas.route_doc("model_invocations"),
    )
    async def model_invocations(name: str, request: Request) -> Response:
        """MLflow scoring protocol for one named model."""
        return await serve(request, name, "invocations")

    # -- admin --------------------------------------------------------------------------------------

    @app.post(
        "/admin/models/{name}/stage",
        tags=["admin"],
        dependencies=[Depends(require_admin)],
        **conveyor.serving.schemas.route_doc("stage"),
    )
    def stage(name: str, body: StageRequest) -> StageReport:
        """Load a candidate into the staging slot, replay its golden rows, time it. Serving is untouched."""
        return server.stage(name, body)

    @app.post(
        "/admin/models/{name}/promote",
        tags=["admin"],
        dependencies=[Depends(require_admin)],
        **conveyor.serving.schemas.route_doc("promote"),
    )
    def promote(name: str, body: PromoteRequest | None = None) -> PromoteResult:
        """Swap the staged version in atomically; in-flight requests finish on the old one."""
        return server.promote(name, body or PromoteRequest())

    @app.post(
        "/admin/models/{name}/reload",
        tags=["admin"],
        dependencies=[Depends(require_admin)],
        **conveyor.serving.schemas.route_doc("reload"),
    )
    def reload(name: str) -> ReloadResult:
        """Load ``@champion`` again and swap it in when it answers its golden rows."""
        return server.reload(name)

    return app


async def _start_grpc(app: FastAPI, core: InferenceCore, settings: Settings, max_body_bytes: int) -> Any:
    """The Open Inference Protocol gRPC server on ``settings.model_server_grpc_port`` (0: none), in
    the running event loop; ``app.state.grpc_port`` says where it listens. A port that cannot be bound
    is logged as an error and the REST routes serve on without gRPC."""
    port = settings.model_server_grpc_port
    if not port:
        return None
    from conveyor.serving.grpc import server as grpc_service

    try:
        grpc_server, app.state.grpc_port = await grpc_service.start(
            core, host=settings.model_server_grpc_host, port=port, max_message_bytes=max_body_bytes
        )
    except OSError as exc:
        log.error("%s; the server answers REST only (CONVEYOR_MODEL_SERVER_GRPC_PORT sets the port)", exc)
        return None
    return grpc_server


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
