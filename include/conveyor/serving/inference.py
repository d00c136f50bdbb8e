"""The inference core of the model server, shared by its REST routes and its gRPC service.

One prediction, whatever the transport: find the model that serves the name, read and decode the
request (the transport's part), validate it against the model's signature
(:mod:`conveyor.serving.validation`), apply the spec's out-of-contract policy, predict, shape the
answer by the protocol (MLflow scoring or Open Inference Protocol v2) and record the request in the
Prometheus metrics and the prediction log. REST (``POST /v2/models/{name}/infer``,
``/invocations``) and gRPC (``inference.GRPCInferenceService/ModelInfer``) differ only in how the
body arrives and how the answer or the :class:`~conveyor.serving.errors.ServingError` leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from starlette.concurrency import run_in_threadpool

import conveyor
from conveyor import tasks
from conveyor.serving.errors import InvalidInput, ModelContractError, ServingError
from conveyor.serving.loader import LoadedModel
from conveyor.serving.predlog import PredictionChunk, PredictionLogWriter
from conveyor.serving.validation import (
    Batch,
    batch_from_oip,
    batch_from_scoring_body,
    echo,
    input_columns,
    out_of_contract,
)

if TYPE_CHECKING:
    import pandas as pd

    from conveyor.config import ModelSpec
    from conveyor.serving.metrics import ServerMetrics
    from conveyor.serving.state import ModelServer, ModelSlot

log = logging.getLogger(__name__)

SERVER_NAME = "conveyor-model-server"
#: Open Inference Protocol datatype of each MLflow output type (``conveyor.tasks.output_types``).
OIP_OUTPUT_DATATYPES = {"double": "FP64", "long": "INT64", "string": "BYTES"}
#: The metrics' and the prediction log's ``model`` label of a request for no known model.
UNKNOWN_MODEL = "_unknown"
#: A request body at most this large is decoded, validated and rendered on the event loop (a few rows
#: cost less than the hop to a worker thread and back) and its prediction joins the other small
#: requests' in one model call in a worker thread (:meth:`InferenceCore.coalesced`). A larger one
#: goes whole to the threadpool, so a big batch never stalls the other requests (or ``/health``).
INLINE_MAX_BYTES = 16 * 1024
#: Rows of small requests one model call may take at most (see :meth:`InferenceCore.coalesced`).
MAX_COALESCED_ROWS = 256

#: ``oip``: Open Inference Protocol v2 tensors; ``scoring``: the MLflow scoring protocol.
Protocol = Literal["oip", "scoring"]
_Raw = TypeVar("_Raw")


@dataclass(frozen=True)
class Answer:
    """An answered prediction request: the validated batch, the model's outputs and the protocol's
    response body (a JSON-ready dict)."""

    name: str
    version: str
    request_id: str
    batch: Batch
    outputs: pd.DataFrame
    body: dict[str, Any]


class InferenceCore:
    """Predictions for one server: its models, metrics, prediction log and batch limit.

    Args:
        server: the models (:class:`~conveyor.serving.state.ModelServer`).
        metrics: the server's Prometheus metrics; every request is counted under its ``route``.
        predlog: the prediction log; every answered or refused request of a known model is logged.
        max_batch_rows: rows per request above which the request is refused (422).
    """

    def __init__(
        self, server: ModelServer, metrics: ServerMetrics, predlog: PredictionLogWriter, max_batch_rows: int
    ) -> None:
        self.server = server
        self.metrics = metrics
        self.predlog = predlog
        self.max_batch_rows = max_batch_rows
        # Small requests waiting for a model call, by model (see coalesced()); event-loop state only.
        self._waiting: dict[int, tuple[LoadedModel, list[tuple[Batch, asyncio.Future[Any]]]]] = {}
        self._draining: set[asyncio.Task[None]] = set()

    async def infer(
        self,
        name: str | None,
        *,
        protocol: Protocol,
        route: str,
        request_id: str,
        read: Callable[[], Awaitable[_Raw]],
        decode: Callable[[_Raw], Any],
        version: str | None = None,
    ) -> Answer:
        """Answer one prediction request, or raise the :class:`ServingError` to send back.

        Args:
            name: the model; ``None`` for the scoring protocol's unnamed ``/invocations`` (only on a
                server with one model).
            protocol: how the decoded body is read and the answer shaped.
            route: the ``route`` label of the metrics and the prediction log.
            request_id: the transport's request id, used when the body carries none.
            read: reads the request (on the event loop), once the model is known to serve.
            decode: turns what ``read`` returned into the protocol's JSON body (in a worker thread
                unless the request is small: :data:`INLINE_MAX_BYTES`).
            version: the version the client asks for; another one serving is a 404.

        Every outcome is counted in ``conveyor_requests`` (with its HTTP status) and timed; answered
        rows go to the prediction log, refusals of a known model as an ``error`` event. An
        unexpected failure is logged with its traceback and becomes a 500 that says where to look.
        """
        started = time.perf_counter()
        label, served = UNKNOWN_MODEL, ""
        slot: ModelSlot | None = None
        try:
            name = await self._resolve(name)
            slot = self.server.slot(name)
            label = name
            slot, model = self.server.serving(name)
            served = model.version
            if version and version != served:
                raise ServingError(
                    404,
                    f"model {name!r} serves version {served}, not version {echo(version)}; leave the "
                    "version empty for the serving one",
                )
            raw = await read()
            if answers_inline(raw):
                batch = checked_batch(protocol, model, slot.spec, decode(raw), self.max_batch_rows)
                outputs = await self.coalesced(model, batch)
                answer = finish(protocol, name, model, slot.spec, batch, outputs, request_id)
            else:
                # Decoding, validation, prediction and rendering are CPU work: off the event loop, so
                # a 10,000-row batch never stalls the other requests (or /health) for its duration.
                answer = await run_in_threadpool(
                    _answer_raw,
                    protocol,
                    name,
                    model,
                    slot.spec,
                    raw,
                    decode,
                    self.max_batch_rows,
                    request_id,
                )
        except Exception as raised:
            if isinstance(raised, ServingError):
                exc = raised
            else:
                log.exception("unexpected error serving %s on %s", name, route)
                exc = ServingError(500, "internal server error; the server log has the details")
            latency = time.perf_counter() - started
            self.metrics.requests.labels(label, served, route, str(exc.status)).inc()
            self.metrics.latency.labels(label, served, route).observe(latency)
            if slot is not None:
                self.predlog.submit(_error_event(name or label, served, request_id, route, exc, latency))
            raise exc from None
        latency = time.perf_counter() - started
        self.record(answer, slot.spec, route, latency)
        return answer

    def record(self, answer: Answer, spec: ModelSpec, route: str, latency_s: float) -> None:
        """Count an answered request and its predictions, and log its rows (off the request path)."""
        name, version = answer.name, answer.version
        self.metrics.requests.labels(name, version, route, "200").inc()
        self.metrics.latency.labels(name, version, route).observe(latency_s)
        for predicted, n in prediction_counts(spec, answer.outputs):
            self.metrics.predictions.labels(name, version, predicted).inc(n)
        self.predlog.submit(
            PredictionChunk(
                model=name,
                version=version,
                request_id=answer.request_id,
                route=route,
                ts=datetime.now(UTC),
                latency_ms=latency_s * 1000.0,
                frame=answer.batch.frame,
                outputs=answer.outputs,
                ids=answer.batch.ids,
                spec=spec,
            )
        )

    async def coalesced(self, model: LoadedModel, batch: Batch) -> pd.DataFrame:
        """The model's outputs for ``batch``, predicted together with the other small requests for
        the same model that arrive meanwhile (adaptive batching).

        The first request starts a model call in a worker thread at once (no waiting); requests that
        arrive while it runs queue up and go together in the next call, up to
        :data:`MAX_COALESCED_ROWS` rows. Each request gets its own rows back; when the joint call
        fails, each is predicted alone so every request gets its own answer or error.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[pd.DataFrame] = loop.create_future()
        waiting = self._waiting.get(id(model))
        if waiting is not None and waiting[0] is model:
            waiting[1].append((batch, future))
        else:
            self._waiting[id(model)] = waiting = (model, [(batch, future)])
            task = loop.create_task(self._drain(waiting))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return await future

    async def _drain(self, waiting: tuple[LoadedModel, list[tuple[Batch, asyncio.Future[Any]]]]) -> None:
        model, queued = waiting
        try:
            while queued:
                await asyncio.sleep(0)  # let requests already read by the loop join this call
                rows, take = 0, 0
                while take < len(queued) and (
                    take == 0 or rows + queued[take][0].n_rows <= MAX_COALESCED_ROWS
                ):
                    rows += queued[take][0].n_rows
                    take += 1
                group = queued[:take]
                del queued[:take]
                try:
                    results = await run_in_threadpool(predict_together, model, [b for b, _ in group])
                except Exception as exc:  # predict_together answers every failure; this is a bug
                    results = [exc] * len(group)
                for (_, future), result in zip(group, results, strict=True):
                    if future.done():  # the client went away
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            if self._waiting.get(id(model)) is waiting:
                del self._waiting[id(model)]
            for _, future in queued:  # only when cancelled (shutdown)
                future.cancel()

    async def _resolve(self, name: str | None) -> str:
        if name is None:
            if len(self.server.slots) != 1:
                raise InvalidInput(
                    "name the model: POST /invocations?model=<name> or /models/<name>/invocations; "
                    f"this server serves {sorted(self.server.slots)}",
                    status=400,
                )
            return next(iter(self.server.slots))
        if name not in self.server.slots:  # reads the specs folder again: off the event loop
            await run_in_threadpool(self.server.slot, name)
        return name


def answers_inline(raw: Any) -> bool:
    """Whether a request is small enough (:data:`INLINE_MAX_BYTES`) to handle on the event loop."""
    if isinstance(raw, bytes | bytearray):
        return len(raw) <= INLINE_MAX_BYTES
    byte_size = getattr(raw, "ByteSize", None)  # a protobuf message (gRPC)
    return callable(byte_size) and int(byte_size()) <= INLINE_MAX_BYTES


def _answer_raw(
    protocol: Protocol,
    name: str,
    model: LoadedModel,
    spec: ModelSpec,
    raw: _Raw,
    decode: Callable[[_Raw], Any],
    max_rows: int,
    request_id: str,
) -> Answer:
    return answer(protocol, name, model, spec, decode(raw), max_rows, request_id)


def answer(
    protocol: Protocol,
    name: str,
    model: LoadedModel,
    spec: ModelSpec,
    body: Any,
    max_rows: int,
    request_id: str,
) -> Answer:
    """Validate the parsed ``body``, apply the out-of-contract policy, predict and shape the response.

    Raises:
        ServingError: a 4xx naming what is wrong with the request, or a 500 when the model fails.
    """
    batch = checked_batch(protocol, model, spec, body, max_rows)
    return finish(protocol, name, model, spec, batch, _predict(model, batch), request_id)


def checked_batch(protocol: Protocol, model: LoadedModel, spec: ModelSpec, body: Any, max_rows: int) -> Batch:
    """The validated batch of a parsed ``body``, the spec's out-of-contract policy applied.

    Raises:
        InvalidInput: a 4xx naming what is wrong with the request.
    """
    if protocol == "oip":
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
    return batch


def finish(
    protocol: Protocol,
    name: str,
    model: LoadedModel,
    spec: ModelSpec,
    batch: Batch,
    outputs: pd.DataFrame,
    request_id: str,
) -> Answer:
    """The :class:`Answer` of a predicted batch: its outputs shaped by the protocol."""
    request_id = batch.request_id or request_id
    return Answer(
        name=name,
        version=model.version,
        request_id=request_id,
        batch=batch,
        outputs=outputs,
        body=format_response(protocol, name, model, spec, batch, outputs, request_id),
    )


def predict_together(model: LoadedModel, batches: list[Batch]) -> list[pd.DataFrame | ServingError]:
    """Each batch's outputs (or its :class:`ServingError`) from one model call over all of them.

    When the joint call fails, every batch is predicted alone, so a request with values the model
    cannot score gets its own 422 and the others their answers.
    """
    columns = batches[0].frame.columns
    if len(batches) > 1 and all(b.frame.columns.equals(columns) for b in batches):
        import pandas as pd

        frame = pd.concat([b.frame for b in batches], ignore_index=True)
        frame.columns = columns  # the shared index (validation._column_index)
        try:
            outputs = _predict_checked(model, Batch(frame=frame, ids=None, n_rows=len(frame)))
        except ServingError:
            pass
        else:
            parts: list[pd.DataFrame | ServingError] = []
            start = 0
            for batch in batches:
                parts.append(outputs.iloc[start : start + batch.n_rows].reset_index(drop=True))
                start += batch.n_rows
            return parts
    results: list[pd.DataFrame | ServingError] = []
    for batch in batches:
        try:
            results.append(_predict(model, batch))
        except ServingError as exc:
            results.append(exc)
    return results


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


def prediction_counts(spec: ModelSpec, outputs: pd.DataFrame) -> list[tuple[str, int]]:
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


def format_response(
    protocol: Protocol,
    name: str,
    model: LoadedModel,
    spec: ModelSpec,
    batch: Batch,
    outputs: pd.DataFrame,
    request_id: str,
) -> dict[str, Any]:
    """The response of each protocol, one value per output column of the task (docs/CONTRACTS.md).

    MLflow scoring: ``{"predictions": [{column: value, ...}, ...]}``, columns in contract order. OIP
    v2: one tensor per column (``FP64`` probabilities and regression values, ``INT64`` or ``BYTES``
    labels), narrowed to ``outputs`` when the request names some.
    """
    types = tasks.output_types(spec)
    values = {column: outputs[column].tolist() for column, _ in types}
    if protocol != "oip":
        names = list(values)
        return {
            "predictions": [dict(zip(names, row, strict=True)) for row in zip(*values.values(), strict=True)]
        }
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
    return {"model_name": name, "model_version": model.version, "id": request_id, "outputs": tensors}


def server_metadata(server: ModelServer) -> dict[str, Any]:
    """OIP v2 server metadata (``GET /v2``, gRPC ``ServerMetadata``), with the served models."""
    server.refresh_specs()
    return {
        "name": SERVER_NAME,
        "version": conveyor.__version__,
        "extensions": [],
        "models": sorted(server.slots),
        "spec_errors": dict(server.spec_errors),
    }


def model_metadata(server: ModelServer, name: str) -> dict[str, Any]:
    """OIP v2 model metadata (``GET /v2/models/{name}``, gRPC ``ModelMetadata``): one input tensor per
    signature column, one output tensor per output column of the task, and how the model is served.

    Raises:
        UnknownModel: no spec of that name (404).
    """
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
