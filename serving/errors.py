"""Errors the service raises on purpose, each carrying the HTTP status it maps to.

One exception handler (see ``serving.app``) turns any ``ServingError`` into
``{"error": "..."}`` with its status code and headers. Raise these where the problem
is known; never catch ``Exception`` to hide a bug.
"""

from __future__ import annotations

# Longest client-sent name an error message quotes whole.
QUOTED_CHARS = 64


def quoted(text: str) -> str:
    """``repr(text)``, cut to QUOTED_CHARS characters and an ellipsis: a name a client
    sent, echoed in its error, stays readable however long it was."""
    return repr(text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "…")


class ServingError(Exception):
    """Base error: a message for the client, an HTTP status, optional headers.

    ``reason`` is the error's short name, written in the access line's ``error`` field.
    """

    status_code: int = 500
    reason: str = "error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}


class InvalidInput(ServingError):
    """The request body or parameters do not match what the model accepts."""

    status_code = 400
    reason = "invalid_input"


class Unauthorized(ServingError):
    """A protected endpoint was called without a valid API key."""

    status_code = 401
    reason = "unauthorized"

    def __init__(self, message: str = "missing or invalid API key") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServingError):
    """The endpoint exists but this server was not configured to allow it."""

    status_code = 403
    reason = "forbidden"


class ModelNotFound(ServingError):
    """No such model, or no such version of it, in the repository."""

    status_code = 404
    reason = "model_not_found"


class PayloadTooLarge(ServingError):
    """The body is larger than ``max_body_bytes``; refused before it is read whole."""

    status_code = 413
    reason = "payload_too_large"


class UnsupportedMediaType(ServingError):
    """The request's Content-Type is not one the endpoint decodes."""

    status_code = 415
    reason = "unsupported_media_type"


class Overloaded(ServingError):
    """The queue is full, the request could not finish before its deadline, or too many
    requests wait for their pictures to be decoded.

    ``reason`` labels the rejection in metrics (``queue_full``, ``deadline``,
    ``shutting_down``, ``decoders_busy``); the status is 503 or 429 by setting, with
    ``Retry-After``.
    """

    status_code = 503

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        retry_after_s: float = 1.0,
        status_code: int = 503,
    ) -> None:
        retry_after = str(max(1, round(retry_after_s)))
        super().__init__(message, status_code=status_code, headers={"Retry-After": retry_after})
        self.reason = reason


class ModelNotReady(ServingError):
    """The model exists but is not loaded or is being unloaded."""

    status_code = 503
    reason = "model_not_ready"


class DeadlineExceeded(ServingError):
    """The request's timeout passed while it waited in the queue (its work is dropped
    unrun) or while its pictures were decoded (the rest are not decoded)."""

    status_code = 504
    reason = "timeout"


class InferenceFailed(ServingError):
    """ONNX Runtime raised while running the batch holding this request."""

    status_code = 500
    reason = "inference_failed"
