"""A small HTTP client for the Conveyor model server (import-light: httpx and pydantic only).

Example:
    >>> client = ModelServerClient("http://127.0.0.1:8000", token="...")
    >>> client.wait_ready(timeout=120)
    >>> client.predict("churn", [{"tenure_months": 3, ...}])
    [{'probability': 0.71, 'prediction': 1}]

Each answer row holds the model's output columns, per its spec's task (``docs/CONTRACTS.md``):
binary ``probability`` and ``prediction`` (0/1); multiclass ``prediction`` (the label) and one
``probability_<label>`` per class; regression ``prediction`` (a float).
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx

from conveyor.errors import ConveyorError, PermanentError
from conveyor.serving.schemas import ModelStatus, PromoteResult, ReloadResult, StageReport

__all__ = ["ModelServerClient", "ModelServerError", "ModelServerRefused"]

#: 4xx answers that may succeed when asked again (timeout, too early, rate limited).
RETRYABLE_4XX = frozenset({408, 425, 429})


class ModelServerError(ConveyorError):
    """The server answered with an error (or could not be reached: ``status`` 0).

    Attributes:
        status: HTTP status code, 0 when no response came back.
        body: the decoded JSON error body (``{"error": ..., "detail": [...]}``) or the raw text.
        message: the server's ``error`` sentence.
    """

    def __init__(self, status: int, body: Any, message: str | None = None) -> None:
        if message is None:
            message = body.get("error", str(body)) if isinstance(body, dict) else str(body)
        super().__init__(f"model server answered {status}: {message}" if status else message)
        self.status = status
        self.body = body
        self.message = message


class ModelServerRefused(ModelServerError, PermanentError):
    """A 4xx the same request will get again (bad input, unknown model, bad token): do not retry."""


def server_error(status: int, body: Any) -> ModelServerError:
    """The error for an answer with ``status``: :class:`ModelServerRefused` for a 4xx no retry can fix."""
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return ModelServerRefused(status, body)
    return ModelServerError(status, body)


class ModelServerClient:
    """Talks to one model server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: admin bearer token (needed for ``stage``, ``promote``, ``reload``).
        timeout: seconds per request.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ModelServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health -------------------------------------------------------------------------------------

    def live(self) -> bool:
        """True when the process answers (it may still be loading models)."""
        try:
            return self._http.get("/health/live").status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> dict[str, Any]:
        """The readiness document (``{"ready": bool, "models": {...}}``), whether 200 or 503."""
        response = self._send("GET", "/health/ready", ok=(200, 503))
        return dict(response.json())

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.5) -> dict[str, Any]:
        """Poll ``/health/ready`` until it says ready.

        Raises:
            ModelServerError: not ready within ``timeout`` (the message carries the last detail).
        """
        deadline = time.monotonic() + timeout
        last: Any = "no answer"
        while True:
            try:
                doc = self.ready()
                if doc.get("ready"):
                    return doc
                last = doc
            except ModelServerError as exc:
                last = exc.message
            if time.monotonic() >= deadline:
                raise ModelServerError(
                    503, last, f"model server at {self.base_url} not ready after {timeout}s"
                )
            time.sleep(interval)

    def models(self) -> list[ModelStatus]:
        """What the server serves: name, version, registered name, loaded_at, ready."""
        return [ModelStatus.model_validate(m) for m in self._send("GET", "/models").json()]

    def metadata(self, name: str) -> dict[str, Any]:
        """Open Inference Protocol v2 model metadata: inputs, the task's outputs, task and classes."""
        return dict(self._send("GET", f"/v2/models/{name}").json())

    def metrics(self) -> str:
        """The Prometheus exposition text of ``/metrics``."""
        return self._send("GET", "/metrics").text

    # -- predictions --------------------------------------------------------------------------------

    def predict(self, name: str, records: Any) -> list[dict[str, Any]]:
        """Score rows through ``/invocations`` (``dataframe_split``).

        Args:
            name: spec name of the model (``churn``).
            records: a list of ``{column: value}`` dicts or a pandas DataFrame; the spec's id column
                may ride along (it is logged, not used as a feature).

        Returns:
            One ``{column: value}`` per row, in order, with the task's output columns: binary
            ``{"probability": float, "prediction": int}``; multiclass ``{"prediction": label,
            "probability_<label>": float, ...}`` (label an int or a string); regression
            ``{"prediction": float}``.
        """
        columns, data = _to_split(records)
        response = self._send(
            "POST",
            "/invocations",
            params={"model": name},
            json={"dataframe_split": {"columns": columns, "data": data}},
        )
        return list(response.json()["predictions"])

    def infer_v2(
        self,
        name: str,
        inputs: dict[str, list[Any]] | list[dict[str, Any]],
        *,
        datatypes: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Score through Open Inference Protocol v2 and return the raw response.

        Args:
            name: spec name of the model.
            inputs: ``{column: [values]}`` (one tensor each) or ready-made tensor dicts.
            datatypes: OIP datatype per column; guessed from the values otherwise.
            request_id: sent as the request ``id`` and echoed back.

        Returns:
            The OIP response: ``{"model_name", "model_version", "id", "outputs"}`` with one tensor
            per output column of the model's task (``FP64`` probabilities and regression values,
            ``INT64`` or ``BYTES`` labels; see :meth:`metadata`).
        """
        if isinstance(inputs, dict):
            types = datatypes or {}
            tensors = [
                {
                    "name": column,
                    "shape": [len(values)],
                    "datatype": types.get(column) or _guess_datatype(values),
                    "data": list(values),
                }
                for column, values in inputs.items()
            ]
        else:
            tensors = list(inputs)
        body: dict[str, Any] = {"inputs": tensors}
        if request_id is not None:
            body["id"] = request_id
        return dict(self._send("POST", f"/v2/models/{name}/infer", json=body).json())

    # -- admin --------------------------------------------------------------------------------------

    def stage(
        self, name: str, version: str | int | None = None, *, model_uri: str | None = None
    ) -> StageReport:
        """Load a candidate next to the serving model and check it (golden rows, latency)."""
        body = {"model_uri": model_uri} if model_uri is not None else {"version": str(version)}
        return StageReport.model_validate(self._admin("stage", name, body))

    def promote(self, name: str, version: str | int | None = None) -> PromoteResult:
        """Swap the staged version in (refused unless it is the one staged and passed its golden rows)."""
        body = {"version": str(version)} if version is not None else {}
        return PromoteResult.model_validate(self._admin("promote", name, body))

    def reload(self, name: str) -> ReloadResult:
        """Load ``@champion`` again and serve it once it answers its golden rows."""
        return ReloadResult.model_validate(self._admin("reload", name, None))

    # -- plumbing -----------------------------------------------------------------------------------

    def _admin(self, action: str, name: str, body: dict[str, Any] | None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self._send("POST", f"/admin/models/{name}/{action}", json=body, headers=headers).json()

    def _send(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ModelServerError(
                0, str(exc), f"cannot reach the model server at {self.base_url}: {exc}"
            ) from exc
        if response.status_code not in ok:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise server_error(response.status_code, body)
        return response


def _to_split(records: Any) -> tuple[list[str], list[list[Any]]]:
    if hasattr(records, "to_dict") and hasattr(records, "columns"):  # a DataFrame, without importing pandas
        columns = [str(c) for c in records.columns]
        rows = records.astype(object).values.tolist()
        return columns, [[_clean(v) for v in row] for row in rows]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TypeError("records must be a list of dicts or a pandas DataFrame")
    columns = []
    seen: set[str] = set()
    for row in records:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return columns, [[_clean(row.get(c)) for c in columns] for row in records]


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):  # datetime, pandas Timestamp
        return value.isoformat()
    return value


def _guess_datatype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "FP64"
    return "BYTES"
