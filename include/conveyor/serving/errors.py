"""Domain errors of the model server; each becomes a JSON ``{"error", "detail"}`` response."""

from __future__ import annotations

from typing import Any

MAX_DETAIL_ITEMS = 20


class ServingError(Exception):
    """A request the server refuses, with the HTTP status and a message a client can act on.

    Args:
        status: HTTP status code of the response.
        message: one sentence saying what failed and what to do.
        detail: structured items, typically ``{"column": ..., "row": ..., "message": ...}``.
        headers: extra response headers (``WWW-Authenticate`` on a 401).
    """

    def __init__(
        self,
        status: int,
        message: str,
        detail: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.message = message
        self.detail = (detail or [])[:MAX_DETAIL_ITEMS]
        self.n_detail = len(detail or [])

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "detail": self.detail}
        if self.n_detail > len(self.detail):
            body["detail_truncated"] = self.n_detail - len(self.detail)
        return body


class InvalidInput(ServingError):
    """The request body does not match the model's signature (status 422) or is malformed (400)."""

    def __init__(self, message: str, detail: list[dict[str, Any]] | None = None, status: int = 422) -> None:
        super().__init__(status, message, detail)


class UnknownModel(ServingError):
    """No spec of that name is served (404); the message lists the served names."""

    def __init__(self, name: str, known: list[str], note: str | None = None) -> None:
        message = f"unknown model {name!r}; this server serves {known}"
        super().__init__(404, f"{message}; {note}" if note else message)


class ModelNotReady(ServingError):
    """The model has no loaded version to answer with (503)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(503, f"model {name!r} cannot answer yet: {reason}")


class ModelContractError(Exception):
    """A loaded model broke the model-artifact contract (missing golden rows, wrong output columns)."""
