"""The model server's Open Inference Protocol v2 gRPC service (``inference.GRPCInferenceService``).

It runs in the REST app's process and event loop (started and stopped by its lifespan) on its own
port, ``CONVEYOR_MODEL_SERVER_GRPC_PORT`` (8001; 0: none), and shares everything else with REST: the
:class:`~conveyor.serving.state.ModelServer`, the request validation, the prediction, the shaping of
the answer, the Prometheus metrics (route ``grpc_infer``) and the prediction log, all through
:class:`~conveyor.serving.inference.InferenceCore`. ``ModelInfer`` turns the request's tensors (typed
``contents`` or ``raw_input_contents``) into the JSON body of ``POST /v2/models/{name}/infer``, so one
validator answers both; a refusal is the REST status as a gRPC code (400 and 422
``INVALID_ARGUMENT``, 404 ``NOT_FOUND``, 413 ``RESOURCE_EXHAUSTED``, 503 ``UNAVAILABLE``, anything
else ``INTERNAL``) with the same message naming what is wrong, never a traceback. A message larger
than the REST body limit is refused by gRPC itself (``RESOURCE_EXHAUSTED``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio

from conveyor.serving.errors import InvalidInput, ServingError
from conveyor.serving.grpc import grpc_predict_v2_pb2 as pb
from conveyor.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from conveyor.serving.inference import model_metadata, server_metadata
from conveyor.serving.validation import echo

if TYPE_CHECKING:
    from conveyor.serving.inference import InferenceCore

log = logging.getLogger(__name__)

#: The ``route`` label of gRPC inference requests in the metrics and the prediction log.
ROUTE = "grpc_infer"
#: Seconds in-flight calls get to finish when the server stops.
STOP_GRACE_S = 5.0

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# OIP datatype -> the InferTensorContents field of its typed values (None: raw only) and the
# little-endian element type of its raw bytes (None: BYTES, length-prefixed elements).
_TENSOR_FORMATS: dict[str, tuple[str | None, str | None]] = {
    "BOOL": ("bool_contents", "|b1"),
    "INT8": ("int_contents", "|i1"),
    "INT16": ("int_contents", "<i2"),
    "INT32": ("int_contents", "<i4"),
    "INT64": ("int64_contents", "<i8"),
    "UINT8": ("uint_contents", "|u1"),
    "UINT16": ("uint_contents", "<u2"),
    "UINT32": ("uint_contents", "<u4"),
    "UINT64": ("uint64_contents", "<u8"),
    "FP16": (None, "<f2"),
    "BF16": (None, "<u2"),  # the upper half of a float32
    "FP32": ("fp32_contents", "<f4"),
    "FP64": ("fp64_contents", "<f8"),
    "BYTES": ("bytes_contents", None),
}
_Reply = TypeVar("_Reply")


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code of a REST status."""
    return _CODES.get(status, grpc.StatusCode.INTERNAL)


def request_body(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The JSON body of ``POST /v2/models/{name}/infer`` that says what ``request`` says.

    Each input tensor's values come from its typed ``contents`` (the field of its datatype) or from
    its ``raw_input_contents`` entry (little-endian elements, ``BYTES`` as 4-byte length-prefixed
    strings); ``BYTES`` values are UTF-8 text. What cannot be read is a 400 naming the tensor; the
    rest (names, shapes, datatypes against the signature, values) is checked by
    :func:`~conveyor.serving.validation.batch_from_oip`, as for REST.
    """
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} input tensors; "
            "send one per tensor, in the order of inputs",
            status=400,
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        shown = echo(tensor.name)
        if raw and tensor.HasField("contents") and tensor.contents.ListFields():
            raise InvalidInput(
                f"tensor {shown} has contents while the request uses raw_input_contents; send one or "
                "the other",
                [{"column": shown, "message": "contents and raw_input_contents both given"}],
                400,
            )
        if tensor.datatype not in _TENSOR_FORMATS:
            raise InvalidInput(
                f"tensor {shown}: datatype {echo(tensor.datatype)} is not an Open Inference Protocol "
                f"datatype ({', '.join(_TENSOR_FORMATS)})",
                [{"column": shown, "message": "unknown datatype"}],
                400,
            )
        data = _raw_values(tensor, raw[i]) if raw else _typed_values(tensor)
        tensors.append(
            {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype, "data": data}
        )
    body: dict[str, Any] = {"inputs": tensors}
    if request.id:
        body["id"] = request.id
    if request.outputs:
        body["outputs"] = [{"name": output.name} for output in request.outputs]
    return body


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    field, _ = _TENSOR_FORMATS[tensor.datatype]
    shown = echo(tensor.name)
    given = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if field is None:
        raise InvalidInput(
            f"tensor {shown}: {tensor.datatype} values travel in raw_input_contents only",
            [{"column": shown, "message": "no typed contents for this datatype"}],
            400,
        )
    stray = [name for name in given if name != field]
    if stray:
        raise InvalidInput(
            f"tensor {shown}: {tensor.datatype} values go in contents.{field}, not in "
            f"contents.{', contents.'.join(stray)}",
            [{"column": shown, "message": f"values in contents.{stray[0]}"}],
            400,
        )
    values = list(getattr(tensor.contents, field))
    return _texts(tensor, values) if tensor.datatype == "BYTES" else values


def _raw_values(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes) -> list[Any]:
    import numpy as np

    _, element = _TENSOR_FORMATS[tensor.datatype]
    if element is None:
        return _texts(tensor, _length_prefixed(tensor, raw))
    dtype = np.dtype(element)
    if len(raw) % dtype.itemsize:
        shown = echo(tensor.name)
        raise InvalidInput(
            f"tensor {shown}: {len(raw)} raw bytes are not whole {tensor.datatype} values "
            f"({dtype.itemsize} bytes each)",
            [{"column": shown, "message": "raw contents of a partial value"}],
            400,
        )
    values = np.frombuffer(raw, dtype=dtype)
    if tensor.datatype == "BF16":
        values = (values.astype("<u4") << 16).view("<f4")
    values_list: list[Any] = values.tolist()
    return values_list


def _length_prefixed(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes) -> list[bytes]:
    """The elements of a raw ``BYTES`` tensor: each a 4-byte little-endian length, then its bytes."""
    out: list[bytes] = []
    at = 0
    while at < len(raw):
        size = int.from_bytes(raw[at : at + 4], "little") if at + 4 <= len(raw) else None
        if size is None or at + 4 + size > len(raw):
            shown = echo(tensor.name)
            raise InvalidInput(
                f"tensor {shown}: raw BYTES element {len(out)} is cut short (each element is a 4-byte "
                "little-endian length followed by that many bytes)",
                [{"column": shown, "row": len(out), "message": "truncated raw BYTES element"}],
                400,
            )
        out.append(raw[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def _texts(tensor: pb.ModelInferRequest.InferInputTensor, values: list[bytes]) -> list[str]:
    texts = []
    for row, value in enumerate(values):
        try:
            texts.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            shown = echo(tensor.name)
            raise InvalidInput(
                f"tensor {shown} row {row}: BYTES value is not UTF-8 text",
                [{"column": shown, "row": row, "message": "not UTF-8 text"}],
                400,
            ) from None
    return texts


def response_message(body: dict[str, Any]) -> pb.ModelInferResponse:
    """The ``ModelInferResponse`` of a REST OIP v2 response body (typed contents, one per tensor)."""
    response = pb.ModelInferResponse(
        model_name=body["model_name"], model_version=str(body["model_version"]), id=str(body["id"])
    )
    for tensor in body["outputs"]:
        output = response.outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        data = tensor["data"]
        if tensor["datatype"] == "FP64":
            output.contents.fp64_contents.extend(float(v) for v in data)
        elif tensor["datatype"] == "INT64":
            output.contents.int64_contents.extend(int(v) for v in data)
        else:
            output.contents.bytes_contents.extend(str(v).encode("utf-8") for v in data)
    return response


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over the app's :class:`InferenceCore` (method names are the
    protocol's)."""

    def __init__(self, core: InferenceCore) -> None:
        self.core = core

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        async def reply() -> pb.ServerReadyResponse:
            ready, _ = await asyncio.to_thread(self.core.server.readiness)
            return pb.ServerReadyResponse(ready=ready)

        return await _answering(context, reply)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def reply() -> pb.ModelReadyResponse:
            slot = await asyncio.to_thread(self.core.server.slot, request.name)
            model = slot.serving
            ready = slot.ready and model is not None and request.version in ("", model.version)
            return pb.ModelReadyResponse(ready=ready)

        return await _answering(context, reply)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async def reply() -> pb.ServerMetadataResponse:
            meta = await asyncio.to_thread(server_metadata, self.core.server)
            return pb.ServerMetadataResponse(
                name=meta["name"], version=meta["version"], extensions=meta["extensions"]
            )

        return await _answering(context, reply)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def reply() -> pb.ModelMetadataResponse:
            meta = await asyncio.to_thread(model_metadata, self.core.server, request.name)
            if request.version and request.version not in meta["versions"]:
                raise ServingError(
                    404,
                    f"model {request.name!r} has no version {echo(request.version)} on this server; it "
                    f"has {meta['versions']}",
                )
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )

        return await _answering(context, reply)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        # The request's id names it in the trailing metadata, which holds printable ASCII only: another
        # id is refused (400) by the validation, as for REST, and the call is named by the client's
        # x-request-id metadata or a generated id instead.
        sent = dict(context.invocation_metadata() or ())
        given = request.id if request.id.isascii() and request.id.isprintable() else ""
        request_id = (given or str(sent.get("x-request-id", "")))[:128] or uuid.uuid4().hex

        async def read() -> pb.ModelInferRequest:
            return request

        async def reply() -> pb.ModelInferResponse:
            if not request.model_name:
                served = sorted(self.core.server.slots)
                raise InvalidInput(f"model_name is empty; this server serves {served}", status=400)
            answer = await self.core.infer(
                request.model_name,
                protocol="oip",
                route=ROUTE,
                request_id=request_id,
                read=read,
                decode=request_body,
                version=request.model_version or None,
            )
            context.set_trailing_metadata(
                (("x-request-id", answer.request_id), ("x-model-version", answer.version))
            )
            return response_message(answer.body)

        return await _answering(context, reply, request_id)


async def _answering(
    context: grpc.aio.ServicerContext, reply: Callable[[], Awaitable[_Reply]], request_id: str | None = None
) -> _Reply:
    """``reply()``, or the call aborted with the gRPC code of its :class:`ServingError` and its message
    (an unexpected error is logged with its traceback and answered ``INTERNAL`` without one)."""
    try:
        return await reply()
    except ServingError as exc:
        error = exc
    except Exception:
        log.exception("unexpected error answering a gRPC call")
        error = ServingError(500, "internal server error; the server log has the details")
    if request_id:
        context.set_trailing_metadata((("x-request-id", request_id),))
    await context.abort(grpc_code(error.status), error.message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def start(
    core: InferenceCore, *, host: str, port: int, max_message_bytes: int
) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC service on ``host:port`` in the running event loop; return it and its port.

    Messages above ``max_message_bytes`` are refused (``RESOURCE_EXHAUSTED``). The port is not
    shared with another process (``SO_REUSEPORT`` off), so a port in use is an error here.

    Raises:
        OSError: the port could not be bound (in use, or a host this machine does not have).
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's "Failed to bind to address"
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
    if not bound:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    log.info("Open Inference Protocol v2 gRPC listening on %s", address)
    return server, bound


async def stop(server: grpc.aio.Server, grace_s: float = STOP_GRACE_S) -> None:
    """Stop taking calls and give the ones in flight ``grace_s`` seconds to finish."""
    await server.stop(grace_s)
